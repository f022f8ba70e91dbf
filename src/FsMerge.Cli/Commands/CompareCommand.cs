using System.Globalization;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Reporting;
using FsMerge.Runs;

namespace FsMerge.Cli.Commands;

/// <summary>`fsmerge compare`: several methods on the same sources and merge data, evaluated and reported side by side.</summary>
sealed class CompareCommand : ICommand
{
    public string Name => "compare";
    public string Summary => "run several merge methods on the same inputs and report them side by side";
    public string Usage => "compare [CONFIG.yaml] --methods NAME,NAME,.. [--model DIR --model DIR ...] [--out DIR] [options] [method options]";

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("methods", "A,B,..", $"methods to compare, in order (of: {string.Join(", ", MergeMethods.All.Select(m => m.Name))})"),
        .. MergeCommand.RunOptions.Where(o => o.Name is not ("method" or "eval") && !MergeCommand.CheckpointOptions.Contains(o)),   // no checkpoints or resume
        .. MergeCommand.MethodOptions,
    ];

    public IReadOnlyList<ArgumentSpec> Arguments => [MergeCommand.Config];

    public string? HelpFooter => MergeCommand.MethodHelp();

    public int Run(ParsedArgs args)
    {
        ProgressBar.Quiet = args.Has("quiet");
        TorchRuntime.Configure();   // before any torch call (the library leaves process-wide settings to its caller)
        var methods = args.Require("methods").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(MergeMethods.Get).ToList();
        if (methods.Count == 0 || methods.Select(m => m.Name).Distinct().Count() != methods.Count)
            throw new FsMergeException($"fsmerge compare: --methods '{args.Get("methods")}' must name distinct methods");
        // Options given (file or flags) go to every method that has them. Accuracies are measured when every source
        // has labelled test data (a dataset task, or a 'test:' source); without, the methods are compared without labels.
        var request = MergeCommand.Request(args);
        request = request with { Eval = request.Sources.All(s => s.Test != null || s.Data is null || s.Data.Kind == "task") };
        IReadOnlyDictionary<string, string> OptionsOf(IMergeMethod m) =>
            request.Options.Where(o => m.Options.Any(x => x.Name == o.Key)).ToDictionary(o => o.Key, o => o.Value);
        var unused = request.Options.Keys.Where(k => !methods.Any(m => m.Options.Any(o => o.Name == k))).ToList();
        if (unused.Count > 0)
            throw new FsMergeException($"fsmerge compare: option --{unused[0]} belongs to none of {string.Join(", ", methods.Select(m => m.Name))}");

        bool dryRun = args.Has("dry-run");
        using var prepared = PreparedMerge.Prepare(request with { Method = methods[0].Name, Options = OptionsOf(methods[0]) }, writes: !dryRun);
        var settings = methods.Select(m => prepared.SettingsFor(m, OptionsOf(m))).ToList();
        if (dryRun)
        {
            Console.Write(prepared.DescribePlan());
            Console.WriteLine($"dry run (plan of the first method, {methods[0].Name}; then {string.Join(", ", methods.Skip(1).Select(m => m.Name))}): nothing written");
            return 0;
        }
        foreach (var note in prepared.Plan.Notes) Console.WriteLine($"note: {note}");
        var results = new List<MethodResult>();
        var models = new List<(string Method, Model Model)>();
        try
        {
            for (int i = 0; i < methods.Count; i++)
            {
                Console.WriteLine($"== {methods[i].Name} ({i + 1}/{methods.Count})");
                var (outcome, result) = prepared.Execute(methods[i], settings[i], MergeCommand.Progress(), log: Console.WriteLine);
                results.Add(result);
                if (outcome.Merged != null) models.Add((methods[i].Name, outcome.Merged));
            }
            Console.WriteLine(Table(prepared.Plan.Tasks, results));
            var choice = results.Where(r => r.LabelFree != null && models.Any(m => m.Method == r.Method))
                .Aggregate((MethodResult?)null, (best, r) => best is null || r.LabelFree!.IsBetterThan(best.LabelFree!) ? r : best);
            if (choice != null)
                Console.WriteLine($"label-free choice: {choice.Method} (lowest held-out divergence from the source models, {choice.LabelFree!.Divergence:F4}; its model is models/{choice.Method})");
            var summary = prepared.Summary(results, null, null) with
            {
                CommandLine = $"fsmerge {string.Join(" ", Environment.GetCommandLineArgs().Skip(1))}",
                LabelFreeChoice = choice?.Method,
            };
            OutputWriter.Write(request.Output!, request.Overwrite, staging =>
            {
                foreach (var (method, model) in models)
                    OutputWriter.SaveWithTasks(model, Path.Combine(staging, "models", method), prepared.SaveFormat);
                MergeReport.Write(staging, summary);
            });
            Console.WriteLine($"wrote {request.Output}: report.md, metrics.json, metrics.csv, plots, and each method's model under models/");
            return 0;
        }
        finally
        {
            foreach (var (_, model) in models) model.Dispose();
        }
    }

    /// <summary>
    /// Every method: test accuracy (%) per task, per-task mean and joint when labels were given; then the label-free
    /// estimate (held-out agreement with the source models, %, and divergence) and the time.
    /// </summary>
    static string Table(IReadOnlyList<string> tasks, IReadOnlyList<MethodResult> results)
    {
        bool tested = results.All(r => r.Test != null);
        bool estimated = results.All(r => r.LabelFree != null);
        int first = Math.Max(8, results.Max(r => r.Method.Length)) + 2;
        int col = Math.Max(10, tasks.Max(t => t.Length) + 2);
        var header = "method".PadRight(first);
        if (tested) header += string.Concat(tasks.Select(t => t.PadLeft(col))) + "per-task".PadLeft(10) + "joint".PadLeft(8);
        if (estimated) header += "agreement".PadLeft(11) + "divergence".PadLeft(12);
        var lines = new List<string> { header + "seconds".PadLeft(9) };
        foreach (var r in results)
        {
            var line = r.Method.PadRight(first);
            if (tested)
                line += string.Concat(r.Test!.Tasks.Select(t => Common.Percent(t.Accuracy).PadLeft(col)))
                    + Common.Percent(r.Test.PerTaskMean).PadLeft(10) + Common.Percent(r.Test.Joint).PadLeft(8);
            if (estimated)
                line += Common.Percent(r.LabelFree!.Agreement).PadLeft(11) + r.LabelFree.Divergence.ToString("F4", CultureInfo.InvariantCulture).PadLeft(12);
            lines.Add(line + r.Seconds.ToString("F1", CultureInfo.InvariantCulture).PadLeft(9));
        }
        if (tested) lines.Add("(test accuracy %; per-task: each task's head alone; joint: argmax over all heads)");
        if (estimated) lines.Add("(label-free, on held-out unlabeled samples: agreement % with each source model's prediction, mean over tasks; divergence of the predictions from the sources', 0 = the same, 1 = no better than their mean prediction)");
        return string.Join(Environment.NewLine, lines);
    }
}
