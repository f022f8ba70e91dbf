using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// The batched form of <see cref="Folding.Fold"/> that FS-Merge runs every step (spec §14). A step's fold is
/// per-op overhead plus memory traffic over the N stacked source models (bench perf), so the frozen source
/// tensors are stacked once per merge and grouped:
/// <list type="bullet">
/// <item>weights whose output sites, input sites and shapes match (the same weight in every layer; a layer's
/// Q, K, V and output projection) are folded by one op chain: U's full-rank part, then M, with U's
/// low-rank Cᵀ applied once after the merge (<see cref="SiteGroup"/>);</item>
/// <item>tensors without an input site (biases, embeddings, the patch kernel) are columns of their output
/// site, concatenated once, and merged by one op chain per group of equal sites.</item>
/// </list>
/// Covers the tensors whose sites have equal widths for every model; <see cref="Folding.Fold"/> folds the rest
/// one model at a time. Built for one set of M/U shapes (<see cref="SiteMatrix.Signature"/>): the fold of
/// one training run, whose factors change value but not shape.
/// </summary>
internal sealed class StackedFold
{
    /// <summary>One tensor's block of columns in a column group, and how to shape it back.</summary>
    sealed record Part(long[] Shape, bool IsVector);

    /// <summary>Weights folded together: sources stacked [L, N, rows, e_in].</summary>
    sealed record WeightGroup(string[] Names, string[] OutSites, string[] InSites, Tensor Weights);

    /// <summary>Output sites whose input-free tensors are merged together: columns [L, N·e, K].</summary>
    sealed record ColumnGroup(string[] Sites, string[][] Names, Tensor Columns, List<Part> Parts);

    readonly List<WeightGroup> weights = [];
    readonly List<ColumnGroup> columns = [];

    /// <summary>How many weights each weight group folds at once (for tests and diagnostics).</summary>
    public IReadOnlyList<int> WeightGroupSizes => weights.Select(g => g.Names.Length).ToList();

    public StackedFold(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources, IReadOnlyDictionary<string, SiteMatrix> matrices)
    {
        var signatures = matrices.ToDictionary(kv => kv.Key, kv => kv.Value.Signature);
        bool Equal(string? site) => site is null || table[site].ModelWidths.Distinct().Count() == 1;
        var entries = table.Tensors.Where(t => t.Role != TensorRole.MergedSpace && Equal(t.Out) && Equal(t.In)).ToList();
        int n = sources.Count;
        using var noGrad = torch.no_grad();

        foreach (var group in entries.Where(t => t.In != null).GroupBy(t => $"{signatures[t.Out!]}|{signatures[t.In!]}|{Shape(sources, t.Name)}"))
        {
            var members = group.ToList();
            var stacked = torch.stack(members.Select(t => Stack(sources, t.Name).reshape(n, sources[0][t.Name].shape[0], -1)).ToArray());
            weights.Add(new WeightGroup(members.Select(t => t.Name).ToArray(), members.Select(t => t.Out!).ToArray(),
                members.Select(t => t.In!).ToArray(), Keep(stacked)));
        }

        var bySite = entries.Where(t => t.In == null).GroupBy(t => t.Out!).Select(site => (Site: site.Key, Members: site.ToList(),
            Key: $"{signatures[site.Key]}|{string.Join(",", site.Select(t => $"{t.Role}{Shape(sources, t.Name)}"))}"));
        foreach (var group in bySite.GroupBy(s => s.Key))
        {
            var sites = group.ToList();
            var first = sites[0].Members;
            var stacked = torch.stack(sites.Select(s => torch.cat(
                s.Members.Select(t => Columns(Stack(sources, t.Name), t.Role == TensorRole.Vector)).ToArray(), 2)).ToArray());
            columns.Add(new ColumnGroup(sites.Select(s => s.Site).ToArray(), sites.Select(s => s.Members.Select(t => t.Name).ToArray()).ToArray(),
                Keep(stacked.reshape(sites.Count, -1, stacked.shape[3])), first.Select(t => new Part(sources[0][t.Name].shape, t.Role == TensorRole.Vector)).ToList()));
        }
    }

    /// <summary>Built inside a training step's dispose scope, the fold's tensors must outlive it.</summary>
    static Tensor Keep(Tensor t) => t.detach().contiguous().DetachFromDisposeScope();

    static string Shape(IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources, string name) => $"[{string.Join(",", sources[0][name].shape)}]";

    static Tensor Stack(IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources, string name) =>
        torch.stack(sources.Select(w => w[name]).ToArray());

    /// <summary>A stacked tensor as columns [N, e, k] of its output site: a weight's rows, or a vector transposed (v_iᵀ).</summary>
    static Tensor Columns(Tensor stack, bool isVector) => isVector
        ? stack.reshape(stack.shape[0], -1, stack.shape[^1]).permute(0, 2, 1)
        : stack.reshape(stack.shape[0], stack.shape[1], -1);

    /// <summary>Σ_i M_iᵀ W_i U_iᵀ and Σ_i v_i M_i for every covered tensor, differentiable in the factors.</summary>
    public void FoldInto(IReadOnlyDictionary<string, SiteMatrix> matrices, Dictionary<string, Tensor> folded)
    {
        foreach (var group in weights)
        {
            var merge = new SiteGroup(group.OutSites.Select(s => matrices[s]).ToList());
            var (full, lowRank, rightT) = new SiteGroup(group.InSites.Select(s => matrices[s]).ToList()).UnmergeParts(group.Weights);
            long l = group.Weights.shape[0], stackedRows = group.Weights.shape[1] * group.Weights.shape[2];
            Tensor? result = full is null ? null : merge.MergeRows(full.view(l, stackedRows, -1));   // [L, e'_out, e'_in]
            if (lowRank is not null)
            {
                var lowRankPart = merge.MergeRows(lowRank.view(l, stackedRows, -1)).bmm(rightT!);
                result = result is null ? lowRankPart : result + lowRankPart;
            }
            var perWeight = result!.unbind(0);
            for (int i = 0; i < perWeight.Length; i++) folded[group.Names[i]] = perWeight[i];
        }
        foreach (var group in columns)
        {
            // [L, K, e']: each tensor's block is then contiguous rows (vectors), or a transposed view (the patch kernel).
            var merged = new SiteGroup(group.Sites.Select(s => matrices[s]).ToList()).MergeRows(group.Columns).transpose(1, 2).contiguous();
            long mergedWidth = merged.shape[2];
            var pieces = merged.split(group.Parts.Select(ColumnCount).ToArray(), 1);
            for (int j = 0; j < pieces.Length; j++)
            {
                var perSite = pieces[j].unbind(0);
                for (int l = 0; l < perSite.Length; l++) folded[group.Names[l][j]] = Shape(perSite[l], group.Parts[j], mergedWidth);
            }
        }
    }

    static long ColumnCount(Part part) => part.IsVector ? part.Shape[..^1].Aggregate(1L, (a, b) => a * b) : part.Shape[1..].Aggregate(1L, (a, b) => a * b);

    /// <summary>A piece [k, e'] back in its tensor's shape.</summary>
    static Tensor Shape(Tensor piece, Part part, long mergedWidth) => part.IsVector
        ? piece.reshape([.. part.Shape[..^1], mergedWidth])
        : piece.t().reshape([mergedWidth, .. part.Shape[1..]]);
}
