using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>Builds a <see cref="SiteTable"/> row by row: the vocabulary the architecture files write their tables in.</summary>
public sealed class SiteTableBuilder
{
    readonly List<Site> sites = [];
    readonly List<TensorFold> tensors = [];
    readonly Dictionary<string, Func<Tensor, Tensor>> activations = [];
    readonly List<HeadAlignedSpaces> headAligned = [];

    /// <summary>An M or U site in <paramref name="space"/>, N per-model widths into one merged width.</summary>
    public void Site(string name, SiteKind kind, string space, long[] widths, long mergedWidth) =>
        sites.Add(new Site(name, kind, space, widths, mergedWidth));

    /// <summary>A linear layer <paramref name="prefix"/>.weight [out, in] and .bias; no input site when its input is shared (pixels, patches).</summary>
    public void Linear(string prefix, string outSite, string? inSite)
    {
        tensors.Add(new TensorFold($"{prefix}.weight", TensorRole.Linear, outSite, inSite));
        Vector($"{prefix}.bias", outSite);
    }

    /// <summary>A tensor whose last dimension is an output of <paramref name="outSite"/> (bias, embedding table, CLS token).</summary>
    public void Vector(string name, string outSite) => tensors.Add(new TensorFold(name, TensorRole.Vector, outSite));

    /// <summary>A LayerNorm's γ and β, learned in merged space: the space of merge site <paramref name="spaceSite"/>.</summary>
    public void Norm(string prefix, string spaceSite)
    {
        tensors.Add(new TensorFold($"{prefix}.weight", TensorRole.MergedSpace, spaceSite));
        tensors.Add(new TensorFold($"{prefix}.bias", TensorRole.MergedSpace, spaceSite));
    }

    /// <summary>An element-wise activation applied in merged <paramref name="space"/> between its M and U.</summary>
    public void Activation(string space, Func<Tensor, Tensor> function) => activations[space] = function;

    /// <summary>One attention layer's query, key and value spaces, aligned per head by alignment methods.</summary>
    public void Attention(string query, string key, string value, int heads) =>
        headAligned.AddRange(HeadAlignedSpaces.Attention(query, key, value, heads));

    public SiteTable Build(string headInput) => new(sites, tensors, headInput, activations, headAligned);
}
