using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// The one fold every method uses (spec §3): per-model weights plus dense M/U per site plus the
/// merged-space parameters → the weights of one ordinary model with one head per source task.
/// Differentiable: FS-Merge calls it every training step with autograd on (spec §14).
/// </summary>
internal static class Folding
{
    /// <param name="sources">Each source model's weights (backbone and heads), in merge order.</param>
    /// <param name="headCounts">How many heads each source has; head names follow <see cref="Heads.Prefix"/>.</param>
    /// <param name="matrices">M or U for every site of <paramref name="table"/>, as factors.</param>
    /// <param name="mergedSpace">Values of the table's merged-space tensors (LayerNorms).</param>
    /// <param name="stacked">Optional <see cref="StackedFold"/> of the sources: the batched fold FS-Merge runs every step.</param>
    /// <param name="foldHeads">False for the training step, whose loss reads the features, not the heads.</param>
    public static Dictionary<string, Tensor> Fold(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources,
        IReadOnlyList<int> headCounts, IReadOnlyDictionary<string, SiteMatrix> matrices, IReadOnlyDictionary<string, Tensor> mergedSpace,
        StackedFold? stacked = null, bool foldHeads = true)
    {
        var batched = new Dictionary<string, Tensor>();
        stacked?.FoldInto(matrices, batched);
        var materialized = new Dictionary<string, Tensor>();
        Tensor Dense(string site) => materialized.TryGetValue(site, out var d) ? d : materialized[site] = matrices[site].Materialize();
        var folded = new Dictionary<string, Tensor>();
        foreach (var entry in table.Tensors)
        {
            folded[entry.Name] = entry.Role switch
            {
                TensorRole.MergedSpace => mergedSpace[entry.Name],
                _ when batched.TryGetValue(entry.Name, out var b) => b,
                TensorRole.Vector => SumOverModels(table[entry.Out!], i => sources[i][entry.Name],
                    (v, m) => v.matmul(m)),
                _ => FoldLinear(table, entry, sources, Dense),
            };
        }
        if (foldHeads) FoldHeads(table, sources, headCounts, Dense(table.HeadInput), folded);
        return folded;

        Tensor SumOverModels(Site site, Func<int, Tensor> perModel, Func<Tensor, Tensor, Tensor> apply)
        {
            var m = Dense(site.Name);
            Tensor? sum = null;
            for (int i = 0; i < site.Models; i++)
            {
                var term = apply(perModel(i), m.narrow(0, site.Offset(i), site.ModelWidths[i]));
                sum = sum is null ? term : sum + term;
            }
            return sum!;
        }
    }

    /// <summary>The fold with fixed dense M/U per site (methods that are a special M/U).</summary>
    public static Dictionary<string, Tensor> Fold(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources,
        IReadOnlyList<int> headCounts, IReadOnlyDictionary<string, Tensor> matrices, IReadOnlyDictionary<string, Tensor> mergedSpace,
        StackedFold? stacked = null) =>
        Fold(table, sources, headCounts, matrices.ToDictionary(kv => kv.Key, kv => SiteMatrix.Dense(table[kv.Key], kv.Value)), mergedSpace, stacked);

    /// <summary>W̄ = Σ_i M_iᵀ W_i U_iᵀ, with W_i [out, in, ...]; without an input site the input is shared.</summary>
    static Tensor FoldLinear(SiteTable table, TensorFold entry, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources,
        Func<string, Tensor> dense)
    {
        var outSite = table[entry.Out!];
        var m = dense(outSite.Name);
        var u = entry.In is null ? null : dense(entry.In);
        var inSite = entry.In is null ? null : table[entry.In];
        Tensor? sum = null;
        long[] trailing = [];
        for (int i = 0; i < outSite.Models; i++)
        {
            var w = sources[i][entry.Name];
            trailing = w.shape.Skip(1).ToArray();
            var w2 = w.reshape(w.shape[0], -1);
            if (u is not null) w2 = w2.matmul(u.narrow(1, inSite!.Offset(i), inSite.ModelWidths[i]).t());
            var term = m.narrow(0, outSite.Offset(i), outSite.ModelWidths[i]).t().matmul(w2);
            sum = sum is null ? term : sum + term;
        }
        return u is null ? sum!.reshape([outSite.MergedWidth, .. trailing]) : sum!;
    }

    /// <summary>
    /// Heads are never merged: head h of source i reads block i of the head-input unmerge (or, when it has
    /// one block per task, the block of its task), which folds into the head's first linear map, the one that
    /// reads the feature: H̄ = H · U_iᵀ (spec §4.1). That is a linear head's weight, or a cosine head's projection
    /// (its normalization and class weights come after, and are copied).
    /// </summary>
    internal static void FoldHeads(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources, IReadOnlyList<int> headCounts,
        Tensor u, Dictionary<string, Tensor> folded)
    {
        var site = table[table.HeadInput];
        int total = headCounts.Sum(), task = 0;
        bool perTask = site.Models == total && total != sources.Count; // FS-Merge seq.: one block per task
        for (int i = 0; i < sources.Count; i++)
        {
            for (int h = 0; h < headCounts[i]; h++, task++)
            {
                int b = perTask ? task : i;
                var block = u.narrow(1, site.Offset(b), site.ModelWidths[b]);
                var from = Heads.Prefix(h, headCounts[i]);
                var to = Heads.Prefix(task, total);
                var reader = sources[i].ContainsKey($"{from}.projection") ? "projection" : "weight";
                foreach (var field in new[] { "projection", "weight", "bias" }.Where(f => sources[i].ContainsKey($"{from}.{f}")))
                {
                    var tensor = sources[i][$"{from}.{field}"];
                    folded[$"{to}.{field}"] = field == reader ? tensor.matmul(block.t()) : tensor;
                }
            }
        }
    }
}
