using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// "Opt", transformer fusion with optimal transport (Imfeld et al. 2023; spec §9.6): every other model is
/// aligned to model 1 space by space with transport maps computed from activations on the merge data
/// (entropic Sinkhorn, or an exact assignment when ε = 0), then the aligned weights are averaged.
/// Attention spaces are aligned head by head (queries and keys with one shared map, values with
/// another; see <see cref="HeadAlignedSpaces"/>); LayerNorms are carried through their space's map.
/// It is a special M/U: M_i = S_iᵀ/N and U_i = S_i, with S_i the transport scaled to unit row sums, folded
/// by the common fold. A token filter picks the positions whose activations enter the costs (the paper's
/// "full", "CLS" and "window" filters; spec §9.6).
/// </summary>
internal sealed class OptMerge : IMergeMethod
{
    public string Name => "opt";
    public string Summary => "Opt: optimal-transport alignment to model 1 from activations (per attention head), then averaging";

    public IReadOnlyList<MethodOption> Options =>
    [
        new("epsilon", "0.08", "Sinkhorn entropic regularization on the cost 1 - correlation (0 = exact assignment), or auto: " +
            "the value of --epsilon-grid whose merged model has the lowest held-out divergence (0.08 without held-out samples)", Example: "0.08"),
        new("epsilon-grid", "0,0.02,0.08,0.3", "the values --epsilon auto tries (the activations are probed once; each value is one alignment)"),
        new("sinkhorn-iterations", "500", "most Sinkhorn iterations (it stops earlier once the marginals hold)"),
        new("max-images", "512", "merge images (all tasks together, evenly spaced) whose activations give the transport costs"),
        new("filter", "full", "token positions whose activations give the costs: full, cls (the first token), or window-K (the first K tokens: CLS and K-1 patches); cls and window need a fixed token count (ViT)"),
    ];

    /// <summary>The value --epsilon auto takes when there are no held-out samples to choose with (the paper's setting, spec §9.6).</summary>
    const double DefaultEpsilon = 0.08;

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        bool auto = settings.String("epsilon") == MethodOption.Auto;
        double[] grid = auto ? settings.Doubles("epsilon-grid", min: 0) : [settings.Double("epsilon", min: 0)];
        int iterations = settings.Int("sinkhorn-iterations", min: 1);
        int maxImages = settings.Int("max-images", min: 1);
        var filter = settings.String("filter");
        var window = TokenWindow(filter, inputs.Target);
        var sites = inputs.Sites;
        sites.RequireEqualWidths("opt");
        if (auto && inputs.HeldOut is null) grid = [DefaultEpsilon];

        var probed = Probing.OnAllData(inputs, sites.Spaces.Select(s => sites.ProbePoint(s.Key)).ToList(), maxImages);
        try
        {
            if (window is var (kept, tokens))
            {
                long images = Math.Min(maxImages, inputs.Data.Sum(d => (long)d.Count));
                foreach (var byPoint in probed)
                    foreach (var point in byPoint.Keys.ToList())
                        if (byPoint[point].shape[0] == images * tokens)   // token-level; pooled features (one row per image) stay
                        {
                            var all = byPoint[point];
                            byPoint[point] = all.view(images, tokens, -1).narrow(1, 0, kept).reshape(images * kept, -1);
                            all.Dispose();
                        }
            }
            var details = new JsonObject { ["mu"] = "transport", ["token_filter"] = filter };
            if (grid.Length == 1)
            {
                details["epsilon"] = grid[0];
                if (auto) details["epsilon_search"] = "no held-out samples: the paper's value";
                return FoldedMerge.Outcome(Transported(inputs, probed, grid[0], iterations), details);
            }
            // --epsilon auto: the activations are probed once; each value aligns anew and is scored without labels.
            using var heldOut = Evaluation.HeldOutReference.For(inputs, Name, "epsilon (--epsilon auto)");
            var (chosen, chosenEpsilon, search) = heldOut.Choose(Name, "epsilon", grid, epsilon => Transported(inputs, probed, epsilon, iterations), inputs.Log);
            details["epsilon"] = chosenEpsilon;
            details["epsilon_search"] = search;
            return FoldedMerge.Outcome(chosen, details);
        }
        finally
        {
            foreach (var tensor in probed.SelectMany(byPoint => byPoint.Values)) tensor.Dispose();
        }
    }

    /// <summary>Every model aligned to model 1 by transport at <paramref name="epsilon"/>, averaged and folded.</summary>
    static Models.Model Transported(MergeInputs inputs, IReadOnlyList<Dictionary<string, Tensor>> probed, double epsilon, int iterations)
    {
        var sites = inputs.Sites;
        int n = inputs.Sources.Count;
        var grouped = sites.HeadAligned.SelectMany(g => g.Spaces).ToHashSet();
        var units = sites.HeadAligned.Concat(sites.Spaces.Where(s => !grouped.Contains(s.Key)).Select(s => new HeadAlignedSpaces([s.Key], 1, s.Key)));
        var transports = new Dictionary<string, Tensor[]>();   // space → S_i [e', e_i] per model
        using (torch.no_grad())
            foreach (var unit in units)
            {
                var points = unit.Spaces.Select(sites.ProbePoint).ToList();
                var maps = Enumerable.Range(0, n).Select(i => i == 0
                    ? torch.eye(probed[0][points[0]].shape[1], dtype: ScalarType.Float64, device: inputs.Device)
                    : Align(points.Select(p => (probed[0][p], probed[i][p])).ToList(), unit.Heads, epsilon, iterations)).ToArray();
                foreach (var space in unit.Spaces) transports[space] = maps;
            }
        var matrices = HeadAlignment.AveragingMatrices(sites,
            Enumerable.Range(0, n).Select(i => (IReadOnlyDictionary<string, Tensor>)transports.ToDictionary(kv => kv.Key, kv => kv.Value[i])).ToList(), inputs.Device);
        return FoldedMerge.ToModel(inputs, matrices, FoldedMerge.Carried(inputs, matrices));
    }

    /// <summary>Token positions kept per input (the first K) and the input's token count, or null for the full sequence.</summary>
    static (int Kept, int Tokens)? TokenWindow(string filter, Models.ModelConfig target)
    {
        if (filter == "full") return null;
        int? kept = filter == "cls" ? 1
            : filter.StartsWith("window-") && int.TryParse(filter["window-".Length..], out int k) && k >= 1 ? k : null;
        if (kept is null) throw new FsMergeException($"opt: --filter '{filter}' is not one of: full, cls, window-K (K >= 1)");
        var tokens = target.Arch.TokensPerInput(target)
            ?? throw new FsMergeException($"opt: --filter {filter} needs inputs with a fixed number of tokens (ViT); {target.Architecture} reports no fixed token count; use --filter full");
        if (kept > tokens) throw new FsMergeException($"opt: --filter {filter} keeps more tokens than the {tokens} of each input");
        return (kept.Value, tokens);
    }

    /// <summary>
    /// Block-diagonal transport from model i's neurons to model 1's, one block per head; each block's cost
    /// sums 1 - correlation over the unit's spaces. Rows sum to 1.
    /// </summary>
    static Tensor Align(IReadOnlyList<(Tensor Reference, Tensor Other)> features, int heads, double epsilon, int iterations)
    {
        using var scope = torch.NewDisposeScope();   // float64 copies of every head's activations: free them now, not at GC
        long width = features[0].Reference.shape[1], headWidth = width / heads;
        var map = torch.zeros(width, width, ScalarType.Float64, device: features[0].Reference.device);
        for (int h = 0; h < heads; h++)
        {
            Tensor? cost = null;
            foreach (var (reference, other) in features)
            {
                var term = 1 - Probing.Correlation(reference.narrow(1, h * headWidth, headWidth), other.narrow(1, h * headWidth, headWidth));
                cost = cost is null ? term : cost + term;
            }
            var block = epsilon == 0 ? Assignment(cost!) : Sinkhorn(cost! / features.Count, epsilon, iterations);
            map.narrow(0, h * headWidth, headWidth).narrow(1, h * headWidth, headWidth).copy_(block);
        }
        return map.MoveToOuterDisposeScope();
    }

    /// <summary>Entropic OT between uniform marginals in the log domain, scaled so every row sums to 1.</summary>
    static Tensor Sinkhorn(Tensor cost, double epsilon, int iterations)
    {
        long e = cost.shape[0];
        var logKernel = -cost / epsilon;
        var logMarginal = Math.Log(1.0 / e);
        var f = torch.zeros(e, ScalarType.Float64, device: cost.device);
        var g = torch.zeros(e, ScalarType.Float64, device: cost.device);
        for (int t = 0; t < iterations; t++)
        {
            f = logMarginal - torch.logsumexp(logKernel + g.unsqueeze(0), 1);
            g = logMarginal - torch.logsumexp(logKernel + f.unsqueeze(1), 0);
            // Columns are exact after the g update; stop once the rows are too.
            if (t % 25 == 24 && (torch.logsumexp(logKernel + g.unsqueeze(0), 1) + f - logMarginal).abs().max().item<double>() < 1e-10) break;
        }
        return (logKernel + f.unsqueeze(1) + g.unsqueeze(0)).exp() * e;
    }

    /// <summary>The exact transport (ε = 0): a permutation minimizing the total cost.</summary>
    static Tensor Assignment(Tensor cost)
    {
        var assigned = LinearAssignment.Solve(cost);
        var permutation = torch.zeros(cost.shape[0], cost.shape[1], ScalarType.Float64);
        for (int a = 0; a < assigned.Length; a++) permutation[a, assigned[a]] = 1.0;
        return permutation.to(cost.device);
    }
}
