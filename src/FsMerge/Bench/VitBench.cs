using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Runs;
using FsMerge.Reporting;
using FsMerge.Training;
using static TorchSharp.torch;

namespace FsMerge.Bench;

internal sealed class VitBenchOptions
{
    public bool Quick { get; init; }
    /// <summary>Add a "(lr auto)" row beside every grid-tuned method: its rate chosen without labels (see <see cref="BenchRunner.RunSeed"/>).</summary>
    public bool LrAuto { get; init; }
    public int Seeds { get; init; } = 1;
    public bool Resume { get; init; }
    public IReadOnlyList<string> Sections { get; init; } = VitBench.SectionNames;
    /// <summary>The source models' heads: linear, or cosine with one logit scale (the paper's CLIP heads, spec §10.4).</summary>
    public HeadKind Heads { get; init; } = HeadKind.Linear;
    public required string OutDir { get; init; }
    public required string DataDir { get; init; }
    public Device Device { get; init; } = CPU;
}

/// <summary>
/// The paper's ViT experiments at CPU scale (spec §12.3-12.7). Four tiny ViTs, each pre-trained on
/// Fashion-MNIST from its own seed (so its own initialization and data order) and fine-tuned with a fresh
/// head on its own task, are merged (a) in pairs from 16 original + 800 augmented unlabeled images per
/// task, (b) all four from 100 + 1000, (c) as one pair with 16…1024 original images topped up with
/// augmentations, (d) in FS-Merge ablations, and (f) in pairs again with their order reversed; (e) every
/// table also reports time, peak memory and optimized parameters. Trained methods get a fixed number of
/// optimizer steps whatever the data size (FS-Merge twice distillation's, as the paper's epochs); learning
/// rates are chosen on validation splits: each pair's own in (a) and (f), since a rate chosen on one pair can
/// be far off on another (with cosine heads, distillation's), and the first pair's in the other sections.
/// </summary>
internal static class VitBench
{
    static readonly string[] Tasks = ["mnist:0-4", "mnist:5-9", "fashion:0-4", "fashion:5-9"];
    /// <summary>Pairs of <see cref="Tasks"/> indices; the last (a digit task with a clothing task) also serves (c) and (d).</summary>
    static readonly (int A, int B)[] Pairs = [(0, 1), (2, 3), (0, 3)];

    /// <param name="Steps">Distillation's optimizer steps; FS-Merge gets twice as many (the paper's 200 vs 100 epochs, spec §7.7).</param>
    sealed record Scale(int Steps, int PairOriginals, int PairAugmented, int FourOriginals, int FourAugmented, int[] CurveOriginals, int CurveTotal,
        int PretrainEpochs, int FinetuneEpochs, int? TrainSubset);

    static readonly Scale Full = new(400, 16, 800, 100, 1000, [16, 64, 128, 256, 512, 1024], 1024, 4, 2, null);
    static readonly Scale QuickScale = new(30, 16, 64, 16, 64, [16, 64], 64, 1, 1, 8000);

    const int Batch = 128;
    const int Rank = 8;
    const int Width = 64;

    /// <summary>A trained method's options for about <paramref name="steps"/> AdamW + OneCycle steps over <paramref name="items"/> merge items.</summary>
    /// <summary>The paper's distillation student, a copy of model 1 (spec §9.5; the method's default is ZipIt's merge).</summary>
    static readonly (string, string) FirstInit = ("init", "first");

    static Dictionary<string, string> Trained(int steps, int items, params (string, string)[] extra)
    {
        int stepsPerEpoch = (items + Batch - 1) / Batch;
        int epochs = Math.Max(1, (steps + stepsPerEpoch - 1) / stepsPerEpoch);
        var options = new Dictionary<string, string>
        {
            ["optimizer"] = "adamw", ["schedule"] = "onecycle", ["batch"] = Batch.ToString(), ["weight-decay"] = "0.001", ["epochs"] = epochs.ToString(),
        };
        foreach (var (k, v) in extra) options[k] = v;
        return options;
    }

    static readonly (string, string)[] FsMergeCommon = [("targets", "own"), ("normalize", "false")];
    static (string, string)[] Diagonal(string init = "first") => [.. FsMergeCommon, ("type", "diagonal"), ("init", init)];
    static (string, string)[] LowRank(int rank = Rank) => [.. FsMergeCommon, ("type", "diagonal-low-rank"), ("rank", rank.ToString())];
    /// <summary>FS-Merge seq. always reconstructs each sample's own model (spec §8), so it takes no --targets.</summary>
    static (string, string)[] SequentialLowRank(int rank) => [("normalize", "false"), ("type", "diagonal-low-rank"), ("rank", rank.ToString())];

    static readonly BenchMethod Cca = new("CCA Merge", "cca", new(), []);
    static readonly BenchMethod Pleas = new("PLeaS", "pleas", new(), []);

    const string Distillation = "distillation", DistillationZipIt = "distillation, ZipIt init", FsDiagonal = "FS-Merge diagonal", FsLowRank = "FS-Merge low rank";

    /// <summary>The rows of tables (a) and (b): every baseline and FS-Merge; learning rates from <paramref name="lrs"/> once chosen.</summary>
    static List<BenchMethod> Compared(int steps, int items, Dictionary<string, double> lrs, bool sequential)
    {
        var methods = new List<BenchMethod>
        {
            new("ensemble", "ensemble", new(), []),
            new("average", "average", new(), []),
            new("SLERP", "slerp", new(), []),
            new("RegMean", "regmean", new() { ["alpha"] = "0.9" }, []),
            new("Opt", "opt", new() { ["max-images"] = "2048" }, []),
            Cca,
            Pleas,
        };
        methods.AddRange(HeadAlignmentRows);
        methods.AddRange(TrainedMethods(steps, items, lrs));
        methods.Add(new($"FS-Merge Re-Basin init, low rank (r {Rank})", "fs-merge", Trained(2 * steps, items, [.. LowRank(), ("init", "rebasin")]), [1e-3, 1e-4]));
        if (sequential)
            methods.Add(new($"FS-Merge seq. (r {Rank / 2})", "fs-merge-seq", Trained(2 * steps, items, SequentialLowRank(Rank / 2)), [lrs[FsLowRank]]));
        return methods;
    }

    /// <summary>ZipIt and Re-Basin with attention heads ignored (every space alone, as in an MLP) and head-aware (spec: issue 20).</summary>
    internal static readonly BenchMethod[] HeadAlignmentRows =
    [
        new("ZipIt (heads ignored)", "zipit", new() { ["heads"] = "ignore" }, []),
        new("ZipIt (head-aware)", "zipit", new(), []),
        new("Re-Basin (heads ignored)", "rebasin", new() { ["heads"] = "ignore" }, []),
        new("Re-Basin (head-aware)", "rebasin", new(), []),
        new("Re-Basin (head-aware, orthogonal)", "rebasin", new() { ["attention-align"] = "orthogonal" }, []),
    ];

    /// <summary>Distillation and FS-Merge diagonal and low rank, each at its rate in <paramref name="lrs"/>, or with a grid to choose from.</summary>
    static List<BenchMethod> TrainedMethods(int steps, int items, Dictionary<string, double> lrs)
    {
        double[] Grid(string label, params double[] grid) => lrs.TryGetValue(label, out var lr) ? [lr] : grid;
        return
        [
            new(Distillation, "distill", Trained(steps, items, FirstInit), Grid(Distillation, 1e-3, 1e-4)),
            new(DistillationZipIt, "distill", Trained(steps, items, ("init", "zipit")), Grid(DistillationZipIt, 1e-3, 1e-4)),
            new(FsDiagonal, "fs-merge", Trained(2 * steps, items, Diagonal()), Grid(FsDiagonal, 1e-2, 1e-3)),
            new($"{FsLowRank} (r {Rank})", "fs-merge", Trained(2 * steps, items, LowRank()), Grid(FsLowRank, 1e-3, 1e-4)),
        ];
    }

    /// <summary>The sections, in the order they run; each writes OUT/vit-SECTION.{md,csv,json}.</summary>
    public static readonly string[] SectionNames = ["pairs", "four", "data", "ablation", "order"];

    /// <summary>
    /// Runs the chosen sections (all by default). Learning rates are chosen in "pairs" (each pair, seed 1);
    /// the first pair's are read back from OUT/vit-pairs.json by the others, so sections can run as separate processes once
    /// the first pair is done. Source models are cached in OUT/models.
    /// </summary>
    public static void Run(VitBenchOptions o, Action<string> log)
    {
        var scale = o.Quick ? QuickScale : Full;
        int seeds = o.Quick ? 1 : o.Seeds;
        var unknown = o.Sections.Except(SectionNames).ToList();
        if (unknown.Count > 0) throw new FsMergeException($"bench vit: unknown section '{unknown[0]}' (expected some of: {string.Join(", ", SectionNames)})");
        var splits = Tasks.Select(t => TaskData.Load(TaskSpec.Parse(t), o.DataDir)).ToList();
        var lrs = new Dictionary<string, double>();
        string PairName((int A, int B) p) => $"{Tasks[p.A]} + {Tasks[p.B]}";
        var curvePair = Pairs[^1];
        var sourceNotes = new SortedDictionary<string, double>();   // every source's test accuracy, for the protocol notes
        for (int seed = 1; seed <= seeds; seed++)
            for (int k = 0; k < Tasks.Length; k++)
                if (BenchRunner.Cached(FinetuneDir(k, seed, o, splits[k]), o.Device) is { } cached)
                    using (cached) NoteAccuracy(cached, k, seed, splits[k], sourceNotes, o.Device);

        foreach (var section in SectionNames.Where(o.Sections.Contains))
        {
            string name = $"vit-{section}";
            var (results, chosen) = o.Resume ? BenchRunner.Finished(o.OutDir, name, seeds) : ([], new JsonObject());
            var done = results.Select(r => r.Setting).ToHashSet();
            var clock = Stopwatch.StartNew();
            // The whole bench reproduces every section (a section alone needs the pairs' learning rates first).
            string command = $"./fsmerge bench vit{(o.Quick ? " --quick" : $" --seeds {seeds}")}{(o.Heads == HeadKind.Cosine ? " --head cosine" : "")}{(o.LrAuto ? " --lr-auto" : "")} --threads {get_num_threads()} --out {o.OutDir}";
            if (section == "pairs") RestoreChosen(chosen, PairName(Pairs[0]), lrs);
            else if (lrs.Count == 0)
            {
                RestoreChosen(BenchRunner.Finished(o.OutDir, "vit-pairs", seeds).Chosen, PairName(Pairs[0]), lrs);
                if (new[] { FsLowRank, FsDiagonal, Distillation, DistillationZipIt }.Any(label => !lrs.ContainsKey(label)))
                    throw new FsMergeException($"bench vit: section '{section}' uses the learning rates chosen on the first pair; run 'bench vit --sections pairs' into {o.OutDir} first");
            }

            void Write() => BenchRunner.Write(o.OutDir, name, $"ViT merging benchmark: {SectionTitle(section)}", command,
                "tiny ViTs (width 64, depth 4, 4 heads, patch 7)", results, chosen, clock.Elapsed,
                SectionTitle, (_, setting) => setting, Protocol(scale, o.Heads, sourceNotes));

            /// <summary>Runs one setting on tasks <paramref name="taskIds"/> for every seed, unless a resumed run finished it.</summary>
            void Setting(string setting, int[] taskIds, int originals, int augmented, Func<List<BenchMethod>> methods,
                Dictionary<string, double>? settingLrs = null)
            {
                if (done.Contains(setting)) { log($"{setting}: finished in an earlier run"); return; }
                log($"{SectionTitle(section)}: {setting}");
                for (int seed = 1; seed <= seeds; seed++)
                {
                    var sources = taskIds.Select(t => Source(t, seed, scale, o, splits[t], sourceNotes, log)).ToList();
                    var data = taskIds.Select(t => MergeDataSet.Compose(MergeData.Sample(splits[t].Train, originals, seed * 10 + t), augmented, seed * 10 + t)).ToList();
                    var labelFree = o.LrAuto ? taskIds.Select(t => MergeData.HeldOut(splits[t].Train, originals, MergeRequest.DefaultHeldOut, seed * 10 + t)).ToList() : null;
                    BenchRunner.RunSeed(setting, section, seed, methods(), sources, data, taskIds.Select(t => splits[t]).ToList(), settingLrs ?? lrs, chosen, results, o.Device, log,
                        labelFree: labelFree);
                    foreach (var d in data) d.Dispose();
                    foreach (var s in sources) s.Dispose();
                }
                Write();
            }

            switch (section)
            {
                case "pairs":   // (a); each pair's validation splits choose its learning rates, the first pair's serve the other sections
                    int pairItems = 2 * (scale.PairOriginals + scale.PairAugmented);
                    foreach (var pair in o.Quick ? Pairs.Take(1) : Pairs)
                    {
                        var pairLrs = pair == Pairs[0] ? lrs : new Dictionary<string, double>();
                        Setting(PairName(pair), [pair.A, pair.B], scale.PairOriginals, scale.PairAugmented,
                            () => Compared(scale.Steps, pairItems, pairLrs, sequential: false), pairLrs);
                        RestoreChosen(chosen, PairName(Pairs[0]), lrs);
                    }
                    break;
                case "four":    // (b), with FS-Merge seq.
                    int fourItems = 4 * (scale.FourOriginals + scale.FourAugmented);
                    Setting(string.Join(" + ", Tasks), [0, 1, 2, 3], scale.FourOriginals, scale.FourAugmented,
                        () => Compared(scale.Steps, fourItems, lrs, sequential: true));
                    break;
                case "data":    // (c) original images topped up with augmentations to a fixed total
                    foreach (int n in scale.CurveOriginals)
                        Setting($"{n} originals", [curvePair.A, curvePair.B], n, scale.CurveTotal - n, () =>
                        [
                            new("ensemble", "ensemble", new(), []),
                            Cca,
                            Pleas,
                            new(Distillation, "distill", Trained(scale.Steps, 2 * scale.CurveTotal, FirstInit), [lrs[Distillation]]),
                            new(DistillationZipIt, "distill", Trained(scale.Steps, 2 * scale.CurveTotal, ("init", "zipit")), [lrs[DistillationZipIt]]),
                            new($"{FsLowRank} (r {Rank})", "fs-merge", Trained(2 * scale.Steps, 2 * scale.CurveTotal, LowRank()), [lrs[FsLowRank]]),
                        ]);
                    WriteCurve(o.OutDir, results, command);
                    break;
                case "ablation": // (d) initialization, augmentation, parameterization (paper Table 23); the same steps each
                    foreach (var (setting, augmented) in new[] { ("augmented", scale.PairAugmented), ("no augmentation", 0) })
                    {
                        int items = 2 * (scale.PairOriginals + augmented);
                        Setting(setting, [curvePair.A, curvePair.B], scale.PairOriginals, augmented, () =>
                        [
                            new("diagonal, init random", "fs-merge", Trained(2 * scale.Steps, items, Diagonal("random")), [lrs[FsDiagonal]]),
                            new("diagonal, init average", "fs-merge", Trained(2 * scale.Steps, items, Diagonal("average")), [lrs[FsDiagonal]]),
                            new("diagonal, init first", "fs-merge", Trained(2 * scale.Steps, items, Diagonal()), [lrs[FsDiagonal]]),
                            new($"low rank {Rank}, init first", "fs-merge", Trained(2 * scale.Steps, items, LowRank()), [lrs[FsLowRank]]),
                            new("distillation, init first", "distill", Trained(scale.Steps, items, FirstInit), [lrs[Distillation]]),
                        ]);
                    }
                    break;
                case "order":   // (f) each pair with its sources the other way round: init first and distillation's student start from the other model
                    foreach (var pair in o.Quick ? Pairs.Take(1) : Pairs)
                    {
                        var reversedLrs = new Dictionary<string, double>();   // the student's start changed, so the rates are chosen again
                        Setting(PairName((pair.B, pair.A)), [pair.B, pair.A], scale.PairOriginals, scale.PairAugmented,
                            () => TrainedMethods(scale.Steps, 2 * (scale.PairOriginals + scale.PairAugmented), reversedLrs), reversedLrs);
                    }
                    break;
            }
            Write();
        }
        foreach (var s in splits) s.Dispose();
    }

    /// <summary>Learning rates chosen on the first pair in an earlier (resumed) run, by method label.</summary>
    static void RestoreChosen(JsonObject chosen, string firstPair, Dictionary<string, double> lrs)
    {
        foreach (var (key, value) in chosen)
            if (key.StartsWith(firstPair + " ") && value is not null)
            {
                var label = key[(firstPair.Length + 1)..];
                lrs[label.StartsWith(FsLowRank) ? FsLowRank : label] = value.GetValue<double>();
            }
    }

    static string SectionTitle(string section) => section switch
    {
        "pairs" => "(a) Pairs, 16 original + 800 augmented images per task (paper Table 3)",
        "four" => "(b) Four models, 100 + 1000 images per task (paper Table 4)",
        "data" => "(c) Accuracy against original images per task, topped up with augmentations (paper Figure 4)",
        "ablation" => "(d) Ablations on the mnist:0-4 + fashion:5-9 pair, 16 originals (paper Table 23)",
        "order" => "(f) Model order: the pairs of (a) with their sources listed the other way round",
        _ => section,
    };

    static string Protocol(Scale s, HeadKind heads, IReadOnlyDictionary<string, double> sources)
    {
        var text = new StringBuilder();
        text.AppendLine("## Protocol\n");
        text.AppendLine($"- Source models: ViT width 64, depth 4, 4 heads, MLP 256, patch 7 on 28×28 images. Model k (one per task, {string.Join(", ", Tasks)}) is pre-trained on all of Fashion-MNIST for {s.PretrainEpochs} epochs from seed 100·seed + k (its own initialization and data order), then fine-tuned on its task for {s.FinetuneEpochs} epochs with a fresh head (AdamW, batch 128, best validation epoch kept).");
        text.AppendLine(heads == HeadKind.Cosine
            ? $"- Heads: cosine (a projection to width {Width}, L2 normalization, logit scale {HeadInfo.DefaultLogitScale} × cosine with each class, no bias), so the heads' logits share one scale as in the paper's CLIP heads (spec §10.4)."
            : "- Heads: linear (W·f + b), trained separately, so their logits are not calibrated against each other; joint accuracy reflects that.");
        text.AppendLine($"- Merging: unlabeled images from each task's train split plus augmentations (spec §11.3). Trained methods (distillation, FS-Merge) use AdamW (weight decay 1e-3), OneCycle, batch {Batch}, about {s.Steps} steps for distillation and {2 * s.Steps} for FS-Merge whatever the data size (the paper's 100 vs 200 epochs, spec §7.7; FS-Merge seq. {2 * s.Steps} per stage). FS-Merge: task-restricted reconstruction (targets own, no normalization, spec §7.2), init first unless stated, low rank {Rank} (4·{Rank} at MLP sites); seq.: rank {Rank / 2}. Distillation: first init, target scaling (spec §9.5); \"distillation, ZipIt init\" starts from ZipIt's merge and reads the teachers through its unmerge. PLeaS: permutation matching, then per-layer ridge least squares (ridge 0.01). RegMean α 0.9; Opt: Sinkhorn ε 0.08 on the full token sequence of at most 2,048 merge images (all of a pair's 1,632). ZipIt and Re-Basin (weight matching): attention heads ignored (every space alone) or head-aware (whole heads, then dimensions within matched heads; orthogonal: Procrustes rotations within heads); FS-Merge Re-Basin init: sources permuted onto the first by head-aware activation matching, then average; CCA Merge: ridge 0.1 × mean variance, covariances of the full token sequence of at most 512 merge images.");
        text.AppendLine("- Learning rates: chosen from a two-value grid on validation splits (seed 1), never on test: in (a) and (f) each pair's own (in (f) for the order it is merged in); the other sections reuse the first pair's.");
        text.AppendLine("- Order: the first source listed is where init first (FS-Merge) and distillation's student start; (f) lists each pair's sources the other way round.");
        text.AppendLine("- Accuracy: per-task = each task's test split through its own head; joint = argmax over all heads' logits (spec §10).");
        if (sources.Count > 0)
        {
            text.AppendLine("\nSource models' test accuracy (own task):\n");
            foreach (var (name, accuracy) in sources) text.AppendLine($"- {name}: {100 * accuracy:F2}%");
        }
        return text.ToString();
    }

    /// <summary>(c) as CSV and PNG plots (per-task and joint accuracy against original images per task).</summary>
    static void WriteCurve(string outDir, List<BenchResult> curve, string command)
    {
        if (curve.Count == 0) return;
        static int Originals(BenchResult r) => int.Parse(r.Setting.Split(' ')[0], CultureInfo.InvariantCulture);
        var rows = curve.GroupBy(r => (r.Label, N: Originals(r))).OrderBy(g => g.Key.Label).ThenBy(g => g.Key.N).ToList();
        var csv = new StringBuilder($"# {command}\noriginals_per_task,method,per_task,joint,seeds\n");
        foreach (var g in rows)
            csv.AppendLine(string.Join(",", g.Key.N, $"\"{g.Key.Label}\"", (100 * g.Average(r => r.PerTask)).ToString("F2", CultureInfo.InvariantCulture),
                (100 * g.Average(r => r.Joint)).ToString("F2", CultureInfo.InvariantCulture), g.Count()));
        AtomicFile.WriteAllText(Path.Combine(outDir, "vit-data-curve.csv"), csv.ToString());
        foreach (var (metric, pick, file) in new (string, Func<BenchResult, double>, string)[] { ("per-task", r => r.PerTask, "vit-data-curve.png"), ("joint", r => r.Joint, "vit-data-curve-joint.png") })
        {
            var series = rows.GroupBy(g => g.Key.Label).Select(byLabel => new ChartSeries(byLabel.Key,
                byLabel.Select(g => (double)g.Key.N).ToList(), byLabel.Select(g => 100 * g.Average(pick)).ToList())).ToList();
            LineChart.Save(Path.Combine(outDir, file), $"Two tiny ViTs (mnist:0-4 + fashion:5-9): {metric} accuracy",
                "original images per task (topped up with augmentations)", $"{metric} test accuracy (%)", series, logX: true);
        }
    }

    /// <summary>Model k for seed s: pre-trained on Fashion-MNIST from its own seed, then fine-tuned on task k; both cached.</summary>
    static Model Source(int k, int seed, Scale scale, VitBenchOptions o, TaskSplits task, SortedDictionary<string, double> notes, Action<string> log)
    {
        long modelSeed = 100L * seed + k;
        var pretrainDir = Path.Combine(o.OutDir, "models", $"vit-pretrain-fashion-seed{modelSeed}{Suffix(o)}");
        var finetuneDir = FinetuneDir(k, seed, o, task);
        var model = BenchRunner.Cached(finetuneDir, o.Device);
        if (model is null)
        {
            var pretrained = BenchRunner.Cached(pretrainDir, o.Device);
            if (pretrained is null)
            {
                var fashion = TaskData.Load(TaskSpec.Parse("fashion"), o.DataDir);
                if (scale.TrainSubset is { } subset) fashion = fashion with { Train = MergeData.Sample(fashion.Train, subset, modelSeed) };
                var config = new ModelConfig
                {
                    Architecture = "vit", ImageSize = 28, NumChannels = 1, PatchSize = 7, HiddenSize = Width, NumHiddenLayers = 4,
                    NumAttentionHeads = 4, IntermediateSize = 256,
                    Heads = [HeadInfo.Create(o.Heads, "fashion", fashion.Train.LabelNames, Width)],
                };
                using var initial = Model.Create(config, modelSeed, o.Device);
                pretrained = BenchRunner.TrainSource(initial, fashion, new TrainOptions { Epochs = scale.PretrainEpochs, BatchSize = 128, Seed = modelSeed },
                    null, pretrainDir, o.Device, log);
                fashion.Dispose();
            }
            using (pretrained)
            using (var initial = pretrained.WithFreshHead(pretrained.Config.Heads[0].Fresh(task.Task.ToString(), task.Train.LabelNames, Width), modelSeed + 1))
            {
                var data = scale.TrainSubset is { } subset ? task with { Train = MergeData.Sample(task.Train, subset, modelSeed) } : task;
                model = BenchRunner.TrainSource(initial, data, new TrainOptions { Epochs = scale.FinetuneEpochs, BatchSize = 128, Seed = modelSeed },
                    pretrainDir, finetuneDir, o.Device, log);
            }
        }
        NoteAccuracy(model, k, seed, task, notes, o.Device);
        return model;
    }

    static string FinetuneDir(int k, int seed, VitBenchOptions o, TaskSplits task) =>
        Path.Combine(o.OutDir, "models", $"vit-{task.Task.ToString().Replace(':', '-')}-seed{100L * seed + k}{Suffix(o)}");

    /// <summary>Cached source models differ by scale and head kind.</summary>
    static string Suffix(VitBenchOptions o) => (o.Quick ? "-quick" : "") + (o.Heads == HeadKind.Cosine ? "-cosine" : "");

    static void NoteAccuracy(Model model, int k, int seed, TaskSplits task, SortedDictionary<string, double> notes, Device device) =>
        notes[$"{task.Task} (seed {100L * seed + k})"] = Evaluator.Accuracy(model, 0, task.Test, device);
}
