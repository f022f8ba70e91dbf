using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// L sites of one <see cref="SiteMatrix.Signature"/> (the same site in every layer) applied together by
/// <see cref="StackedFold"/>: one op chain for all of them, through the factors, without materializing M or U.
/// Each factor is stacked [L, ...] once, on first use, and shared by every product of the group in a step;
/// make a new group each step, since the factors are re-cut from θ every step.
/// A site may appear more than once (a layer's Q, K and V weights share one unmerge site).
/// </summary>
internal sealed class SiteGroup(IReadOnlyList<SiteMatrix> members)
{
    readonly Dictionary<string, Tensor> stacked = [];
    readonly Site site = members[0].Site;

    bool Has(string key) => members[0].Factors.ContainsKey(key);

    Tensor this[string key] => stacked.TryGetValue(key, out var t) ? t
        : stacked[key] = members.Count == 1 ? members[0].Factors[key].unsqueeze(0) : torch.stack(members.Select(m => m.Factors[key]).ToArray());

    /// <summary>
    /// Mᵀx for merge sites: x [L, Σe_i, k] holds, per site, model i's rows in block i; the result is
    /// Σ_i M_iᵀ x_i per site, [L, e', k], computed as D x + Bᵀ(Aᵀx): at low rank a fraction of the dense product.
    /// </summary>
    public Tensor MergeRows(Tensor x)
    {
        long l = members.Count, n = site.Models, e = site.ModelWidths[0];
        Tensor? result = null;
        if (Has("dense")) result = this["dense"].transpose(1, 2).bmm(x);
        if (Has("diag"))   // equal widths: a diagonal needs them (SiteMatrix.Initialize)
            result = SiteMatrix.Add(result, (x.reshape(l, n, e, -1) * this["diag"].view(l, n, e, 1)).sum(dim: 1));
        if (Has("left"))
            result = SiteMatrix.Add(result, this["right"].transpose(1, 2).bmm(this["left"].transpose(1, 2).bmm(x)));
        return result!;
    }

    /// <summary>
    /// W_i U_iᵀ for unmerge sites and every model (equal widths e), w [L, N, rows, e], in two parts:
    /// Full = W_i ⊙ u_i + W_i D_iᵀ [L, N, rows, e'] (null for a pure low rank), and, with U = … + C·G,
    /// LowRank = W_i G_iᵀ [L, N, rows, r] with RightT = Cᵀ [L, r, e']. The caller merges LowRank before
    /// multiplying by Cᵀ (M is linear and C is shared by the models: Σ_i M_iᵀ Z_i Cᵀ = (Σ_i M_iᵀ Z_i) Cᵀ), so no
    /// per-model [rows, e'] low-rank product is ever formed: past per-op overhead, the fold's cost is memory
    /// traffic over the N stacked weights, and each full-size tensor written and read back counts (bench perf).
    /// </summary>
    public (Tensor? Full, Tensor? LowRank, Tensor? RightT) UnmergeParts(Tensor w)
    {
        long l = members.Count, n = site.Models, e = site.ModelWidths[0], rows = w.shape[2];
        var perModel = w.reshape(l * n, rows, e);
        // [L, x, N·e] → [L·N, e, x]: model i's block of every site, transposed, as one batch of matrices
        Tensor Blocks(Tensor factor) => factor.view(l, -1, n, e).permute(0, 2, 3, 1).reshape(l * n, e, -1);
        Tensor? full = null;
        if (Has("dense")) full = perModel.bmm(Blocks(this["dense"])).view(l, n, rows, -1);
        if (Has("diag")) full = SiteMatrix.Add(full, w * this["diag"].view(l, n, 1, e));
        if (!Has("left")) return (full, null, null);
        return (full, perModel.bmm(Blocks(this["right"])).view(l, n, rows, -1), this["left"].transpose(1, 2));
    }
}
