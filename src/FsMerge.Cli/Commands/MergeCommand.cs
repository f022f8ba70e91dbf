using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using FsMerge.Bench;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Reporting;

namespace FsMerge.Cli.Commands;

sealed class MergeCommand : ICommand
{
    public string Name => "merge";
    public string Summary => "merge source models (one task each) into one multi-task model with a chosen method";
    public string Usage => "merge --method NAME --model DIR --model DIR [--model DIR ...] --out DIR [options] [method options]";

    static readonly OptionSpec[] General =
    [
        new("method", "NAME", $"merge method: {string.Join(", ", MergeMethods.All.Select(m => m.Name))}", "fs-merge"),
        new("model", "DIR", "a source model (config.json + model.safetensors), in merge order", Repeatable: true),
        new("task", "TASK", "task of each model, in order (default: the task recorded in the model)", Repeatable: true),
        new("data-per-task", "N", "unlabeled merge images per task, drawn from its train split", "64"),
        new("augment", "N", "augmented images per task made from the originals (crop, flip, one of grayscale/solarize/blur, MixUp/CutMix; spec §11.3)", "0"),
        new("held-out", "N", "unlabeled held-out samples per task from the validation split, for a method's --early-stop (spec §6)", "0"),
        new("width", "W,W,..", "merged MLP hidden widths (default: model 1's)"),
        new("seed", "S", "seed for the merge data draw and the method", "1"),
        new("out", "DIR", "output directory: config.json, model.safetensors, merge.json, report.md, metrics.json/.csv, plots, README.md (model card), merge.log"),
        new("overwrite", null, "replace an existing output directory"),
        new("eval", null, "evaluate the result on the test splits after merging"),
        Common.Data, Common.Device, Common.Threads, Common.Quiet,
        .. MergeRun.Options,
    ];

    /// <summary>Every method's options are accepted by the parser; the chosen method rejects the others by name.</summary>
    public IReadOnlyList<OptionSpec> Options => General.Concat(MergeMethods.All.SelectMany(m => m.Options)
        .GroupBy(o => o.Name).Select(g => new OptionSpec(g.Key, "V", "method option", Hidden: true))).ToList();

    public static string MethodHelp()
    {
        var lines = new List<string> { "", "methods and their options (defaults):" };
        foreach (var m in MergeMethods.All)
        {
            lines.Add($"  {m.Name}: {m.Summary}");
            foreach (var o in m.Options) lines.Add($"      --{o.Name,-14} {o.Help} (default: {o.Default})");
        }
        return string.Join(Environment.NewLine, lines);
    }

    public int Run(ParsedArgs args)
    {
        var device = Common.Setup(args);
        var method = MergeMethods.Get(args.Require("method"));
        var given = MergeMethods.All.SelectMany(m => m.Options).Select(o => o.Name).Distinct()
            .Where(args.Has).ToDictionary(n => n, n => args.Get(n)!);
        var settings = new MethodSettings(method, given);
        var outDir = args.Require("out");
        if (Directory.Exists(outDir) && !args.Has("overwrite"))
            throw new FsMergeException($"{outDir}: output directory exists (use --overwrite to replace it)");
        var dirs = args.GetAll("model");
        if (dirs.Count < 2) throw new FsMergeException($"fsmerge merge: give at least two --model directories (got {dirs.Count})");
        int perTask = args.Int("data-per-task", min: 1);
        long seed = args.Int("seed");

        using var run = MergeRun.Start(args, outDir);   // work folder, log, checkpoints, Ctrl-C (MergeRun.cs)
        var sources = dirs.Select(d => Model.Load(d, device)).ToList();
        try
        {
            var plan = MergePlan.Prepare(sources, dirs, args.GetAll("task"), Common.DataDir(args), perTask, seed,
                args.Has("width") ? args.IntList("width") : null, device, args.Int("augment", min: 0), args.Int("held-out", min: 0));
            for (int i = 0; i < dirs.Count; i++) TextFolder.CheckVocabulary(dirs[i], Common.DataDir(args), TaskSpec.Parse(plan.Tasks[i]).Dataset);
            Console.WriteLine($"merging {sources.Count} models with {method.Name}: {string.Join(", ", plan.Tasks)} ({plan.Data[0].Count} unlabeled images per task)");
            var bars = new Dictionary<string, ProgressBar>();
            MergeProgress progress = (phase, done, total, loss) =>
            {
                if (!bars.TryGetValue(phase, out var bar)) bars[phase] = bar = new ProgressBar(phase, total);
                bar.Report(done, loss is { } l ? $"loss {l:G4}" : "");
            };
            var inputs = plan.Inputs(device, seed, progress, run.Checkpoints(method.Name, settings, plan, seed));
            var clock = Stopwatch.StartNew();
            var outcome = method.Merge(inputs, settings);
            var seconds = clock.Elapsed.TotalSeconds;

            var record = new JsonObject
            {
                ["method"] = method.Name,
                ["options"] = settings.ToJson(),
                ["sources"] = new JsonArray(dirs.Select((d, i) => (JsonNode)new JsonObject { ["path"] = Path.GetFullPath(d), ["task"] = plan.Tasks[i] }).ToArray()),
                ["data_per_task"] = new JsonArray(plan.Data.Select(d => (JsonNode)d.Count).ToArray()),
                ["augmented_per_task"] = args.Int("augment", min: 0),
                ["seed"] = seed,
                ["seconds"] = Math.Round(seconds, 2),
                ["heads"] = "one per source task, in source order; each source's final unmerge block is folded into its head",
                ["details"] = outcome.Details,
            };
            EvaluationResult? test = null;
            if (args.Has("eval"))
            {
                var result = test = Evaluator.Evaluate(outcome.Predict, plan.TestSets(), device, plan.Tasks, progress);
                Console.WriteLine(EvalCommand.ToTable(result));
                record["test"] = JsonNode.Parse(EvalCommand.ToJson(result));
            }
            // Report (MergeReport): written into the output as it is assembled.
            var summary = new MergeRunSummary
            {
                Sources = dirs.Select((d, i) => new ReportSource(Path.GetFullPath(d), plan.Tasks[i], sources[i].Config, plan.Data[i].Count)).ToList(),
                Methods = [MethodResult.From(method.Name, settings, outcome, seconds, PeakMemory.Megabytes(), test)],
                SavedModel = outcome.Merged != null ? method.Name : null, SavedConfig = outcome.Merged?.Config,
                Seed = seed, AugmentedPerTask = args.Int("augment", min: 0),
            };
            WriteOutput(outDir, outcome.Merged, record, args.Has("overwrite"), dirs[0], staging => run.WriteReport(staging, summary));
            Console.WriteLine($"merged in {seconds:F1} s{(outcome.Details["final_loss"] is { } loss ? $", final loss {loss}" : "")}; wrote {outDir}");
            outcome.Merged?.Dispose();
            return 0;
        }
        catch (Exception e) when (run.LogFailure(e)) { throw; }   // logs the error into merge.log; never catches
        finally
        {
            foreach (var s in sources) s.Dispose();
        }
    }

    /// <summary>Everything goes into a temporary sibling directory, renamed into place at the end.</summary>
    static void WriteOutput(string outDir, Model? merged, JsonObject record, bool overwrite, string firstSource, Action<string> writeReport)
    {
        var full = Path.GetFullPath(outDir);
        var staging = $"{full}.partial-{Environment.ProcessId}";
        try
        {
            Directory.CreateDirectory(staging);
            merged?.Save(staging);
            if (merged != null) TextFolder.CopyVocabulary(firstSource, staging);
            File.WriteAllText(Path.Combine(staging, "merge.json"), record.ToJsonString(JsonFormat.Indented));
            writeReport(staging);
            if (Directory.Exists(full) && overwrite) Directory.Delete(full, recursive: true);
            Directory.Move(staging, full);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new FsMergeException($"{outDir}: cannot write the output ({e.Message})");
        }
        catch (IOException e) when (e is not FileNotFoundException)
        {
            throw new FsMergeException($"{outDir}: cannot write the output ({e.Message})");
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
    }
}
