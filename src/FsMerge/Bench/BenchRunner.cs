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
using static TorchSharp.torch;

namespace FsMerge.Bench;

/// <summary>One row of a benchmark table: a method with fixed options and an optional learning-rate grid.</summary>
internal sealed record BenchMethod(string Label, string Method, Dictionary<string, string> Options, double[] LrGrid);

/// <param name="PeakMegabytes">The process's peak resident memory while the method ran (sources and data included).</param>
/// <param name="TaskIdentified">See <see cref="EvaluationResult.TaskIdentified"/>; NaN in results written before it was measured.</param>
/// <param name="LogitError">The label-free estimate's mean held-out logit error (<see cref="LabelFreeEstimate"/>); NaN without --lr-auto.</param>
/// <param name="Divergence">The label-free estimate's mean held-out divergence, which ranks; NaN without --lr-auto or in results written before it was measured.</param>
/// <param name="JointAgreement">The label-free estimate's joint agreement with the sources' ensemble; NaN without --lr-auto.</param>
internal sealed record BenchResult(string Setting, string Section, string Label, int Seed, double PerTask, double Joint,
    double Seconds, string Options, long Parameters = 0, double PeakMegabytes = 0, double TaskIdentified = double.NaN,
    double LogitError = double.NaN, double JointAgreement = double.NaN, double Divergence = double.NaN);

/// <summary>
/// What the benches share: cached source models, running every method on one set of sources (learning
/// rates chosen on the validation splits the first time a setting is seen, never on test), and the
/// Markdown / CSV / JSON tables.
/// </summary>
internal static class BenchRunner
{
    public static Model? Cached(string dir, Device device) =>
        File.Exists(Path.Combine(dir, Model.WeightsFile)) ? Model.Load(dir, device) : null;

    /// <summary>Trains a source model, records its provenance and saves it under <paramref name="dir"/>.</summary>
    public static Model TrainSource(Model initial, TaskSplits data, TrainOptions options, string? initDir, string dir, Device device, Action<string> log)
    {
        var watch = Stopwatch.StartNew();
        var (model, history) = SourceTrainer.Train(initial, data, options, device);
        var (test, _) = SourceTrainer.Record(model, history, data, options, initDir, watch.Elapsed, device);
        model.Save(dir);
        log($"  source {Path.GetFileName(dir)}: test {100 * test:F2}% ({watch.Elapsed.TotalSeconds:F0} s)");
        return model;
    }

    /// <summary>The original models' row, then every method on these sources; appends to <paramref name="results"/>.</summary>
    /// <param name="labelFree">Held-out unlabeled samples per task (from the merge data's pool): every method with a rate
    /// grid gets a second row, "LABEL (lr auto)", whose rate --lr auto chooses on them from the same grid, without labels.</param>
    public static void RunSeed(string setting, string section, int seed, IReadOnlyList<BenchMethod> methods, IReadOnlyList<Model> sources,
        IReadOnlyList<ImageSet> data, IReadOnlyList<TaskSplits> splits, Dictionary<string, double> lrs, JsonObject chosen,
        List<BenchResult> results, Device device, Action<string> log, IReadOnlyList<ImageSet>? heldOut = null,
        IReadOnlyList<ImageSet>? labelFree = null)
    {
        if (labelFree != null)
            methods = methods.SelectMany(m => m.LrGrid.Length > 1
                ? [m, m with { Label = $"{m.Label} (lr auto)", Options = new(m.Options) { ["lr"] = MethodOption.Auto, ["lr-grid"] = string.Join(",", m.LrGrid.Select(g => g.ToString(CultureInfo.InvariantCulture))) }, LrGrid = [] }]
                : new[] { m }).ToList();
        var tests = splits.Select(s => s.Test).ToList();
        var original = Evaluator.Evaluate(Evaluator.SeparateModels(sources), tests, device);
        results.Add(new(setting, section, "original models", seed, original.PerTaskMean, original.Joint, 0, "", TaskIdentified: original.TaskIdentified));
        var target = sources[0].Config with { Heads = sources.SelectMany(s => s.Config.Heads).ToList(), Training = new() };
        var inputs = new MergeInputs { Sources = sources, Data = data, HeldOut = heldOut, Target = target, Device = device, Seed = seed };
        var autoInputs = labelFree is null ? inputs : new MergeInputs { Sources = sources, Data = data, HeldOut = labelFree, Target = target, Device = device, Seed = seed };
        using var reference = labelFree is null ? null : new HeldOutReference(sources, labelFree, sources.Select(s => s.Config.Heads[0].Task).ToList(), device);
        foreach (var m in methods)
        {
            var options = new Dictionary<string, string>(m.Options);
            if (m.LrGrid.Length > 0)
            {
                if (!lrs.TryGetValue(m.Label, out double lr))
                {
                    lr = lrs[m.Label] = Select(m, inputs, splits, device);
                    if (m.LrGrid.Length > 1) chosen[$"{setting} {m.Label}"] = lr;
                    log($"  {setting} {m.Label}: lr {lr} {(m.LrGrid.Length > 1 ? "chosen on validation" : "given")}");
                }
                options["lr"] = lr.ToString(CultureInfo.InvariantCulture);
            }
            // Tensors are freed by their finalizers; collect the previous method's now, so that its memory is
            // reused instead of the process growing method after method (the peak is then this method's).
            GC.Collect();
            GC.WaitForPendingFinalizers();
            PeakMemory.Reset();
            var watch = Stopwatch.StartNew();
            var method = MergeMethods.Get(m.Method);
            bool auto = options.GetValueOrDefault("lr") == MethodOption.Auto;
            var outcome = MergeFallingBack(method, m, options, auto ? autoInputs : inputs, log);
            if (auto && outcome.Settings is { } used)   // the rate --lr auto chose, and its length if it kept a short run
                (options["lr"], options["epochs"]) = ($"auto:{used.All["lr"]}", used.All["epochs"]);
            double seconds = watch.Elapsed.TotalSeconds;
            double peak = PeakMemory.Megabytes();
            var test = Evaluator.Evaluate(outcome.Predict, tests, device);
            var estimate = reference?.Estimate(outcome.Predict);
            outcome.Merged?.Dispose();
            results.Add(new(setting, section, m.Label, seed, test.PerTaskMean, test.Joint, seconds,
                string.Join(" ", options.Select(kv => $"--{kv.Key} {kv.Value}")), OptimizedParameters(outcome.Details), peak, test.TaskIdentified,
                estimate?.LogitError ?? double.NaN, estimate?.JointAgreement ?? double.NaN, estimate?.Divergence ?? double.NaN));
            log($"  {setting} seed {seed} {m.Label,-28} per-task {100 * test.PerTaskMean:F2}  joint {100 * test.Joint:F2}  task identified {100 * test.TaskIdentified:F2}  ({seconds:F1} s)");
        }
    }

    /// <summary>Parameters the method optimized: its own count, or the largest stage's (FS-Merge seq.), or 0.</summary>
    static long OptimizedParameters(JsonObject details) =>
        details["optimized_parameters"]?.GetValue<long>()
        ?? details["stages"]?.AsArray().Select(s => OptimizedParameters(s!["details"]!.AsObject())).Max()
        ?? 0;

    /// <summary>
    /// Runs the method; when training diverges at the chosen learning rate (chosen on another seed), retries
    /// with the next smaller rate of the grid and says so. The options record what was used.
    /// </summary>
    static MergeOutcome MergeFallingBack(IMergeMethod method, BenchMethod m, Dictionary<string, string> options, MergeInputs inputs, Action<string> log)
    {
        while (true)
        {
            try
            {
                return method.Merge(inputs, new MethodSettings(method, options));
            }
            catch (FsMergeException e) when (options.TryGetValue("lr", out var text) && m.LrGrid.Any(g => g < double.Parse(text, CultureInfo.InvariantCulture)))
            {
                double lower = m.LrGrid.Where(g => g < double.Parse(text, CultureInfo.InvariantCulture)).Max();
                log($"  {m.Label}: {e.Message}; retrying with lr {lower}");
                options["lr"] = lower.ToString(CultureInfo.InvariantCulture);
            }
        }
    }

    /// <summary>The learning rate of the grid with the best validation per-task accuracy (a one-rate grid is taken as given).</summary>
    static double Select(BenchMethod m, MergeInputs inputs, IReadOnlyList<TaskSplits> splits, Device device)
    {
        if (m.LrGrid.Length == 1) return m.LrGrid[0];
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

    /// <summary>
    /// The results of an earlier run in OUT/NAME.json for the settings it finished (every seed present),
    /// with their chosen learning rates: a long bench that stopped resumes where it was.
    /// </summary>
    public static (List<BenchResult> Results, JsonObject Chosen) Finished(string outDir, string name, int seeds)
    {
        var path = Path.Combine(outDir, $"{name}.json");
        if (!File.Exists(path)) return ([], new JsonObject());
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var all = root["results"].Deserialize<List<BenchResult>>(ResultsJson) ?? [];
        var done = all.GroupBy(r => r.Setting)
            .Where(g => g.Where(r => r.Label == "original models").Select(r => r.Seed).Distinct().Count() == seeds
                        && g.Select(r => r.Label).Distinct().All(l => g.Count(r => r.Label == l) == seeds))
            .Select(g => g.Key).ToHashSet();
        var chosen = new JsonObject();
        foreach (var (key, value) in root["chosen_lr"]?.AsObject() ?? new JsonObject())
            if (done.Any(d => key.StartsWith(d + " "))) chosen[key] = value?.DeepClone();
        return (all.Where(r => done.Contains(r.Setting)).ToList(), chosen);
    }

    /// <summary>Writes NAME.csv, NAME.json and NAME.md (per section: a per-task and a joint table, mean ± std over seeds).</summary>
    public static void Write(string outDir, string name, string title, string command, string dataNote, List<BenchResult> results,
        JsonObject chosen, TimeSpan elapsed, Func<string, string> sectionTitle, Func<string, string, string> column, string? protocol = null)
    {
        Directory.CreateDirectory(outDir);
        var csv = new StringBuilder("setting,section,method,seed,per_task,joint,task_identified,seconds,optimized_parameters,peak_mb,options\n");
        foreach (var r in results)
            csv.AppendLine(string.Join(",", r.Setting, r.Section, $"\"{r.Label}\"", r.Seed, F(r.PerTask), F(r.Joint), F(r.TaskIdentified), F(r.Seconds),
                r.Parameters, F(r.PeakMegabytes), $"\"{r.Options}\""));
        AtomicFile.WriteAllText(Path.Combine(outDir, $"{name}.csv"), csv.ToString());
        var json = new JsonObject
        {
            ["command"] = command,
            ["seconds"] = Math.Round(elapsed.TotalSeconds),
            ["data"] = dataNote,
            ["chosen_lr"] = chosen.DeepClone(),
            ["results"] = JsonSerializer.SerializeToNode(results, ResultsJson),
        };
        AtomicFile.WriteAllText(Path.Combine(outDir, $"{name}.json"), json.ToJsonString(JsonFormat.Indented));

        var md = new StringBuilder();
        md.AppendLine($"# {title}\n\nProduced by `{command}` (this process: {elapsed.TotalMinutes:F0} min; the merges in these tables: {results.Sum(r => r.Seconds) / 60:F0} min). Test accuracy in %, mean ± std over seeds; {dataNote}.\n");
        if (protocol != null) md.AppendLine(protocol);
        foreach (var section in results.Select(r => r.Section).Distinct())
        {
            var inSection = results.Where(r => r.Section == section).ToList();
            var settings = inSection.Select(r => r.Setting).Distinct().ToList();
            // Task identification joined the results later: earlier runs (NaN) keep their two tables.
            var metrics = new (string, Func<BenchResult, double>)[] { ("per-task", r => r.PerTask), ("joint", r => r.Joint), ("task-identification", r => r.TaskIdentified) };
            foreach (var (metric, pick) in metrics.Where(m => inSection.Any(r => !double.IsNaN(m.Item2(r)))))
            {
                md.AppendLine($"## {sectionTitle(section)} — {metric} accuracy\n");
                md.AppendLine($"| method | {string.Join(" | ", settings.Select(s => column(section, s)))} |");
                md.AppendLine($"|---|{string.Concat(settings.Select(_ => "---|"))}");
                foreach (var label in inSection.Select(r => r.Label).Distinct())
                {
                    var cells = settings.Select(s =>
                    {
                        var values = inSection.Where(r => r.Setting == s && r.Label == label).Select(pick).Where(v => !double.IsNaN(v)).Select(v => 100 * v).ToList();
                        if (values.Count == 0) return "";
                        double mean = values.Average();
                        double std = values.Count > 1 ? Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)) : 0;
                        return $"{mean:F2} ± {std:F2}";
                    });
                    md.AppendLine($"| {label} | {string.Join(" | ", cells)} |");
                }
                md.AppendLine();
            }
            md.AppendLine($"## {sectionTitle(section)} — cost (mean over settings and seeds)\n");
            md.AppendLine("Peak memory is the process's peak resident set while the method ran: sources, data, LibTorch and whatever earlier work left resident included (malloc is told to keep freed memory), so it is an upper bound; `fsmerge bench perf` measures methods in processes of their own.\n");
            md.AppendLine("| method | merge time (s) | peak memory (MB) | optimized parameters |\n|---|---|---|---|");
            foreach (var group in inSection.Where(r => r.Label != "original models").GroupBy(r => r.Label))
                md.AppendLine($"| {group.Key} | {group.Average(r => r.Seconds):F1} | {group.Average(r => r.PeakMegabytes):F0} | {group.Max(r => r.Parameters):N0} |");
            md.AppendLine();
        }
        AppendEstimateRanking(md, results);
        md.AppendLine("## Learning rates chosen on validation (where a grid was searched)\n");
        foreach (var (key, value) in chosen) md.AppendLine($"- {key}: {value}");
        AtomicFile.WriteAllText(Path.Combine(outDir, $"{name}.md"), md.ToString());
    }

    static string F(double v) => v.ToString("G6", CultureInfo.InvariantCulture);

    /// <summary>Unmeasured values are NaN (task identification in old results, the estimate without --lr-auto): written as "NaN".</summary>
    static readonly JsonSerializerOptions ResultsJson = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>
    /// How the label-free estimate ranks the methods of each setting and seed against their test accuracy: Spearman's
    /// ρ between −(held-out divergence) and per-task accuracy, and between joint agreement and joint accuracy, and
    /// what picking the method by the estimate costs in per-task accuracy against the best method.
    /// </summary>
    static void AppendEstimateRanking(StringBuilder md, List<BenchResult> results)
    {
        // The ensemble keeps every model (its estimate is perfect by construction): merged models only.
        var groups = results.Where(r => !double.IsNaN(r.Divergence) && r.Label != "ensemble").GroupBy(r => (r.Setting, r.Seed)).Where(g => g.Count() >= 3).ToList();
        if (groups.Count == 0) return;
        md.AppendLine("## The label-free estimate against test accuracy\n");
        md.AppendLine("Every merged model (the ensemble left out) scored on 32 held-out unlabeled train images per task, no label read. ρ: Spearman's rank " +
                      "correlation over the methods of a setting; 1 = the estimate orders them as test accuracy does. Picked: the method with the lowest " +
                      "held-out divergence, against the best by per-task test accuracy.\n");
        md.AppendLine("| setting | seed | methods | ρ per-task (−divergence) | ρ joint (joint agreement) | picked by the estimate | best by test | per-task cost of the pick |");
        md.AppendLine("|---|---|---|---|---|---|---|---|");
        var rhos = new List<(double PerTask, double Joint)>();
        foreach (var g in groups)
        {
            var rows = g.ToList();
            double perTask = Spearman(rows.Select(r => -r.Divergence).ToList(), rows.Select(r => r.PerTask).ToList());
            double joint = Spearman(rows.Select(r => r.JointAgreement).ToList(), rows.Select(r => r.Joint).ToList());
            rhos.Add((perTask, joint));
            var picked = rows.MinBy(r => r.Divergence)!;
            var best = rows.MaxBy(r => r.PerTask)!;
            md.AppendLine($"| {g.Key.Setting} | {g.Key.Seed} | {rows.Count} | {perTask:F2} | {joint:F2} | {picked.Label} ({100 * picked.PerTask:F2}) | {best.Label} ({100 * best.PerTask:F2}) | {100 * (best.PerTask - picked.PerTask):F2} |");
        }
        md.AppendLine($"\nMean ρ over {rhos.Count} settings: per-task {rhos.Average(r => r.PerTask):F2}, joint {rhos.Average(r => r.Joint):F2}.\n");
    }

    /// <summary>Spearman's ρ with average ranks for ties; NaN when either side is constant.</summary>
    internal static double Spearman(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        static double[] Ranks(IReadOnlyList<double> v)
        {
            var order = Enumerable.Range(0, v.Count).OrderBy(i => v[i]).ToArray();
            var ranks = new double[v.Count];
            for (int i = 0; i < order.Length;)
            {
                int j = i;
                while (j + 1 < order.Length && v[order[j + 1]] == v[order[i]]) j++;
                for (int k = i; k <= j; k++) ranks[order[k]] = (i + j) / 2.0;
                i = j + 1;
            }
            return ranks;
        }
        var (rx, ry) = (Ranks(x), Ranks(y));
        double mx = rx.Average(), my = ry.Average();
        double cov = rx.Zip(ry).Sum(p => (p.First - mx) * (p.Second - my));
        double sx = Math.Sqrt(rx.Sum(r => (r - mx) * (r - mx))), sy = Math.Sqrt(ry.Sum(r => (r - my) * (r - my)));
        return sx == 0 || sy == 0 ? double.NaN : cov / (sx * sy);
    }
}
