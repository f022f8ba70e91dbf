using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// The batched form of <see cref="Folding.Fold"/> that FS-Merge runs every step (spec §14). At small widths a
/// step's cost is mostly per-op overhead, which grew with the number of tensors and models (bench perf), so
/// the frozen source tensors are stacked once per merge and grouped twice:
/// <list type="bullet">
/// <item>by site: each M or U is applied once to all the tensors it touches (a layer's Q, K and V share one
/// unmerge product; a weight and its bias one merge product);</item>
/// <item>across sites with the same factor shapes and tensor shapes (the same site in every layer): one op
/// chain applies all of them (<see cref="SiteMatrix.MergeRows"/>, <see cref="SiteMatrix.UnmergeEach"/>).</item>
/// </list>
/// Covers the tensors whose sites have equal widths for every model; <see cref="Folding.Fold"/> folds the rest
/// one model at a time. Built for one set of M/U shapes (<see cref="SiteMatrix.Signature"/>): the fold of
/// one training run, whose factors change value but not shape.
/// </summary>
public sealed class StackedFold
{
    /// <summary>One tensor kind's block of columns in a merge group's product, and how to shape it back.</summary>
    sealed record Part(long[] Shape, bool IsVector);

    /// <summary>Unmerge sites applied together: their weights' rows stacked [L, N, Σrows, e].</summary>
    sealed record UnmergeGroup(string[] Sites, Tensor Rows, long[] MemberRows);

    /// <summary>A run of consecutive sites of an unmerge group's member: products[Group][Member][Start .. Start + Length).</summary>
    sealed record Segment(int Group, int Member, int Start, int Length);

    /// <summary>
    /// Merge sites applied together: fixed columns [L, N, e, K] (weights without an input site, vectors),
    /// then one block per unmerged weight, gathered from unmerge groups' products in runs.
    /// </summary>
    sealed record MergeGroup(string[] Sites, Tensor? Fixed, List<Part> FixedParts, List<List<Segment>> Unmerged, string[][] Names);

    readonly List<UnmergeGroup> unmerges = [];
    readonly List<MergeGroup> merges = [];

    /// <summary>How many sites each group applies at once (for tests and diagnostics).</summary>
    public IReadOnlyList<int> UnmergeGroupSizes => unmerges.Select(g => g.Sites.Length).ToList();
    public IReadOnlyList<int> MergeGroupSizes => merges.Select(g => g.Sites.Length).ToList();

    public StackedFold(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources, IReadOnlyDictionary<string, SiteMatrix> matrices)
    {
        var signatures = matrices.ToDictionary(kv => kv.Key, kv => kv.Value.Signature);
        bool Equal(string? site) => site is null || table[site].ModelWidths.Distinct().Count() == 1;
        var entries = table.Tensors.Where(t => t.Role != TensorRole.MergedSpace && Equal(t.Out) && Equal(t.In)).ToList();
        using var noGrad = torch.no_grad();

        // Where each unmerged weight lands: (group, member, position of its site in the group).
        var unmergedAt = new Dictionary<string, (int Group, int Member, int Position)>();
        var bySite = entries.Where(t => t.In != null).GroupBy(t => t.In!).ToList();
        foreach (var group in bySite.GroupBy(site => $"{signatures[site.Key]}|{string.Join(",", site.Select(t => Shape(sources, t.Name)))}"))
        {
            var sites = group.ToList();
            var rows = sites.Select(site => torch.cat(site.Select(t => Stack(sources, t.Name).reshape(sources.Count, sources[0][t.Name].shape[0], -1)).ToArray(), 1)).ToArray();
            for (int p = 0; p < sites.Count; p++)
                foreach (var (t, j) in sites[p].Select((t, j) => (t, j)))
                    unmergedAt[t.Name] = (unmerges.Count, j, p);
            unmerges.Add(new UnmergeGroup(sites.Select(s => s.Key).ToArray(), Keep(torch.stack(rows)),
                sites[0].Select(t => sources[0][t.Name].shape[0]).ToArray()));
        }

        // Merge sites group by factor shapes and column layout, wherever their weights were unmerged: sorted
        // by where those products lie, so that each block is gathered in few runs.
        var mergeSites = entries.GroupBy(t => t.Out!).Select(site =>
        {
            var ordered = site.OrderBy(t => t.In != null).ToList();   // fixed columns first
            var key = string.Join(",", ordered.Select(t => t.In == null ? $"{t.Role}{Shape(sources, t.Name)}" : $"u{table[t.In].MergedWidth}"));
            return (Site: site.Key, Ordered: ordered, Key: $"{signatures[site.Key]}|{key}");
        }).ToList();
        foreach (var group in mergeSites.GroupBy(s => s.Key))
        {
            var fixedCount = group.First().Ordered.Count(t => t.In == null);
            var sites = group.OrderBy(s => s.Ordered.Skip(fixedCount).Select(t => unmergedAt[t.Name]).FirstOrDefault()).ToList();
            var fixedParts = sites[0].Ordered.Take(fixedCount).Select(t => new Part(sources[0][t.Name].shape, t.Role == TensorRole.Vector)).ToList();
            Tensor? fixedColumns = fixedCount == 0 ? null : Keep(torch.stack(sites.Select(s => torch.cat(
                s.Ordered.Take(fixedCount).Select(t => Columns(Stack(sources, t.Name), t.Role == TensorRole.Vector)).ToArray(), 2)).ToArray()).contiguous());
            var unmerged = Enumerable.Range(fixedCount, sites[0].Ordered.Count - fixedCount)
                .Select(j => Runs(sites.Select(s => unmergedAt[s.Ordered[j].Name]))).ToList();
            merges.Add(new MergeGroup(sites.Select(s => s.Site).ToArray(), fixedColumns, fixedParts, unmerged,
                sites.Select(s => s.Ordered.Select(t => t.Name).ToArray()).ToArray()));
        }
    }

    /// <summary>Places in unmerge products as runs of consecutive positions of one member.</summary>
    static List<Segment> Runs(IEnumerable<(int Group, int Member, int Position)> places)
    {
        var runs = new List<Segment>();
        foreach (var (g, m, p) in places)
        {
            if (runs.Count > 0 && runs[^1] is var last && last.Group == g && last.Member == m && last.Start + last.Length == p)
                runs[^1] = last with { Length = last.Length + 1 };
            else runs.Add(new Segment(g, m, p, 1));
        }
        return runs;
    }

    /// <summary>Built inside a training step's dispose scope, the fold's tensors must outlive it.</summary>
    static Tensor Keep(Tensor t) => t.detach().DetachFromDisposeScope();

    static string Shape(IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources, string name) => $"[{string.Join(",", sources[0][name].shape)}]";

    static Tensor Stack(IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources, string name) =>
        torch.stack(sources.Select(w => w[name]).ToArray());

    /// <summary>A stacked tensor as columns [N, e, k] of its output site: a weight's rows, or a vector transposed (v_iᵀ).</summary>
    static Tensor Columns(Tensor stack, bool isVector) => isVector
        ? stack.reshape(stack.shape[0], -1, stack.shape[^1]).permute(0, 2, 1)
        : stack.reshape(stack.shape[0], stack.shape[1], -1);

    /// <summary>Σ_i M_iᵀ W_i U_iᵀ and Σ_i v_i M_i for every covered tensor, differentiable in the factors.</summary>
    public void FoldInto(SiteTable table, IReadOnlyDictionary<string, SiteMatrix> matrices, Dictionary<string, Tensor> folded)
    {
        var products = unmerges.Select(g =>
            SiteMatrix.UnmergeEach(g.Sites.Select(s => matrices[s]).ToList(), g.Rows).split(g.MemberRows, 2)).ToList();   // W_i U_iᵀ
        foreach (var group in merges)
        {
            var blocks = group.Unmerged.Select(runs => Gather(products, runs)).ToList();
            if (group.Fixed is not null) blocks.Insert(0, group.Fixed);
            var columns = blocks.Count == 1 ? blocks[0] : torch.cat(blocks.ToArray(), 3);                     // [L, N, e, K]
            var merged = SiteMatrix.MergeRows(group.Sites.Select(s => matrices[s]).ToList(),
                columns.reshape(columns.shape[0], -1, columns.shape[3]))
                // [L, K, e']: each tensor's block is then contiguous rows, so a weight is a transposed view whose
                // transpose, the form nn.functional.linear multiplies by, is contiguous (strided weights made the forward slower).
                .transpose(1, 2).contiguous();
            var widths = group.FixedParts.Select(ColumnCount).Concat(blocks.Skip(group.Fixed is null ? 0 : 1).Select(b => b.shape[3])).ToArray();
            var pieces = merged.split(widths, 1);
            long mergedWidth = table[group.Sites[0]].MergedWidth;
            for (int j = 0; j < pieces.Length; j++)
            {
                var perSite = pieces[j].unbind(0);
                for (int l = 0; l < perSite.Length; l++)
                    folded[group.Names[l][j]] = j < group.FixedParts.Count
                        ? Shape(perSite[l], group.FixedParts[j], mergedWidth)
                        : perSite[l].t();                                                                      // [e', e_in']
            }
        }
    }

    static Tensor Gather(List<Tensor[]> products, List<Segment> runs)
    {
        var pieces = runs.Select(r => products[r.Group][r.Member] is var p && r.Start == 0 && r.Length == p.shape[0] ? p : p.narrow(0, r.Start, r.Length)).ToArray();
        return pieces.Length == 1 ? pieces[0] : torch.cat(pieces, 0);
    }

    static long ColumnCount(Part part) => part.IsVector ? part.Shape[..^1].Aggregate(1L, (a, b) => a * b) : part.Shape[1..].Aggregate(1L, (a, b) => a * b);

    /// <summary>A piece [k, e'] back in its tensor's shape.</summary>
    static Tensor Shape(Tensor piece, Part part, long mergedWidth) => part.IsVector
        ? piece.reshape([.. part.Shape[..^1], mergedWidth])
        : piece.t().reshape([mergedWidth, .. part.Shape[1..]]);
}
