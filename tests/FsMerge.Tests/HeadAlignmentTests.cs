using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// Head-aware alignment (Re-Basin, ZipIt, FS-Merge's Re-Basin init) on tiny ViTs and BERTs: merging a source with
/// copies of itself whose heads, dimensions within heads and other neurons were moved (or, within heads, rotated)
/// must give back the source's function.
/// </summary>
[Collection("torch")]
public class HeadAlignmentTests
{
    static ModelConfig VitConfig(string task) => new()
    {
        Architecture = "vit", ImageSize = 28, NumChannels = 1, PatchSize = 7, HiddenSize = 16,
        NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 32,
        Heads = [new HeadInfo(task, ["a", "b", "c"])],
    };

    /// <summary>
    /// A source off the near-trivial init (LayerNorms and biases moved, so carrying them matters) and its inputs:
    /// images in [0, 1], or token ids with padding.
    /// </summary>
    static (Model Model, Func<long, Tensor> Inputs) Source(string arch)
    {
        static bool Shifted(string name) => name.Contains("layernorm", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".bias");
        return arch == "vit"
            ? (OracleCase.Rough(VitConfig("t0"), 0, 3, ScalarType.Float32, Shifted), seed => torch.rand(32, 1, 28, 28, generator: new Generator((ulong)seed)))
            : (OracleCase.Rough(BertOracleTests.Config("t0"), 0, 3, ScalarType.Float32, Shifted),
                seed => torch.cat(Enumerable.Range(0, 8).Select(i => BertOracleTests.Ids(seed * 10 + i)).ToArray(), 0));
    }

    static Tensor PermutationMatrix(long width, Random random)
    {
        var p = torch.zeros(width, width, ScalarType.Float64);
        var order = Enumerable.Range(0, (int)width).OrderBy(_ => random.Next()).ToArray();
        for (int a = 0; a < width; a++) p[a, order[a]] = 1.0;
        return p;
    }

    /// <summary>
    /// A copy of <paramref name="a"/> computing the same function: in every attention layer the heads permuted
    /// (queries, keys and values alike) and each head's dimensions permuted, or with <paramref name="rotate"/> rotated
    /// by a random orthogonal matrix (one for queries with keys, one for values); every other space permuted.
    /// </summary>
    static Model Transformed(Model a, int seed, bool rotate)
    {
        var table = a.Config.Arch.Sites([a.Config], a.Config);
        var random = new Random(seed);
        var generator = new Generator((ulong)seed);
        var maps = new Dictionary<string, Tensor>();
        foreach (var layer in table.HeadAligned.GroupBy(g => g.Layer))
        {
            int heads = layer.First().Heads;
            var headOrder = Enumerable.Range(0, heads).OrderBy(_ => random.Next()).ToArray();
            foreach (var group in layer)
            {
                long width = table.Sites.First(s => s.Space == group.Spaces[0]).MergedWidth, headWidth = width / heads;
                var map = torch.zeros(width, width, ScalarType.Float64);
                for (int h = 0; h < heads; h++)
                {
                    var block = rotate
                        ? torch.linalg.qr(torch.randn(headWidth, headWidth, ScalarType.Float64, generator: generator)).Q
                        : PermutationMatrix(headWidth, random);
                    map.narrow(0, h * headWidth, headWidth).narrow(1, headOrder[h] * headWidth, headWidth).copy_(block);
                }
                foreach (var space in group.Spaces) maps[space] = map;
            }
        }
        foreach (var space in table.Spaces.Where(s => !maps.ContainsKey(s.Key)))
            maps[space.Key] = PermutationMatrix(space.First().MergedWidth, random);
        return HeadAlignment.Aligned(a, maps);
    }

    static MergeOutcome Merge(IMergeMethod method, List<Model> sources, Func<long, Tensor> inputs, params (string, string)[] options)
    {
        var data = sources.Select((_, i) => inputs(40 + i)).Select(x => new ImageSet(x, new long[x.shape[0]], ["a", "b", "c"])).ToList();
        var target = sources[0].Config with { Heads = sources.SelectMany(s => s.Config.Heads).ToList() };
        return method.Merge(new MergeInputs { Sources = sources, Data = data, Target = target, Device = CPU },
            new MethodSettings(method, options.ToDictionary(o => o.Item1, o => o.Item2)));
    }

    /// <summary>The largest difference between the source's logits and any merged head's on fresh inputs.</summary>
    static double LargestError(Model merged, Model source, Tensor x, int heads)
    {
        var expected = source.Logits(source.Features(x), 0);
        var features = merged.Features(x);
        return Enumerable.Range(0, heads).Max(h => (merged.Logits(features, h) - expected).abs().max().item<float>());
    }

    public static TheoryData<string, string, string, string, int> Cases()
    {
        var cases = new TheoryData<string, string, string, string, int>();
        foreach (var arch in new[] { "vit", "bert" })
        {
            int n = arch == "vit" ? 2 : 3, other = 5 - n;   // every case merges a pair on one architecture and a triple on the other
            cases.Add(arch, "rebasin", "activations", "permute", n);
            cases.Add(arch, "rebasin", "activations", "orthogonal", other);
            cases.Add(arch, "rebasin", "weights", "permute", other);
            cases.Add(arch, "rebasin", "weights", "orthogonal", n);
            cases.Add(arch, "zipit", "", "permute", other);
            cases.Add(arch, "zipit", "", "orthogonal", n);
            cases.Add(arch, "fs-merge", "", "permute", n);
        }
        return cases;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Head_aware_alignment_undoes_a_function_preserving_transform(string arch, string method, string matching, string align, int n)
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = Source(arch);
        bool rotate = align == "orthogonal";
        var sources = new List<Model> { a };
        for (int i = 1; i < n; i++) sources.Add(Transformed(a, 7 * i, rotate));
        var x = inputs(5);
        Assert.True(LargestError(sources[1], a, x, 1) < 1e-4, "the transformed copy computes the same function");
        var query = a.Weights.Keys.First(k => k.Contains("layer.0.attention") && k.EndsWith("query.weight"));
        Assert.False(torch.allclose(sources[1].Weights[query], a.Weights[query], atol: 1e-3), "the copy's weights moved");

        var options = new List<(string, string)>();
        if (method == "fs-merge")   // no training: the init alone must be exact, with the transformers' default diagonal + low-rank M/U
            options.AddRange([("init", "rebasin"), ("epochs", "0"), ("lr", "0.001")]);
        else options.Add(("attention-align", align));
        if (matching != "") options.Add(("matching", matching));
        var merged = Merge(MergeMethods.Get(method), sources, inputs, [.. options]).Merged!;
        Assert.True(LargestError(merged, a, x, n) < 1e-4, $"{method} {matching} {align}: merged heads differ from the source");
    }

    /// <summary>Matching spaces one by one, as in an MLP, cannot undo rotations within heads: the test above can fail.</summary>
    [Theory]
    [InlineData("vit", "rebasin")]
    [InlineData("bert", "zipit")]
    public void Head_ignoring_alignment_does_not_undo_rotated_heads(string arch, string method)
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = Source(arch);
        var sources = new List<Model> { a, Transformed(a, 7, rotate: true) };
        var options = method == "rebasin" ? new[] { ("heads", "ignore"), ("matching", "activations") } : [("heads", "ignore")];
        var merged = Merge(MergeMethods.Get(method), sources, inputs, options).Merged!;
        Assert.True(LargestError(merged, a, inputs(5), 2) > 1e-2);
    }

    /// <summary>Heads matched to model 1's need models as wide as the merge; ZipIt ignoring heads zips any widths.</summary>
    [Fact]
    public void Head_aware_zipit_refuses_attention_of_other_widths_and_ignoring_heads_merges_them()
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = Source("vit");
        var wider = Model.Create(VitConfig("t1") with { HiddenSize = 24 }, 5, CPU);
        var error = Assert.Throws<FsMergeException>(() => Merge(new ZipItMerge(), [a, wider], inputs));
        Assert.Equal("zipit with --heads aware: site layer0.query.merge has widths 16, 24 into 16; zipit with --heads aware needs equal widths", error.Message);
        var merged = Merge(new ZipItMerge(), [a, wider], inputs, ("heads", "ignore")).Merged!;
        Assert.Equal(new long[] { 16, 16 }, merged.Weights["vit.encoder.layer.0.attention.attention.query.weight"].shape);
    }

    [Fact]
    public void A_rotation_needs_head_aware_matching()
    {
        using var scope = torch.NewDisposeScope();
        var (a, inputs) = Source("vit");
        var error = Assert.Throws<FsMergeException>(() =>
            Merge(new ZipItMerge(), [a, Transformed(a, 7, rotate: false)], inputs, ("heads", "ignore"), ("attention-align", "orthogonal")));
        Assert.Equal("zipit: --attention-align orthogonal rotates within heads; it needs --heads aware", error.Message);
    }
}
