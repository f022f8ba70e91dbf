using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// The batched form of <see cref="Folding.Fold"/> that FS-Merge runs every step (spec §14). The frozen source
/// tensors are stacked [N, ...] once per merge and grouped by site, so that each step applies every site's
/// M or U once, through its factors, to all the tensors it touches: a layer's Q, K and V share one
/// unmerge product, and a weight and its bias one merge product. At small widths a step's cost is mostly
/// per-op overhead, which grew with the number of tensors (bench perf). Covers the tensors whose sites
/// have equal widths for every model; <see cref="Folding.Fold"/> folds the rest one model at a time.
/// </summary>
public sealed class StackedFold
{
    /// <summary>One tensor's block of columns in its merge site's product, and how to shape it back.</summary>
    sealed record Part(string Name, long Columns, long[] Shape, bool IsVector);

    /// <summary>U site → the stacked rows of every weight it unmerges [N, Σrows, e], and each weight's rows.</summary>
    readonly Dictionary<string, (Tensor Rows, List<(string Name, long Rows)> Members)> unmerges = new();

    /// <summary>M site → the fixed columns (weights without an input site, vectors) [N, e, Σk] and every part in column order.</summary>
    readonly Dictionary<string, (Tensor? Fixed, List<Part> Parts)> merges = new();

    public IReadOnlySet<string> Names { get; }

    public StackedFold(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources)
    {
        bool Equal(string? site) => site is null || table[site].ModelWidths.Distinct().Count() == 1;
        var entries = table.Tensors.Where(t => t.Role != TensorRole.MergedSpace && Equal(t.Out) && Equal(t.In)).ToList();
        Names = entries.Select(t => t.Name).ToHashSet();
        using var noGrad = torch.no_grad();
        foreach (var group in entries.Where(t => t.In != null).GroupBy(t => t.In!))
        {
            var stacks = group.Select(t => Stack(sources, t.Name)).Select(s => s.reshape(s.shape[0], s.shape[1], -1)).ToArray();
            unmerges[group.Key] = (torch.cat(stacks, 1).detach(), group.Select((t, i) => (t.Name, stacks[i].shape[1])).ToList());
        }
        foreach (var group in entries.GroupBy(t => t.Out!))
        {
            var fixedColumns = new List<Tensor>();
            var fixedParts = new List<Part>();
            var unmerged = new List<Part>();
            foreach (var entry in group)
            {
                var shape = sources[0][entry.Name].shape;
                if (entry.In != null) { unmerged.Add(new Part(entry.Name, -1, shape, false)); continue; }
                var stack = Stack(sources, entry.Name);
                bool isVector = entry.Role == TensorRole.Vector;
                var columns = isVector
                    ? stack.reshape(stack.shape[0], -1, shape[^1]).permute(0, 2, 1)                      // [N, e, rows]: v_iᵀ
                    : stack.reshape(stack.shape[0], stack.shape[1], -1);                                 // [N, e, in·k…]
                fixedColumns.Add(columns);
                fixedParts.Add(new Part(entry.Name, columns.shape[2], shape, isVector));
            }
            var fixedTensor = fixedColumns.Count == 0 ? null : torch.cat(fixedColumns.ToArray(), 2).contiguous().detach();
            merges[group.Key] = (fixedTensor, fixedParts.Concat(unmerged).ToList());
        }
    }

    static Tensor Stack(IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources, string name) =>
        torch.stack(sources.Select(w => w[name]).ToArray());

    /// <summary>Σ_i M_iᵀ W_i U_iᵀ and Σ_i v_i M_i for every covered tensor, differentiable in the factors.</summary>
    public void FoldInto(SiteTable table, IReadOnlyDictionary<string, SiteMatrix> matrices, Dictionary<string, Tensor> folded)
    {
        var unmerged = new Dictionary<string, Tensor>();
        foreach (var (site, (rows, members)) in unmerges)
        {
            var products = matrices[site].UnmergeEach(rows).split(members.Select(m => m.Rows).ToArray(), 1);   // W_i U_iᵀ
            for (int i = 0; i < members.Count; i++) unmerged[members[i].Name] = products[i];
        }
        foreach (var (site, (fixedColumns, parts)) in merges)
        {
            var blocks = parts.Where(p => p.Columns < 0).Select(p => unmerged[p.Name]).ToList();
            if (fixedColumns is not null) blocks.Insert(0, fixedColumns);
            var columns = blocks.Count == 1 ? blocks[0] : torch.cat(blocks.ToArray(), 2);                     // [N, e, K]
            var mergedWidth = table[site].MergedWidth;
            var merged = matrices[site].MergeRows(columns.reshape(-1, columns.shape[2]));                      // [e', K]
            var widths = parts.Select(p => p.Columns < 0 ? unmerged[p.Name].shape[2] : p.Columns).ToArray();
            var pieces = merged.split(widths, 1);
            for (int i = 0; i < parts.Count; i++)
            {
                var p = parts[i];
                long[] trailing = p.Columns < 0 ? [widths[i]] : p.Shape[1..];
                folded[p.Name] = p.IsVector ? pieces[i].t().reshape([.. p.Shape[..^1], mergedWidth]) : pieces[i].reshape([mergedWidth, .. trailing]);
            }
        }
    }
}
