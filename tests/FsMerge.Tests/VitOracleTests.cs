using FsMerge.Merging;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// An explicit ViT SuperNet (spec §5, Hugging Face variant: patch bias, no LN_pre, no output projection,
/// the final unmerge is the head input), written here independently of <see cref="Vit.Features"/> and
/// <see cref="Folding"/>, as an oracle for the fold: SuperNet(x) == Features(Fold(θ))(x) · U_headinput for
/// every θ (spec §5.5, Appendix B items 1-4), and the gradients in θ agree (spec §14).
/// </summary>
[Collection("torch")]
public class VitOracleTests
{
    readonly ITestOutputHelper output;
    public VitOracleTests(ITestOutputHelper output) => this.output = output;

    const int Batch = 4;

    static ModelConfig Config(string task) => new()
    {
        Architecture = "vit", ImageSize = 28, NumChannels = 1, PatchSize = 7, HiddenSize = 16,
        NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 32,
        Heads = [new HeadInfo(task, ["a", "b", "c"])],
    };

    // ------------------------------------------------------------------------------------------------
    // The oracle
    // ------------------------------------------------------------------------------------------------

    static readonly string[] FactorKinds = ["dense", "diag", "left", "right"];

    /// <summary>x̄ = Σ_i x_i·M_i, applied structurally: Σ_i x_i·M^dense_i + Σ_i x_i ⊙ m_i + (x_cat·A)·B (spec §2.1, §2.3).</summary>
    internal static Tensor Merge(IReadOnlyList<Tensor> xs, Dictionary<string, Tensor> f)
    {
        Assert.All(f.Keys, k => Assert.Contains(k, FactorKinds));
        long e = xs[0].shape[^1];
        Tensor? y = null;
        void Add(Tensor t) => y = y is null ? t : y + t;
        if (f.TryGetValue("dense", out var dense))
            for (int i = 0; i < xs.Count; i++) Add(xs[i].matmul(dense.narrow(0, i * e, e)));
        if (f.TryGetValue("diag", out var diag))
            for (int i = 0; i < xs.Count; i++) Add(xs[i] * diag.narrow(0, i * e, e));
        if (f.TryGetValue("left", out var left))
        {
            Tensor? projected = null;
            for (int i = 0; i < xs.Count; i++)
            {
                var t = xs[i].matmul(left.narrow(0, i * e, e));
                projected = projected is null ? t : projected + t;
            }
            Add(projected!.matmul(f["right"]));
        }
        return y!;
    }

    /// <summary>x̂_i = x̄·U_i for i = 1..n: x̄·U^dense_i + x̄ ⊙ u_i + (x̄·C)·G_i.</summary>
    internal static List<Tensor> Unmerge(Tensor x, Dictionary<string, Tensor> f, int n)
    {
        Assert.All(f.Keys, k => Assert.Contains(k, FactorKinds));
        long stacked = f.TryGetValue("dense", out var dm) ? dm.shape[1] : f.TryGetValue("diag", out var dg) ? dg.shape[0] : f["right"].shape[1];
        long e = stacked / n;
        Tensor? lowRank = f.TryGetValue("left", out var left) ? x.matmul(left) : null;
        var parts = new List<Tensor>();
        for (int i = 0; i < n; i++)
        {
            Tensor? y = null;
            void Add(Tensor t) => y = y is null ? t : y + t;
            if (f.TryGetValue("dense", out var dense)) Add(x.matmul(dense.narrow(1, i * e, e)));
            if (f.TryGetValue("diag", out var diag)) Add(x * diag.narrow(0, i * e, e));
            if (lowRank is not null) Add(lowRank.matmul(f["right"].narrow(1, i * e, e)));
            parts.Add(y!);
        }
        return parts;
    }

    internal static Tensor LayerNorm(Tensor x, Tensor gamma, Tensor beta, double eps)
    {
        var centered = x - x.mean([-1], keepdim: true);
        var variance = (centered * centered).mean([-1], keepdim: true);
        return centered / (variance + eps).sqrt() * gamma + beta;
    }

    /// <summary>Exact GELU, x·Φ(x).</summary>
    internal static Tensor Gelu(Tensor x) => x * 0.5 * (1 + torch.erf(x / Math.Sqrt(2)));

    internal static Tensor Softmax(Tensor s)
    {
        var e = (s - s.amax([-1], keepdim: true)).exp();
        return e / e.sum([-1], keepdim: true);
    }

    /// <summary>Merged-space attention: head j = contiguous columns j·hd … (j+1)·hd−1 of q̄, k̄, v̄; no mask.</summary>
    static Tensor MultiHead(Tensor q, Tensor k, Tensor v, int heads, Diagnostics? diagnostics)
    {
        long hd = q.shape[^1] / heads;
        var outputs = new Tensor[heads];
        for (int j = 0; j < heads; j++)
        {
            var qj = q.narrow(-1, j * hd, hd);
            var kj = k.narrow(-1, j * hd, hd);
            var vj = v.narrow(-1, j * hd, hd);
            var scores = qj.matmul(kj.transpose(-1, -2)) / Math.Sqrt(hd);   // [B, T, T], softmax over keys
            diagnostics?.ScoreStd.Add(scores.std(-1).mean().ToDouble());
            outputs[j] = Softmax(scores).matmul(vj);
        }
        return torch.cat(outputs, -1);
    }

    sealed class Diagnostics
    {
        public List<double> ScoreStd { get; } = [];
        public List<(double Negative, double AbsMean)> GeluInput { get; } = [];
    }

    /// <summary>
    /// The SuperNet: per-model frozen weights; merged residual stream and LayerNorms; per-model linear layers
    /// read their own unmerged input; returns the per-model features after the final unmerge, [B, Σd].
    /// </summary>
    static Tensor SuperNet(ModelConfig c, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> w,
        IReadOnlyDictionary<string, Dictionary<string, Tensor>> mu, IReadOnlyDictionary<string, Tensor> ln, Tensor images,
        Diagnostics? diagnostics = null)
    {
        int n = w.Count, p = c.PatchSize;
        long batch = images.shape[0], d = c.HiddenSize, grid = c.ImageSize / p;
        double eps = c.LayerNormEps;
        var models = Enumerable.Range(0, n).ToList();

        // Patches in row-major grid order, each flattened (channel, row, col) (spec §5.1, §13.10).
        var patches = images.reshape(batch, c.NumChannels, grid, p, grid, p).permute(0, 2, 4, 1, 3, 5)
            .reshape(batch, grid * grid, c.NumChannels * p * p);
        var tokens = models.Select(i =>
        {
            var kernel = w[i]["vit.embeddings.patch_embeddings.projection.weight"].reshape(d, -1);
            var embedded = patches.matmul(kernel.t()) + w[i]["vit.embeddings.patch_embeddings.projection.bias"];
            var cls = w[i]["vit.embeddings.cls_token"].expand(batch, 1, d);
            return torch.cat([cls, embedded], 1) + w[i]["vit.embeddings.position_embeddings"];
        }).ToList();
        var h = Merge(tokens, mu["embeddings.merge"]);                               // [B, T, d'], no LN_pre in HF ViT

        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            string b = $"vit.encoder.layer.{l}", s = $"layer{l}";
            Tensor Linear(Tensor x, int i, string name) =>
                x.matmul(w[i][$"{b}.{name}.weight"].t()) + w[i][$"{b}.{name}.bias"];
            List<Tensor> PerModel(List<Tensor> inputs, string name) => models.Select(i => Linear(inputs[i], i, name)).ToList();

            // Attention: LN_1 in merged space, one U shared by Q, K, V; three Ms; heads in merged space.
            var a = LayerNorm(h, ln[$"{b}.layernorm_before.weight"], ln[$"{b}.layernorm_before.bias"], eps);
            var aHat = Unmerge(a, mu[$"{s}.attention.unmerge"], n);
            var q = Merge(PerModel(aHat, "attention.attention.query"), mu[$"{s}.query.merge"]);
            var k = Merge(PerModel(aHat, "attention.attention.key"), mu[$"{s}.key.merge"]);
            var v = Merge(PerModel(aHat, "attention.attention.value"), mu[$"{s}.value.merge"]);
            var o = MultiHead(q, k, v, c.NumAttentionHeads, diagnostics);
            var oHat = Unmerge(o, mu[$"{s}.attention_output.unmerge"], n);
            h = h + Merge(PerModel(oHat, "attention.output.dense"), mu[$"{s}.attention_output.merge"]);

            // MLP: LN_2 in merged space, U^0, fc1, M^1, GELU in merged space, U^1, fc2, M^2.
            var g = LayerNorm(h, ln[$"{b}.layernorm_after.weight"], ln[$"{b}.layernorm_after.bias"], eps);
            var gHat = Unmerge(g, mu[$"{s}.mlp.unmerge"], n);
            var f = Merge(PerModel(gHat, "intermediate.dense"), mu[$"{s}.intermediate.merge"]);
            diagnostics?.GeluInput.Add((f.lt(0).to(ScalarType.Float64).mean().ToDouble(), f.abs().mean().ToDouble()));
            var sHat = Unmerge(Gelu(f), mu[$"{s}.intermediate.unmerge"], n);
            h = h + Merge(PerModel(sHat, "output.dense"), mu[$"{s}.output.merge"]);
        }

        var cls = LayerNorm(h.select(1, 0), ln["vit.layernorm.weight"], ln["vit.layernorm.bias"], eps);
        return torch.cat(Unmerge(cls, mu["layernorm.unmerge"], n).ToArray(), 1);
    }

    /// <summary>Source head i applied to block i of the SuperNet output.</summary>
    static Tensor OracleLogits(OracleCase k, Tensor output, int i)
    {
        long d = k.Merged.HiddenSize;
        return output.narrow(1, i * d, d).matmul(k.Weights[i]["classifier.weight"].t()) + k.Weights[i]["classifier.bias"];
    }

    // ------------------------------------------------------------------------------------------------
    // Test cases
    // ------------------------------------------------------------------------------------------------

    static bool IsShifted(string name) =>
        name.Contains("layernorm") || name.EndsWith(".bias") || name.Contains("cls_token") || name.Contains("position_embeddings");

    static OracleCase Make(int n, MuType type, MuInit init, ScalarType dtype, int rank = 3, long seed = 0) =>
        OracleCase.Make(new Vit(), Enumerable.Range(0, n).Select(i => OracleCase.Rough(Config($"t{i}"), i, seed, dtype, IsShifted)).ToList(),
            type, init, dtype, rank, seed, torch.rand(Batch, 1, 28, 28, generator: new Generator((ulong)(77 + seed))).to(dtype));

    static Tensor Oracle(OracleCase k, Diagnostics? diagnostics = null) => SuperNet(k.Merged, k.Weights, k.Factors, k.Ln, k.Input, diagnostics);

    internal static double MaxAbs(Tensor t) => t.abs().max().ToDouble();

    /// <summary>Replaces every M/U factor and merged LayerNorm parameter by a fresh leaf that requires grad; returns them by name.</summary>
    internal static List<(string Name, Tensor Leaf)> MakeLeaves(Dictionary<string, SiteMatrix> mu, Dictionary<string, Tensor> ln)
    {
        var leaves = new List<(string Name, Tensor Leaf)>();
        foreach (var (site, matrix) in mu)
            foreach (var key in matrix.Factors.Keys.ToList())
            {
                matrix.Factors[key] = matrix.Factors[key].detach().clone().requires_grad_(true);
                leaves.Add(($"{site}/{key}", matrix.Factors[key]));
            }
        foreach (var name in ln.Keys.ToList())
        {
            ln[name] = ln[name].detach().clone().requires_grad_(true);
            leaves.Add((name, ln[name]));
        }
        return leaves;
    }

    /// <summary>max |a − b| / max |b|.</summary>
    internal static double Relative(Tensor a, Tensor b) => MaxAbs(a - b) / MaxAbs(b);

    internal static double Tolerance(ScalarType dtype) => dtype == ScalarType.Float64 ? 1e-11 : 1e-5;

    internal static MuType Parse(string type) => type switch
    {
        "full" => MuType.Full,
        "diagonal" => MuType.Diagonal,
        "low-rank" => MuType.LowRank,
        _ => MuType.DiagonalLowRank,
    };

    internal static ScalarType Dtype(string dtype) => dtype == "f64" ? ScalarType.Float64 : ScalarType.Float32;

    // ------------------------------------------------------------------------------------------------
    // Tests
    // ------------------------------------------------------------------------------------------------

    [Fact]
    public void The_site_table_has_the_ten_sites_per_block_and_folds_every_backbone_tensor_once()
    {
        var k = Make(2, MuType.Full, MuInit.Random, ScalarType.Float32);
        var expected = new List<(string, SiteKind)> { ("embeddings.merge", SiteKind.Merge) };
        for (int l = 0; l < 2; l++)
            expected.AddRange([
                ($"layer{l}.attention.unmerge", SiteKind.Unmerge), ($"layer{l}.query.merge", SiteKind.Merge),
                ($"layer{l}.key.merge", SiteKind.Merge), ($"layer{l}.value.merge", SiteKind.Merge),
                ($"layer{l}.attention_output.unmerge", SiteKind.Unmerge), ($"layer{l}.attention_output.merge", SiteKind.Merge),
                ($"layer{l}.mlp.unmerge", SiteKind.Unmerge), ($"layer{l}.intermediate.merge", SiteKind.Merge),
                ($"layer{l}.intermediate.unmerge", SiteKind.Unmerge), ($"layer{l}.output.merge", SiteKind.Merge)]);
        expected.Add(("layernorm.unmerge", SiteKind.Unmerge));
        Assert.Equal(expected.OrderBy(e => e.Item1), k.Table.Sites.Select(s => (s.Name, s.Kind)).OrderBy(e => e.Item1));
        Assert.Equal("layernorm.unmerge", k.Table.HeadInput);
        var backbone = new Vit().BackboneWeights(k.Merged).Select(w => w.Name).OrderBy(x => x, StringComparer.Ordinal);
        Assert.Equal(backbone, k.Table.Tensors.Select(t => t.Name).OrderBy(x => x, StringComparer.Ordinal));
    }

    [Theory]
    [InlineData(2, "full", "f64")]
    [InlineData(3, "full", "f64")]
    [InlineData(2, "diagonal-low-rank", "f64")]
    [InlineData(3, "diagonal-low-rank", "f64")]
    [InlineData(2, "full", "f32")]
    [InlineData(3, "diagonal-low-rank", "f32")]
    public void The_explicit_supernet_equals_the_folded_vit_followed_by_the_head_input_unmerge(int n, string type, string dtype)
    {
        using var scope = torch.NewDisposeScope();
        var k = Make(n, Parse(type), MuInit.Random, Dtype(dtype));
        var diagnostics = new Diagnostics();
        var oracle = Oracle(k, diagnostics);
        var (folded, weights) = k.FoldPath();
        Assert.Equal(new long[] { Batch, n * 16 }, oracle.shape);
        double rel = Relative(folded, oracle);
        output.WriteLine($"N={n} {type} {dtype}: max|out|={MaxAbs(oracle):G3} max rel diff={rel:G3}; attention score std {diagnostics.ScoreStd.Average():G3}; " +
                         $"GELU inputs: {diagnostics.GeluInput.Average(x => x.Negative):P0} negative, mean |f| {diagnostics.GeluInput.Average(x => x.AbsMean):G3}");
        Assert.True(rel < Tolerance(Dtype(dtype)), $"max relative difference {rel:G3}");

        // Not a trivial regime: attention is far from uniform, GELU sees both signs at O(1) scale,
        // the output depends on the image, and the blocks of different models differ.
        Assert.True(diagnostics.ScoreStd.Average() > 0.2, "attention scores are nearly constant");
        Assert.All(diagnostics.GeluInput, x => Assert.InRange(x.Negative, 0.2, 0.8));
        Assert.All(diagnostics.GeluInput, x => Assert.True(x.AbsMean > 0.3));
        double imageChange = MaxAbs(oracle[0] - oracle[1]) / MaxAbs(oracle);
        double modelChange = MaxAbs(oracle.narrow(1, 0, 16) - oracle.narrow(1, 16, 16)) / MaxAbs(oracle);
        output.WriteLine($"image 0 vs 1: {imageChange:G3}; block 0 vs 1: {modelChange:G3}");
        Assert.True(imageChange > 0.02, $"image 0 vs 1: {imageChange:G3}");
        Assert.True(modelChange > 0.1, $"block 0 vs 1: {modelChange:G3}");

        // The folded heads are the source heads after block i of the head-input unmerge.
        var features = new Vit().Features(k.Merged, weights, k.Input);
        for (int i = 0; i < n; i++)
        {
            var logits = Heads.Logits(weights, features, k.Merged.Heads[i], i, n);
            var expected = OracleLogits(k, oracle, i);
            Assert.True(Relative(logits, expected) < Tolerance(Dtype(dtype)), $"head {i}: {Relative(logits, expected):G3}");
        }
    }

    [Theory]
    [InlineData("full")]
    [InlineData("diagonal-low-rank")]
    public void Perturbing_any_one_site_changes_the_output_and_fold_and_supernet_follow_together(string type)
    {
        using var scope = torch.NewDisposeScope();
        var k = Make(3, Parse(type), MuInit.Random, ScalarType.Float64, seed: 1);
        var baseline = Oracle(k);
        var g = new Generator(31);
        double worst = 0, smallestChange = double.PositiveInfinity;
        foreach (var (name, matrix) in k.Mu)
        {
            // The dense matrix, or the left low-rank factor (the diagonal alone cannot move merged coordinates across models).
            string key = matrix.Factors.ContainsKey("dense") ? "dense" : "left";
            var original = matrix.Factors[key];
            matrix.Factors[key] = original + torch.randn(original.shape, generator: g).to(ScalarType.Float64) * 0.3;
            var oracle = Oracle(k);
            var (folded, _) = k.FoldPath();
            matrix.Factors[key] = original;
            double change = Relative(oracle, baseline), rel = Relative(folded, oracle);
            Assert.True(change > 1e-3, $"perturbing {name}/{key} left the SuperNet output unchanged ({change:G3})");
            Assert.True(rel < 1e-11, $"after perturbing {name}/{key}: fold vs SuperNet max rel diff {rel:G3}");
            worst = Math.Max(worst, rel);
            smallestChange = Math.Min(smallestChange, change);
        }
        output.WriteLine($"{type}: {k.Mu.Count} sites perturbed one at a time; smallest relative change {smallestChange:G3}, worst fold-vs-SuperNet {worst:G3}");

        // The merged LayerNorms and model 2's frozen weights matter too.
        foreach (var name in new[] { "vit.encoder.layer.1.layernorm_after.bias", "vit.layernorm.weight" })
        {
            var original = k.Ln[name];
            k.Ln[name] = original + 0.5;
            var change = Relative(Oracle(k), baseline);
            var rel = Relative(k.FoldPath().Output, Oracle(k));
            k.Ln[name] = original;
            Assert.True(change > 1e-3 && rel < 1e-11, $"{name}: change {change:G3}, diff {rel:G3}");
        }
        foreach (var name in new[] { "vit.encoder.layer.0.attention.attention.value.weight", "vit.encoder.layer.1.intermediate.dense.bias" })
        {
            var original = k.Models[1].Weights[name];
            k.Models[1].Weights[name] = original * 1.5 + 0.1;
            var change = Relative(Oracle(k), baseline);
            var rel = Relative(k.FoldPath().Output, Oracle(k));
            k.Models[1].Weights[name] = original;
            Assert.True(change > 1e-3 && rel < 1e-11, $"model 2 {name}: change {change:G3}, diff {rel:G3}");
        }
    }

    [Theory]
    [InlineData(2, "full", "f64")]
    [InlineData(3, "diagonal-low-rank", "f64")]
    [InlineData(3, "diagonal", "f64")]
    [InlineData(2, "diagonal-low-rank", "f32")]
    public void Gradients_through_the_fold_equal_the_supernet_gradients(int n, string type, string dtype)
    {
        using var scope = torch.NewDisposeScope();
        var dt = Dtype(dtype);
        var k = Make(n, Parse(type), MuInit.Random, dt, seed: 2);
        var leaves = VitOracleTests.MakeLeaves(k.Mu, k.Ln);
        var target = torch.randn(Batch, n * 16, generator: new Generator(5)).to(dt);

        var lossFold = (k.FoldPath().Output - target).pow(2).mean();
        var gradFold = Gradients(lossFold, leaves);
        var lossOracle = (Oracle(k) - target).pow(2).mean();
        var gradOracle = Gradients(lossOracle, leaves);

        double lossRel = Math.Abs(lossFold.ToDouble() - lossOracle.ToDouble()) / lossOracle.ToDouble();
        Assert.True(lossRel < Tolerance(dt), $"loss differs: {lossRel:G3}");
        // Relative to each gradient's own largest entry (every factor receives a non-zero gradient).
        double tolerance = dt == ScalarType.Float64 ? 1e-9 : 1e-4;
        var (worst, worstName) = OracleCase.WorstDifference(gradFold, gradOracle, leaves);
        output.WriteLine($"N={n} {type} {dtype}: {leaves.Count} leaves; loss rel diff {lossRel:G3}; worst gradient max rel diff {worst:G3} ({worstName})");
        Assert.True(worst < tolerance, $"gradient of {worstName} differs: {worst:G3}");
    }

    /// <summary>∂loss/∂leaf for every leaf; a leaf that the loss does not use fails the test (instead of aborting libtorch).</summary>
    internal static List<Tensor> Gradients(Tensor loss, List<(string Name, Tensor Leaf)> leaves)
    {
        var grads = torch.autograd.grad([loss], leaves.Select(l => l.Leaf).ToList(), allow_unused: true);
        for (int j = 0; j < leaves.Count; j++)
            Assert.True(grads[j] is not null && !grads[j].IsInvalid, $"{leaves[j].Name} is not used by the loss");
        return grads.ToList();
    }

    [Theory]
    [InlineData("full", "f32")]
    [InlineData("diagonal", "f32")]
    [InlineData("diagonal-low-rank", "f32")]
    [InlineData("full", "f64")]
    [InlineData("diagonal-low-rank", "f64")]
    public void First_init_folds_to_model_1_exactly_and_every_supernet_block_is_model_1(string type, string dtype)
    {
        using var scope = torch.NewDisposeScope();
        var k = Make(3, Parse(type), MuInit.First, Dtype(dtype), seed: 3);
        var (folded, weights) = k.FoldPath();
        var model1 = k.Models[0].Weights;
        foreach (var spec in new Vit().BackboneWeights(k.Merged))
            Assert.True(weights[spec.Name].Equals(model1[spec.Name]), spec.Name);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(weights[$"classifier.{i}.weight"].Equals(k.Models[i].Weights["classifier.weight"]), $"head {i}");
            Assert.True(weights[$"classifier.{i}.bias"].Equals(k.Models[i].Weights["classifier.bias"]), $"head {i}");
        }

        var reference = new Vit().Features(k.Merged, model1, k.Input);
        var oracle = Oracle(k);
        double worst = 0;
        for (int i = 0; i < 3; i++)
        {
            // The weights are model 1's exactly (above); the training path's output only up to rounding, because
            // its weights are strided views of the batched fold and BLAS may sum in another order for them.
            double foldRel = Relative(folded.narrow(1, i * 16, 16), reference);
            Assert.True(foldRel < Tolerance(Dtype(dtype)) / 100, $"folded block {i}: {foldRel:G3}");
            double rel = Relative(oracle.narrow(1, i * 16, 16), reference);
            worst = Math.Max(worst, rel);
            Assert.True(rel < Tolerance(Dtype(dtype)), $"SuperNet block {i}: {rel:G3}");
        }
        // Model 1 is not model 2: the identity is not an accident of equal sources.
        Assert.True(Relative(new Vit().Features(k.Merged, k.Models[1].Weights, k.Input), reference) > 0.1);
        output.WriteLine($"first {type} {dtype}: folded weights equal model 1; SuperNet blocks vs model 1 max rel diff {worst:G3}");
    }

    [Theory]
    [InlineData("full")]
    [InlineData("diagonal")]
    [InlineData("diagonal-low-rank")]
    public void Average_init_folds_to_the_element_wise_mean(string type)
    {
        using var scope = torch.NewDisposeScope();
        var k = Make(3, Parse(type), MuInit.Average, ScalarType.Float32, seed: 4);
        var (folded, weights) = k.FoldPath();
        double worst = 0;
        foreach (var spec in new Vit().BackboneWeights(k.Merged))
        {
            var mean = torch.stack(k.Models.Select(m => m.Weights[spec.Name]).ToArray()).mean([0]);
            var diff = MaxAbs(weights[spec.Name] - mean);
            worst = Math.Max(worst, diff / MaxAbs(mean));
            Assert.True(torch.allclose(weights[spec.Name], mean, rtol: 1e-5, atol: 1e-6), $"{spec.Name}: {diff:G3}");
        }
        double rel = Relative(folded, Oracle(k));
        output.WriteLine($"average {type}: folded vs mean max rel diff {worst:G3}; fold vs SuperNet {rel:G3}");
        Assert.True(rel < 1e-5, $"fold vs SuperNet {rel:G3}");
    }
}
