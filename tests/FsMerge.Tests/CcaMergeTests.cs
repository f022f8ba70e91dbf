using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>CCA Merge: the map of a model to itself is the identity, and function-preserving permutations are undone.</summary>
[Collection("torch")]
public class CcaMergeTests
{
    [Theory]
    [InlineData(200, 12)]   // more samples than features
    [InlineData(8, 12)]     // fewer: most directions carry no correlation
    public void Cca_of_features_with_themselves_is_the_identity(int samples, int width)
    {
        using var scope = torch.NewDisposeScope();
        var features = torch.randn(samples, width, generator: new Generator(3)) * torch.linspace(0.1, 3, width);
        features.select(1, 4).fill_(0);   // a dead unit: constant on the data
        var (map, inverse) = CcaMerge.Map(features, features, 0.1);
        var eye = torch.eye(width, dtype: ScalarType.Float64);
        Assert.True(torch.allclose(map, eye, atol: 1e-9), $"max |T - I| = {(map - eye).abs().max().item<double>()}");
        Assert.True(torch.allclose(inverse, eye, atol: 1e-9));
    }

    [Fact]
    public void Cca_maps_a_linearly_mixed_copy_back_with_its_inverse_mixing()
    {
        // Model i's features are an invertible mix of model 1's: with a negligible ridge, T is the unmixing.
        using var scope = torch.NewDisposeScope();
        var x1 = torch.randn(500, 6, generator: new Generator(5), dtype: ScalarType.Float64);
        var mix = torch.randn(6, 6, generator: new Generator(6), dtype: ScalarType.Float64) + 3 * torch.eye(6, dtype: ScalarType.Float64);
        var (map, inverse) = CcaMerge.Map(x1, x1.matmul(mix.t()), 1e-9);
        Assert.True(torch.allclose(map, torch.linalg.inv(mix), atol: 1e-5));
        Assert.True(torch.allclose(inverse, mix, atol: 1e-5));
    }

    /// <summary>The model with its LayerNorms' γ and β drawn at random, so that carrying them through the maps is tested.</summary>
    static Model WithRandomNorms(Model a)
    {
        var table = a.Config.Arch.Sites([a.Config], a.Config);
        var generator = new Generator(17);
        var weights = a.Weights.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        foreach (var entry in table.Tensors.Where(t => t.Role == TensorRole.MergedSpace))
            weights[entry.Name] = (entry.Name.EndsWith(".bias") ? 0 : 1) + 0.3f * torch.randn(weights[entry.Name].shape, generator: generator);
        return new Model(a.Config, weights);
    }

    /// <summary>A tiny source and inputs for it (<see cref="OptTests.Source"/>; for transformers with random LayerNorms).</summary>
    static (Model Model, Func<long, Tensor> Inputs) Source(string arch)
    {
        // Centered inputs: on [0, 1] images a third of this tiny MLP's second-layer units never fire, and units
        // constant on the merge data are where CCA (any data-driven matching) cannot tell a permutation apart.
        if (arch == "mlp")
            return (Model.Create(MergeTests.Mlp([12, 10], "t0"), 21, CPU), seed => torch.randn(128, 1, 28, 28, generator: new Generator((ulong)seed)));
        var (model, inputs) = OptTests.Source(arch);
        return (WithRandomNorms(model), inputs);
    }

    static MergeInputs Inputs(IReadOnlyList<Model> sources, Func<long, Tensor> inputs)
    {
        var data = sources.Select((_, i) => inputs(40 + i)).Select(x => new ImageSet(x, new long[x.shape[0]], ["a", "b", "c"])).ToList();
        var target = sources[0].Config with { Heads = sources.SelectMany(s => s.Config.Heads).ToList() };
        return new MergeInputs { Sources = sources, Data = data, Target = target, Device = CPU, Seed = 3 };
    }

    /// <summary>
    /// Model 1 merged with itself, or with permuted copies of itself (function-preserving: within heads for attention,
    /// queries and keys alike): every head of the merged model must give model 1's logits.
    /// </summary>
    [Theory]
    [InlineData("mlp", 1, false)]
    [InlineData("mlp", 2, true)]
    [InlineData("mlp", 3, true)]
    [InlineData("vit", 2, false)]
    [InlineData("vit", 2, true)]
    [InlineData("vit", 3, true)]
    [InlineData("bert", 2, true)]
    public void Cca_merges_a_model_with_permuted_copies_of_itself_into_the_model(string arch, int copies, bool permute)
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = Source(arch);
        var sources = new List<Model> { a };
        sources.AddRange(Enumerable.Range(1, copies).Select(k => permute ? OptTests.Permuted(a, 7 * k) : a));
        var x = inputs(5);
        var expected = a.Logits(a.Features(x), 0);
        if (permute)
        {
            Assert.True(torch.allclose(sources[1].Logits(sources[1].Features(x), 0), expected, atol: 1e-5), "the permuted model computes the same function");
            var first = a.Weights.Keys.First(k => k.EndsWith(".weight"));
            Assert.False(torch.allclose(sources[1].Weights[first], a.Weights[first]), "the permutation changed the weights");
        }

        var method = new CcaMerge();
        var merged = method.Merge(Inputs(sources, inputs), MergeTests.Settings(method)).Merged!;
        var features = merged.Features(x);
        for (int head = 0; head < sources.Count; head++)
        {
            var error = (merged.Logits(features, head) - expected).abs().max().item<float>();
            Assert.True(error < 1e-3, $"head {head}: max logit error {error}");
        }
    }

    [Fact]
    public void Three_different_models_merge_and_fold()
    {
        using var scope = torch.NewDisposeScope();
        var sources = Enumerable.Range(0, 3).Select(i => Model.Create(MergeTests.Mlp([12, 10], $"t{i}"), 50 + i, CPU)).ToList();
        var method = new CcaMerge();
        var outcome = method.Merge(MergeTests.Inputs(sources, perTask: 64), MergeTests.Settings(method));
        var merged = outcome.Merged!;
        Assert.Equal(3, merged.HeadCount);
        Assert.Equal("cca", (string)outcome.Details["mu"]!);
        var logits = merged.Logits(merged.Features(torch.rand(4, 1, 28, 28, generator: new Generator(9))), 2);
        Assert.True(logits.isfinite().all().item<bool>());
        Assert.False(torch.allclose(merged.Weights["layers.0.weight"], sources[0].Weights["layers.0.weight"]), "the other models moved the merge");
    }

    [Theory]
    [InlineData("mlp")]
    [InlineData("vit")]
    public void Fs_merge_with_cca_init_and_no_steps_is_the_cca_merge(string arch)
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = Source(arch);
        var b = arch == "mlp" ? Model.Create(MergeTests.Mlp([12, 10], "t1"), 22, CPU) : WithRandomNorms(Model.Create(a.Config, 32, CPU));
        var merge = Inputs([a, b], inputs);
        var cca = new CcaMerge().Merge(merge, MergeTests.Settings(new CcaMerge())).Merged!;
        var fsMerge = new FsMergeMethod();
        var started = fsMerge.Merge(merge, MergeTests.Settings(fsMerge, ("init", "cca"), ("normalize", "false"), ("epochs", "0"))).Merged!;
        foreach (var (name, value) in cca.Weights)
            Assert.True(torch.allclose(started.Weights[name], value, rtol: 1e-5, atol: 1e-6), name);

        var trained = fsMerge.Merge(merge, MergeTests.Settings(fsMerge, ("init", "cca"), ("epochs", "2"))).Merged!;
        Assert.False(torch.allclose(trained.Weights.First(kv => kv.Key.EndsWith(".weight")).Value, cca.Weights.First(kv => kv.Key.EndsWith(".weight")).Value), "training moved θ");
    }

    [Fact]
    public void Cca_init_needs_full_matrices_and_cca_needs_equal_widths()
    {
        var sources = Enumerable.Range(0, 2).Select(i => Model.Create(MergeTests.Mlp([12, 10], $"t{i}"), 50 + i, CPU)).ToList();
        var fsMerge = new FsMergeMethod();
        var error = Assert.Throws<FsMergeException>(() => fsMerge.Merge(MergeTests.Inputs(sources), MergeTests.Settings(fsMerge, ("init", "cca"), ("type", "diagonal"))));
        Assert.Equal("fs-merge: --init cca needs --type full (CCA gives dense matrices)", error.Message);
        var narrow = MergeTests.Inputs(sources, width: [8, 10]);
        error = Assert.Throws<FsMergeException>(() => new CcaMerge().Merge(narrow, MergeTests.Settings(new CcaMerge())));
        Assert.StartsWith("cca: site layer0.merge has widths 12, 12 into 8", error.Message);
    }
}
