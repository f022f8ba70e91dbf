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

/// <summary>
/// One row of a site table: tensor name, role, the M site after it, the U site before it. A merged-space
/// tensor names in <see cref="Out"/> a merge site of the space it lives in, so that alignment methods
/// (Opt) can carry it into the merged coordinates like a vector.
/// </summary>
public sealed record TensorFold(string Name, TensorRole Role, string? Out, string? In = null);

/// <summary>
/// Spaces that an alignment method must map with one shared transport, block-diagonal over
/// <see cref="Heads"/> equal blocks: attention queries and keys (their dot products per head must
/// survive), or the values of one attention layer. Entries of one <see cref="Layer"/> hold the same heads:
/// a method that moves whole heads moves them in all of the layer's entries alike.
/// </summary>
public sealed record HeadAlignedSpaces(IReadOnlyList<string> Spaces, int Heads, string Layer)
{
    /// <summary>One attention layer's: its queries with its keys, and its values.</summary>
    public static HeadAlignedSpaces[] Attention(string query, string key, string value, int heads) =>
        [new([query, key], heads, query), new([value], heads, query)];
}

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

    /// <summary>Attention spaces with head structure; every other space is aligned on its own as one block.</summary>
    public IReadOnlyList<HeadAlignedSpaces> HeadAligned { get; }

    readonly Dictionary<string, Site> byName;

    public SiteTable(IReadOnlyList<Site> sites, IReadOnlyList<TensorFold> tensors, string headInput,
        IReadOnlyDictionary<string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>>? activations = null,
        IReadOnlyList<HeadAlignedSpaces>? headAligned = null)
    {
        Sites = sites;
        Tensors = tensors;
        HeadInput = headInput;
        Activations = activations ?? new Dictionary<string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>>();
        HeadAligned = headAligned ?? [];
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
        return new SiteTable(sites, Tensors, HeadInput, Activations, HeadAligned);
    }

    /// <summary>The same table with merged-space tensors folded as vectors through the merge site they name.</summary>
    public SiteTable WithMergedSpaceAsVectors() => new(Sites,
        Tensors.Select(t => t.Role == TensorRole.MergedSpace ? t with { Role = TensorRole.Vector } : t).ToList(),
        HeadInput, Activations, HeadAligned);

    public IEnumerable<IGrouping<string, Site>> Spaces => Sites.GroupBy(s => s.Space);

    /// <summary>
    /// Where data-driven matching methods read a space's features: a U site (the vector the next layers
    /// read, after any activation or merged LayerNorm), else the space's first site.
    /// </summary>
    public string ProbePoint(string space)
    {
        var sites = Sites.Where(s => s.Space == space).ToList();
        return (sites.FirstOrDefault(s => s.Kind == SiteKind.Unmerge) ?? sites[0]).Name;
    }

    /// <summary>A site (of those <paramref name="where"/> picks) where some model is not as wide as the merge (--width), or null.</summary>
    public Site? NarrowedSite(Func<Site, bool>? where = null) =>
        Sites.FirstOrDefault(s => (where is null || where(s)) && s.ModelWidths.Any(w => w != s.MergedWidth));

    /// <summary>Methods that pair neurons by index or by permutation need every model as wide as the merge (at the sites <paramref name="where"/> picks).</summary>
    public void RequireEqualWidths(string method, Func<Site, bool>? where = null)
    {
        if (NarrowedSite(where) is { } site)
            throw new FsMergeException($"{method}: site {site.Name} has widths {string.Join(", ", site.ModelWidths)} into {site.MergedWidth}; {method} needs equal widths");
    }
}
