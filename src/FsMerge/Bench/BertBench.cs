using System.Diagnostics;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Runs;
using FsMerge.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Bench;

internal sealed class BertBenchOptions
{
    public bool Quick { get; init; }
    /// <summary>Add a "(lr auto)" row beside every grid-tuned method: its rate chosen without labels (see <see cref="BenchRunner.RunSeed"/>).</summary>
    public bool LrAuto { get; init; }
    public int Seeds { get; init; } = 2;
    public int PerTask { get; init; } = 200;
    public int HeldOut { get; init; } = 200;
    public required string OutDir { get; init; }
    public required string DataDir { get; init; }
    public Device Device { get; init; } = CPU;
}

/// <summary>
/// Pairs of tiny BERTs from different initializations (paper appendix F.3 at CPU scale), four at once, and a
/// data-amount curve (appendix F.5). Protocol: each source is pre-trained by masked-language modelling on the pooled
/// train text of lang and fortunes from its own seed (<see cref="MlmPretrainer"/>), then fine-tuned on its
/// own task with a fresh head; the two sources of a pair come from different pre-training seeds. They are
/// merged from n unlabeled sequences per task (no augmentation, spec §11.6). Learning rates of trained
/// methods are chosen on the validation splits, never on test.
/// </summary>
internal static class BertBench
{
    static readonly (string A, string B)[] Pairs = [("lang:0-1", "lang:2-4"), ("fortunes:0-3", "fortunes:4-7"), ("lang:0-2", "fortunes:0-1")];
    /// <summary>The four-model setting's tasks, both corpora split in two.</summary>
    static readonly string[] Four = ["lang:0-1", "lang:2-4", "fortunes:0-3", "fortunes:4-7"];
    static readonly int[] CurveSizes = [16, 64, 256, 1024];
    const int Width = 64, Depth = 2, AttentionHeads = 4, Intermediate = 256, Rank = 12;

    static Dictionary<string, string> Trained(string epochs, params (string, string)[] extra) => new(
        new[] { ("optimizer", "adamw"), ("schedule", "onecycle"), ("batch", "64"), ("weight-decay", "0.001"), ("epochs", epochs) }
            .Concat(extra).Select(kv => KeyValuePair.Create(kv.Item1, kv.Item2)));

    static BenchMethod FsMergeLowRank(string epochs, params (string, string)[] extra) =>
        new($"FS-Merge low-rank (r {Rank})", "fs-merge",
            Trained(epochs, [("type", "diagonal-low-rank"), ("rank", $"{Rank}"), ("targets", "own"), ("normalize", "false"), .. extra]), [3e-3, 1e-3]);

    public static IReadOnlyList<BenchMethod> Methods(bool quick)
    {
        string epochs = quick ? "10" : "60";
        return
        [
            new("ensemble", "ensemble", new(), []),
            new("average", "average", new(), []),
            new("RegMean", "regmean", new() { ["alpha"] = "0.9" }, []),
            .. VitBench.HeadAlignmentRows,
            new("CCA Merge", "cca", new(), []),
            new("PLeaS", "pleas", new(), []),
            new("distillation", "distill", Trained(epochs, ("init", "first")), [3e-3, 1e-3]),
            new("distillation, ZipIt init", "distill", Trained(epochs, ("init", "zipit")), [3e-3, 1e-3]),
            FsMergeLowRank(epochs),
            FsMergeLowRank(epochs, ("init", "rebasin")) with { Label = $"FS-Merge low-rank (r {Rank}), Re-Basin init" },
        ];
    }

    public static List<BenchResult> Run(BertBenchOptions o, Action<string> log)
    {
        var results = new List<BenchResult>();
        var chosen = new JsonObject();
        var clock = Stopwatch.StartNew();
        string command = $"./fsmerge bench bert{(o.Quick ? " --quick" : "")}{(o.LrAuto ? " --lr-auto" : "")} --seeds {o.Seeds} --out {o.OutDir}";
        string note = $"{o.PerTask} unlabeled sequences per task (pairs), no augmentation; tiny BERTs (width {Width}, depth {Depth}, {AttentionHeads} heads, {TextFolder.SequenceLength} tokens)";
        void Write() => BenchRunner.Write(o.OutDir, "bert", "BERT merging benchmark", command, note, results, chosen, clock.Elapsed,
            section => section switch
            {
                "pairs" => "Pairs of tiny BERTs, MLM-pre-trained from distinct seeds, fine-tuned on distinct tasks (paper F.3)",
                "four" => $"Four tiny BERTs, each MLM-pre-trained from its own seed (1-4), fine-tuned on {string.Join(", ", Four)}; seed 1, {o.PerTask} unlabeled sequences per task",
                _ => $"Data amount: {Pairs[0].A} + {Pairs[0].B}, seed 1, n unlabeled sequences per task, FS-Merge early-stopped on {o.HeldOut} held-out sequences per task, distillation 60 epochs (paper F.5)",
            },
            (_, setting) => setting);

        foreach (var (a, b) in o.Quick ? Pairs.Take(1) : Pairs)
        {
            var splits = new[] { a, b }.Select(t => TaskData.Load(TaskSpec.Parse(t), o.DataDir)).ToList();
            var lrs = new Dictionary<string, double>();
            for (int seed = 1; seed <= (o.Quick ? 1 : o.Seeds); seed++)
            {
                var sources = splits.Select((s, i) => Source(s, 2 * seed - 1 + i, o, log)).ToList();
                var data = splits.Select((s, i) => MergeData.Sample(s.Train, o.PerTask, seed * 10 + i)).ToList();
                var labelFree = o.LrAuto ? splits.Select((s, i) => MergeData.HeldOut(s.Train, o.PerTask, MergeRequest.DefaultHeldOut, seed * 10 + i)).ToList() : null;
                BenchRunner.RunSeed($"{a}+{b}", "pairs", seed, Methods(o.Quick), sources, data, splits, lrs, chosen, results, o.Device, log, labelFree: labelFree);
                foreach (var s in sources) s.Dispose();
                Write();
            }
        }
        if (!o.Quick)
        {
            FourModels(o, results, chosen, log);
            Write();
            Curve(o, results, chosen, log);
        }
        Write();
        return results;
    }

    /// <summary>
    /// Every method on four sources at once (seed 1), each pre-trained from its own seed: the four-model case of the
    /// paper's ViT tables, on text. Learning rates are chosen on this setting's validation splits.
    /// </summary>
    static void FourModels(BertBenchOptions o, List<BenchResult> results, JsonObject chosen, Action<string> log)
    {
        var splits = Four.Select(t => TaskData.Load(TaskSpec.Parse(t), o.DataDir)).ToList();
        var sources = splits.Select((s, i) => Source(s, 1 + i, o, log)).ToList();
        var data = splits.Select((s, i) => MergeData.Sample(s.Train, o.PerTask, 10 + i)).ToList();
        var labelFree = o.LrAuto ? splits.Select((s, i) => MergeData.HeldOut(s.Train, o.PerTask, MergeRequest.DefaultHeldOut, 10 + i)).ToList() : null;
        BenchRunner.RunSeed(string.Join("+", Four), "four", 1, Methods(false), sources, data, splits, new(), chosen, results, o.Device, log, labelFree: labelFree);
        foreach (var s in sources) s.Dispose();
    }

    /// <summary>
    /// The ensemble, CCA Merge, PLeaS, distillation (60 epochs, from model 1 and from ZipIt's merge) and FS-Merge (early
    /// stopping on held-out validation sequences) on the first pair with 16 … 1024 sequences per task.
    /// </summary>
    static void Curve(BertBenchOptions o, List<BenchResult> results, JsonObject chosen, Action<string> log)
    {
        var (a, b) = Pairs[0];
        var splits = new[] { a, b }.Select(t => TaskData.Load(TaskSpec.Parse(t), o.DataDir)).ToList();
        var sources = splits.Select((s, i) => Source(s, 1 + i, o, log)).ToList();
        var heldOut = splits.Select((s, i) => MergeData.Sample(s.Validation, o.HeldOut, 500 + i)).ToList();
        // The learning rates chosen for this pair in the pairs table (seed 1's validation splits), reused.
        double ChosenLr(string label) => chosen.TryGetPropertyValue($"{a}+{b} {label}", out var picked) ? picked!.GetValue<double>() : 1e-3;
        var method = FsMergeLowRank("80", ("early-stop", "8"), ("patience", "5")) with { LrGrid = [] };
        method.Options["lr"] = ChosenLr(method.Label).ToString(System.Globalization.CultureInfo.InvariantCulture);
        BenchMethod AtChosenLr(string label) => Methods(false).Single(m => m.Label == label) with { LrGrid = [ChosenLr(label)] };
        BenchMethod Untrained(string method) => Methods(false).Single(m => m.Method == method);
        foreach (var n in CurveSizes)
        {
            var data = splits.Select((s, i) => MergeData.Sample(s.Train, n, 10 + i)).ToList();
            BenchRunner.RunSeed($"n={n}", "curve", 1, [Untrained("ensemble"), Untrained("cca"), Untrained("pleas"), AtChosenLr("distillation"), AtChosenLr("distillation, ZipIt init"), method], sources, data, splits, new(), chosen, results, o.Device, log, heldOut);
        }
        foreach (var s in sources) s.Dispose();
    }

    /// <summary>MLM-pre-trained from its own seed on lang + fortunes, then fine-tuned on its task; both cached under OUT/models.</summary>
    static Model Source(TaskSplits task, long seed, BertBenchOptions o, Action<string> log)
    {
        string suffix = o.Quick ? "-quick" : "";
        var pretrainDir = Path.Combine(o.OutDir, "models", $"bert-mlm-seed{seed}{suffix}");
        var finetuneDir = Path.Combine(o.OutDir, "models", $"bert-{task.Task.ToString().Replace(':', '-')}-seed{seed}{suffix}");
        if (BenchRunner.Cached(finetuneDir, o.Device) is { } cached) return cached;
        var pretrained = BenchRunner.Cached(pretrainDir, o.Device);
        if (pretrained is null)
        {
            var watch = Stopwatch.StartNew();
            string[] corpusNames = ["lang", "fortunes"];
            var vocab = TextFolder.Vocabulary(o.DataDir, corpusNames[0]);
            var config = TextFolder.BertConfig(o.DataDir, corpusNames[0], Width, Depth, AttentionHeads, Intermediate, []);
            using var pooled = TextFolder.Corpus(o.DataDir, corpusNames);
            // --quick pre-trains on a fixed sample of 4000 sequences, to stay around a minute in all.
            using var corpus = o.Quick ? pooled.index_select(0, torch.randperm(pooled.shape[0], generator: new Generator(7)).narrow(0, 0, Math.Min(4000, pooled.shape[0]))) : pooled.alias();
            (pretrained, var losses) = MlmPretrainer.Train(config, corpus, [vocab.PadId, vocab.ClsId, vocab.SepId], vocab.MaskId,
                new TrainOptions { Epochs = o.Quick ? 1 : 3, LearningRate = 2e-3, BatchSize = 128, Seed = seed }, o.Device);
            pretrained.Save(pretrainDir);
            log($"  pre-trained {Path.GetFileName(pretrainDir)}: masked-token loss {losses[^1]:F3} ({watch.Elapsed.TotalSeconds:F0} s)");
        }
        using (pretrained)
        {
            var initial = pretrained.WithFreshHead(new HeadInfo(task.Task.ToString(), task.Train.LabelNames), seed + 1);
            using (initial)
            {
                var model = BenchRunner.TrainSource(initial, task, new TrainOptions { Epochs = o.Quick ? 1 : 4, BatchSize = 64, Seed = seed },
                    pretrainDir, finetuneDir, o.Device, log);
                return model;
            }
        }
    }
}
