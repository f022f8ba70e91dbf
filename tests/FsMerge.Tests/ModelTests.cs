using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

[Collection("torch")]
public class ModelTests
{
    internal static ModelConfig TinyVit(int heads = 1) => new()
    {
        Architecture = "vit", ImageSize = 28, NumChannels = 1, PatchSize = 7, HiddenSize = 16,
        NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 32,
        Heads = Enumerable.Range(0, heads).Select(t => new HeadInfo($"mnist:{t}-{t + 1}", ["a", "b"])).ToList(),
    };

    internal static ModelConfig TinyMlp(int heads = 1) => new()
    {
        Architecture = "mlp", InputSize = 784, HiddenSizes = [16, 8],
        Heads = Enumerable.Range(0, heads).Select(t => new HeadInfo($"task{t}", ["a", "b", "c"])).ToList(),
    };

    [Fact]
    public void Mlp_forward_gives_features_and_logits_of_the_right_shapes()
    {
        using var model = Model.Create(TinyMlp(heads: 2), seed: 3, CPU);
        var x = torch.rand(5, 1, 28, 28);
        var f = model.Features(x);
        Assert.Equal(new long[] { 5, 8 }, f.shape);
        Assert.Equal(new long[] { 5, 3 }, model.Logits(f, 1).shape);
        Assert.True(f.ge(0).all().item<bool>()); // ReLU features
    }

    [Fact]
    public void Vit_uses_hugging_face_names_and_shapes()
    {
        var config = TinyVit();
        var names = Model.ExpectedWeights(config).ToDictionary(s => s.Name, s => s.Shape);
        Assert.Equal(new long[] { 16, 1, 7, 7 }, names["vit.embeddings.patch_embeddings.projection.weight"]);
        Assert.Equal(new long[] { 1, 17, 16 }, names["vit.embeddings.position_embeddings"]);
        Assert.Equal(new long[] { 1, 1, 16 }, names["vit.embeddings.cls_token"]);
        Assert.Equal(new long[] { 16, 16 }, names["vit.encoder.layer.1.attention.attention.value.weight"]);
        Assert.Equal(new long[] { 32, 16 }, names["vit.encoder.layer.0.intermediate.dense.weight"]);
        Assert.Equal(new long[] { 16, 32 }, names["vit.encoder.layer.0.output.dense.weight"]);
        Assert.Equal(new long[] { 16 }, names["vit.layernorm.bias"]);
        Assert.Equal(new long[] { 2, 16 }, names["classifier.weight"]);
        // 4 embedding tensors + 16 per block + final LayerNorm (2) + head (2)
        Assert.Equal(4 + 16 * 2 + 2 + 2, names.Count);
    }

    [Fact]
    public void Vit_forward_shapes_and_attention_is_a_function_of_all_tokens()
    {
        using var model = Model.Create(TinyVit(), seed: 4, CPU);
        var x = torch.rand(3, 1, 28, 28, generator: new Generator(9));
        var f = model.Features(x);
        Assert.Equal(new long[] { 3, 16 }, f.shape);
        Assert.Equal(new long[] { 3, 2 }, model.Logits(f, 0).shape);
        // Changing only the bottom-right patch changes the CLS feature: attention mixes tokens.
        var y = x.clone();
        y[.., .., 21..28, 21..28] = torch.rand(3, 1, 7, 7);
        Assert.False(torch.allclose(f, model.Features(y)));
    }

    [Fact]
    public void Same_seed_gives_identical_initial_weights_and_different_seeds_differ()
    {
        using var a = Model.Create(TinyVit(), 7, CPU);
        using var b = Model.Create(TinyVit(), 7, CPU);
        using var c = Model.Create(TinyVit(), 8, CPU);
        foreach (var name in a.Weights.Keys) Assert.True(a.Weights[name].Equals(b.Weights[name]), name);
        Assert.False(a.Weights["vit.encoder.layer.0.attention.attention.query.weight"]
            .Equals(c.Weights["vit.encoder.layer.0.attention.attention.query.weight"]));
    }

    [Fact]
    public void Config_json_round_trips_with_hugging_face_fields()
    {
        var config = TinyVit(heads: 2);
        var json = config.ToJson();
        Assert.Equal("vit", (string?)json["model_type"]);
        Assert.Equal(16, (int?)json["hidden_size"]);
        var back = ModelConfig.FromJson(json, "memory");
        Assert.Equal(config.HiddenSize, back.HiddenSize);
        Assert.Equal(config.Heads.Select(h => h.Task), back.Heads.Select(h => h.Task));
        Assert.Equal(config.Heads[1].Labels, back.Heads[1].Labels);

        var single = TinyMlp().ToJson();
        Assert.Equal("b", (string?)single["id2label"]!["1"]);
        Assert.Equal(new[] { 16, 8 }, ModelConfig.FromJson(single, "memory").HiddenSizes);
    }

    [Fact]
    public void Config_errors_name_the_field()
    {
        var json = TinyVit().ToJson();
        json.Remove("patch_size");
        var e = Assert.Throws<FsMergeException>(() => ModelConfig.FromJson(json, "x/config.json"));
        Assert.Contains("x/config.json", e.Message);
        Assert.Contains("patch_size", e.Message);
        json["model_type"] = "gpt2";
        Assert.Contains("model_type 'gpt2'", Assert.Throws<FsMergeException>(() => ModelConfig.FromJson(json, "c")).Message);
    }

    [Fact]
    public void Save_and_load_round_trip_and_bad_weights_are_rejected()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"fsmerge-model-{Guid.NewGuid():N}");
        try
        {
            using var model = Model.Create(TinyVit(), 5, CPU);
            model.Save(dir);
            using (var loaded = Model.Load(dir, CPU))
                foreach (var (name, w) in model.Weights) Assert.True(w.Equals(loaded.Weights[name]), name);

            model.Weights["vit.layernorm.weight"][0] = float.NaN;
            model.Save(dir);
            var e = Assert.Throws<FsMergeException>(() => Model.Load(dir, CPU));
            Assert.Contains("vit.layernorm.weight", e.Message);
            Assert.Contains("NaN", e.Message);

            using var other = Model.Create(TinyVit() with { HiddenSize = 8, IntermediateSize = 16 }, 5, CPU);
            other.Save(dir + "-small");
            File.Copy(Path.Combine(dir, Model.ConfigFile), Path.Combine(dir + "-small", Model.ConfigFile), overwrite: true);
            e = Assert.Throws<FsMergeException>(() => Model.Load(dir + "-small", CPU));
            Assert.Contains("expected [", e.Message);
        }
        finally
        {
            foreach (var d in new[] { dir, dir + "-small" }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }
}
