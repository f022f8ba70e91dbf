using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>Parameterizations of M and U (spec §2.1).</summary>
internal enum MuType { Full, Diagonal, LowRank, DiagonalLowRank }

/// <summary>Initializations of M and U (spec §2.2, §4.3).</summary>
internal enum MuInit { First, Average, Random }

/// <summary>
/// The learnable factors of one site's M or U and their dense materialization (code layout, spec §1:
/// M is [Σe_i, e'] applied as x_cat·M, U is [e', Σe_i] applied as x̄·U).
/// Factors: "dense" (full); "diag" (one vector of Σe_i entries, block i = diag(m_i));
/// "left"·"right" (low rank: M = A·B with A [Σe_i, r], B [r, e']; U = C·G with C [e', r], G [r, Σe_i]).
/// </summary>
internal sealed class SiteMatrix
{
    /// <summary>λ: the scale of the small random right factor under first/average (spec §2.2).</summary>
    public const double LowRankFactor = 0.1;

    public Site Site { get; }
    public MuType Type { get; }
    public int Rank { get; }
    public Dictionary<string, Tensor> Factors { get; }

    public SiteMatrix(Site site, MuType type, int rank, Dictionary<string, Tensor> factors)
    {
        Site = site;
        Type = type;
        Rank = rank;
        Factors = factors;
    }

    /// <summary>A fixed dense matrix (methods that are a special M/U: average, ZipIt, permutations).</summary>
    public static SiteMatrix Dense(Site site, Tensor matrix)
    {
        if (!matrix.shape.SequenceEqual(site.MatrixShape))
            throw new ArgumentException($"site {site.Name}: matrix shape [{string.Join(",", matrix.shape)}] != [{string.Join(",", site.MatrixShape)}]");
        return new SiteMatrix(site, MuType.Full, 0, new() { ["dense"] = matrix });
    }

    public long ParameterCount => Factors.Values.Sum(f => f.numel());

    /// <summary>Dense M or U, differentiable in the factors.</summary>
    public Tensor Materialize()
    {
        Tensor? result = null;
        if (Factors.TryGetValue("dense", out var dense)) result = dense;
        if (Factors.TryGetValue("diag", out var diag)) result = Add(result, BlockDiagonalStack(diag));
        if (Factors.TryGetValue("left", out var left))
            result = result is null ? left.matmul(Factors["right"]) : torch.addmm(result, left, Factors["right"], beta: 1, alpha: 1);   // one op: per-op overhead dominates here
        return result!;
    }

    /// <summary>The factors' names and shapes: sites with equal signatures are applied together.</summary>
    public string Signature => string.Join(";", Factors.OrderBy(f => f.Key, StringComparer.Ordinal)
        .Select(f => $"{f.Key}[{string.Join(",", f.Value.shape)}]")) + $";{Site.Kind};{string.Join(",", Site.ModelWidths)}";

    /// <summary>Every site's dense M or U (the explicit SuperNet's and the tests' view).</summary>
    public static Dictionary<string, Tensor> MaterializeAll(IReadOnlyDictionary<string, SiteMatrix> matrices) =>
        matrices.ToDictionary(kv => kv.Key, kv => kv.Value.Materialize());

    internal static Tensor Add(Tensor? a, Tensor b) => a is null ? b : a + b;

    Tensor? identityStack;

    /// <summary>
    /// vstack_i diag(m_i) for M, hstack_i diag(u_i) for U: one multiply of a cached [I; …; I] (or [I, …, I])
    /// by the vector, since FS-Merge materializes every step and per-op overhead dominates at small widths.
    /// </summary>
    Tensor BlockDiagonalStack(Tensor diag)
    {
        identityStack ??= IdentityStack(Site, _ => 1.0, diag.device).DetachFromDisposeScope(); // outlives the step's scope
        return Site.Kind == SiteKind.Merge ? identityStack * diag.unsqueeze(1) : identityStack * diag.unsqueeze(0);
    }

    /// <summary>Identity block i in the stacked layout: M = [0; ..; I; ..; 0] scaled, or U blocks all I.</summary>
    static Tensor IdentityStack(Site site, Func<int, double> blockScale, Device device)
    {
        var blocks = Enumerable.Range(0, site.Models)
            .Select(i => torch.eye(site.ModelWidths[i], site.MergedWidth, device: device) * blockScale(i)).ToArray();
        return site.Kind == SiteKind.Merge ? torch.cat(blocks, 0) : torch.cat(blocks.Select(b => b.t()).ToArray(), 1);
    }

    /// <summary>Initial factors for a site (spec §2.2; "first"/"average" with full matrices as in §4.3).</summary>
    public static SiteMatrix Initialize(Site site, MuType type, MuInit init, int rank, Generator generator, Device device)
    {
        int n = site.Models;
        double s = 1.0 / Math.Sqrt(site.MergedWidth);
        bool isMerge = site.Kind == SiteKind.Merge;
        bool equalWidths = site.ModelWidths.All(w => w == site.MergedWidth);
        var factors = new Dictionary<string, Tensor>();
        Tensor Normal(long[] shape, double std) => (torch.randn(shape, generator: generator) * std).to(device);

        if (init != MuInit.Random && !(init == MuInit.First && site.ModelWidths[0] == site.MergedWidth && isMerge) && !equalWidths)
            throw new FsMergeException($"site {site.Name}: init '{init.ToString().ToLowerInvariant()}' needs every model's width ({string.Join(", ", site.ModelWidths)}) to equal the merged width {site.MergedWidth}; use --init random or zipit");
        if (type is MuType.Diagonal or MuType.DiagonalLowRank && !equalWidths)
            throw new FsMergeException($"site {site.Name}: a diagonal M/U needs equal widths, got {string.Join(", ", site.ModelWidths)} into {site.MergedWidth}; use --type full or low-rank");
        if (type is MuType.LowRank or MuType.DiagonalLowRank && (rank < 1 || rank > site.MergedWidth))
            throw new FsMergeException($"site {site.Name}: rank {rank} must be between 1 and the width {site.MergedWidth}");

        switch (type)
        {
            case MuType.Full:
                factors["dense"] = init switch
                {
                    MuInit.Random => Normal(site.MatrixShape, isMerge ? s / n : s),
                    MuInit.Average => IdentityStack(site, _ => isMerge ? 1.0 / n : 1.0, device),
                    _ => IdentityStack(site, i => isMerge ? (i == 0 ? 1.0 : 0.0) : 1.0, device),
                };
                break;
            case MuType.Diagonal:
            case MuType.DiagonalLowRank:
                long stacked = site.StackedWidth;
                factors["diag"] = init switch
                {
                    MuInit.Random when type == MuType.DiagonalLowRank => torch.zeros(stacked, device: device),
                    MuInit.Random => Normal([stacked], isMerge ? s / Math.Sqrt(n) : s),
                    MuInit.Average => torch.full(stacked, isMerge ? 1.0 / n : 1.0, device: device),
                    _ => isMerge
                        ? torch.cat([torch.ones(site.ModelWidths[0]), torch.zeros(stacked - site.ModelWidths[0])]).to(device)
                        : torch.ones(stacked, device: device),
                };
                if (type == MuType.DiagonalLowRank) AddLowRank(site, init, rank, s, factors, Normal, device);
                break;
            case MuType.LowRank:
                if (init != MuInit.Random)
                    throw new FsMergeException($"site {site.Name}: a pure low-rank M/U cannot start at 'first' or 'average' (spec §2.2); use --type diagonal-low-rank or --init random");
                AddLowRank(site, init, rank, s, factors, Normal, device);
                break;
        }
        return new SiteMatrix(site, type, rank, factors);
    }

    static void AddLowRank(Site site, MuInit init, int rank, double s, Dictionary<string, Tensor> factors,
        Func<long[], double, Tensor> normal, Device device)
    {
        bool isMerge = site.Kind == SiteKind.Merge;
        long[] leftShape = isMerge ? [site.StackedWidth, rank] : [site.MergedWidth, rank];
        long[] rightShape = isMerge ? [rank, site.MergedWidth] : [rank, site.StackedWidth];
        if (init == MuInit.Random)
        {
            factors["left"] = normal(leftShape, s / Math.Sqrt(rank));
            factors["right"] = normal(rightShape, s / Math.Sqrt(rank));
        }
        else
        {
            // LoRA-like: the left factor is exactly zero, so the product starts at zero (spec §2.2, §13.12).
            factors["left"] = torch.zeros(leftShape, device: device);
            factors["right"] = normal(rightShape, LowRankFactor * s / rank);
        }
    }
}
