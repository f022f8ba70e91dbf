using FsMerge.Merging;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// Pre-LayerNorm Vision Transformer with Hugging Face ViTModel weight names: a patch convolution,
/// a CLS token, learned positional embeddings, L encoder blocks (multi-head attention, GELU MLP),
/// and a final LayerNorm. The feature read by the heads is the final-LayerNorm CLS token, as in
/// ViTForImageClassification.
/// </summary>
internal sealed class Vit : IArchitecture
{
    public string Name => "vit";

    const string Embeddings = "vit.embeddings";
    public static string Block(int layer) => $"vit.encoder.layer.{layer}";

    public IReadOnlyList<WeightSpec> BackboneWeights(ModelConfig c)
    {
        long d = c.HiddenSize, D = c.IntermediateSize, p = c.PatchSize;
        long tokens = Patches(c) + 1;
        var specs = new List<WeightSpec>
        {
            new($"{Embeddings}.cls_token", [1, 1, d]),
            new($"{Embeddings}.position_embeddings", [1, tokens, d]),
            new($"{Embeddings}.patch_embeddings.projection.weight", [d, c.NumChannels, p, p]),
            new($"{Embeddings}.patch_embeddings.projection.bias", [d]),
        };
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var b = Block(l);
            specs.Add(new($"{b}.layernorm_before.weight", [d]));
            specs.Add(new($"{b}.layernorm_before.bias", [d]));
            foreach (var proj in new[] { "query", "key", "value" })
            {
                specs.Add(new($"{b}.attention.attention.{proj}.weight", [d, d]));
                specs.Add(new($"{b}.attention.attention.{proj}.bias", [d]));
            }
            specs.Add(new($"{b}.attention.output.dense.weight", [d, d]));
            specs.Add(new($"{b}.attention.output.dense.bias", [d]));
            specs.Add(new($"{b}.layernorm_after.weight", [d]));
            specs.Add(new($"{b}.layernorm_after.bias", [d]));
            specs.Add(new($"{b}.intermediate.dense.weight", [D, d]));
            specs.Add(new($"{b}.intermediate.dense.bias", [D]));
            specs.Add(new($"{b}.output.dense.weight", [d, D]));
            specs.Add(new($"{b}.output.dense.bias", [d]));
        }
        specs.Add(new("vit.layernorm.weight", [d]));
        specs.Add(new("vit.layernorm.bias", [d]));
        return specs;
    }

    public long FeatureWidth(ModelConfig config) => config.HiddenSize;

    /// <summary>
    /// The paper's transformer setting (spec §7.4-7.7): AdamW, weight decay 1e-3, batch 128, OneCycle, diagonal +
    /// low-rank M/U reconstructing each sample's own model without normalization, rates 1e-2…1e-4; 800 steps
    /// (the CPU-scale bench's FS-Merge budget, 200 epochs of the paper's 4 steps each). FS-Merge's start is chosen
    /// with the rate (--init auto) between Re-Basin's (the sources permuted onto model 1, head-aware) and model 1's:
    /// Re-Basin's led by 5.1 points per task on the first ViT pair of bench vit (tied on the second), by 6.1 and 6.3 on two of the three
    /// BERT pairs of bench bert (1.0 behind on the third) and by 6.3 on an unseen ViT pair.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> TransformerMergeDefaults = new Dictionary<string, string>
    {
        ["optimizer"] = "adamw", ["schedule"] = "onecycle", ["batch"] = "128", ["weight-decay"] = "0.001",
        ["steps"] = "800", ["lr-grid"] = "0.01,0.003,0.001,0.0003,0.0001",
        ["type"] = "diagonal-low-rank", ["targets"] = "own", ["normalize"] = "false",
        ["fs-merge:init"] = "auto", ["fs-merge:init-candidates"] = "rebasin,first",
    };

    public IReadOnlyDictionary<string, string> MergeDefaults => TransformerMergeDefaults;

    public string? PixelLayer(ModelConfig config) => $"{Embeddings}.patch_embeddings.projection";

    public int? TokensPerInput(ModelConfig config) => (int)Patches(config) + 1;   // CLS first (Embed)

    public string InputShape(ModelConfig config) => $"[B, {config.NumChannels}, {config.ImageSize}, {config.ImageSize}] pixels, prepared as preprocessor_config.json says";

    public static long Patches(ModelConfig c)
    {
        if (c.ImageSize % c.PatchSize != 0)
            throw new FsMergeException($"image_size {c.ImageSize} is not a multiple of patch_size {c.PatchSize}");
        if (c.HiddenSize % c.NumAttentionHeads != 0)
            throw new FsMergeException($"hidden_size {c.HiddenSize} is not a multiple of num_attention_heads {c.NumAttentionHeads}");
        long side = c.ImageSize / c.PatchSize;
        return side * side;
    }

    /// <summary>Hugging Face's ViT init: truncated-normal-like N(0, 0.02²) weights, zero biases, unit LayerNorms.</summary>
    public Dictionary<string, Tensor> InitBackbone(ModelConfig config, Generator generator, Device device)
    {
        var weights = new Dictionary<string, Tensor>();
        foreach (var spec in BackboneWeights(config))
        {
            Tensor t;
            if (spec.Name.Contains("layernorm") && spec.Name.EndsWith(".weight")) t = torch.ones(spec.Shape);
            else if (spec.Name.EndsWith(".bias")) t = torch.zeros(spec.Shape);
            else t = torch.randn(spec.Shape, generator: generator).mul_(0.02).clamp_(-0.04, 0.04);
            weights[spec.Name] = t.to(device);
        }
        return weights;
    }

    public Tensor Features(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor images, Probe? probe = null)
    {
        long d = c.HiddenSize;
        var eps = c.LayerNormEps;
        var x = Embed(c, w, images, probe);                                           // [B, T, d]
        Report(probe, EmbedMerge, x);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var b = Block(l);
            var h = nn.functional.layer_norm(x, [d], w[$"{b}.layernorm_before.weight"], w[$"{b}.layernorm_before.bias"], eps);
            Report(probe, Site(l, "attention.unmerge"), h);
            var attention = Attention(c, w, b, h, l, probe);
            Report(probe, Site(l, "attention_output.merge"), attention);
            x = x + attention;
            h = nn.functional.layer_norm(x, [d], w[$"{b}.layernorm_after.weight"], w[$"{b}.layernorm_after.bias"], eps);
            Report(probe, Site(l, "mlp.unmerge"), h);
            h = nn.functional.linear(h, w[$"{b}.intermediate.dense.weight"], w[$"{b}.intermediate.dense.bias"]);
            Report(probe, Site(l, "intermediate.merge"), h);
            h = nn.functional.gelu(h);
            Report(probe, Site(l, "intermediate.unmerge"), h);
            h = nn.functional.linear(h, w[$"{b}.output.dense.weight"], w[$"{b}.output.dense.bias"]);
            Report(probe, Site(l, "output.merge"), h);
            x = x + h;
        }
        x = nn.functional.layer_norm(x, [d], w["vit.layernorm.weight"], w["vit.layernorm.bias"], eps);
        var features = x.select(1, 0);
        Report(probe, PostUnmerge, features);
        return features;
    }

    /// <summary>
    /// Patch embedding, CLS token and positional embedding: images → tokens [B, T, d]. The patch convolution
    /// runs as a linear map on (channel, row, col)-flattened patches (spec §13.10): the same numbers as a
    /// stride-p convolution, without LibTorch's NNPACK path (which warns on some CPUs).
    /// </summary>
    public static Tensor Embed(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor images, Probe? probe = null)
    {
        var patchRows = nn.functional.unfold(images, c.PatchSize, stride: c.PatchSize).transpose(1, 2);   // [B, P, C·p·p]
        probe?.Invoke("input", patchRows.reshape(-1, patchRows.shape[2]));
        var kernel = w[$"{Embeddings}.patch_embeddings.projection.weight"];
        var patches = nn.functional.linear(patchRows, kernel.reshape(kernel.shape[0], -1), w[$"{Embeddings}.patch_embeddings.projection.bias"]);
        var cls = w[$"{Embeddings}.cls_token"].expand(images.shape[0], 1, c.HiddenSize);
        return torch.cat([cls, patches], 1) + w[$"{Embeddings}.position_embeddings"];
    }

    static void Report(Probe? probe, string point, Tensor value) => probe?.Invoke(point, value.reshape(-1, value.shape[^1]));

    static Tensor Attention(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, string block, Tensor h, int layer, Probe? probe)
    {
        long batch = h.shape[0], tokens = h.shape[1], heads = c.NumAttentionHeads, hd = c.HiddenSize / heads;
        Tensor Project(string name)
        {
            var projected = nn.functional.linear(h, w[$"{block}.attention.attention.{name}.weight"], w[$"{block}.attention.attention.{name}.bias"]);
            Report(probe, Site(layer, $"{name}.merge"), projected);
            return projected.view(batch, tokens, heads, hd).transpose(1, 2);
        }
        var attended = nn.functional.scaled_dot_product_attention(Project("query"), Project("key"), Project("value"));
        var merged = attended.transpose(1, 2).reshape(batch, tokens, c.HiddenSize);
        Report(probe, Site(layer, "attention_output.unmerge"), merged);
        return nn.functional.linear(merged, w[$"{block}.attention.output.dense.weight"], w[$"{block}.attention.output.dense.bias"]);
    }

    const string EmbedMerge = "embeddings.merge";
    const string PostUnmerge = "layernorm.unmerge";
    static string Site(int layer, string name) => $"layer{layer}.{name}";

    /// <summary>
    /// The ViT site table (spec §2.8, adapted to Hugging Face's ViT, which has no output projection):
    /// the residual stream is one merged space written by the embedding, attention-output and MLP-output
    /// merges and read (after merged LayerNorms) by the attention, MLP and final unmerges. Q, K and V share
    /// one unmerge and have three merges; values use their own merge (spec §13.3), whose space the
    /// attention-output unmerge reads. GELU acts in the merged MLP-hidden space. The final unmerge feeds
    /// the heads (it plays the role of the paper's U^task).
    /// </summary>
    public SiteTable Sites(IReadOnlyList<ModelConfig> sources, ModelConfig merged)
    {
        foreach (var s in sources)
            if (s.NumHiddenLayers != merged.NumHiddenLayers || s.PatchSize != merged.PatchSize || s.ImageSize != merged.ImageSize
                || s.NumChannels != merged.NumChannels || s.NumAttentionHeads != merged.NumAttentionHeads)
                throw new FsMergeException($"ViT sources must share depth, heads, patch and image size: got depth {s.NumHiddenLayers}, heads {s.NumAttentionHeads}, patch {s.PatchSize}, image {s.ImageSize}x{s.NumChannels}; expected depth {merged.NumHiddenLayers}, heads {merged.NumAttentionHeads}, patch {merged.PatchSize}, image {merged.ImageSize}x{merged.NumChannels}");
        var d = sources.Select(s => (long)s.HiddenSize).ToArray();
        var dm = sources.Select(s => (long)s.IntermediateSize).ToArray();
        var t = new SiteTableBuilder();
        t.Site(EmbedMerge, SiteKind.Merge, "residual", d, merged.HiddenSize);
        t.Linear($"{Embeddings}.patch_embeddings.projection", EmbedMerge, null);
        t.Vector($"{Embeddings}.cls_token", EmbedMerge);
        t.Vector($"{Embeddings}.position_embeddings", EmbedMerge);
        for (int l = 0; l < merged.NumHiddenLayers; l++)
        {
            t.Norm($"{Block(l)}.layernorm_before", EmbedMerge);   // pre-LN: before attention and before the MLP
            t.Norm($"{Block(l)}.layernorm_after", EmbedMerge);
            t.EncoderLayer($"layer{l}", Block(l), "attention.attention", d, merged.HiddenSize, dm, merged.IntermediateSize, merged.NumAttentionHeads);
        }
        t.Norm("vit.layernorm", EmbedMerge);
        t.Site(PostUnmerge, SiteKind.Unmerge, "residual", d, merged.HiddenSize);
        return t.Build(PostUnmerge);
    }
}
