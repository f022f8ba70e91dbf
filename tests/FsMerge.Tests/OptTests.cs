using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Opt (optimal-transport fusion) on tiny ViTs: it must undo a function-preserving permutation.</summary>
[Collection("torch")]
public class OptTests
{
    static ModelConfig Config(string task) => new()
    {
        Architecture = "vit", ImageSize = 28, NumChannels = 1, PatchSize = 7, HiddenSize = 16,
        NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 32,
        Heads = [new HeadInfo(task, ["a", "b", "c"])],
    };

    /// <summary>
    /// The same ViT with its neurons permuted in every space (within each head for attention, queries and
    /// keys alike), made by folding the model alone through permutation M/U: it computes the same function.
    /// </summary>
    static Model Permuted(Model a, int seed)
    {
        var table = a.Config.Arch.Sites([a.Config], a.Config);
        var random = new Random(seed);
        var permutations = new Dictionary<string, int[]>();
        foreach (var unit in table.HeadAligned)
        {
            long width = table.Sites.First(s => s.Space == unit.Spaces[0]).MergedWidth, headWidth = width / unit.Heads;
            var perm = Enumerable.Range(0, unit.Heads).SelectMany(h =>
                Enumerable.Range(0, (int)headWidth).OrderBy(_ => random.Next()).Select(j => h * (int)headWidth + j)).ToArray();
            foreach (var space in unit.Spaces) permutations[space] = perm;
        }
        foreach (var space in table.Spaces.Where(s => !permutations.ContainsKey(s.Key)))
            permutations[space.Key] = Enumerable.Range(0, (int)space.First().MergedWidth).OrderBy(_ => random.Next()).ToArray();
        var matrices = table.Sites.ToDictionary(s => s.Name, s =>
        {
            var perm = permutations[s.Space];
            var p = torch.zeros(perm.Length, perm.Length);
            for (int q = 0; q < perm.Length; q++) p[perm[q], q] = 1f;   // model neuron perm[q] sits at index q
            return s.Kind == SiteKind.Merge ? p : p.t();
        });
        var folded = Folding.Fold(table.WithMergedSpaceAsVectors(), [a.Weights], [1], matrices, new Dictionary<string, Tensor>());
        return new Model(a.Config, folded.ToDictionary(kv => kv.Key, kv => kv.Value.clone()));
    }

    [Theory]
    [InlineData("0", 1e-4)]
    [InlineData("0.02", 1e-3)]
    public void Opt_undoes_a_permutation_within_heads(string epsilon, double tolerance)
    {
        using var scope = torch.NewDisposeScope();
        var a = Model.Create(Config("t0"), 31, CPU);
        var b = Permuted(a, 7);
        var x = torch.rand(6, 1, 28, 28, generator: new Generator(5));
        var expected = a.Logits(a.Features(x), 0);
        Assert.True(torch.allclose(b.Logits(b.Features(x), 0), expected, atol: 1e-5), "the permuted model computes the same function");
        Assert.False(torch.allclose(b.Weights["vit.encoder.layer.0.attention.attention.query.weight"], a.Weights["vit.encoder.layer.0.attention.attention.query.weight"]));

        var method = new OptMerge();
        var merged = method.Merge(MergeTests.Inputs([a, b], perTask: 32), new MethodSettings(method, new Dictionary<string, string> { ["epsilon"] = epsilon })).Merged!;
        var features = merged.Features(x);
        Assert.True(torch.allclose(merged.Logits(features, 0), expected, atol: tolerance));
        Assert.True(torch.allclose(merged.Logits(features, 1), expected, atol: tolerance));
    }
}
