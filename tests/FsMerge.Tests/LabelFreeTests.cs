using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using FsMerge.Runs;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Label-free merging: architecture defaults and their origins, --lr auto, the held-out estimate, --method auto.</summary>
[Collection("torch")]
public class LabelFreeTests
{
    static List<Model> Sources(int n, int[] hidden) =>
        Enumerable.Range(0, n).Select(i => Model.Create(MergeTests.Mlp(hidden, $"t{i}"), 20 + i, CPU)).ToList();

    /// <summary><see cref="MergeTests.Inputs"/> with <paramref name="heldOut"/> held-out images per task, other than the merge images.</summary>
    static MergeInputs WithHeldOut(IReadOnlyList<Model> sources, int heldOut = 12, List<string>? log = null, Action<string>? onLine = null)
    {
        var inputs = MergeTests.Inputs(sources);
        var held = sources.Select((_, i) => new ImageSet(torch.rand(heldOut, 1, 28, 28, generator: new Generator((ulong)(200 + i))),
            new long[heldOut], ["a", "b", "c"])).ToList();
        return new MergeInputs
        {
            Sources = inputs.Sources, Data = inputs.Data, Target = inputs.Target, Device = CPU, Seed = inputs.Seed, HeldOut = held,
            Log = log is null && onLine is null ? null : line => { log?.Add(line); onLine?.Invoke(line); },
        };
    }

    [Fact]
    public void Defaults_come_from_the_architecture_and_the_user_overrides_them_with_each_origin_recorded()
    {
        var method = new FsMergeMethod();
        var vit = new MethodSettings(method, new Dictionary<string, string> { ["rank"] = "4" }, new Vit(), _ => "flag");
        Assert.Equal("adamw", vit.All["optimizer"]);
        Assert.Equal("default for vit", vit.Origins["optimizer"]);
        Assert.Equal("diagonal-low-rank", vit.All["type"]);
        Assert.Equal("own", vit.All["targets"]);
        Assert.Equal(("4", "flag"), (vit.All["rank"], vit.Origins["rank"]));
        Assert.Equal(("auto", "default"), (vit.All["lr"], vit.Origins["lr"]));
        var bert = new MethodSettings(method, new Dictionary<string, string>(), new Bert());
        Assert.Equal("0", bert.All["weight-decay"]);   // the paper's BERT runs (spec §7.4)
        var mlp = new MethodSettings(new DistillationMerge(), new Dictionary<string, string>(), new Mlp());
        Assert.Equal(("sgd", "0", "default for mlp"), (mlp.All["optimizer"], mlp.All["batch"], mlp.Origins["batch"]));
        Assert.False(mlp.Has("type"));   // an architecture default the method lacks is not added
        // A "method:option" default is that method's only: FS-Merge on a ViT sweeps Re-Basin's start and model 1's,
        // distillation keeps its own candidates.
        Assert.Equal(("auto", "rebasin,first", "default for vit"), (vit.All["init"], vit.All["init-candidates"], vit.Origins["init-candidates"]));
        var distill = new MethodSettings(new DistillationMerge(), new Dictionary<string, string>(), new Vit());
        Assert.Equal(("auto", "zipit,first", "default"), (distill.All["init"], distill.All["init-candidates"], distill.Origins["init-candidates"]));
    }

    [Fact]
    public void Auto_epochs_give_about_the_step_budget_at_any_batch_size()
    {
        var settings = new MethodSettings(new FsMergeMethod(), new Dictionary<string, string> { ["steps"] = "100", ["batch"] = "32" });
        Assert.Equal(25, OptimizerSettings.EpochsFor(settings, 128, 32));      // 4 steps an epoch
        Assert.Equal(100, OptimizerSettings.EpochsFor(settings, 128, 0));      // full batch: one step an epoch
        Assert.Equal(34, OptimizerSettings.EpochsFor(settings, 65, 22));       // 3 steps an epoch, rounded up
    }

    [Fact]
    public void The_estimate_of_the_sources_themselves_is_perfect_and_of_averaging_is_not()
    {
        var sources = Sources(2, [12, 10]);
        var inputs = WithHeldOut(sources);
        using var reference = new HeldOutReference(sources, inputs.HeldOut!, ["t0", "t1"], CPU);
        var itself = reference.Estimate(Evaluator.SeparateModels(sources));
        Assert.Equal(1.0, itself.Agreement);
        Assert.Equal(1.0, itself.JointAgreement);
        Assert.Equal(0.0, itself.LogitError);
        Assert.Equal(0.0, itself.Divergence, 12);
        var averaged = new AverageMerge().Merge(inputs, MergeTests.Settings(new AverageMerge()));
        var estimate = reference.Estimate(averaged.Predict);
        Assert.True(estimate.LogitError > 0.01, $"averaging two random models: logit error {estimate.LogitError}");
        Assert.True(estimate.Divergence > 0.01, $"averaging two random models: divergence {estimate.Divergence}");
        Assert.Equal(12, estimate.Tasks[0].Count);
    }

    [Fact]
    public void The_divergence_ignores_what_the_predictions_ignore_and_is_1_for_the_sources_mean_prediction()
    {
        var sources = Sources(2, [12, 10]);
        var inputs = WithHeldOut(sources);
        using var reference = new HeldOutReference(sources, inputs.HeldOut!, ["t0", "t1"], CPU);
        var sourceHeads = Evaluator.SeparateModels(sources);
        // Every logit of a sample shifted by the same amount: the same predictions, other logits.
        var shifted = reference.Estimate(images => sourceHeads(images).Select(z => z + 3 * torch.arange(z.shape[0], dtype: z.dtype).unsqueeze(1)).ToArray());
        Assert.Equal(0.0, shifted.Divergence, 6);   // float32 logits: the shift costs a few bits
        Assert.True(shifted.LogitError > 0.1, $"shifted logits: logit error {shifted.LogitError}");
        // Every sample answered with the source's mean prediction over the held-out set (one batch here): divergence 1.
        var mean = reference.Estimate(images => sourceHeads(images).Select(z =>
            z.softmax(1).mean([0], keepdim: true).log().expand(z.shape[0], z.shape[1])).ToArray());
        Assert.All(mean.Tasks, t => Assert.Equal(1.0, t.Divergence, 5));
    }

    [Fact]
    public void The_divergence_gain_of_a_model_over_itself_is_no_gain_and_of_the_sources_over_averaging_is_beyond_the_noise()
    {
        var sources = Sources(2, [12, 10]);
        var inputs = WithHeldOut(sources);
        using var reference = new HeldOutReference(sources, inputs.HeldOut!, ["t0", "t1"], CPU);
        var averaged = new AverageMerge().Merge(inputs, MergeTests.Settings(new AverageMerge()));
        var (none, _) = reference.DivergenceGain(averaged.Predict, averaged.Predict);
        Assert.Equal(0.0, none);
        var (gain, standardError) = reference.DivergenceGain(averaged.Predict, Evaluator.SeparateModels(sources));
        // The sources' own divergence is 0, so the gain is averaging's mean divergence over the tasks (uncapped).
        Assert.Equal(reference.Estimate(averaged.Predict).Tasks.Average(t => t.Divergence), gain, 9);
        Assert.True(gain > 2 * standardError, $"gain {gain}, standard error {standardError}");
    }

    [Fact]
    public void Lr_auto_sweeps_the_grid_on_held_out_samples_skips_divergent_rates_and_trains_at_the_best()
    {
        var sources = Sources(2, [12, 10]);
        var method = new FsMergeMethod();
        var log = new List<string>();
        var settings = new MethodSettings(method, new Dictionary<string, string> { ["lr-grid"] = "1000,0.1,0.0001", ["steps"] = "40" });
        var outcome = method.Merge(WithHeldOut(sources, log: log), settings);
        Assert.Equal(3, outcome.RateTrials.Count);
        Assert.True(outcome.RateTrials[0].Diverged, "rate 1000 must diverge");
        var best = outcome.RateTrials.Where(t => !t.Diverged).OrderBy(t => t.Divergence).ThenByDescending(t => t.Agreement).First();
        Assert.Equal(best.Rate.ToString("G6", System.Globalization.CultureInfo.InvariantCulture), outcome.Settings!.All["lr"]);
        Assert.Equal("--lr auto", outcome.Settings.Origins["lr"]);
        Assert.Contains(log, l => l.Contains("--lr auto chose"));
        Assert.NotNull(outcome.Details["lr_search"]);
        // The same merge with the settings it reports (the chosen rate, and the short run's epochs when that was kept),
        // given, is the same model: the sweep leaves no trace on the run it keeps.
        var given = method.Merge(WithHeldOut(sources), new MethodSettings(method, outcome.Settings.All.ToDictionary()));
        foreach (var (name, w) in outcome.Merged!.Weights) Assert.True(w.Equals(given.Merged!.Weights[name]), name);
        // Without held-out samples --lr auto says what it needs.
        var e = Assert.Throws<FsMergeException>(() => method.Merge(MergeTests.Inputs(sources), settings));
        Assert.Contains("--held-out", e.Message);
    }

    [Fact]
    public void An_lr_sweep_interrupted_between_rates_resumes_without_training_them_again_to_the_same_weights()
    {
        var sources = Sources(2, [12, 10]);
        var method = new FsMergeMethod();
        var settings = new MethodSettings(method, new Dictionary<string, string> { ["lr-grid"] = "0.3,0.1,0.01", ["steps"] = "30" });
        MergeInputs Inputs(TrainingCheckpoints? checkpoints, List<string> log, Action<string>? onLine = null) =>
            WithHeldOut(sources, log: log, onLine: onLine).With(checkpoints, progress: null);
        using var reference = method.Merge(Inputs(null, []), settings).Merged!;
        var dir = Directory.CreateTempSubdirectory("fsmerge-sweep").FullName;
        try
        {
            var first = new TrainingCheckpoints(dir, 5, resume: false, "key");
            var firstLog = new List<string>();
            var inputs = Inputs(first, firstLog, _ => { if (firstLog.Count(l => l.Contains("lr sweep: lr")) == 2) first.Interrupt(); });
            var e = Assert.Throws<FsMergeException>(() => method.Merge(inputs, settings));
            Assert.Contains("saved 2 of 3 short runs", e.Message);
            Assert.True(TrainingCheckpoints.ExistIn(dir));
            var log = new List<string>();
            using var resumed = method.Merge(Inputs(new TrainingCheckpoints(dir, 5, resume: true, "key"), log), settings).Merged!;
            Assert.Equal(2, log.Count(l => l.Contains("from the checkpoint")));
            foreach (var (key, value) in reference.Weights)
                Assert.True(value.bytes.SequenceEqual(resumed.Weights[key].bytes), key);
            var other = Assert.Throws<FsMergeException>(() => new TrainingCheckpoints(dir, 5, resume: true, "other").CheckResumable());
            Assert.Contains("belongs to a run with other models, data or options", other.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void The_best_larger_rate_trains_fully_too_and_replaces_the_chosen_one_only_when_clearly_better()
    {
        var sources = Sources(2, [12, 10]);
        var method = new DistillationMerge();
        var settings = new MethodSettings(method, new Dictionary<string, string> { ["lr-grid"] = "0.01,0.1", ["steps"] = "30", ["init"] = "first" });
        var separate = Evaluator.SeparateModels(sources);
        // A stand-in for training whose result is the sources' logits times a temperature: 1 reproduces them. Its
        // short runs favour the lower rate (0.8 against 0.5); the lower rate's full run ends at 0.9, the larger's at largerFull.
        MergeOutcome Run(double largerFull) => LearningRateSearch.Merge(method, WithHeldOut(sources), settings, (_, trained) =>
        {
            bool isShort = trained.Origins["epochs"] == "--lr auto sweep";
            double scale = (trained.Double("lr"), isShort) switch { (0.01, true) => 0.8, (_, true) => 0.5, (0.01, false) => 0.9, _ => largerFull };
            return new MergeOutcome(null, images => separate(images).Select(l => l * scale).ToArray(), new System.Text.Json.Nodes.JsonObject());
        });
        var better = Run(1.0);
        Assert.Equal(0.01, better.RateTrials.MinBy(t => t.Divergence)!.Rate);
        Assert.Equal(0.1, better.Settings!.Double("lr"));
        var larger = better.Details["lr_search"]!["full_runs"]!.AsArray().Single(r => (double)r!["lr"]! == 0.1);
        Assert.True((bool)larger!["kept"]!);
        Assert.True((double)larger["gain"]! > (double)larger["standard_error"]!);
        // No better than the chosen rate's full run: not kept.
        var same = Run(0.9);
        Assert.Equal(0.01, same.Settings!.Double("lr"));
        Assert.False((bool)same.Details["lr_search"]!["full_runs"]!.AsArray().Single(r => (double)r!["lr"]! == 0.1)!["kept"]!);
    }

    [Fact]
    public void Init_auto_sweeps_every_start_at_every_rate_and_trains_the_best_pair()
    {
        var sources = Sources(2, [12, 10]);
        var method = new DistillationMerge();
        var settings = new MethodSettings(method, new Dictionary<string, string> { ["lr-grid"] = "0.1,0.01", ["steps"] = "30" });
        Assert.Equal("auto", settings.String("init"));
        var outcome = method.Merge(WithHeldOut(sources), settings);
        Assert.Equal(["zipit|0.1", "zipit|0.01", "first|0.1", "first|0.01"], outcome.RateTrials.Select(t => $"{t.Init}|{t.Rate}"));
        var best = outcome.RateTrials.Where(t => !t.Diverged).OrderBy(t => t.Divergence).ThenByDescending(t => t.Agreement).First();
        var search = outcome.Details["lr_search"]!;
        // The full run trains the best pair (or the next one, when its full run ends worse than its short one).
        Assert.Contains(search["full_runs"]!.AsArray(), r => (string?)r!["init"] == best.Init && (double)r["lr"]! == best.Rate);
        Assert.Equal((string)search["chosen_init"]!, outcome.Settings!.All["init"]);
        Assert.Equal("--init auto", outcome.Settings.Origins["init"]);
        // A given rate without held-out samples: nothing to choose with, the first candidate.
        var given = method.Merge(MergeTests.Inputs(sources), new MethodSettings(method, new Dictionary<string, string> { ["lr"] = "0.01", ["steps"] = "30" }));
        Assert.Equal("zipit", given.Settings!.All["init"]);
        Assert.Empty(given.RateTrials);
        var bad = Assert.Throws<FsMergeException>(() => method.Merge(WithHeldOut(sources), settings.With("init-candidates", "first,best", "flag")));
        Assert.Contains("--init-candidates", bad.Message);
    }

    [Fact]
    public void Fs_merge_sweeps_its_starts_on_mlps_and_skips_a_dense_start_for_a_diagonal_low_rank_merge()
    {
        var sources = Sources(2, [12, 10]);
        var method = new FsMergeMethod();
        var mlp = new MethodSettings(method, new Dictionary<string, string> { ["lr-grid"] = "0.1", ["steps"] = "20" }, sources[0].Config.Arch);
        Assert.Equal("auto", mlp.String("init"));
        Assert.Equal("default for mlp", mlp.Origins["init"]);
        var outcome = method.Merge(WithHeldOut(sources), mlp);
        Assert.Equal(["zipit", "first"], outcome.RateTrials.Select(t => t.Init));
        var log = new List<string>();
        var lowRank = new MethodSettings(method, new Dictionary<string, string> { ["init"] = "auto", ["type"] = "diagonal-low-rank", ["rank"] = "2", ["lr"] = "0.01", ["steps"] = "20" });
        var narrowed = method.Merge(WithHeldOut(sources, log: log), lowRank);
        Assert.Equal("first", narrowed.Settings!.All["init"]);
        Assert.Empty(narrowed.RateTrials);
        Assert.Contains(log, l => l.Contains("skips zipit") && l.Contains("--type full"));
    }

    [Fact]
    public void Method_auto_keeps_the_candidate_with_the_lowest_held_out_error_and_says_why()
    {
        var sources = Sources(2, [12, 10]);
        var method = new AutoMerge();
        var outcome = method.Merge(WithHeldOut(sources), new MethodSettings(method, new Dictionary<string, string> { ["candidates"] = "average,zipit,ensemble" }));
        var candidates = outcome.Details["candidates"]!.AsArray();
        Assert.Equal(3, candidates.Count);
        Assert.NotNull(candidates[2]!["skipped"]);   // the ensemble keeps both models: not one merged model
        var estimates = candidates.Take(2).Select(c => (Name: (string)c!["method"]!, Error: (double)c!["label_free"]!["divergence"]!,
            Agreement: (double)c!["label_free"]!["agreement"]!)).ToList();
        Assert.Equal(estimates.OrderBy(e => e.Error).ThenByDescending(e => e.Agreement).First().Name, (string)outcome.Details["chosen"]!);
        Assert.Contains("lowest mean held-out divergence", (string)outcome.Details["why"]!);
        Assert.NotNull(outcome.Merged);
    }

    [Theory]
    [InlineData("regmean", "alpha", "0.2,0.6,0.95", 0.9)]
    [InlineData("opt", "epsilon", "0,0.05,0.3", 0.08)]
    public void Closed_form_auto_options_keep_the_value_with_the_lowest_held_out_error_and_without_held_out_the_papers(
        string methodName, string option, string grid, double paperValue)
    {
        var sources = Sources(2, [12, 10]);
        var method = MergeMethods.Get(methodName);
        var settings = new MethodSettings(method, new Dictionary<string, string> { [option] = "auto", [$"{option}-grid"] = grid });
        var outcome = method.Merge(WithHeldOut(sources), settings);
        var trials = outcome.Details[$"{option}_search"]!["trials"]!.AsArray();
        Assert.Equal(3, trials.Count);
        var best = trials.MinBy(t => (double)t!["divergence"]!)!;
        Assert.Equal((double)best[option]!, (double)outcome.Details[option]!);
        using var given = method.Merge(MergeTests.Inputs(sources), new MethodSettings(method, new Dictionary<string, string> { [option] = ((double)best[option]!).ToString(System.Globalization.CultureInfo.InvariantCulture) })).Merged!;
        foreach (var (name, w) in outcome.Merged!.Weights) Assert.True(w.Equals(given.Weights[name]), name);
        Assert.Equal(paperValue, (double)method.Merge(MergeTests.Inputs(sources), settings).Details[option]!);
    }

    [Fact]
    public void The_mean_divergence_caps_each_task_so_a_near_constant_source_cannot_swamp_the_others()
    {
        static LabelFreeEstimate Of(double agreement, params double[] divergences) =>
            LabelFreeEstimate.Of(divergences.Select((d, t) => new TaskAgreement($"t{t}", agreement, d, 2 * d, 32)).ToList(), agreement);
        // Task 1's source barely varies: its divergence is huge at one setting and small at another that ruins task 0.
        var keepsTask0 = Of(0.7, 0.3, 1000);
        var collapsesTask0 = Of(0.5, 1.2, 0.9);
        Assert.Equal(0.65, keepsTask0.Divergence, 12);
        Assert.Equal(0.8, keepsTask0.LogitError, 12);   // capped the same way
        Assert.True(keepsTask0.IsBetterThan(collapsesTask0));
        Assert.Equal(1000, keepsTask0.Tasks[1].Divergence);   // the per-task value is reported as measured
        // A diverged task is not capped: the model is out.
        Assert.Equal(double.PositiveInfinity, Of(0.9, 0.1, double.PositiveInfinity).Divergence);
        Assert.Equal(double.PositiveInfinity, Of(0.9, 0.1, double.NaN).Divergence);
        // At equal errors the higher agreement wins.
        Assert.True(Of(0.8, 2, 3).IsBetterThan(Of(0.6, 5, 1)));
        Assert.False(Of(0.6, 5, 1).IsBetterThan(Of(0.8, 2, 3)));
    }

    [Fact]
    public void Spearman_rank_correlation_with_ties_and_constant_sides()
    {
        Assert.Equal(1.0, FsMerge.Bench.BenchRunner.Spearman([1, 2, 3, 4], [10, 20, 30, 40]), 12);
        Assert.Equal(-1.0, FsMerge.Bench.BenchRunner.Spearman([1, 2, 3, 4], [9, 5, 2, 0]), 12);
        // Ties share their average rank: x ranks 0, 1.5, 1.5, 3 against y's 0..3.
        Assert.Equal(1.0 * (2.25 + 0.0 + 0.0 + 2.25) / Math.Sqrt(4.5 * 5), FsMerge.Bench.BenchRunner.Spearman([1, 2, 2, 3], [1, 2, 3, 4]), 12);
        Assert.True(double.IsNaN(FsMerge.Bench.BenchRunner.Spearman([1, 1, 1], [1, 2, 3])));
    }

    [Fact]
    public void Held_out_samples_are_disjoint_from_the_merge_samples_and_small_sources_lend_a_quarter()
    {
        var dir = Directory.CreateTempSubdirectory("fsmerge-heldout").FullName;
        try
        {
            var idx = Path.Combine(dir, "images-idx3-ubyte");
            var pixels = new byte[10 * 28 * 28];
            for (int i = 0; i < 10; i++) pixels[i * 28 * 28] = (byte)i;   // image i is told apart by its first pixel
            Idx.Write(idx, pixels, [10, 28, 28]);
            var source = new DataSource("idx", idx);
            static HashSet<float> Ids(ImageSet set) => set.Images.select(1, 0).select(1, 0).select(1, 0).data<float>().ToHashSet();

            var (merge, held) = DataSources.SampleWithHeldOut(source, dir, 6, 3, seed: 4);
            Assert.Equal((6, 3), (merge.Count, held!.Count));
            Assert.Empty(Ids(merge).Intersect(Ids(held)));
            using var plain = DataSources.Sample(source, dir, 6, seed: 4);
            Assert.True(plain.Images.Equals(merge.Images), "held-out samples must not change which merge samples are drawn");

            (merge, held) = DataSources.SampleWithHeldOut(source, dir, 64, 32, seed: 4);
            Assert.Equal((8, 2), (merge.Count, held!.Count));   // 10 images, 64 asked: a quarter held out
            Assert.Empty(Ids(merge).Intersect(Ids(held)));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
