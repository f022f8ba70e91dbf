using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Bench;

/// <summary>A ViT shape the perf bench measures on 28×28 single-channel images.</summary>
internal sealed record PerfSize(string Name, int Width, int Depth, int AttentionHeads, int MlpWidth, int Patch, string Description)
{
    public override string ToString() =>
        $"ViT width {Width}, depth {Depth}, {AttentionHeads} heads, MLP {MlpWidth}, patch {Patch} ({(28 / Patch) * (28 / Patch) + 1} tokens), 28×28";
}

/// <summary>The FS-Merge parameterization measured, the model size, and how many steps are timed.</summary>
internal sealed record PerfSettings(int Rank, int Steps, string Type = "diagonal-low-rank", string Size = "tiny")
{
    public const int DefaultRank = 8, DefaultSteps = 48;

    public static readonly string[] Types = ["diagonal-low-rank", "diagonal", "low-rank"];

    /// <summary>
    /// "tiny" is the shape `bench vit` merges; its matrices are so small that per-operation overhead, not arithmetic,
    /// sets the step time. "small" has DeiT-Tiny's width, heads and MLP at half its depth, closer to a hub model.
    /// </summary>
    public static readonly PerfSize[] Sizes =
    [
        new("tiny", 64, 4, 4, 256, 7, "the bench vit model"),
        new("small", 192, 6, 3, 768, 4, "DeiT-Tiny's width, heads and MLP at half its depth"),
    ];

    public PerfSize Shape => Sizes.First(z => z.Name == Size);

    public void Check()
    {
        if (!Types.Contains(Type)) throw new FsMergeException($"bench perf: unknown --type '{Type}' (expected {string.Join(", ", Types)})");
        if (Sizes.All(z => z.Name != Size))
            throw new FsMergeException($"bench perf: unknown --size '{Size}' (expected {string.Join(", ", Sizes.Select(z => z.Name))})");
    }
}

/// <summary>
/// Fold-every-step against distillation timed in one process, epochs alternating: the median of the per-epoch
/// ratios, each variant's median step time, and every epoch's ratio (from <see cref="PerfBench.Run"/>: the median
/// over rounds, with each round's ratio in <c>Ratios</c>).
/// </summary>
internal sealed record PairedResult(int Models, int Threads, double Ratio, double FoldMilliseconds, double DistillationMilliseconds, double[] Ratios);

/// <summary>One measured training-step variant.</summary>
/// <remarks>From <see cref="PerfBench.Run"/>: the median over rounds, with every round's step time in <c>Rounds</c>.</remarks>
internal sealed record PerfResult(string Variant, int Models, int Threads, double MillisecondsPerStep, double PeakMegabytes, long Parameters,
    double[]? Rounds = null);

/// <summary>
/// `fsmerge bench perf`: time per training step and peak memory of FS-Merge trained by folding every step,
/// of the explicit SuperNet (dense M/U as the reference runs it) and of distillation, on one tiny-ViT
/// configuration and batch. Each measurement runs in its own child process, so peak resident memory
/// (VmHWM) is that variant's alone. The step time is the median over the epochs after the first (warm-up)
/// of each epoch's time per step, so set-up, target extraction and the odd slow epoch (a busy machine) drop out.
/// </summary>
internal static class PerfBench
{
    public const int Batch = 128;
    public static readonly string[] Variants = ["fold-every-step", "explicit-supernet", "distillation"];

    public static ModelConfig Config(int task, PerfSize size) => new()
    {
        Architecture = "vit", ImageSize = 28, NumChannels = 1, PatchSize = size.Patch, HiddenSize = size.Width,
        NumHiddenLayers = size.Depth, NumAttentionHeads = size.AttentionHeads, IntermediateSize = size.MlpWidth,
        Heads = [new HeadInfo($"task{task}", Enumerable.Range(0, 5).Select(c => c.ToString()).ToArray())],
    };

    /// <summary>The sources, data and merged shape of one measurement; <paramref name="epochEnd"/> runs at each epoch's end.</summary>
    static MergeInputs Inputs(int models, PerfSize size, Action epochEnd)
    {
        var device = CPU;
        var sources = Enumerable.Range(0, models).Select(i => Model.Create(Config(i, size), 100 + i, device)).ToList();
        var data = Enumerable.Range(0, models).Select(i => new ImageSet(
            torch.rand(Batch, 1, 28, 28, generator: new Generator((ulong)(7 + i))), new long[Batch], sources[i].Config.Heads[0].Labels)).ToList();
        var target = sources[0].Config with { Heads = sources.SelectMany(s => s.Config.Heads).ToList() };
        return new MergeInputs { Sources = sources, Data = data, Target = target, Device = device, Seed = 1, 
            // One batch per task per epoch: the epoch ends every `models` steps.
            Progress = (_, done, _, _, _) => { if (done % models == 0) epochEnd(); } };
    }

    /// <summary>One batch per task per epoch: the first epoch is the warm-up (JIT, allocator, MKL), then enough for the timed steps.</summary>
    static int Epochs(int models, PerfSettings s) => 1 + (s.Steps + models - 1) / models;

    /// <summary>Trains one variant for <paramref name="epochs"/> epochs; returns its optimized parameter count.</summary>
    static long Train(string variant, MergeInputs inputs, int epochs, PerfSettings s)
    {
        if (variant == "distillation")
        {
            var method = new DistillationMerge();
            var settings = new MethodSettings(method, new Dictionary<string, string>
            {
                ["init"] = "first", ["optimizer"] = "adamw", ["lr"] = "1e-4", ["epochs"] = epochs.ToString(CultureInfo.InvariantCulture),
                ["batch"] = Batch.ToString(CultureInfo.InvariantCulture), ["schedule"] = "onecycle",
            });
            return (long)method.Merge(inputs, settings).Details["optimized_parameters"]!;
        }
        var sites = inputs.Sites;
        long baseWidth = sites[sites.HeadInput].MergedWidth;
        // A pure low rank cannot start at "first" (spec §2.2); the others start there, as FS-Merge does.
        var init = s.Type == "low-rank" ? MuInit.Random : MuInit.First;
        var matrices = sites.Sites.ToDictionary(site => site.Name, site => SiteMatrix.Initialize(site, FsMergeMethod.ParseType(s.Type), init,
            (int)Math.Min(site.MergedWidth, s.Rank * site.MergedWidth / baseWidth), new Generator(3), inputs.Device));
        var mergedSpace = FoldedMerge.MergedSpace(inputs, MuInit.First);
        FsMergeMethod.SuperNetForward forward = variant == "fold-every-step"
            ? FsMergeMethod.FoldEveryStep(inputs)
            : (mu, space, images) => VitSuperNet.Forward(inputs.Target, sites, inputs.SourceWeights, SiteMatrix.MaterializeAll(mu), space, images);
        var (theta, samples, lossOf, _, _, _) = FsMergeMethod.GlobalObjective(inputs, matrices, mergedSpace, "own", false, forward);
        var optimizer = new OptimizerSettings("adamw", 1e-4, epochs, Batch, 0.9, 1e-3, 0.02, "onecycle");
        MergeTrainer.Train(theta, samples, optimizer, lossOf, 1, inputs.Progress, variant);
        return theta.Sum(p => p.numel());
    }

    /// <summary>Runs in the child process: measures one variant and returns its result.</summary>
    public static PerfResult Measure(string variant, int models, int threads, PerfSettings s)
    {
        if (!Variants.Contains(variant)) throw new FsMergeException($"bench perf: unknown variant '{variant}' (expected {string.Join(", ", Variants)}, or {Paired})");
        s.Check();
        var clock = Stopwatch.StartNew();
        var epochEnds = new List<double>();
        var inputs = Inputs(models, s.Shape, () => epochEnds.Add(clock.Elapsed.TotalMilliseconds));
        PeakMemory.Reset();
        long parameters = Train(variant, inputs, Epochs(models, s), s);
        var perStep = epochEnds.Zip(epochEnds.Skip(1), (a, b) => (b - a) / models).ToArray();
        return new PerfResult(variant, models, threads, Median(perStep), PeakMemory.Megabytes(), parameters);
    }

    /// <summary>The child that times fold-every-step against distillation in one process.</summary>
    public const string Paired = "paired";

    /// <summary>
    /// Runs in the child process: FS-Merge (fold every step) and distillation train side by side in one process,
    /// taking turns epoch by epoch (two threads, one running at a time), so that the machine's speed, which
    /// drifts by 10-30% over seconds here, is the same for both halves of each ratio. Returns, per epoch after
    /// the warm-up, fold's step time over distillation's in the epoch next to it.
    /// </summary>
    public static PairedResult MeasurePaired(int models, int threads, PerfSettings s)
    {
        s.Check();
        string[] pair = ["fold-every-step", "distillation"];
        var turns = new[] { new SemaphoreSlim(1), new SemaphoreSlim(0) };
        var epochMs = new[] { new List<double>(), new List<double>() };
        var finished = new bool[2];
        var clock = Stopwatch.StartNew();
        Exception? failure = null;
        var workers = Enumerable.Range(0, 2).Select(i => new Thread(() =>
        {
            int other = 1 - i;
            turns[i].Wait();
            try
            {
                double start = clock.Elapsed.TotalMilliseconds;
                var inputs = Inputs(models, s.Shape, () =>
                {
                    epochMs[i].Add(clock.Elapsed.TotalMilliseconds - start);
                    if (!Volatile.Read(ref finished[other])) { turns[other].Release(); turns[i].Wait(); }
                    start = clock.Elapsed.TotalMilliseconds;
                });
                Train(pair[i], inputs, Epochs(models, s), s);
            }
            catch (Exception e) { Interlocked.CompareExchange(ref failure, e, null); }   // the first failure is reported
            Volatile.Write(ref finished[i], true);
            turns[other].Release();
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        if (failure != null) throw failure;
        var ratios = epochMs[0].Zip(epochMs[1], (fold, distill) => fold / distill).Skip(1).ToArray();
        double StepMs(List<double> epochs) => Median(epochs.Skip(1).Select(t => t / models).ToArray());
        return new PairedResult(models, threads, Median(ratios), StepMs(epochMs[0]), StepMs(epochMs[1]), ratios);
    }

    /// <summary>
    /// Runs every variant for every model count and thread count, each in a child process, for several rounds
    /// (variants interleaved, so drift in the machine's speed hits all of them), and keeps each one's median.
    /// </summary>
    public static List<PerfResult> Run(int[] modelCounts, int[] threadCounts, PerfSettings s, int rounds, string outDir, Action<string> log)
    {
        s.Check();
        var measured = new List<PerfResult>();
        var paired = new List<PairedResult>();
        for (int round = 1; round <= rounds; round++)
        {
            log($"round {round} of {rounds}");
            foreach (var threads in threadCounts)
                foreach (var n in modelCounts)
                {
                    foreach (var variant in Variants)
                    {
                        var result = Child<PerfResult>(variant, n, threads, s);
                        log($"  {variant,-18} N={n} threads={threads}: {result.MillisecondsPerStep,8:F1} ms/step, peak {result.PeakMegabytes,7:F0} MB, {result.Parameters} optimized parameters");
                        measured.Add(result);
                    }
                    var pair = Child<PairedResult>(Paired, n, threads, s);
                    log($"  {"paired",-18} N={n} threads={threads}: fold / distillation {pair.Ratio:F2}× ({pair.FoldMilliseconds:F1} / {pair.DistillationMilliseconds:F1} ms/step, epochs alternating)");
                    paired.Add(pair);
                }
        }
        var results = measured.GroupBy(r => (r.Threads, r.Models, r.Variant)).Select(g =>
        {
            var times = g.Select(r => r.MillisecondsPerStep).ToArray();
            return g.First() with { MillisecondsPerStep = Median(times), PeakMegabytes = g.Max(r => r.PeakMegabytes), Rounds = times };
        }).ToList();
        var pairs = paired.GroupBy(p => (p.Threads, p.Models)).Select(g =>
        {
            var ratios = g.Select(p => p.Ratio).ToArray();
            return new PairedResult(g.Key.Models, g.Key.Threads, Median(ratios), Median(g.Select(p => p.FoldMilliseconds).ToArray()),
                Median(g.Select(p => p.DistillationMilliseconds).ToArray()), ratios);
        }).ToList();
        Write(results, pairs, s, rounds, outDir);
        return results;
    }

    internal static double Median(double[] values)
    {
        var sorted = values.Order().ToArray();
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    /// <summary>Measures one variant in a child process (<paramref name="threads"/> 0: the default count) with <paramref name="environment"/> added (null values removed).</summary>
    internal static T Child<T>(string variant, int models, int threads, PerfSettings s, IReadOnlyDictionary<string, string?>? environment = null)
    {
        var entry = Environment.GetCommandLineArgs()[0];
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (key, value) in environment ?? new Dictionary<string, string?>()) start.Environment[key] = value;
        if (entry.EndsWith(".dll")) start.ArgumentList.Add(entry);
        foreach (var a in new[] { "bench", "perf", "--child", variant, "--models", models.ToString(), "--threads", threads.ToString(),
                     "--rank", s.Rank.ToString(), "--steps", s.Steps.ToString(), "--type", s.Type, "--size", s.Size })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd();
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("RESULT "));
        if (process.ExitCode != 0 || line == null)
            throw new FsMergeException($"bench perf: the {variant} measurement failed: {error.Trim().Split('\n').LastOrDefault()}");
        return JsonSerializer.Deserialize<T>(line["RESULT ".Length..])!;
    }

    static void Write(List<PerfResult> results, List<PairedResult> pairs, PerfSettings s, int rounds, string outDir)
    {
        var md = new StringBuilder();
        md.AppendLine("# Training-step cost: fold every step vs explicit SuperNet vs distillation\n");
        string type = s.Type == "diagonal" ? "diagonal" : $"{s.Type.Replace('-', ' ')} (rank {s.Rank}, {4 * s.Rank} at MLP sites)";
        // The command as run: the options that differ from their defaults, then rounds and output.
        var models = results.Select(r => r.Models).Distinct().ToArray();
        var threads = results.Select(r => r.Threads).Distinct().ToArray();
        string flags = (s.Type == PerfSettings.Types[0] ? "" : $" --type {s.Type}")
            + (s.Size == PerfSettings.Sizes[0].Name ? "" : $" --size {s.Size}")
            + (s.Rank == PerfSettings.DefaultRank ? "" : $" --rank {s.Rank}")
            + (s.Steps == PerfSettings.DefaultSteps ? "" : $" --steps {s.Steps}")
            + (models.SequenceEqual([2, 4]) ? "" : $" --models {string.Join(",", models)}")
            + (threads.SequenceEqual([1, 2]) ? "" : $" --thread-counts {string.Join(",", threads)}");
        md.AppendLine($"Produced by `./fsmerge bench perf{flags} --rounds {rounds} --out {outDir}`. {s.Shape} ({s.Shape.Description}), " +
                      $"batch {Batch}, FS-Merge {type}, AdamW; distillation trains all student weights. " +
                      $"Step time: the median of {rounds} rounds (variants interleaved; every round in the last column). " +
                      "Peak memory: the largest peak resident set (VmHWM) of the child processes, LibTorch included.\n");
        md.AppendLine("| threads | N | variant | ms/step | peak MB | optimized parameters | step time vs fold-every-step | vs distillation | rounds (ms) |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var group in results.GroupBy(r => (r.Threads, r.Models)))
        {
            var fold = group.First(r => r.Variant == "fold-every-step").MillisecondsPerStep;
            var distill = group.First(r => r.Variant == "distillation").MillisecondsPerStep;
            foreach (var r in group)
                md.AppendLine($"| {r.Threads} | {r.Models} | {r.Variant} | {r.MillisecondsPerStep:F1} | {r.PeakMegabytes:F0} | {r.Parameters:N0} | {r.MillisecondsPerStep / fold:F2}× | {r.MillisecondsPerStep / distill:F2}× | {string.Join(", ", (r.Rounds ?? []).Select(t => t.ToString("F1", CultureInfo.InvariantCulture)))} |");
        }
        md.AppendLine();
        md.AppendLine("Fold every step against distillation in one process, the two trainings taking turns epoch by epoch, so that both halves of " +
                      "each ratio ran at the same machine speed: the median of the per-epoch ratios, then the median over rounds (every round in the last column).\n");
        md.AppendLine("| threads | N | fold / distillation (paired) | fold ms/step | distillation ms/step | rounds |");
        md.AppendLine("|---|---|---|---|---|---|");
        foreach (var p in pairs)
            md.AppendLine($"| {p.Threads} | {p.Models} | {p.Ratio:F2}× | {p.FoldMilliseconds:F1} | {p.DistillationMilliseconds:F1} | {string.Join(", ", p.Ratios.Select(r => r.ToString("F2", CultureInfo.InvariantCulture) + "×"))} |");
        AtomicFile.WriteAllText(Path.Combine(outDir, "perf.md"), md.ToString());
        AtomicFile.WriteAllText(Path.Combine(outDir, "perf.json"), JsonSerializer.Serialize(new { variants = results, paired = pairs }, JsonFormat.Indented));
    }
}
