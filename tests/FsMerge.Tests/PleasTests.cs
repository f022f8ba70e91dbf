using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>PLeaS (partial permutation matching, then per-layer least squares) on tiny random models.</summary>
[Collection("torch")]
public class PleasTests
{
    static List<Model> Sources(int n, int[] hidden) =>
        Enumerable.Range(0, n).Select(i => Model.Create(MergeTests.Mlp(hidden, $"t{i}"), 40 + i, CPU)).ToList();

    static Model Merge(MergeInputs inputs, params (string, string)[] options) =>
        new PLeaSMerge().Merge(inputs, MergeTests.Settings(new PLeaSMerge(), options)).Merged!;

    static Tensor MergeImages(MergeInputs inputs) => torch.cat(inputs.Data.Select(d => d.Images).ToArray(), 0);

    static void AssertLogits(Model merged, int head, Model source, Tensor x, double tolerance) =>
        Assert.True(torch.allclose(merged.Logits(merged.Features(x), head), source.Logits(source.Features(x), 0), atol: tolerance),
            $"head {head}: max difference {(merged.Logits(merged.Features(x), head) - source.Logits(source.Features(x), 0)).abs().max().item<float>()}");

    [Theory]
    [InlineData("permutation")]
    [InlineData("zipit")]
    public void A_model_merged_with_itself_reproduces_its_logits_on_the_merge_data(string matching)
    {
        using var scope = torch.NewDisposeScope();
        var a = Sources(1, [12, 10])[0];
        var inputs = MergeTests.Inputs([a, a], perTask: 64);
        var merged = Merge(inputs, ("matching", matching));
        AssertLogits(merged, 0, a, MergeImages(inputs), 1e-4);
        AssertLogits(merged, 1, a, MergeImages(inputs), 1e-4);
    }

    /// <summary>At the full width (the sum of the widths) nothing is matched: each task's head reads its own model's units.</summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void At_full_width_every_source_is_reproduced(int n)
    {
        using var scope = torch.NewDisposeScope();
        var sources = Sources(n, [12, 10]);
        var inputs = MergeTests.Inputs(sources, perTask: 32, width: [12 * n, 10 * n]);
        var outcome = new PLeaSMerge().Merge(inputs, MergeTests.Settings(new PLeaSMerge()));
        Assert.Equal(0, (long)outcome.Details["matched_units"]!["hidden0"]!);
        var x = torch.rand(16, 1, 28, 28, generator: new Generator(9));   // not merge data: the merged model is exact here
        for (int t = 0; t < n; t++) AssertLogits(outcome.Merged!, t, sources[t], x, 1e-4);
    }

    [Fact]
    public void Three_models_at_an_intermediate_width_keep_the_worst_aligned_units_apart()
    {
        using var scope = torch.NewDisposeScope();
        var sources = Sources(3, [12, 10]);
        // Width 20 of 3×12 = 36: k matched + 3(12 − k) ≤ 20 → k = 8 matched, 4 of each model apart.
        var inputs = MergeTests.Inputs(sources, perTask: 32, width: [20, 10]);
        var outcome = new PLeaSMerge().Merge(inputs, MergeTests.Settings(new PLeaSMerge()));
        Assert.Equal(8, (long)outcome.Details["matched_units"]!["hidden0"]!);
        Assert.Equal(10, (long)outcome.Details["matched_units"]!["hidden1"]!);
        var merged = outcome.Merged!;
        Assert.Equal([20L, 784L], merged.Weights["layers.0.weight"].shape);
        var logits = Enumerable.Range(0, 3).Select(t => merged.Logits(merged.Features(MergeImages(inputs)), t)).ToList();
        Assert.All(logits, l => Assert.True(l.isfinite().all().item<bool>()));
    }

    /// <summary>
    /// Least squares fits the matched targets of the second layer better than the matched (step-1) weights it starts
    /// from. (The first layer reads the shared image, so there the matched weights are exact already.) Inputs and
    /// targets are computed here from the matching's M/U, independently of the method's fit.
    /// </summary>
    [Fact]
    public void The_least_squares_step_fits_the_second_layer_targets_better_than_the_matched_weights()
    {
        using var scope = torch.NewDisposeScope();
        var sources = Sources(2, [12, 10]);
        var inputs = MergeTests.Inputs(sources, perTask: 64);
        var (matrices, _) = PLeaSMerge.PartialMatching(inputs);
        Tensor Block(string site, int i) => matrices[site].shape[0] == 24 ? matrices[site].narrow(0, 12 * i, 12) : matrices[site].narrow(1, 12 * i, 12);
        Tensor W(int i, string name) => sources[i].Weights[name];
        var x = MergeImages(inputs).reshape(128, -1);
        string m0 = Models.Mlp.MergeSite(0), u0 = Models.Mlp.UnmergeSite(0), m1 = Models.Mlp.MergeSite(1);
        // The merged model's input to layer 1: the matched first layer (exact, see above), then ReLU.
        var merged = nn.functional.relu(Enumerable.Range(0, 2).Select(i => nn.functional.linear(x, W(i, "layers.0.weight"), W(i, "layers.0.bias")).matmul(Block(m0, i))).Aggregate((a, b) => a + b));
        var target = Enumerable.Range(0, 2).Select(i => nn.functional.relu(nn.functional.linear(x, W(i, "layers.0.weight"), W(i, "layers.0.bias")))
            .matmul(W(i, "layers.1.weight").t()).matmul(matrices[m1].narrow(0, 10 * i, 10))).Aggregate((a, b) => a + b);
        var matched = Enumerable.Range(0, 2).Select(i => matrices[m1].narrow(0, 10 * i, 10).t().matmul(W(i, "layers.1.weight")).matmul(Block(u0, i).t())).Aggregate((a, b) => a + b);
        var fitted = Merge(inputs, ("ridge", "0.01")).Weights["layers.1.weight"];
        double before = (merged.matmul(matched.t()) - target).pow(2).sum().item<float>();
        double after = (merged.matmul(fitted.t()) - target).pow(2).sum().item<float>();
        Assert.True(after < 0.5 * before, $"fit error {after} after least squares vs {before} before");
    }

    [Fact]
    public void A_function_preserving_permutation_of_an_mlp_is_undone()
    {
        using var scope = torch.NewDisposeScope();
        var a = Sources(1, [12, 10])[0];
        var b = OptTests.Permuted(a, 7);
        var x = torch.rand(8, 1, 28, 28, generator: new Generator(4));
        Assert.True(torch.allclose(b.Logits(b.Features(x), 0), a.Logits(a.Features(x), 0), atol: 1e-5));
        // Enough merge data that no neuron is dead on all of it (dead neurons cannot be told apart by activations).
        var merged = Merge(MergeTests.Inputs([a, b], perTask: 128));
        AssertLogits(merged, 0, a, x, 1e-4);
        AssertLogits(merged, 1, a, x, 1e-4);
    }

    [Theory]
    [InlineData("vit")]
    [InlineData("bert")]
    public void A_function_preserving_permutation_of_a_transformer_is_undone_within_heads(string arch)
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = OptTests.Source(arch);
        var b = OptTests.Permuted(a, 7);
        var x = inputs(5);
        var data = Enumerable.Range(0, 2).Select(i => new ImageSet(inputs(40 + i), new long[inputs(40 + i).shape[0]], ["a", "b", "c"])).ToList();
        var target = a.Config with { Heads = [.. a.Config.Heads, .. b.Config.Heads] };
        var merged = Merge(new MergeInputs { Sources = [a, b], Data = data, Target = target, Device = CPU });
        AssertLogits(merged, 0, a, x, 1e-3);
        AssertLogits(merged, 1, a, x, 1e-3);
    }

    [Fact]
    public void A_merged_width_outside_the_budget_is_refused_with_the_space_named()
    {
        using var scope = torch.NewDisposeScope();
        var sources = Sources(2, [12, 10]);
        var error = Assert.Throws<FsMergeException>(() => Merge(MergeTests.Inputs(sources, width: [30, 10])));
        Assert.Contains("space hidden0 is 12 wide in each model but 30 wide merged", error.Message);
    }
}
