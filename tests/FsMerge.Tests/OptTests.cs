using FsMerge.Data;
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

    /// <summary>A tiny source of the architecture and inputs for it: images in [0, 1] or token ids with padding.</summary>
    internal static (Model Model, Func<long, Tensor> Inputs) Source(string arch) => arch == "vit"
        ? (Model.Create(Config("t0"), 31, CPU), seed => torch.rand(32, 1, 28, 28, generator: new Generator((ulong)seed)))
        : (Model.Create(BertOracleTests.Config("t0"), 31, CPU), seed => torch.cat(Enumerable.Range(0, 8).Select(i => BertOracleTests.Ids(seed * 10 + i)).ToArray(), 0));

    /// <summary>
    /// The same model with its neurons permuted in every space (within each head for attention, queries and
    /// keys alike), made by folding the model alone through permutation M/U: it computes the same function.
    /// </summary>
    internal static Model Permuted(Model a, int seed)
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
    [InlineData("vit", "0", 1e-4)]
    [InlineData("vit", "0.02", 1e-3)]
    [InlineData("bert", "0", 1e-4)]
    [InlineData("vit", "0", 1e-4, "window-8")]
    public void Opt_undoes_a_permutation_within_heads(string arch, string epsilon, double tolerance, string filter = "full")
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = Source(arch);
        var b = Permuted(a, 7);
        var x = inputs(5);
        var expected = a.Logits(a.Features(x), 0);
        Assert.True(torch.allclose(b.Logits(b.Features(x), 0), expected, atol: 1e-5), "the permuted model computes the same function");
        var query = a.Weights.Keys.First(k => k.EndsWith("layer.0.attention.attention.query.weight") || k.EndsWith("layer.0.attention.self.query.weight"));
        Assert.False(torch.allclose(b.Weights[query], a.Weights[query]));

        var data = Enumerable.Range(0, 2).Select(i => new ImageSet(inputs(40 + i), new long[inputs(40 + i).shape[0]], ["a", "b", "c"])).ToList();
        var target = a.Config with { Heads = [.. a.Config.Heads, .. b.Config.Heads] };
        var method = new OptMerge();
        var outcome = method.Merge(new MergeInputs { Sources = [a, b], Data = data, Target = target, Device = CPU },
            new MethodSettings(method, new Dictionary<string, string> { ["epsilon"] = epsilon, ["filter"] = filter }));
        Assert.Equal(filter, (string)outcome.Details["token_filter"]!);
        var merged = outcome.Merged!;
        var features = merged.Features(x);
        Assert.True(torch.allclose(merged.Logits(features, 0), expected, atol: tolerance));
        Assert.True(torch.allclose(merged.Logits(features, 1), expected, atol: tolerance));
    }

    /// <summary>BERT trims padding, so its token rows do not line up per input: only the full sequence is defined.</summary>
    [Theory]
    [InlineData("bert", "cls", "no fixed token count")]
    [InlineData("vit", "window-0", "is not one of")]
    [InlineData("vit", "window-99", "keeps more tokens than the 17")]
    public void Opt_refuses_a_token_filter_it_cannot_apply(string arch, string filter, string message)
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = Source(arch);
        var b = Permuted(a, 7);
        var data = Enumerable.Range(0, 2).Select(i => new ImageSet(inputs(8 + i), new long[inputs(8 + i).shape[0]], ["a", "b", "c"])).ToList();
        var method = new OptMerge();
        var error = Assert.Throws<FsMergeException>(() => method.Merge(
            new MergeInputs { Sources = [a, b], Data = data, Target = a.Config with { Heads = [.. a.Config.Heads, .. b.Config.Heads] }, Device = CPU },
            new MethodSettings(method, new Dictionary<string, string> { ["filter"] = filter })));
        Assert.Contains(message, error.Message);
    }
}
