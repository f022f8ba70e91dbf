using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Runs;

namespace FsMerge.Reporting;

/// <summary>One source model of a merge: where it came from, its task, its config, and how many merge images it got.</summary>
internal sealed record ReportSource(string Path, string Task, ModelConfig Config, int MergeSamples);

/// <summary>One method's result on a run's inputs: its options, cost, loss curves and (if labelled data was given) accuracies.</summary>
public sealed record MethodResult
{
    public required string Method { get; init; }
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();
    public double Seconds { get; init; }
    /// <summary>Peak resident memory of the process up to the end of this method, from its start or the caller's <see cref="FsMerge.Bench.PeakMemory.Reset"/> (0 when unknown).</summary>
    public double PeakMegabytes { get; init; }
    public long? OptimizedParameters { get; init; }
    public double? FinalLoss { get; init; }
    public IReadOnlyList<LossCurve> LossCurves { get; init; } = [];
    /// <summary>Accuracies on labelled evaluation data; null when none was given.</summary>
    public EvaluationResult? Test { get; init; }
    /// <summary>The method's own details (merge.json's "details").</summary>
    public JsonObject Details { get; init; } = new();
    /// <summary>Where each option value came from (default, default for the architecture, flag, config file, --lr auto).</summary>
    public IReadOnlyDictionary<string, string> OptionOrigins { get; init; } = new Dictionary<string, string>();
    /// <summary>The label-free estimate on held-out unlabeled samples; null when there were none.</summary>
    public LabelFreeEstimate? LabelFree { get; init; }
    /// <summary>The --lr auto sweep (empty when the rate was given).</summary>
    public IReadOnlyList<RateTrial> RateTrials { get; init; } = [];

    /// <summary>The result of <paramref name="outcome"/>, with the cost measured by the caller.</summary>
    public static MethodResult From(string method, MethodSettings settings, MergeOutcome outcome, double seconds, double peakMegabytes,
        EvaluationResult? test, LabelFreeEstimate? labelFree = null) => new()
    {
        Method = method,
        Options = settings.All,
        OptionOrigins = settings.Origins,
        LabelFree = labelFree,
        RateTrials = outcome.RateTrials,
        Seconds = seconds,
        PeakMegabytes = peakMegabytes,
        OptimizedParameters = outcome.Details["optimized_parameters"]?.GetValue<long>(),
        // The method's own final loss (the mean over problems for local FS-Merge), else the last phase's.
        FinalLoss = outcome.Details["final_loss"] is JsonValue v && v.TryGetValue<double>(out var loss) ? loss
            : outcome.LossCurves.Count > 0 && !double.IsNaN(outcome.LossCurves[^1].FinalLoss) ? outcome.LossCurves[^1].FinalLoss : null,
        LossCurves = outcome.LossCurves,
        Test = test,
        Details = outcome.Details,
    };
}

/// <summary>Accuracy of one method at one amount of merge data, for the accuracy-against-data plot.</summary>
internal sealed record DataPoint(string Method, int SamplesPerTask, EvaluationResult Test);

/// <summary>Everything a merge report shows: the inputs, one or several methods run on them, and optionally a data series.</summary>
internal sealed record MergeRunSummary
{
    public required IReadOnlyList<ReportSource> Sources { get; init; }
    /// <summary>One entry per method run on the same inputs (`fsmerge merge`: one; `fsmerge compare`: several).</summary>
    public required IReadOnlyList<MethodResult> Methods { get; init; }
    /// <summary>The method whose merged model is saved in the report's folder (it gets the model card), or null.</summary>
    public string? SavedModel { get; init; }
    /// <summary>The merged model's config (heads, widths) when <see cref="SavedModel"/> is set.</summary>
    public ModelConfig? SavedConfig { get; init; }
    public long Seed { get; init; }
    public int Threads { get; init; }
    public string Device { get; init; } = "cpu";
    public int AugmentedPerTask { get; init; }
    /// <summary>The method `fsmerge compare` would keep without labels (lowest held-out divergence), or null.</summary>
    public string? LabelFreeChoice { get; init; }
    /// <summary>Notes of the plan (a source re-expressed for model 1's preprocessing), listed under "What was merged".</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
    /// <summary>The saved model's weight dtype (float32, float16, bfloat16).</summary>
    public string SavedDType { get; init; } = "float32";
    /// <summary>The command line that produced the run, for reproduction (optional).</summary>
    public string? CommandLine { get; init; }
    public DateTimeOffset Finished { get; init; } = DateTimeOffset.UtcNow;
    /// <summary>Accuracy at several amounts of merge data (empty: no accuracy-against-data plot).</summary>
    public IReadOnlyList<DataPoint> DataSeries { get; init; } = [];
    /// <summary>The source models' own test accuracy (each head on its own model; joint = their ensemble), when evaluated.</summary>
    public EvaluationResult? SourcesTest { get; init; }
}

/// <summary>
/// Writes a merge's report into a folder: report.md, metrics.json, metrics.csv, PNG plots (loss.png: training
/// loss; accuracy.png: per-task accuracy per method; accuracy-vs-data.png: accuracy against merge data) and,
/// when the folder holds the merged model, its model card README.md. Every file is written atomically.
/// </summary>
internal static class MergeReport
{
    public const string ReportFile = "report.md", MetricsJson = "metrics.json", MetricsCsv = "metrics.csv",
        LossPlot = "loss.png", AccuracyPlot = "accuracy.png", DataPlot = "accuracy-vs-data.png", SweepPlot = "lr-sweep.png", ModelCardFile = "README.md";

    /// <summary>Writes the report files into <paramref name="dir"/> and returns their names.</summary>
    public static IReadOnlyList<string> Write(string dir, MergeRunSummary run)
    {
        if (run.Methods.Count == 0) throw new ArgumentException("a report needs at least one method result", nameof(run));
        Directory.CreateDirectory(dir);
        var files = new List<string>();
        void Text(string name, string text) { AtomicFile.WriteAllText(Path.Combine(dir, name), text); files.Add(name); }

        var plots = WritePlots(dir, run);
        files.AddRange(plots);
        Text(MetricsJson, Json(run).ToJsonString(JsonFormat.Indented));
        Text(MetricsCsv, Csv(run));
        Text(ReportFile, Markdown(run, plots));
        if (run.SavedModel != null && run.SavedConfig != null)
            Text(ModelCardFile, ModelCard.Markdown(run, run.Methods.First(m => m.Method == run.SavedModel), run.SavedConfig));
        return files;
    }

    static List<string> WritePlots(string dir, MergeRunSummary run)
    {
        var plots = new List<string>();
        // One panel per method: each method's loss is its own objective (feature reconstruction, distillation), on its own axis.
        var panels = run.Methods.Select(m => (Title: $"{m.Method}: training loss", Series: (IReadOnlyList<ChartSeries>)m.LossCurves.Where(c => c.Points.Count > 0)
            .Select(c => new ChartSeries(c.Phase, c.Points.Select(p => (double)p.Step).ToList(), c.Points.Select(p => p.Loss).ToList())).ToList()))
            .Where(p => p.Series.Count > 0).ToList();
        if (panels.Count > 0)
        {
            LineChart.SavePanels(Path.Combine(dir, LossPlot), "step", "loss", panels);
            plots.Add(LossPlot);
        }
        var tested = run.Methods.Where(m => m.Test != null).Select(m => (Name: m.Method, Test: m.Test!)).ToList();
        if (tested.Count > 0)
        {
            // The source models first: what a merge keeps is read against them.
            if (run.SourcesTest is { } sources) tested.Insert(0, ("source models", sources));
            var categories = tested[0].Test.Tasks.Select(t => t.Task).Append("per-task mean").Append("joint").ToList();
            var series = tested.Select(m => new BarSeries(m.Name,
                m.Test.Tasks.Select(t => 100 * t.Accuracy).Append(100 * m.Test.PerTaskMean).Append(100 * m.Test.Joint).ToList())).ToList();
            BarChart.Save(Path.Combine(dir, AccuracyPlot), "test accuracy per task", "accuracy (%)", categories, series);
            plots.Add(AccuracyPlot);
        }
        var swept = run.Methods.Where(m => m.RateTrials.Any(t => !t.Diverged)).ToList();
        if (swept.Count > 0)
        {
            // One line per method and start (--init auto sweeps each start's rates).
            var lines = swept.SelectMany(m => m.RateTrials.Where(t => !t.Diverged).GroupBy(t => t.Init).Select(g =>
            {
                var fine = g.OrderBy(t => t.Rate).ToList();
                return new ChartSeries(g.Key is null ? m.Method : $"{m.Method}, init {g.Key}", fine.Select(t => t.Rate).ToList(), fine.Select(t => t.Divergence).ToList());
            })).ToList();
            // Log2 of the rate on the x axis (LineChart's log scale); diverged rates are left out.
            LineChart.Save(Path.Combine(dir, SweepPlot), "--lr auto: held-out divergence against the learning rate (lower is better)",
                "learning rate (log2)", "held-out divergence", lines, logX: true);
            plots.Add(SweepPlot);
        }
        if (run.DataSeries.Count > 0)
        {
            var lines = run.DataSeries.GroupBy(p => p.Method).Select(g =>
            {
                var points = g.OrderBy(p => p.SamplesPerTask).ToList();
                return new ChartSeries(g.Key, points.Select(p => (double)p.SamplesPerTask).ToList(), points.Select(p => 100 * p.Test.PerTaskMean).ToList());
            }).ToList();
            LineChart.Save(Path.Combine(dir, DataPlot), "per-task mean accuracy against merge data", $"unlabeled {run.Sources[0].Config.Arch.Samples} per task", "accuracy (%)", lines,
                logX: run.DataSeries.All(p => p.SamplesPerTask > 0));
            plots.Add(DataPlot);
        }
        return plots;
    }

    public static JsonObject Json(MergeRunSummary run) => new()
    {
        ["finished"] = run.Finished.ToString("O", CultureInfo.InvariantCulture),
        ["command"] = run.CommandLine,
        ["seed"] = run.Seed,
        ["threads"] = run.Threads,
        ["device"] = run.Device,
        ["augmented_per_task"] = run.AugmentedPerTask,
        ["sources"] = new JsonArray(run.Sources.Select(s => (JsonNode)new JsonObject
        {
            ["path"] = s.Path, ["task"] = s.Task, ["merge_samples"] = s.MergeSamples, ["architecture"] = Describe(s.Config),
        }).ToArray()),
        ["saved_model"] = run.SavedModel,
        ["label_free_choice"] = run.LabelFreeChoice,
        ["sources_test"] = run.SourcesTest?.ToJson(),
        ["methods"] = new JsonArray(run.Methods.Select(m => (JsonNode)new JsonObject
        {
            ["method"] = m.Method,
            ["options"] = MergeMethods.All.FirstOrDefault(x => x.Name == m.Method) is { } known ? OptionValues.ToJson(known, m.Options)
                : new JsonObject(m.Options.Select(kv => KeyValuePair.Create(kv.Key, OptionValues.ToJson(kv.Value, null)))),
            ["seconds"] = Math.Round(m.Seconds, 3),
            ["peak_mb"] = m.PeakMegabytes > 0 ? Math.Round(m.PeakMegabytes, 1) : null,
            ["optimized_parameters"] = m.OptimizedParameters,
            ["final_loss"] = m.FinalLoss,
            ["test"] = m.Test?.ToJson(),
            ["label_free"] = m.LabelFree?.ToJson(),
            ["option_origins"] = new JsonObject(m.OptionOrigins.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["recoveries"] = RecoveriesJson(m.LossCurves),
            ["loss_curves"] = new JsonArray(m.LossCurves.Select(c => (JsonNode)new JsonObject
            {
                ["phase"] = c.Phase,
                ["final_loss"] = double.IsNaN(c.FinalLoss) ? null : c.FinalLoss,
                ["steps"] = new JsonArray(c.Points.Select(p => (JsonNode)p.Step).ToArray()),
                ["loss"] = new JsonArray(c.Points.Select(p => (JsonNode)p.Loss).ToArray()),
            }).ToArray()),
            ["details"] = m.Details.DeepClone(),
        }).ToArray()),
        ["data_series"] = new JsonArray(run.DataSeries.Select(p => (JsonNode)new JsonObject
        {
            ["method"] = p.Method, ["samples_per_task"] = p.SamplesPerTask, ["test"] = p.Test.ToJson(),
        }).ToArray()),
    };

    /// <summary>Every divergence recovery of every phase (merge.json and metrics.json).</summary>
    public static JsonArray RecoveriesJson(IReadOnlyList<LossCurve> curves) => new(curves.SelectMany(c => c.Recoveries.Select(r => (JsonNode)new JsonObject
    {
        ["phase"] = c.Phase, ["step"] = r.Step, ["loss"] = double.IsFinite(r.Loss) ? r.Loss : null,
        ["rate_scale_before"] = r.FromScale, ["rate_scale_after"] = r.ToScale,
    })).ToArray());

    /// <summary>
    /// Long format, one value a row: method, samples_per_task (the unlabeled merge images per task: the task's own on a
    /// per-task row, the run's when every task had the same, empty when they differ), metric, task (empty: not per
    /// task), value.
    /// </summary>
    public static string Csv(MergeRunSummary run)
    {
        var csv = new StringBuilder("method,samples_per_task,metric,task,value\n");
        var perTask = run.Sources.Select(s => s.MergeSamples).ToList();
        int? runSamples = perTask.Distinct().Count() == 1 ? perTask[0] : null;
        int? SamplesOf(int task) => task < perTask.Count ? perTask[task] : null;
        void Row(string method, int? samples, string metric, string task, double value) =>
            csv.Append(CultureInfo.InvariantCulture, $"{Field(method)},{samples},{metric},{Field(task)},{value.ToString("R", CultureInfo.InvariantCulture)}\n");
        void Accuracies(string method, int? series, EvaluationResult test)
        {
            for (int t = 0; t < test.Tasks.Count; t++) Row(method, series ?? SamplesOf(t), "accuracy", test.Tasks[t].Task, test.Tasks[t].Accuracy);
            Row(method, series ?? runSamples, "per_task_mean", "", test.PerTaskMean);
            Row(method, series ?? runSamples, "joint", "", test.Joint);
            Row(method, series ?? runSamples, "task_identified", "", test.TaskIdentified);
        }
        foreach (var m in run.Methods)
        {
            if (m.Test != null) Accuracies(m.Method, null, m.Test);
            if (m.LabelFree is { } estimate)
            {
                for (int t = 0; t < estimate.Tasks.Count; t++)
                {
                    Row(m.Method, SamplesOf(t), "agreement", estimate.Tasks[t].Task, estimate.Tasks[t].Agreement);
                    Row(m.Method, SamplesOf(t), "divergence", estimate.Tasks[t].Task, estimate.Tasks[t].Divergence);
                    Row(m.Method, SamplesOf(t), "logit_error", estimate.Tasks[t].Task, estimate.Tasks[t].LogitError);
                }
                Row(m.Method, runSamples, "joint_agreement", "", estimate.JointAgreement);
            }
            Row(m.Method, runSamples, "seconds", "", m.Seconds);
            if (m.PeakMegabytes > 0) Row(m.Method, runSamples, "peak_mb", "", m.PeakMegabytes);
            if (m.OptimizedParameters is { } p) Row(m.Method, runSamples, "optimized_parameters", "", p);
            if (m.FinalLoss is { } l) Row(m.Method, runSamples, "final_loss", "", l);
        }
        foreach (var p in run.DataSeries) Accuracies(p.Method, p.SamplesPerTask, p.Test);
        return csv.ToString();
    }

    static string Field(string text) => text.IndexOfAny([',', '"', '\n']) < 0 ? text : $"\"{text.Replace("\"", "\"\"")}\"";

    /// <summary>A one-line description of a model's shape, e.g. "mlp 784-128-128" or "vit 28x28/7, d=64, depth 4, 4 heads, mlp 256".</summary>
    public static string Describe(ModelConfig c) => c.Architecture switch
    {
        "mlp" => $"mlp {c.InputSize}-{string.Join("-", c.HiddenSizes)}",
        "bert" => $"bert vocab {c.VocabSize}, up to {c.MaxPositionEmbeddings} tokens, d={c.HiddenSize}, depth {c.NumHiddenLayers}, {c.NumAttentionHeads} heads, mlp {c.IntermediateSize}",
        _ => $"vit {c.ImageSize}x{c.ImageSize}x{c.NumChannels}/{c.PatchSize}, d={c.HiddenSize}, depth {c.NumHiddenLayers}, {c.NumAttentionHeads} heads, mlp {c.IntermediateSize}",
    };

    static string Percent(double a) => (100 * a).ToString("F2", CultureInfo.InvariantCulture);

    static string Megabytes(double mb) => mb > 0 ? mb.ToString("F0", CultureInfo.InvariantCulture) + " MB" : "n/a";

    public static string Markdown(MergeRunSummary run, IReadOnlyList<string> plots)
    {
        var md = new StringBuilder();
        var methods = string.Join(", ", run.Methods.Select(m => m.Method));
        md.AppendLine($"# Merge report: {run.Sources.Count} models, {methods}\n");
        md.AppendLine($"Finished {run.Finished:yyyy-MM-dd HH:mm:ss} UTC" + (run.CommandLine != null ? $" by `{run.CommandLine}`." : "."));
        md.AppendLine();
        md.AppendLine("## What was merged\n");
        md.AppendLine("Source t becomes head t (0-based, as in the tensor names `classifier.{t}` and the folders `tasks/{t}-{task}`).\n");
        string samples = run.Sources[0].Config.Arch.Samples;
        md.AppendLine($"| head | source model | architecture | task | classes | source test accuracy | unlabeled merge {samples} |");
        md.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var (s, i) in run.Sources.Select((s, i) => (s, i)))
        {
            var accuracy = s.Config.Training["test_accuracy"] is JsonValue v && v.TryGetValue<double>(out var a) ? Percent(a) + " %" : "not recorded";
            md.AppendLine($"| {i} | `{s.Path}` | {Describe(s.Config)} | {s.Task} | {s.Config.Heads.Sum(h => h.Labels.Length)} | {accuracy} | {s.MergeSamples} |");
        }
        md.AppendLine();
        md.AppendLine($"Seed {run.Seed}, {(run.Threads == 0 ? "the default thread count (one per core)" : $"{run.Threads} thread(s)")}, device {run.Device}" +
                      (run.AugmentedPerTask > 0 ? $", {run.AugmentedPerTask} augmented {samples} per task added to the merge data." : "."));
        md.AppendLine($"The merge reads the {samples} only, never their labels.\n");
        foreach (var note in run.Notes) md.AppendLine($"Note: {note}.\n");

        md.AppendLine("## How\n");
        foreach (var m in run.Methods)
        {
            md.AppendLine($"**{m.Method}** options:\n");
            md.AppendLine("| option | value | from |");
            md.AppendLine("|---|---|---|");
            foreach (var (k, value) in m.Options)
                md.AppendLine($"| `--{k}` | {(value.Length == 0 ? "(empty)" : value)} | {m.OptionOrigins.GetValueOrDefault(k, "")} |");
            md.AppendLine();
            if (m.RateTrials.Count > 0)
            {
                bool inits = m.RateTrials.Any(t => t.Init != null);
                md.AppendLine($"`--lr auto` tried {m.RateTrials.Count} {(inits ? "(start, rate) pairs" : "rates")}, each for a fraction of the steps, and scored each merged model on the " +
                              "held-out unlabeled samples (mean over tasks of head t's divergence from source model t, each capped at 1; lower is better):\n");
                md.AppendLine($"| {(inits ? "start | " : "")}learning rate | held-out divergence | held-out agreement | seconds |");
                md.AppendLine($"|{(inits ? "---|" : "")}---|---|---|---|");
                foreach (var t in m.RateTrials)
                {
                    string start = inits ? $"{t.Init} | " : "";
                    bool chosen = t.Rate.ToString("G6", CultureInfo.InvariantCulture) == m.Options.GetValueOrDefault("lr") && (t.Init is null || t.Init == m.Options.GetValueOrDefault("init"));
                    md.AppendLine(t.Diverged ? $"| {start}{t.Rate:G4} | diverged | | {t.Seconds:F1} |"
                        : $"| {start}{t.Rate:G4}{(chosen ? " (chosen)" : "")} | {t.Divergence:F4} | {Percent(t.Agreement)} % | {t.Seconds:F1} |");
                }
                md.AppendLine();
            }
            var recoveries = m.LossCurves.SelectMany(c => c.Recoveries.Select(r => (c.Phase, r))).ToList();
            if (recoveries.Count > 0)
            {
                md.AppendLine("Divergence recoveries (the phase restarted from its start at a lower rate):\n");
                md.AppendLine("| phase | step | loss | rate scale after |");
                md.AppendLine("|---|---|---|---|");
                foreach (var (phase, r) in recoveries) md.AppendLine($"| {phase} | {r.Step} | {r.Loss:G4} | {r.ToScale:G3} |");
                md.AppendLine();
            }
        }

        var estimated = run.Methods.Where(m => m.LabelFree != null).ToList();
        if (estimated.Count > 0)
        {
            var tasks = estimated[0].LabelFree!.Tasks;
            md.AppendLine("## Label-free estimate\n");
            md.AppendLine("On held-out unlabeled samples that no method trained on: agreement is the share of task t's samples on which head t " +
                          "predicts what source model t predicts; divergence is the KL divergence of head t's predictions from source t's, relative to that of " +
                          "the source's mean prediction (0: the same predictions; 1: no better than answering that mean; the mean caps each task's at 1); " +
                          "logit error is the squared error of the logits on the same scale; joint agreement: the argmax over all heads is the source models' ensemble's.\n");
            md.AppendLine($"| method | {string.Join(" | ", tasks.Select(t => $"{t.Task} agreement / divergence (n={t.Count})"))} | mean agreement | mean divergence | mean logit error | joint agreement |");
            md.AppendLine($"|---|{string.Concat(tasks.Select(_ => "---|"))}---|---|---|---|");
            foreach (var m in estimated)
                md.AppendLine($"| {m.Method} | {string.Join(" | ", m.LabelFree!.Tasks.Select(t => $"{Percent(t.Agreement)} / {t.Divergence:F4}"))} | " +
                              $"{Percent(m.LabelFree.Agreement)} | {m.LabelFree.Divergence:F4} | {m.LabelFree.LogitError:F4} | {Percent(m.LabelFree.JointAgreement)} |");
            md.AppendLine();
            if (run.LabelFreeChoice != null)
                md.AppendLine($"Without labels, **{run.LabelFreeChoice}** is the one to keep: its merged model has the lowest mean held-out divergence from the source models.\n");
        }

        var tested = run.Methods.Where(m => m.Test != null).ToList();
        md.AppendLine("## Accuracy\n");
        if (tested.Count == 0)
            md.AppendLine("No labelled evaluation data was given, so no accuracy was measured.\n");
        else
        {
            var tasks = tested[0].Test!.Tasks;
            md.AppendLine($"Per-task accuracy: task t's test {run.Sources[0].Config.Arch.Samples} classified by head t alone. Joint accuracy: the argmax over all heads' " +
                          "classes together must be task t's label in head t (the model is not told the task).\n");
            md.AppendLine($"| method | {string.Join(" | ", tasks.Select(t => $"{t.Task} (n={t.Count})"))} | per-task mean | joint |");
            md.AppendLine($"|---|{string.Concat(tasks.Select(_ => "---|"))}---|---|");
            if (run.SourcesTest is { } sources)
                md.AppendLine($"| source models (each head on its own model; joint: their ensemble) | {string.Join(" | ", sources.Tasks.Select(t => Percent(t.Accuracy)))} | {Percent(sources.PerTaskMean)} | {Percent(sources.Joint)} |");
            foreach (var m in tested)
                md.AppendLine($"| {m.Method} | {string.Join(" | ", m.Test!.Tasks.Select(t => Percent(t.Accuracy)))} | {Percent(m.Test.PerTaskMean)} | {Percent(m.Test.Joint)} |");
            md.AppendLine();
        }

        md.AppendLine("## Cost\n");
        md.AppendLine("Wall time of the merge itself (data loading and evaluation excluded); peak memory is the process's peak resident set " +
                      "(LibTorch included) at the end of the method.\n");
        md.AppendLine("| method | wall time | peak memory | optimized parameters | final training loss |");
        md.AppendLine("|---|---|---|---|---|");
        foreach (var m in run.Methods)
            md.AppendLine($"| {m.Method} | {m.Seconds:F1} s | {Megabytes(m.PeakMegabytes)} | {m.OptimizedParameters?.ToString("N0", CultureInfo.InvariantCulture) ?? (m.LossCurves.Count > 0 ? "not recorded" : "none (no training)")} | " +
                          $"{m.FinalLoss?.ToString("G4", CultureInfo.InvariantCulture) ?? "n/a"} |");
        md.AppendLine();

        if (plots.Count > 0)
        {
            md.AppendLine("## Plots\n");
            foreach (var p in plots)
            {
                var caption = p switch
                {
                    LossPlot => "Training loss (mean over the batches since the previous point), one panel and axis per method",
                    AccuracyPlot => "Test accuracy per task: the source models, then each method (every bar carries its value)",
                    SweepPlot => "--lr auto: held-out divergence of each candidate rate's short run",
                    _ => $"Per-task mean accuracy against the number of unlabeled merge {run.Sources[0].Config.Arch.Samples} per task",
                };
                md.AppendLine($"{caption}:\n\n![{caption}]({p})\n");
            }
        }

        md.AppendLine("## Files\n");
        if (run.SavedModel != null)
            md.AppendLine($"- `config.json`, `model.safetensors`: the merged model ({run.SavedModel}); `README.md`: its model card");
        md.AppendLine("- `metrics.json`, `metrics.csv`: the numbers above, machine-readable (the CSV has one value a row)");
        return md.ToString();
    }
}
