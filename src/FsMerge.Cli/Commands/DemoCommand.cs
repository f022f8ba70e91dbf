using System.Diagnostics;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Reporting;
using FsMerge.Training;

namespace FsMerge.Cli.Commands;

/// <summary>
/// The README's main command: provision the data, train two MLPs from different seeds on the two halves
/// of MNIST, and evaluate them per task and jointly. Under 10 minutes on 2 cores.
/// </summary>
sealed class DemoCommand : ICommand
{
    public string Name => "demo";
    public string Summary => "provision data, train two MLPs on MNIST 0-4 and 5-9 from different seeds, merge them with FS-Merge and baselines";
    public string Usage => "demo [--out DIR] [--epochs N]";

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("out", "DIR", "where the demo's models go", "runs/demo", Short: "-o"),
        new("epochs", "N", "training epochs per source model", "2"),
        Common.Data, Common.Device, Common.Threads, Common.Quiet,
    ];

    static readonly (string Task, long Seed)[] Sources = [("mnist:0-4", 1), ("mnist:5-9", 2)];

    static readonly (string Label, string Method, Dictionary<string, string> Options)[] Merges =
    [
        ("ensemble (keeps both models)", "ensemble", new()),
        ("weight average", "average", new()),
        ("ZipIt", "zipit", new()),
        ("distillation", "distill", new() { ["lr"] = "0.3", ["init"] = "first" }),
        ("FS-Merge global, first init", "fs-merge", new() { ["lr"] = "0.1" }),
        ("FS-Merge global, ZipIt init", "fs-merge", new() { ["init"] = "zipit", ["lr"] = "0.03" }),
    ];

    public int Run(ParsedArgs args)
    {
        var device = Common.Setup(args);
        var clock = Stopwatch.StartNew();
        var dataDir = Common.DataDir(args);
        var outDir = args.Require("out");
        int epochs = args.Int("epochs", min: 1);

        Console.WriteLine($"== 1. data ({dataDir})");
        DataProvisioner.Provision(dataDir, line => Console.WriteLine($"  {line}"), includeText: false);

        Console.WriteLine("== 2. source models: MLP 784-128-128, one per task, different seeds");
        var dirs = new List<string>();
        var tests = new List<ImageSet>();
        foreach (var (task, seed) in Sources)
        {
            var data = TaskData.Load(TaskSpec.Parse(task), dataDir);
            var config = new ModelConfig
            {
                Architecture = "mlp",
                InputSize = 784,
                HiddenSizes = [128, 128],
                Heads = [new HeadInfo(data.Task.ToString(), data.Train.LabelNames)],
            };
            var dir = Path.Combine(outDir, $"mlp-{task.Replace(':', '-')}-seed{seed}");
            using var initial = Model.Create(config, seed, device);
            TrainCommand.TrainAndSave(initial, data, new TrainOptions { Epochs = epochs, Seed = seed, BatchSize = 10 }, null, dir, overwrite: true, device);
            dirs.Add(dir);
            tests.Add(data.Test);
        }

        Console.WriteLine("== 3. evaluation of the source models (each head on its own model's features)");
        var models = dirs.Select(d => Model.Load(d, device)).ToList();
        var names = Sources.Select(s => s.Task).ToList();
        var result = Evaluator.Evaluate(Evaluator.SeparateModels(models), tests, device, names);
        Console.WriteLine(EvalCommand.ToTable(result));

        Console.WriteLine("== 4. merging into one model of the original size, from 64 unlabeled images per task");
        var plan = MergePlan.Prepare(models, dirs, [], dataDir, perTask: 64, seed: 1, width: null, device);
        var rows = new List<(string Label, EvaluationResult Result, double Seconds)> { ("original models (2 models)", result, 0) };
        var results = new List<MethodResult>();
        foreach (var (label, method, options) in Merges)
        {
            var m = MergeMethods.Get(method);
            var settings = new MethodSettings(m, options);
            PeakMemory.Reset();
            var watch = Stopwatch.StartNew();
            Console.WriteLine($"-- {label}");
            var outcome = m.Merge(plan.Inputs(device, 1, MergeCommand.Progress()), settings);
            var seconds = watch.Elapsed.TotalSeconds;
            rows.Add((label, Evaluator.Evaluate(outcome.Predict, plan.Tests, device, names), seconds));
            results.Add(MethodResult.From(label, settings, outcome, seconds, PeakMemory.Megabytes(), rows[^1].Result));
            if (outcome.Merged is { } merged)
            {
                merged.Save(Path.Combine(outDir, $"merged-{method}"));
                merged.Dispose();
            }
        }
        var report = Path.Combine(outDir, "report");
        MergeReport.Write(report, new MergeRunSummary
        {
            Sources = dirs.Select((d, i) => new ReportSource(d, names[i], models[i].Config, plan.Data[i].Count)).ToList(),
            Methods = results, Seed = 1, Threads = args.Int("threads", min: 0, max: TorchRuntime.MaxThreads), Device = args.Require("device"), SourcesTest = result,
        });
        foreach (var m in models) m.Dispose();
        Console.WriteLine($"{"method",-34}{names[0],11}{names[1],11}{"per-task",10}{"joint",8}{"seconds",9}");
        foreach (var (label, r, seconds) in rows)
            Console.WriteLine($"{label,-34}{Common.Percent(r.Tasks[0].Accuracy),11}{Common.Percent(r.Tasks[1].Accuracy),11}{Common.Percent(r.PerTaskMean),10}{Common.Percent(r.Joint),8}{seconds,9:F1}");
        Console.WriteLine("(test accuracy %; per-task: each task's head alone; joint: argmax over both heads. Learning rates: the ones bench mlp --quick chose on validation.)");
        Console.WriteLine($"demo finished in {clock.Elapsed.TotalSeconds:F0} s; models in {outDir}, report with plots in {report}");
        return 0;
    }
}
