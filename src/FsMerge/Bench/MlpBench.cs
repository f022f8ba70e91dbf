using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Bench;

/// <summary>One MLP setting: dataset, hidden depth and width.</summary>
public sealed record MlpSetting(string Section, string Dataset, int Depth, int Width)
{
    public string Key => $"{Dataset}-d{Depth}-w{Width}";
}

/// <summary>One row of the paper's MLP tables: a method with fixed options and an optional learning-rate grid.</summary>
public sealed record BenchMethod(string Label, string Method, Dictionary<string, string> Options, double[] LrGrid);

public sealed record BenchResult(string Setting, string Section, string Label, int Seed, double PerTask, double Joint,
    double Seconds, string Options);

public sealed class MlpBenchOptions
{
    public bool Quick { get; init; }
    public int Seeds { get; init; } = 5;
    public int DataPerTask { get; init; } = 64;
    public required string OutDir { get; init; }
    public required string DataDir { get; init; }
    public Device Device { get; init; } = CPU;
}

/// <summary>
/// Reproduces the paper's MLP experiments (Tables 2, 9, 10, 12, 14) on real MNIST / Fashion-MNIST halves:
/// two MLPs from different seeds, one per half, merged with every method from 64 unlabeled images per task.
/// Learning rates of the trained methods are chosen on the validation splits (seed 1 of each setting)
/// and reused for the other seeds; the test split is only read for the reported numbers.
/// </summary>
public static class MlpBench
{
    static readonly double[] Grid = [0.3, 0.1, 0.03, 0.01, 0.003];
    static readonly double[] LocalGrid = [0.3, 0.1, 0.03];

    public static IReadOnlyList<MlpSetting> Settings(bool quick) => quick
        ? [new("depth", "mnist", 2, 128)]
        // Cheapest first: a run cut short still leaves whole tables for the settings it finished.
        : [
            .. new[] { 1, 2, 3, 4, 6 }.Select(d => new MlpSetting("depth", "mnist", d, 128)),
            .. new[] { 1, 2, 3, 4, 6 }.Select(d => new MlpSetting("fashion", "fashion", d, 128)),
            .. new[] { 16, 64, 512, 1024 }.Select(w => new MlpSetting("width", "mnist", 2, w)),
        ];

    public static IReadOnlyList<BenchMethod> Methods(bool quick, string dataset)
    {
        bool fashion = dataset == "fashion";
        string global = quick ? "300" : fashion ? "1500" : "1000";
        string local = quick ? "1000" : "5000";
        Dictionary<string, string> O(params (string, string)[] o) => o.ToDictionary(x => x.Item1, x => x.Item2);
        return
        [
            new("ensemble", "ensemble", O(), []),
            new("average", "average", O(), []),
            new("RegMean", "regmean", O(("alpha", fashion ? "0.8" : "0.9")), []),
            new("ZipIt", "zipit", O(), []),
            new("Re-Basin (weights)", "rebasin", O(("matching", "weights")), []),
            new("distillation", "distill", O(("epochs", global)), Grid),
            new("FS-Merge local", "fs-merge", O(("scope", "local"), ("init", "random"), ("epochs", local)), LocalGrid),
            new("FS-Merge local, ZipIt init", "fs-merge", O(("scope", "local"), ("init", "zipit"), ("epochs", local)), LocalGrid),
            new("FS-Merge global", "fs-merge", O(("init", "first"), ("epochs", global)), Grid),
            new("FS-Merge global, ZipIt init", "fs-merge", O(("init", "zipit"), ("epochs", global)), Grid),
        ];
    }

    public static List<BenchResult> Run(MlpBenchOptions o, Action<string> log)
    {
        var results = new List<BenchResult>();
        var chosen = new JsonObject();
        var clock = Stopwatch.StartNew();
        foreach (var setting in Settings(o.Quick))
        {
            var tasks = new[] { $"{setting.Dataset}:0-4", $"{setting.Dataset}:5-9" };
            var splits = tasks.Select(t => TaskData.Load(TaskSpec.Parse(t), o.DataDir)).ToList();
            var lrs = new Dictionary<string, double>();
            for (int seed = 1; seed <= (o.Quick ? 1 : o.Seeds); seed++)
            {
                var sources = splits.Select((s, i) => Source(setting, s, seed * 1000 + i, o, log)).ToList();
                // The original models: head t on model t, the reference row.
                var original = Evaluator.Evaluate(Evaluator.SeparateModels(sources), splits.Select(s => s.Test).ToList(), o.Device);
                results.Add(new(setting.Key, setting.Section, "original models", seed, original.PerTaskMean, original.Joint, 0, ""));
                var data = splits.Select((s, i) => MergeData.Sample(s.Train, o.DataPerTask, seed * 10 + i)).ToList();
                var target = sources[0].Config with { Heads = sources.SelectMany(s => s.Config.Heads).ToList(), Training = new() };
                var inputs = new MergeInputs { Sources = sources, Data = data, Target = target, Device = o.Device, Seed = seed };
                foreach (var m in Methods(o.Quick, setting.Dataset))
                {
                    var options = new Dictionary<string, string>(m.Options);
                    if (m.LrGrid.Length > 0)
                    {
                        if (!lrs.TryGetValue(m.Label, out double lr))
                        {
                            lr = lrs[m.Label] = Select(m, inputs, splits, o.Device);
                            chosen[$"{setting.Key} {m.Label}"] = lr;
                            log($"  {setting.Key} {m.Label}: lr {lr} chosen on validation");
                        }
                        options["lr"] = lr.ToString(CultureInfo.InvariantCulture);
                    }
                    var watch = Stopwatch.StartNew();
                    var method = MergeMethods.Get(m.Method);
                    var outcome = method.Merge(inputs, new MethodSettings(method, options));
                    double seconds = watch.Elapsed.TotalSeconds;
                    var test = Evaluator.Evaluate(outcome.Predict, splits.Select(s => s.Test).ToList(), o.Device);
                    outcome.Merged?.Dispose();
                    results.Add(new(setting.Key, setting.Section, m.Label, seed, test.PerTaskMean, test.Joint, seconds,
                        string.Join(" ", options.Select(kv => $"--{kv.Key} {kv.Value}"))));
                    log($"  {setting.Key} seed {seed} {m.Label,-28} per-task {100 * test.PerTaskMean:F2}  joint {100 * test.Joint:F2}  ({seconds:F1} s)");
                }
                foreach (var s in sources) s.Dispose();
            }
            Write(o, results, chosen, clock.Elapsed); // after every setting, so a long run leaves partial tables
        }
        return results;
    }

    /// <summary>The learning rate of the grid with the best validation per-task accuracy (seed-1 sources).</summary>
    static double Select(BenchMethod m, MergeInputs inputs, IReadOnlyList<TaskSplits> splits, Device device)
    {
        var method = MergeMethods.Get(m.Method);
        double best = m.LrGrid[0], bestScore = double.NegativeInfinity;
        foreach (var lr in m.LrGrid)
        {
            var options = new Dictionary<string, string>(m.Options) { ["lr"] = lr.ToString(CultureInfo.InvariantCulture) };
            double score;
            try
            {
                var outcome = method.Merge(inputs, new MethodSettings(method, options));
                score = Evaluator.Evaluate(outcome.Predict, splits.Select(s => s.Validation).ToList(), device).PerTaskMean;
                outcome.Merged?.Dispose();
            }
            catch (FsMergeException)
            {
                score = double.NegativeInfinity; // diverged at this lr
            }
            if (score > bestScore) { bestScore = score; best = lr; }
        }
        return best;
    }

    /// <summary>A source MLP, trained once and cached under OUT/models (AdamW, 2 epochs MNIST / 10 Fashion).</summary>
    static Model Source(MlpSetting setting, TaskSplits data, long seed, MlpBenchOptions o, Action<string> log)
    {
        var dir = Path.Combine(o.OutDir, "models", $"{setting.Key}-{data.Task.ToString().Replace(':', '-')}-seed{seed}");
        if (File.Exists(Path.Combine(dir, Model.WeightsFile))) return Model.Load(dir, o.Device);
        var config = new ModelConfig
        {
            Architecture = "mlp", InputSize = 784,
            HiddenSizes = Enumerable.Repeat(setting.Width, setting.Depth).ToArray(),
            Heads = [new HeadInfo(data.Task.ToString(), data.Train.LabelNames)],
        };
        var options = setting.Dataset == "fashion"
            ? new TrainOptions { Epochs = 10, BatchSize = 64, LearningRate = 1e-3, Seed = seed }
            : new TrainOptions { Epochs = 2, BatchSize = 10, LearningRate = 1e-3, Seed = seed };
        var watch = Stopwatch.StartNew();
        using var initial = Model.Create(config, seed, o.Device);
        var (model, history) = SourceTrainer.Train(initial, data, options, o.Device);
        var (test, _) = SourceTrainer.Record(model, history, data, options, null, watch.Elapsed, o.Device);
        model.Save(dir);
        log($"  source {setting.Key} {data.Task} seed {seed}: test {100 * test:F2}%");
        return model;
    }

    static void Write(MlpBenchOptions o, List<BenchResult> results, JsonObject chosen, TimeSpan elapsed)
    {
        Directory.CreateDirectory(o.OutDir);
        var csv = new StringBuilder("setting,section,method,seed,per_task,joint,seconds,options\n");
        foreach (var r in results)
            csv.AppendLine(string.Join(",", r.Setting, r.Section, $"\"{r.Label}\"", r.Seed, F(r.PerTask), F(r.Joint), F(r.Seconds), $"\"{r.Options}\""));
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "mlp.csv"), csv.ToString());
        var json = new JsonObject
        {
            ["command"] = $"fsmerge bench mlp{(o.Quick ? " --quick" : "")} --seeds {o.Seeds}",
            ["seconds"] = Math.Round(elapsed.TotalSeconds),
            ["data_per_task"] = o.DataPerTask,
            ["chosen_lr"] = chosen.DeepClone(),
            ["results"] = JsonSerializer.SerializeToNode(results),
        };
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "mlp.json"), json.ToJsonString(JsonFormat.Indented));
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "mlp.md"), Markdown(o, results, chosen, elapsed));
    }

    static string F(double v) => v.ToString("G6", CultureInfo.InvariantCulture);

    static string Markdown(MlpBenchOptions o, List<BenchResult> results, JsonObject chosen, TimeSpan elapsed)
    {
        var md = new StringBuilder();
        md.AppendLine($"# MLP merging benchmark\n\nProduced by `./fsmerge bench mlp{(o.Quick ? " --quick" : "")} --seeds {o.Seeds} --out {o.OutDir}` " +
                      $"in {elapsed.TotalMinutes:F0} min. Test accuracy in %, mean ± std over seeds; {o.DataPerTask} unlabeled merge images per task.\n");
        foreach (var section in results.Select(r => r.Section).Distinct())
        {
            var inSection = results.Where(r => r.Section == section).ToList();
            var settings = inSection.Select(r => r.Setting).Distinct().ToList();
            string Column(string key) => section == "width" ? key.Split('-')[2] : key.Split('-')[1];
            foreach (var (metric, pick) in new (string, Func<BenchResult, double>)[] { ("per-task", r => r.PerTask), ("joint", r => r.Joint) })
            {
                md.AppendLine($"## {Title(section)} — {metric} accuracy\n");
                md.AppendLine($"| method | {string.Join(" | ", settings.Select(Column))} |");
                md.AppendLine($"|---|{string.Concat(settings.Select(_ => "---|"))}");
                foreach (var label in inSection.Select(r => r.Label).Distinct())
                {
                    var cells = settings.Select(s =>
                    {
                        var values = inSection.Where(r => r.Setting == s && r.Label == label).Select(pick).Select(v => 100 * v).ToList();
                        if (values.Count == 0) return "";
                        double mean = values.Average();
                        double std = values.Count > 1 ? Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)) : 0;
                        return $"{mean:F2} ± {std:F2}";
                    });
                    md.AppendLine($"| {label} | {string.Join(" | ", cells)} |");
                }
                md.AppendLine();
            }
        }
        md.AppendLine("## Learning rates chosen on validation\n");
        foreach (var (key, value) in chosen) md.AppendLine($"- {key}: {value}");
        return md.ToString();
    }

    static string Title(string section) => section switch
    {
        "depth" => "MNIST halves, width 128, by hidden depth (paper Tables 2 and 10)",
        "width" => "MNIST halves, depth 2, by hidden width (paper Tables 9 and 11)",
        _ => "Fashion-MNIST halves, width 128, by hidden depth (paper Tables 12 and 14)",
    };
}
