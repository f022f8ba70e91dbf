namespace FsMerge.Merging;

/// <summary>M sites merge N per-model vectors into one; U sites unmerge one merged vector into N (spec §1-2).</summary>
public enum SiteKind { Merge, Unmerge }

/// <summary>
/// One place where an M (<c>[Σe_i, e']</c>, applied as x_cat·M) or a U (<c>[e', Σe_i]</c>, applied as x̄·U) sits.
/// Sites that share a <see cref="Space"/> read and write the same merged coordinates (e.g. an MLP
/// layer's M and the U after its activation, or every site on a transformer's residual stream);
/// permutation-style methods must treat such sites consistently.
/// </summary>
public sealed record Site(string Name, SiteKind Kind, string Space, long[] ModelWidths, long MergedWidth)
{
    public int Models => ModelWidths.Length;
    public long StackedWidth => ModelWidths.Sum();
    public long Offset(int model) => ModelWidths.Take(model).Sum();
    public long[] MatrixShape => Kind == SiteKind.Merge ? [StackedWidth, MergedWidth] : [MergedWidth, StackedWidth];
}

/// <summary>How one backbone tensor folds (spec §3).</summary>
public enum TensorRole
{
    /// <summary>A weight [out, in, ...]: W̄ = Σ_i M_iᵀ W_i U_iᵀ (M on dim 0, U on dim 1; no U when the input is shared).</summary>
    Linear,
    /// <summary>A vector whose last dimension is an output (bias, CLS token, positional embedding): v̄ = Σ_i v_i M_i.</summary>
    Vector,
    /// <summary>A parameter that lives in merged space (LayerNorm γ/β): learned, or set by the method's rule.</summary>
    MergedSpace,
}

/// <summary>One row of a site table: tensor name, role, the M site after it, the U site before it.</summary>
public sealed record TensorFold(string Name, TensorRole Role, string? Out, string? In = null);

/// <summary>
/// The site table of an architecture (DEVELOPERS.md, "Architectures are data"): every backbone tensor
/// with the sites it folds through, and the U site whose block t feeds task t's head. Folding,
/// FS-Merge and every baseline read this table; none names an architecture.
/// </summary>
public sealed class SiteTable
{
    public IReadOnlyList<Site> Sites { get; }
    public IReadOnlyList<TensorFold> Tensors { get; }
    /// <summary>The U site read by the task heads; block i belongs to source model i.</summary>
    public string HeadInput { get; }

    /// <summary>
    /// Spaces whose M and U sandwich an element-wise activation applied in merged space (an MLP hidden
    /// layer): local FS-Merge solves one problem per such space (spec §4.1).
    /// </summary>
    public IReadOnlyDictionary<string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>> Activations { get; }

    readonly Dictionary<string, Site> byName;

    public SiteTable(IReadOnlyList<Site> sites, IReadOnlyList<TensorFold> tensors, string headInput,
        IReadOnlyDictionary<string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>>? activations = null)
    {
        Sites = sites;
        Tensors = tensors;
        HeadInput = headInput;
        Activations = activations ?? new Dictionary<string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>>();
        byName = sites.ToDictionary(s => s.Name);
        foreach (var t in tensors)
            foreach (var site in new[] { t.Out, t.In })
                if (site != null && !byName.ContainsKey(site))
                    throw new InvalidOperationException($"site table: tensor {t.Name} names unknown site {site}");
        if (this[headInput].Kind != SiteKind.Unmerge) throw new InvalidOperationException("site table: head input must be a U site");
    }

    public Site this[string name] => byName[name];

    /// <summary>The same table with one head-input block per task (of the given widths) instead of one per source.</summary>
    public SiteTable WithHeadInputWidths(long[] widths)
    {
        var sites = Sites.Select(s => s.Name == HeadInput ? s with { ModelWidths = widths } : s).ToList();
        return new SiteTable(sites, Tensors, HeadInput, Activations);
    }

    public IEnumerable<IGrouping<string, Site>> Spaces => Sites.GroupBy(s => s.Space);

    /// <summary>Methods that pair neurons by index or by permutation need every model as wide as the merge.</summary>
    public void RequireEqualWidths(string method)
    {
        var site = Sites.FirstOrDefault(s => s.ModelWidths.Any(w => w != s.MergedWidth));
        if (site != null)
            throw new FsMergeException($"{method}: site {site.Name} has widths {string.Join(", ", site.ModelWidths)} into {site.MergedWidth}; {method} needs equal widths");
    }
}
