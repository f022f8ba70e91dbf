using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// Pre-LayerNorm Vision Transformer with Hugging Face ViTModel weight names: a patch convolution,
/// a CLS token, learned positional embeddings, L encoder blocks (multi-head attention, GELU MLP),
/// and a final LayerNorm. The feature read by the heads is the final-LayerNorm CLS token, as in
/// ViTForImageClassification.
/// </summary>
public sealed class Vit : IArchitecture
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

    public Tensor Features(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor images)
    {
        long batch = images.shape[0], d = c.HiddenSize;
        var eps = c.LayerNormEps;
        var patches = nn.functional.conv2d(images, w[$"{Embeddings}.patch_embeddings.projection.weight"],
            w[$"{Embeddings}.patch_embeddings.projection.bias"], strides: [c.PatchSize, c.PatchSize]);
        var x = patches.flatten(2).transpose(1, 2);                                   // [B, P, d]
        var cls = w[$"{Embeddings}.cls_token"].expand(batch, 1, d);
        x = torch.cat([cls, x], 1) + w[$"{Embeddings}.position_embeddings"];         // [B, T, d]
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var b = Block(l);
            var h = nn.functional.layer_norm(x, [d], w[$"{b}.layernorm_before.weight"], w[$"{b}.layernorm_before.bias"], eps);
            x = x + Attention(c, w, b, h);
            h = nn.functional.layer_norm(x, [d], w[$"{b}.layernorm_after.weight"], w[$"{b}.layernorm_after.bias"], eps);
            h = nn.functional.gelu(nn.functional.linear(h, w[$"{b}.intermediate.dense.weight"], w[$"{b}.intermediate.dense.bias"]));
            x = x + nn.functional.linear(h, w[$"{b}.output.dense.weight"], w[$"{b}.output.dense.bias"]);
        }
        x = nn.functional.layer_norm(x, [d], w["vit.layernorm.weight"], w["vit.layernorm.bias"], eps);
        return x.select(1, 0);
    }

    static Tensor Attention(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, string block, Tensor h)
    {
        long batch = h.shape[0], tokens = h.shape[1], heads = c.NumAttentionHeads, hd = c.HiddenSize / heads;
        Tensor Project(string name) =>
            nn.functional.linear(h, w[$"{block}.attention.attention.{name}.weight"], w[$"{block}.attention.attention.{name}.bias"])
                .view(batch, tokens, heads, hd).transpose(1, 2);
        var attended = nn.functional.scaled_dot_product_attention(Project("query"), Project("key"), Project("value"));
        var merged = attended.transpose(1, 2).reshape(batch, tokens, c.HiddenSize);
        return nn.functional.linear(merged, w[$"{block}.attention.output.dense.weight"], w[$"{block}.attention.output.dense.bias"]);
    }
}
