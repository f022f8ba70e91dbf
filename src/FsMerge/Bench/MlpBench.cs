using System.Diagnostics;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Runs;
using FsMerge.Training;
using static TorchSharp.torch;

namespace FsMerge.Bench;

/// <summary>One MLP setting: dataset, hidden depth and width.</summary>
internal sealed record MlpSetting(string Section, string Dataset, int Depth, int Width)
{
    public string Key => $"{Dataset}-d{Depth}-w{Width}";
}

internal sealed class MlpBenchOptions
{
    public bool Quick { get; init; }
    /// <summary>Add a "(lr auto)" row beside every grid-tuned method: its rate chosen without labels (see <see cref="BenchRunner.RunSeed"/>).</summary>
    public bool LrAuto { get; init; }
    public int Seeds { get; init; } = 5;
    public int DataPerTask { get; init; } = 64;
    /// <summary>Keep the settings already finished in OUT/mlp.json (all seeds) and run only the rest.</summary>
    public bool Resume { get; init; }
    /// <summary>Only these settings (by key, e.g. mnist-d2-w128), or all.</summary>
    public IReadOnlyList<string>? Only { get; init; }
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
internal static class MlpBench
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
            new("CCA Merge", "cca", O(), []),
            new("Re-Basin (weights)", "rebasin", O(("matching", "weights")), []),
            new("PLeaS", "pleas", O(), []),
            new("PLeaS, ZipIt matching", "pleas", O(("matching", "zipit")), []),
            new("distillation", "distill", O(("init", "first"), ("epochs", global)), Grid),
            new("distillation, ZipIt init", "distill", O(("init", "zipit"), ("epochs", global)), Grid),
            new("distillation, ZipIt init, layer targets", "distill", O(("init", "zipit"), ("match", "layers"), ("epochs", global)), Grid),
            new("FS-Merge local", "fs-merge", O(("scope", "local"), ("init", "random"), ("epochs", local)), LocalGrid),
            new("FS-Merge local, ZipIt init", "fs-merge", O(("scope", "local"), ("init", "zipit"), ("epochs", local)), LocalGrid),
            new("FS-Merge local, CCA init", "fs-merge", O(("scope", "local"), ("init", "cca"), ("epochs", local)), LocalGrid),
            new("FS-Merge global", "fs-merge", O(("init", "first"), ("epochs", global)), Grid),
            new("FS-Merge global, ZipIt init", "fs-merge", O(("init", "zipit"), ("epochs", global)), Grid),
            new("FS-Merge global, CCA init", "fs-merge", O(("init", "cca"), ("epochs", global)), Grid),
        ];
    }

    public static List<BenchResult> Run(MlpBenchOptions o, Action<string> log)
    {
        var (results, chosen) = o.Resume ? BenchRunner.Finished(o.OutDir, "mlp", o.Quick ? 1 : o.Seeds) : ([], new JsonObject());
        var clock = Stopwatch.StartNew();
        var all = Settings(o.Quick);
        if (o.Only?.FirstOrDefault(k => all.All(s => s.Key != k)) is { } unknown)
            throw new FsMergeException($"bench mlp --settings: '{unknown}' is not a setting; expected some of {string.Join(", ", all.Select(s => s.Key))}");
        foreach (var setting in all.Where(s => o.Only is null || o.Only.Contains(s.Key)))
        {
            if (results.Any(r => r.Setting == setting.Key))
            {
                log($"  {setting.Key}: kept from {Path.Combine(o.OutDir, "mlp.json")}");
                continue;
            }
            var tasks = new[] { $"{setting.Dataset}:0-4", $"{setting.Dataset}:5-9" };
            var splits = tasks.Select(t => TaskData.Load(TaskSpec.Parse(t), o.DataDir)).ToList();
            var lrs = new Dictionary<string, double>();
            for (int seed = 1; seed <= (o.Quick ? 1 : o.Seeds); seed++)
            {
                var sources = splits.Select((s, i) => Source(setting, s, seed * 1000 + i, o, log)).ToList();
                var data = splits.Select((s, i) => MergeData.Sample(s.Train, o.DataPerTask, seed * 10 + i)).ToList();
                var labelFree = o.LrAuto ? splits.Select((s, i) => MergeData.HeldOut(s.Train, o.DataPerTask, MergeRequest.DefaultHeldOut, seed * 10 + i)).ToList() : null;
                BenchRunner.RunSeed(setting.Key, setting.Section, seed, Methods(o.Quick, setting.Dataset), sources, data, splits,
                    lrs, chosen, results, o.Device, log, labelFree: labelFree);
                foreach (var s in sources) s.Dispose();
            }
            Write(o, results, chosen, clock.Elapsed); // after every setting, so a long run leaves partial tables
        }
        return results;
    }

    /// <summary>A source MLP, trained once and cached under OUT/models (AdamW, 2 epochs MNIST / 10 Fashion).</summary>
    static Model Source(MlpSetting setting, TaskSplits data, long seed, MlpBenchOptions o, Action<string> log)
    {
        var dir = Path.Combine(o.OutDir, "models", $"{setting.Key}-{data.Task.ToString().Replace(':', '-')}-seed{seed}");
        if (BenchRunner.Cached(dir, o.Device) is { } cached) return cached;
        var config = new ModelConfig
        {
            Architecture = "mlp", InputSize = 784,
            HiddenSizes = Enumerable.Repeat(setting.Width, setting.Depth).ToArray(),
            Heads = [new HeadInfo(data.Task.ToString(), data.Train.LabelNames)],
        };
        var options = setting.Dataset == "fashion"
            ? new TrainOptions { Epochs = 10, BatchSize = 64, LearningRate = 1e-3, Seed = seed }
            : new TrainOptions { Epochs = 2, BatchSize = 10, LearningRate = 1e-3, Seed = seed };
        using var initial = Model.Create(config, seed, o.Device);
        return BenchRunner.TrainSource(initial, data, options, null, dir, o.Device, log);
    }

    static void Write(MlpBenchOptions o, List<BenchResult> results, JsonObject chosen, TimeSpan elapsed) =>
        BenchRunner.Write(o.OutDir, "mlp", "MLP merging benchmark",
            $"./fsmerge bench mlp{(o.Quick ? " --quick" : "")}{(o.LrAuto ? " --lr-auto" : "")}{(o.Only is null ? "" : $" --settings {string.Join(",", o.Only)}")} --seeds {o.Seeds} --out {o.OutDir}",
            $"{o.DataPerTask} unlabeled merge images per task", results, chosen, elapsed, Title,
            (section, key) => section == "width" ? key.Split('-')[2] : key.Split('-')[1]);

    static string Title(string section) => section switch
    {
        "depth" => "MNIST halves, width 128, by hidden depth (paper Tables 2 and 10)",
        "width" => "MNIST halves, depth 2, by hidden width (paper Tables 9 and 11)",
        _ => "Fashion-MNIST halves, width 128, by hidden depth (paper Tables 12 and 14)",
    };
}
