using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>Builds a <see cref="SiteTable"/> row by row: the vocabulary the architecture files write their tables in.</summary>
internal sealed class SiteTableBuilder
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

    /// <summary>
    /// One transformer encoder layer in Hugging Face's layout (ViT, BERT), its LayerNorms left to the caller
    /// (pre- or post-LN): the sites are named "{layer}.…" and the residual stream is the space "residual".
    /// Q, K and V share the unmerge of the residual stream and have three merges; values use their own
    /// merge (spec §13.3), whose space the attention-output unmerge reads; the attention-output and MLP-output
    /// merges add into the residual stream; GELU acts in the merged intermediate space.
    /// <paramref name="selfAttention"/> is the prefix of the query/key/value layers under <paramref name="block"/>.
    /// </summary>
    public void EncoderLayer(string layer, string block, string selfAttention, long[] width, long mergedWidth,
        long[] intermediate, long mergedIntermediate, int heads)
    {
        string S(string name) => $"{layer}.{name}";
        Site(S("attention.unmerge"), SiteKind.Unmerge, "residual", width, mergedWidth);
        foreach (var proj in new[] { "query", "key", "value" })
        {
            Site(S($"{proj}.merge"), SiteKind.Merge, S(proj), width, mergedWidth);
            Linear($"{block}.{selfAttention}.{proj}", S($"{proj}.merge"), S("attention.unmerge"));
        }
        Attention(S("query"), S("key"), S("value"), heads);
        Site(S("attention_output.unmerge"), SiteKind.Unmerge, S("value"), width, mergedWidth);
        Site(S("attention_output.merge"), SiteKind.Merge, "residual", width, mergedWidth);
        Linear($"{block}.attention.output.dense", S("attention_output.merge"), S("attention_output.unmerge"));
        Site(S("mlp.unmerge"), SiteKind.Unmerge, "residual", width, mergedWidth);
        Site(S("intermediate.merge"), SiteKind.Merge, S("intermediate"), intermediate, mergedIntermediate);
        Linear($"{block}.intermediate.dense", S("intermediate.merge"), S("mlp.unmerge"));
        Activation(S("intermediate"), x => TorchSharp.torch.nn.functional.gelu(x));
        Site(S("intermediate.unmerge"), SiteKind.Unmerge, S("intermediate"), intermediate, mergedIntermediate);
        Site(S("output.merge"), SiteKind.Merge, "residual", width, mergedWidth);
        Linear($"{block}.output.dense", S("output.merge"), S("intermediate.unmerge"));
    }

    public SiteTable Build(string headInput) => new(sites, tensors, headInput, activations, headAligned);
}
