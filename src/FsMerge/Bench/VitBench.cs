using System.Diagnostics;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Training;
using static TorchSharp.torch;

namespace FsMerge.Bench;

public sealed class VitBenchOptions
{
    public bool Quick { get; init; }
    public int Seeds { get; init; } = 3;
    public int Originals { get; init; } = 16;
    public int Augmented { get; init; } = 800;
    public required string OutDir { get; init; }
    public required string DataDir { get; init; }
    public Device Device { get; init; } = CPU;
}

/// <summary>
/// Pairs of tiny ViTs from different initializations (paper Table 3 at CPU scale). Each source is
/// pre-trained on Fashion-MNIST from its own seed (so its own data order), then fine-tuned on its own
/// task with a fresh head; the pair is merged from n original + augmented unlabeled images per task.
/// </summary>
public static class VitBench
{
    static readonly (string A, string B)[] FullPairs = [("mnist:0-4", "mnist:5-9"), ("fashion:0-4", "fashion:5-9"), ("mnist:0-4", "fashion:5-9")];

    public static IReadOnlyList<BenchMethod> Methods(bool quick)
    {
        string epochs = quick ? "20" : "100";
        Dictionary<string, string> Trained(params (string, string)[] extra) => new(
            new[] { ("optimizer", "adamw"), ("schedule", "onecycle"), ("batch", "128"), ("weight-decay", "0.001"), ("epochs", epochs) }
                .Concat(extra).Select(kv => KeyValuePair.Create(kv.Item1, kv.Item2)));
        return
        [
            new("ensemble", "ensemble", new(), []),
            new("average", "average", new(), []),
            new("SLERP", "slerp", new(), []),
            new("RegMean", "regmean", new() { ["alpha"] = "0.9" }, []),
            new("distillation", "distill", Trained(), [1e-3, 1e-4]),
            new("FS-Merge diagonal", "fs-merge", Trained(("type", "diagonal"), ("targets", "own"), ("normalize", "false")), [1e-2, 1e-3]),
            new("FS-Merge low-rank (r 8)", "fs-merge", Trained(("type", "diagonal-low-rank"), ("rank", "8"), ("targets", "own"), ("normalize", "false")), [1e-3, 1e-4]),
        ];
    }

    public static List<BenchResult> Run(VitBenchOptions o, Action<string> log)
    {
        var results = new List<BenchResult>();
        var chosen = new JsonObject();
        var clock = Stopwatch.StartNew();
        foreach (var (a, b) in o.Quick ? FullPairs.Take(1) : FullPairs)
        {
            var key = $"{a}+{b}";
            var splits = new[] { a, b }.Select(t => TaskData.Load(TaskSpec.Parse(t), o.DataDir)).ToList();
            var lrs = new Dictionary<string, double>();
            for (int seed = 1; seed <= (o.Quick ? 1 : o.Seeds); seed++)
            {
                var sources = splits.Select((s, i) => Source(s, seed * 1000 + i, o, log)).ToList();
                var data = splits.Select((s, i) => MergeDataSet.Compose(MergeData.Sample(s.Train, o.Originals, seed * 10 + i),
                    o.Quick ? o.Augmented / 4 : o.Augmented, seed * 10 + i)).ToList();
                BenchRunner.RunSeed(key, "pairs", seed, Methods(o.Quick), sources, data, splits, lrs, chosen, results, o.Device, log);
                foreach (var s in sources) s.Dispose();
            }
            BenchRunner.Write(o.OutDir, "vit", "ViT merging benchmark (pairs)",
                $"./fsmerge bench vit{(o.Quick ? " --quick" : "")} --seeds {o.Seeds} --out {o.OutDir}",
                $"{o.Originals} original + {(o.Quick ? o.Augmented / 4 : o.Augmented)} augmented unlabeled images per task",
                results, chosen, clock.Elapsed, _ => "Two tiny ViTs (width 64, depth 4, patch 7), different initializations (paper Table 3)",
                (_, k) => k);
        }
        return results;
    }

    /// <summary>Pre-trained on Fashion-MNIST from its own seed, then fine-tuned on its task; both cached.</summary>
    static Model Source(TaskSplits task, long seed, VitBenchOptions o, Action<string> log)
    {
        var pretrainDir = Path.Combine(o.OutDir, "models", $"vit-pretrain-fashion-seed{seed}{(o.Quick ? "-quick" : "")}");
        var finetuneDir = Path.Combine(o.OutDir, "models", $"vit-{task.Task.ToString().Replace(':', '-')}-seed{seed}{(o.Quick ? "-quick" : "")}");
        if (BenchRunner.Cached(finetuneDir, o.Device) is { } cached) return cached;
        var pretrained = BenchRunner.Cached(pretrainDir, o.Device);
        if (pretrained is null)
        {
            var fashion = TaskData.Load(TaskSpec.Parse("fashion"), o.DataDir);
            if (o.Quick) fashion = fashion with { Train = MergeData.Sample(fashion.Train, 10_000, seed) };
            var config = new ModelConfig
            {
                Architecture = "vit", ImageSize = 28, NumChannels = 1, PatchSize = 7, HiddenSize = 64, NumHiddenLayers = 4,
                NumAttentionHeads = 4, IntermediateSize = 256, Heads = [new HeadInfo("fashion", fashion.Train.LabelNames)],
            };
            using var initial = Model.Create(config, seed, o.Device);
            pretrained = BenchRunner.TrainSource(initial, fashion, new TrainOptions { Epochs = o.Quick ? 1 : 5, BatchSize = 128, Seed = seed },
                null, pretrainDir, o.Device, log);
        }
        using (pretrained)
        {
            var initial = pretrained.WithFreshHead(new HeadInfo(task.Task.ToString(), task.Train.LabelNames), seed + 1);
            using (initial)
                return BenchRunner.TrainSource(initial, task, new TrainOptions { Epochs = o.Quick ? 1 : 3, BatchSize = 128, Seed = seed },
                    pretrainDir, finetuneDir, o.Device, log);
        }
    }
}
