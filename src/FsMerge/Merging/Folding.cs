using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// The one fold every method uses (spec §3): per-model weights plus dense M/U per site plus the
/// merged-space parameters → the weights of one ordinary model with one head per source task.
/// Differentiable: FS-Merge calls it every training step with autograd on (spec §14).
/// </summary>
public static class Folding
{
    /// <param name="sources">Each source model's weights (backbone and heads), in merge order.</param>
    /// <param name="headCounts">How many heads each source has; head names follow <see cref="Heads.Prefix"/>.</param>
    /// <param name="matrices">M or U for every site of <paramref name="table"/>, as factors.</param>
    /// <param name="mergedSpace">Values of the table's merged-space tensors (LayerNorms).</param>
    /// <param name="stacked">Optional <see cref="Stack"/> of the sources: a batched fold, one matmul chain per tensor,
    /// applying M/U through their factors (<see cref="SiteMatrix.MergeRows"/>, <see cref="SiteMatrix.UnmergeEach"/>).</param>
    public static Dictionary<string, Tensor> Fold(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources,
        IReadOnlyList<int> headCounts, IReadOnlyDictionary<string, SiteMatrix> matrices, IReadOnlyDictionary<string, Tensor> mergedSpace,
        IReadOnlyDictionary<string, Tensor>? stacked = null)
    {
        var materialized = new Dictionary<string, Tensor>();
        Tensor Dense(string site) => materialized.TryGetValue(site, out var d) ? d : materialized[site] = matrices[site].Materialize();
        var folded = new Dictionary<string, Tensor>();
        foreach (var entry in table.Tensors)
        {
            folded[entry.Name] = entry.Role switch
            {
                TensorRole.MergedSpace => mergedSpace[entry.Name],
                _ when stacked != null && stacked.TryGetValue(entry.Name, out var stack) => FoldStacked(table, entry, stack, matrices),
                TensorRole.Vector => SumOverModels(table[entry.Out!], i => sources[i][entry.Name],
                    (v, m) => v.matmul(m)),
                _ => FoldLinear(table, entry, sources, Dense),
            };
        }
        FoldHeads(table, sources, headCounts, Dense(table.HeadInput), folded);
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
        IReadOnlyDictionary<string, Tensor>? stacked = null) =>
        Fold(table, sources, headCounts, matrices.ToDictionary(kv => kv.Key, kv => SiteMatrix.Dense(table[kv.Key], kv.Value)), mergedSpace, stacked);

    /// <summary>
    /// The frozen source tensors stacked as [N, ...] where every model has the same shape at the tensor's
    /// sites, so that <see cref="Fold"/> folds each with batched matmuls instead of a loop over models:
    /// FS-Merge folds every step, and per-op overhead matters at small widths. Computed once per merge.
    /// </summary>
    public static Dictionary<string, Tensor> Stack(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources)
    {
        var stacked = new Dictionary<string, Tensor>();
        foreach (var entry in table.Tensors.Where(t => t.Role != TensorRole.MergedSpace))
        {
            bool equal = new[] { entry.Out, entry.In }.Where(s => s != null).All(s => table[s!].ModelWidths.Distinct().Count() == 1);
            if (equal) stacked[entry.Name] = torch.stack(sources.Select(w => w[entry.Name]).ToArray()).detach();
        }
        return stacked;
    }

    /// <summary>
    /// Σ_i M_iᵀ W_i U_iᵀ (or Σ_i v_i M_i) with the models stacked on dim 0. The sum over models is the inner
    /// dimension of one product with the stacked M [N·e, e'] (M_1ᵀ X_1 + … = Mᵀ [X_1; …; X_N]), so no
    /// per-model products are kept and summed: fewer ops and less memory in the every-step fold.
    /// </summary>
    static Tensor FoldStacked(SiteTable table, TensorFold entry, Tensor stack, IReadOnlyDictionary<string, SiteMatrix> matrices)
    {
        var outSite = table[entry.Out!];
        long n = outSite.Models, e = outSite.ModelWidths[0];
        var m = matrices[outSite.Name];
        if (entry.Role == TensorRole.Vector)
        {
            long[] shape = stack.shape[1..^1];
            var stackedRows = stack.reshape(n, -1, e).permute(0, 2, 1).reshape(n * e, -1);           // [N·e, rows] = [v_1ᵀ; …; v_Nᵀ]
            return m.MergeRows(stackedRows).t().reshape([.. shape, outSite.MergedWidth]);
        }
        long rows = n * stack.shape[1];
        if (entry.In is { } inName)
        {
            var unmerged = matrices[inName].UnmergeEach(stack.reshape(n, stack.shape[1], -1));       // W_i U_iᵀ, [N, e_out, e_in']
            return m.MergeRows(unmerged.reshape(rows, -1));
        }
        return m.MergeRows(stack.reshape(rows, -1)).reshape([outSite.MergedWidth, .. stack.shape[2..]]);
    }

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
    /// one block per task, the block of its task), which, heads
    /// being linear, folds into the head itself: H̄ = H · U_iᵀ (spec §4.1).
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
                folded[$"{to}.weight"] = sources[i][$"{from}.weight"].matmul(block.t());
                folded[$"{to}.bias"] = sources[i][$"{from}.bias"];
            }
        }
    }
}
