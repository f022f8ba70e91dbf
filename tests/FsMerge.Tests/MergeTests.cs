using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Site table, fold and the special-M/U methods on tiny random models.</summary>
[Collection("torch")]
public class MergeTests
{
    internal static ModelConfig Mlp(int[] hidden, string task) => new()
    {
        Architecture = "mlp", InputSize = 784, HiddenSizes = hidden,
        Heads = [new HeadInfo(task, ["a", "b", "c"])],
    };

    internal static MergeInputs Inputs(IReadOnlyList<Model> sources, int perTask = 16, int[]? width = null)
    {
        var data = sources.Select((_, i) => new ImageSet(torch.rand(perTask, 1, 28, 28, generator: new Generator((ulong)(100 + i))),
            new long[perTask], ["a", "b", "c"])).ToList();
        var target = sources[0].Config with
        {
            HiddenSizes = width ?? sources[0].Config.HiddenSizes,
            Heads = sources.SelectMany(s => s.Config.Heads).ToList(),
        };
        return new MergeInputs { Sources = sources, Data = data, Target = target, Device = CPU, Seed = 3 };
    }

    /// <summary>A method's settings; a trained method gets the rate 0.1 unless one is given (these tests have no held-out samples for --lr auto).</summary>
    internal static MethodSettings Settings(IMergeMethod method, params (string, string)[] options)
    {
        var given = options.ToDictionary(o => o.Item1, o => o.Item2);
        if (method.Options.Any(o => o.Name == "lr")) given.TryAdd("lr", "0.1");
        return new(method, given);
    }

    static List<Model> Sources(int n, int[] hidden) =>
        Enumerable.Range(0, n).Select(i => Model.Create(Mlp(hidden, $"t{i}"), 10 + i, CPU)).ToList();

    [Theory]
    [InlineData("full")]
    [InlineData("diagonal")]
    [InlineData("diagonal-low-rank")]
    public void First_init_with_zero_steps_folds_to_model_1_exactly(string type)
    {
        var sources = Sources(3, [12, 10]);
        var outcome = new FsMergeMethod().Merge(Inputs(sources), Settings(new FsMergeMethod(), ("epochs", "0"), ("type", type), ("rank", "4")));
        var merged = outcome.Merged!;
        foreach (var spec in sources[0].Config.Arch.BackboneWeights(sources[0].Config))
            Assert.True(merged.Weights[spec.Name].Equals(sources[0].Weights[spec.Name]), spec.Name);
        Assert.True(merged.Weights["classifier.0.weight"].Equals(sources[0].Weights["classifier.weight"]));
        Assert.True(merged.Weights["classifier.0.bias"].Equals(sources[0].Weights["classifier.bias"]));
    }

    [Fact]
    public void Average_folds_to_the_element_wise_mean_and_a_model_averaged_with_itself_is_unchanged()
    {
        var sources = Sources(2, [12, 10]);
        var merged = new AverageMerge().Merge(Inputs(sources), Settings(new AverageMerge())).Merged!;
        foreach (var spec in sources[0].Config.Arch.BackboneWeights(sources[0].Config))
        {
            var mean = (sources[0].Weights[spec.Name] + sources[1].Weights[spec.Name]) / 2;
            Assert.True(torch.allclose(merged.Weights[spec.Name], mean, rtol: 1e-6, atol: 1e-7), spec.Name);
        }
        var self = new List<Model> { sources[0], sources[0] };
        var same = new AverageMerge().Merge(Inputs(self), Settings(new AverageMerge())).Merged!;
        foreach (var spec in sources[0].Config.Arch.BackboneWeights(sources[0].Config))
            Assert.True(torch.allclose(same.Weights[spec.Name], sources[0].Weights[spec.Name], rtol: 1e-6, atol: 1e-7), spec.Name);
    }

    /// <summary>Model B is model A with its hidden neurons permuted: the same function.</summary>
    static Model Permuted(Model a, int seed)
    {
        var weights = a.Weights.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var hidden = a.Config.HiddenSizes;
        Tensor? previous = null;
        for (int l = 0; l < hidden.Length; l++)
        {
            var p = torch.randperm(hidden[l], generator: new Generator((ulong)(seed + l)));
            var w = weights[$"layers.{l}.weight"].index_select(0, p);
            if (previous is not null) w = w.index_select(1, previous);
            weights[$"layers.{l}.weight"] = w;
            weights[$"layers.{l}.bias"] = weights[$"layers.{l}.bias"].index_select(0, p);
            previous = p;
        }
        weights["classifier.weight"] = weights["classifier.weight"].index_select(1, previous!);
        return new Model(a.Config, weights);
    }

    [Theory]
    [InlineData("weights")]
    [InlineData("activations")]
    public void Rebasin_undoes_a_permutation_and_the_permutation_mu_keeps_the_function(string matching)
    {
        var a = Model.Create(Mlp([12, 10], "t0"), 21, CPU);
        var b = Permuted(a, 5);
        var x = torch.rand(8, 1, 28, 28, generator: new Generator(4));
        Assert.True(torch.allclose(a.Logits(a.Features(x), 0), b.Logits(b.Features(x), 0), atol: 1e-5));
        // Enough merge data that no neuron is dead on all of it (dead neurons cannot be told apart by activations).
        var merged = new ReBasinMerge().Merge(Inputs([a, b], perTask: 128), Settings(new ReBasinMerge(), ("matching", matching))).Merged!;
        var f = merged.Features(x);
        Assert.True(torch.allclose(merged.Logits(f, 0), a.Logits(a.Features(x), 0), atol: 1e-4));
        Assert.True(torch.allclose(merged.Logits(f, 1), a.Logits(a.Features(x), 0), atol: 1e-4));
    }

    /// <summary>The explicit global MLP SuperNet of spec §4.2, written independently as an oracle.</summary>
    static Tensor SuperNet(IReadOnlyList<Model> sources, SiteTable table, IReadOnlyDictionary<string, Tensor> mu, Tensor x)
    {
        int depth = sources[0].Config.HiddenSizes.Length;
        var flat = x.reshape(x.shape[0], -1);
        var parts = sources.Select(_ => flat).ToList();
        Tensor reconstruction = flat;
        for (int l = 0; l < depth; l++)
        {
            var mSite = table[Models.Mlp.MergeSite(l)];
            var m = mu[mSite.Name];
            Tensor? merged = null;
            for (int i = 0; i < sources.Count; i++)
            {
                var z = nn.functional.linear(parts[i], sources[i].Weights[$"layers.{l}.weight"], sources[i].Weights[$"layers.{l}.bias"]);
                var term = z.matmul(m.narrow(0, mSite.Offset(i), mSite.ModelWidths[i]));
                merged = merged is null ? term : merged + term;
            }
            reconstruction = nn.functional.relu(merged!).matmul(mu[Models.Mlp.UnmergeSite(l)]);
            var uSite = table[Models.Mlp.UnmergeSite(l)];
            parts = Enumerable.Range(0, sources.Count).Select(i => reconstruction.narrow(1, uSite.Offset(i), uSite.ModelWidths[i])).ToList();
        }
        return reconstruction;
    }

    [Theory]
    [InlineData(2, "full")]
    [InlineData(3, "diagonal-low-rank")]
    [InlineData(3, "low-rank")]
    public void The_global_supernet_equals_the_folded_model_followed_by_the_last_unmerge(int n, string type)
    {
        var sources = Sources(n, [12, 10]);
        var inputs = Inputs(sources);
        var mu = new Dictionary<string, Tensor>();
        var parsed = type switch { "full" => MuType.Full, "low-rank" => MuType.LowRank, _ => MuType.DiagonalLowRank };
        foreach (var site in inputs.Sites.Sites)
        {
            var matrix = SiteMatrix.Initialize(site, parsed, MuInit.Random, 3, new Generator(7), CPU);
            foreach (var key in matrix.Factors.Keys.ToList()) matrix.Factors[key] = matrix.Factors[key] + torch.randn(matrix.Factors[key].shape) * 0.1;
            mu[site.Name] = matrix.Materialize();
        }
        var weights = Folding.Fold(inputs.Sites, inputs.SourceWeights, inputs.HeadCounts, mu, new Dictionary<string, Tensor>());
        var x = torch.rand(6, 1, 28, 28);
        var folded = inputs.Target.Arch.Features(inputs.Target, weights, x).matmul(mu[inputs.Sites.HeadInput]);
        var oracle = SuperNet(sources, inputs.Sites, mu, x);
        Assert.True(torch.allclose(folded, oracle, rtol: 1e-4, atol: 1e-5), $"max diff {(folded - oracle).abs().max().item<float>()}");
    }

    /// <summary>The batched fold applies M/U through their factors; the per-model fold uses the dense matrices.</summary>
    [Theory]
    [InlineData("full")]
    [InlineData("diagonal")]
    [InlineData("diagonal-low-rank")]
    [InlineData("low-rank")]
    public void The_batched_fold_equals_the_per_model_fold_and_the_explicit_vit_supernet(string type)
    {
        var sources = Enumerable.Range(0, 3).Select(i => Model.Create(ModelTests.TinyVit() with
            { Heads = [new HeadInfo($"t{i}", ["a", "b"])] }, 40 + i, CPU)).ToList();
        var inputs = Inputs(sources);
        var g = new Generator(9);
        var mu = inputs.Sites.Sites.ToDictionary(s => s.Name, s =>
        {
            var matrix = SiteMatrix.Initialize(s, VitOracleTests.Parse(type), MuInit.Random, 3, g, CPU);
            foreach (var key in matrix.Factors.Keys.ToList()) matrix.Factors[key] = matrix.Factors[key] + torch.randn(matrix.Factors[key].shape, generator: g) * 0.1;
            return matrix;
        });
        var dense = SiteMatrix.MaterializeAll(mu);
        var space = FoldedMerge.MergedSpace(inputs, MuInit.Average);
        var loop = Folding.Fold(inputs.Sites, inputs.SourceWeights, inputs.HeadCounts, dense, space);
        var batched = Folding.Fold(inputs.Sites, inputs.SourceWeights, inputs.HeadCounts, mu, space, new StackedFold(inputs.Sites, inputs.SourceWeights, mu));
        foreach (var (name, w) in loop)
            Assert.True(torch.allclose(w, batched[name], rtol: 1e-4, atol: 1e-6), $"{name}: max diff {(w - batched[name]).abs().max().item<float>()}");
        var x = torch.rand(3, 1, 28, 28, generator: new Generator(2));
        var folded = FsMergeMethod.FoldEveryStep(inputs)(mu, space, x);
        var explicitNet = Bench.VitSuperNet.Forward(inputs.Target, inputs.Sites, inputs.SourceWeights, dense, space, x);
        Assert.True(torch.allclose(folded, explicitNet, rtol: 1e-3, atol: 1e-5), $"max diff {(folded - explicitNet).abs().max().item<float>()}");
    }

    /// <summary>
    /// Weights are folded together when both their sites match: of three hidden-to-hidden weights with equal
    /// unmerge sites, the last merges into a narrower width, so it must fold on its own, with its own M.
    /// </summary>
    [Fact]
    public void The_batched_fold_groups_weights_by_both_their_sites()
    {
        var sources = Sources(3, [12, 12, 12, 12]);
        var inputs = Inputs(sources, width: [12, 12, 12, 9]);
        var g = new Generator(4);
        var mu = inputs.Sites.Sites.ToDictionary(s => s.Name, s => SiteMatrix.Initialize(s, MuType.LowRank, MuInit.Random, 3, g, CPU));
        var stacked = new StackedFold(inputs.Sites, inputs.SourceWeights, mu);
        var batched = Folding.Fold(inputs.Sites, inputs.SourceWeights, inputs.HeadCounts, mu, new Dictionary<string, Tensor>(), stacked);
        var loop = Folding.Fold(inputs.Sites, inputs.SourceWeights, inputs.HeadCounts, SiteMatrix.MaterializeAll(mu), new Dictionary<string, Tensor>());
        Assert.Equal(loop.Keys.Order(), batched.Keys.Order());
        foreach (var (name, w) in loop)
            Assert.True(torch.allclose(w, batched[name], rtol: 1e-4, atol: 1e-6), $"{name}: max diff {(w - batched[name]).abs().max().item<float>()}");
        Assert.Equal([1, 2], stacked.WeightGroupSizes.Order());
    }

    [Fact]
    public void Regmean_closed_form_matches_a_least_squares_solve()
    {
        var x1 = torch.randn(40, 6, dtype: ScalarType.Float64, generator: new Generator(1));
        var x2 = torch.randn(30, 6, dtype: ScalarType.Float64, generator: new Generator(2));
        var w1 = torch.randn(6, 4, dtype: ScalarType.Float64, generator: new Generator(3));
        var w2 = torch.randn(6, 4, dtype: ScalarType.Float64, generator: new Generator(4));
        var closed = RegMeanMerge.Solve([RegMeanMerge.Gram(x1, 1.0), RegMeanMerge.Gram(x2, 1.0)], [w1, w2]);
        var stackedX = torch.cat([x1, x2], 0);
        var stackedY = torch.cat([x1.matmul(w1), x2.matmul(w2)], 0);
        var lstsq = torch.linalg.lstsq(stackedX, stackedY).Solution;
        Assert.True(torch.allclose(closed, lstsq, rtol: 1e-5, atol: 1e-6), $"max diff {(closed - lstsq).abs().max().item<double>()}");
    }

    [Fact]
    public void Zipit_pairs_identical_features_across_models()
    {
        // Model 2's features are model 1's, shuffled: ZipIt must pair each with its copy.
        var f1 = torch.randn(50, 5, generator: new Generator(3));
        var order = new long[] { 3, 0, 4, 1, 2 };
        var f2 = f1.index_select(1, torch.tensor(order));
        var (m, u) = ZipItMerge.Zip([f1, f2], 5, CPU);
        for (int j = 0; j < 5; j++)
        {
            int k = 5 + Array.IndexOf(order, (long)j);
            var qj = m[j].argmax().item<long>();
            Assert.Equal(qj, m[k].argmax().item<long>());
            Assert.Equal(0.5f, m[j, qj].item<float>());
            Assert.Equal(1f, u[qj, k].item<float>());
        }
    }

    [Fact]
    public void Zipit_reaches_the_merged_width_when_groups_of_n_cannot_form()
    {
        // Three models, two features each, zipped into 2: the three most correlated pairs each join two models
        // ({1a,2a}, {1b,3b}, {2b,3a}), and no two of those pairs fit in one group of three.
        var basis = torch.randn(200, 3, generator: new Generator(5));
        var noise = torch.randn(200, 3, generator: new Generator(6)) * 0.01;
        Tensor Col(int i, Tensor? n = null) => (n is null ? basis : basis + noise).narrow(1, i, 1);
        var f1 = torch.cat([Col(0), Col(1)], 1);            // 1a = x, 1b = y
        var f2 = torch.cat([Col(0, noise), Col(2)], 1);     // 2a ≈ x, 2b = z
        var f3 = torch.cat([Col(2, noise), Col(1, noise)], 1);   // 3a ≈ z, 3b ≈ y
        var (m, u) = ZipItMerge.Zip([f1, f2, f3], 2, CPU);
        Assert.Equal(new long[] { 6, 2 }, m.shape);
        Assert.True(torch.allclose(m.sum(dim: 0), torch.ones(2)), "each merged feature averages its members");
        Assert.True(torch.allclose(u.sum(dim: 0), torch.ones(6)), "every source feature is copied back from one merged feature");
        long Group(int feature) => m[feature].argmax().item<long>();
        Assert.Equal(Group(0), Group(2));   // 1a with 2a
        Assert.Equal(Group(1), Group(5));   // 1b with 3b
        Assert.Equal(Group(3), Group(4));   // 2b with 3a
    }

    [Fact]
    public void Different_widths_merge_into_a_chosen_width()
    {
        var sources = new List<Model> { Model.Create(Mlp([12, 10], "t0"), 1, CPU), Model.Create(Mlp([16, 8], "t1"), 2, CPU) };
        var inputs = Inputs(sources, width: [14, 9]);
        var outcome = new FsMergeMethod().Merge(inputs, Settings(new FsMergeMethod(), ("init", "random"), ("epochs", "3"), ("lr", "0.01")));
        var merged = outcome.Merged!;
        Assert.Equal(new long[] { 14, 784 }, merged.Weights["layers.0.weight"].shape);
        Assert.Equal(new long[] { 3, 9 }, merged.Weights["classifier.1.weight"].shape);
        var zip = new ZipItMerge().Merge(inputs, Settings(new ZipItMerge())).Merged!;
        Assert.Equal(new long[] { 9, 14 }, zip.Weights["layers.1.weight"].shape);
        var e = Assert.Throws<FsMergeException>(() => new AverageMerge().Merge(inputs, Settings(new AverageMerge())));
        Assert.Contains("width", e.Message);
    }

    [Fact]
    public void Global_training_lowers_the_reconstruction_loss()
    {
        var sources = Sources(2, [12, 10]);
        var zero = new FsMergeMethod().Merge(Inputs(sources), Settings(new FsMergeMethod(), ("epochs", "1"), ("lr", "0")));
        var trained = new FsMergeMethod().Merge(Inputs(sources), Settings(new FsMergeMethod(), ("epochs", "200"), ("lr", "0.05")));
        Assert.True((double)trained.Details["final_loss"]! < 0.8 * (double)zero.Details["final_loss"]!,
            $"{trained.Details["final_loss"]} vs {zero.Details["final_loss"]}");
    }

    [Fact]
    public void Slerp_coefficients_follow_the_angle_and_a_model_slerped_with_itself_is_unchanged()
    {
        var (a, b) = SlerpMerge.Coefficients(torch.tensor(new double[] { 1, 0 }), torch.tensor(new double[] { 0, 1 }), 0.5);
        Assert.Equal(Math.Sin(Math.PI / 4) / (1 + 1e-6), a, 9);
        Assert.Equal(a, b, 12);
        var sources = Sources(1, [12, 10]);
        var same = new SlerpMerge().Merge(Inputs([sources[0], sources[0]]), Settings(new SlerpMerge())).Merged!;
        foreach (var spec in sources[0].Config.Arch.BackboneWeights(sources[0].Config))
            Assert.True(torch.allclose(same.Weights[spec.Name], sources[0].Weights[spec.Name], rtol: 1e-6, atol: 1e-7), spec.Name);
    }

    [Fact]
    public void Sequential_merge_of_three_models_starts_at_model_1_and_trains()
    {
        var sources = Sources(3, [12, 10]);
        var x = torch.rand(5, 1, 28, 28, generator: new Generator(8));
        var method = new FsMergeSeqMethod();
        var zero = method.Merge(Inputs(sources), Settings(method, ("epochs", "0"))).Merged!;
        Assert.Equal(3, zero.HeadCount);
        var expected = sources[0].Logits(sources[0].Features(x), 0);
        Assert.True(zero.Logits(zero.Features(x), 0).Equals(expected));

        var trained = method.Merge(Inputs(sources), Settings(method, ("stage-epochs", "30,60"), ("lr", "0.05")));
        var stages = trained.Details["stages"]!.AsArray();
        Assert.Equal(2, stages.Count);
        Assert.Equal(60, (int)stages[1]!["epochs"]!);
        Assert.True(double.IsFinite((double)stages[1]!["details"]!["final_loss"]!));
        Assert.Equal(new long[] { 3, 10 }, trained.Merged!.Weights["classifier.2.weight"].shape);
        var e = Assert.Throws<FsMergeException>(() => method.Merge(Inputs(sources), Settings(method, ("stage-epochs", "3"))));
        Assert.Contains("2 non-negative integers", e.Message);
    }

    [Fact]
    public void Unknown_method_and_option_are_rejected_by_name()
    {
        Assert.Contains("'nope'", Assert.Throws<FsMergeException>(() => MergeMethods.Get("nope")).Message);
        var e = Assert.Throws<FsMergeException>(() => Settings(new AverageMerge(), ("rank", "3")));
        Assert.Contains("--rank", e.Message);
        e = Assert.Throws<FsMergeException>(() => new FsMergeMethod().Merge(Inputs(Sources(2, [12, 10])),
            Settings(new FsMergeMethod(), ("type", "low-rank"), ("rank", "40"), ("init", "random"))));
        Assert.Contains("rank 40", e.Message);
    }
}
