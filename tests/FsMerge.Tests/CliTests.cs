using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Models;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>The fsmerge program run in-process on real MNIST (provisioned by fsmerge's own data code).</summary>
[Collection("torch")]
public class CliTests : IClassFixture<CliTests.TrainedPair>
{
    public sealed class TrainedPair : IDisposable
    {
        public string Root { get; } = Path.Combine(Path.GetTempPath(), $"fsmerge-cli-{Guid.NewGuid():N}");
        public string A => Path.Combine(Root, "a");
        public string B => Path.Combine(Root, "b");

        public TrainedPair()
        {
            DataProvisioner.Provision(DataDirectory.Resolve(null), _ => { });
            Assert.Equal(0, Run("train", "--arch", "mlp", "--task", "mnist:0-4", "--seed", "1", "--epochs", "1", "--out", A, "--quiet").Code);
            Assert.Equal(0, Run("train", "--arch", "mlp", "--task", "mnist:5-9", "--seed", "2", "--epochs", "1", "--out", B, "--quiet").Code);
        }

        public void Dispose() => Directory.Delete(Root, recursive: true);
    }

    readonly TrainedPair pair;
    public CliTests(TrainedPair pair) => this.pair = pair;

    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (outWriter, errWriter) = (new StringWriter(), new StringWriter());
        Console.SetOut(outWriter);
        Console.SetError(errWriter);
        try
        {
            var code = (int)typeof(Cli.ParsedArgs).Assembly.EntryPoint!.Invoke(null, [args])!;
            return (code, outWriter.ToString(), errWriter.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    static JsonNode EvalJson(params string[] args)
    {
        var (code, output, err) = Run(["eval", .. args, "--json"]);
        Assert.True(code == 0, err);
        return JsonNode.Parse(output)!;
    }

    string Out(string name) => Path.Combine(pair.Root, name);

    [Fact]
    public void Trained_models_learn_and_eval_reports_per_task_and_joint()
    {
        var result = EvalJson("--model", pair.A, "--model", pair.B);
        Assert.Equal("mnist:0-4", (string?)result["tasks"]![0]!["task"]);
        Assert.True((double)result["tasks"]![0]!["accuracy"]! > 0.9);
        Assert.True((double)result["tasks"]![1]!["accuracy"]! > 0.85);
        Assert.InRange((double)result["joint"]!, 0.3, (double)result["per_task_mean"]!);
    }

    [Fact]
    public void Zero_step_first_init_merge_has_exactly_model_1s_accuracy_on_task_1()
    {
        var merged = Out("first");
        var (code, _, err) = Run("merge", "--method", "fs-merge", "--init", "first", "--epochs", "0", "--model", pair.A, "--model", pair.B, "--out", merged, "--quiet");
        Assert.True(code == 0, err);
        var original = (double)EvalJson("--model", pair.A)["tasks"]![0]!["accuracy"]!;
        var result = EvalJson("--model", merged);
        Assert.Equal(original, (double)result["tasks"]![0]!["accuracy"]!);
        var record = JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "merge.json")))!;
        Assert.Equal("fs-merge", (string?)record["method"]);
        Assert.Equal(64, (int)record["data_per_task"]![1]!);
    }

    [Fact]
    public void Fine_tuning_from_a_checkpoint_keeps_its_architecture_and_records_it()
    {
        var tuned = Out("tuned");
        var (code, _, err) = Run("train", "--task", "mnist:5-9", "--init", pair.A, "--seed", "3", "--epochs", "1", "--hidden", "7", "--out", tuned, "--quiet");
        Assert.True(code == 0, err);
        using var model = Model.Load(tuned, CPU);
        using var source = Model.Load(pair.A, CPU);
        Assert.Equal(source.Config.HiddenSizes, model.Config.HiddenSizes);     // the checkpoint's shape, not --hidden
        Assert.Equal(pair.A, (string?)model.Config.Training["init"]);
        Assert.Equal("mnist:5-9", model.Config.Heads[0].Task);
        Assert.True((double)model.Config.Training["test_accuracy"]! > 0.85);
    }

    [Fact]
    public void Averaging_a_model_with_itself_returns_it_unchanged()
    {
        var merged = Out("self");
        Assert.Equal(0, Run("merge", "--method", "average", "--model", pair.A, "--model", pair.A, "--out", merged, "--quiet").Code);
        using var a = Model.Load(pair.A, CPU);
        using var m = Model.Load(merged, CPU);
        foreach (var spec in a.Config.Arch.BackboneWeights(a.Config))
            Assert.True(m.Weights[spec.Name].allclose(a.Weights[spec.Name], rtol: 1e-6, atol: 1e-7), spec.Name);
        Assert.True(m.Weights["classifier.1.weight"].allclose(a.Weights["classifier.weight"]));
    }

    [Fact]
    public void A_merge_on_real_data_beats_averaging()
    {
        double PerTask(string method, params string[] extra)
        {
            var dir = Out(method);
            var (code, _, err) = Run(["merge", "--method", method, "--model", pair.A, "--model", pair.B, "--out", dir, "--quiet", .. extra]);
            Assert.True(code == 0, err);
            return (double)EvalJson("--model", dir)["per_task_mean"]!;
        }
        double average = PerTask("average");
        double fsMerge = PerTask("fs-merge", "--init", "zipit", "--epochs", "300", "--lr", "0.03");
        Assert.True(fsMerge > average + 0.02, $"fs-merge {fsMerge:F4} vs average {average:F4}");
    }

    [Theory]
    [InlineData("unknown option '--bogus'", "eval", "--bogus", "1")]
    [InlineData("unknown command 'frobnicate'", "frobnicate")]
    [InlineData("unknown merge method 'nope'", "merge", "--method", "nope", "--model", "A", "--model", "B", "--out", "OUT")]
    [InlineData("model directory not found", "eval", "--model", "/nonexistent/model")]
    [InlineData("mnist:12", "train", "--task", "mnist:12", "--out", "OUT")]
    [InlineData("--epochs 'two'", "train", "--task", "mnist:0-4", "--epochs", "two", "--out", "OUT")]
    [InlineData("has no option --rank", "merge", "--method", "average", "--rank", "3", "--model", "A", "--model", "B", "--out", "OUT")]
    public void Bad_input_gets_one_clear_line_and_a_non_zero_exit(string expected, params string[] args)
    {
        var resolved = args.Select(a => a switch { "A" => pair.A, "B" => pair.B, "OUT" => Out("never"), _ => a }).ToArray();
        var (code, _, err) = Run(resolved);
        Assert.Equal(2, code);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.False(Directory.Exists(Out("never")));
    }

    [Fact]
    public void A_truncated_model_file_is_named_and_an_existing_output_is_kept()
    {
        var broken = Out("broken");
        Directory.CreateDirectory(broken);
        File.Copy(Path.Combine(pair.A, Model.ConfigFile), Path.Combine(broken, Model.ConfigFile));
        var bytes = File.ReadAllBytes(Path.Combine(pair.A, Model.WeightsFile));
        File.WriteAllBytes(Path.Combine(broken, Model.WeightsFile), bytes[..(bytes.Length / 2)]);
        var (code, _, err) = Run("eval", "--model", broken);
        Assert.Equal(2, code);
        Assert.Contains(Path.Combine(broken, Model.WeightsFile), err);
        Assert.DoesNotContain("   at ", err);

        var existing = Out("existing");
        Directory.CreateDirectory(existing);
        File.WriteAllText(Path.Combine(existing, "keep.txt"), "mine");
        (code, _, err) = Run("merge", "--method", "average", "--model", pair.A, "--model", pair.B, "--out", existing);
        Assert.Equal(2, code);
        Assert.Contains("--overwrite", err);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(existing, "keep.txt")));
    }
    /// <summary>
    /// bench perf's measurement (its child mode) runs each variant and reports a step time and the size of θ:
    /// fold-every-step and the explicit SuperNet train the same θ, distillation every backbone weight.
    /// No timing is asserted (speed lives in the benchmark).
    /// </summary>
    [Fact]
    public void Bench_perf_measures_every_variant_with_its_parameter_count()
    {
        var results = Bench.PerfBench.Variants.ToDictionary(v => v, v =>
        {
            var (code, output, err) = Run("bench", "perf", "--child", v, "--models", "2", "--threads", "2", "--steps", "4");
            Assert.True(code == 0, err);
            var line = output.Split('\n').Single(l => l.StartsWith("RESULT "));
            return System.Text.Json.JsonSerializer.Deserialize<Bench.PerfResult>(line["RESULT ".Length..])!;
        });
        Assert.All(results.Values, r => Assert.True(r.MillisecondsPerStep > 0 && r.Models == 2, r.Variant));
        Assert.Equal(results["fold-every-step"].Parameters, results["explicit-supernet"].Parameters);
        var config = Bench.PerfBench.Config(0, Bench.PerfSettings.Sizes[0]);
        Assert.Equal(config.Arch.BackboneWeights(config).Sum(w => w.Shape.Aggregate(1L, (a, b) => a * b)), results["distillation"].Parameters);
    }

    /// <summary>The paired child trains both variants to the end, taking turns, and times every epoch after the warm-up (no timing asserted).</summary>
    [Fact]
    public void Bench_perf_pairs_fold_and_distillation_epoch_by_epoch()
    {
        var (code, output, err) = Run("bench", "perf", "--child", Bench.PerfBench.Paired, "--models", "2", "--threads", "1", "--steps", "6");
        Assert.True(code == 0, err);
        var line = output.Split('\n').Single(l => l.StartsWith("RESULT "));
        var result = System.Text.Json.JsonSerializer.Deserialize<Bench.PairedResult>(line["RESULT ".Length..])!;
        Assert.Equal(3, result.Ratios.Length);   // 1 + 6 / 2 epochs, the first one dropped
        Assert.All(result.Ratios, r => Assert.True(r > 0 && double.IsFinite(r)));
        Assert.True(result.FoldMilliseconds > 0 && result.DistillationMilliseconds > 0);
    }
}
