using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Runs;

namespace FsMerge.Cli.Commands;

sealed class MergeCommand : ICommand
{
    public string Name => "merge";
    public string Summary => "merge source models (one task each) into one multi-task model with a chosen method";
    public string Usage => "merge [CONFIG.yaml] [--method NAME --model DIR --model DIR ...] [--out DIR] [options] [method options]";

    /// <summary>The options of a merge run; flags override the config file's values.</summary>
    public static readonly OptionSpec[] RunOptions =
    [
        new("config", "FILE", "a YAML file describing the run (usually given as the first argument, CONFIG.yaml); its keys are these options' names (docs/cli.md)", Short: "-c"),
        new("method", "NAME", $"merge method: {string.Join(", ", MergeMethods.All.Select(m => m.Name))}", "fs-merge"),
        new("model", "DIR", "a source model (Hugging Face-style: config.json + model.safetensors or a sharded index), in merge order; replaces the file's sources", Repeatable: true, Short: "-m"),
        new("task", "TASK", "task of each model, in order (default: the task recorded in the model)", Repeatable: true, Short: "-t"),
        new("samples", "N", "unlabeled merge samples per task, drawn from the task's train split or the source's data in the config file", MergeRequest.DefaultSamples.ToString(),
            Short: "-n", OldNames: ["data-per-task"]),
        new("augment", "N", "augmented images per task made from the originals (crop, flip, one of grayscale/solarize/blur, MixUp/CutMix)", "0"),
        new("held-out", "N", "unlabeled held-out samples per task, drawn from the same data as the merge samples and never trained on: they choose --lr auto, give the label-free estimate (agreement with the source models) and serve --early-stop; 0 = none", MergeRequest.DefaultHeldOut.ToString()),
        new("width", "W,W,..", "merged MLP hidden widths (default: model 1's)"),
        new("seed", "S", "seed for the merge data draw and the method", "1", Short: "-s"),
        new("out", "DIR", "output directory: config.json, model.safetensors, tasks/ (one single-task model per head), merge.json, report.md, metrics.json/.csv, plots, README.md (model card), merge.log", Short: "-o"),
        new("overwrite", null, "replace an existing output directory"),
        new("eval", null, "evaluate the result on each task's labelled test data after merging"),
        new("dry-run", null, "check everything and print the plan (shapes, sites, parameters, data, steps, memory and time estimate); write nothing"),
        Common.Data, Common.Device, Common.Threads, Common.Quiet,
        .. MergeRun.Options,
    ];

    /// <summary>Every method's options are accepted by the parser; the chosen method rejects the others by name.</summary>
    public static IEnumerable<OptionSpec> MethodOptions => MergeMethods.All.SelectMany(m => m.Options)
        .GroupBy(o => o.Name).Select(g => new OptionSpec(g.Key, "V", "method option", Hidden: true));

    public IReadOnlyList<OptionSpec> Options => RunOptions.Concat(MethodOptions).ToList();

    public IReadOnlyList<ArgumentSpec> Arguments => [Config];

    public string? HelpFooter => MethodHelp();

    /// <summary>The config file, named first: "fsmerge merge CONFIG.yaml" (the same as --config).</summary>
    public static readonly ArgumentSpec Config = new("config", "CONFIG.yaml", "a YAML file describing the run (see --config)");

    public static string MethodHelp()
    {
        var lines = new List<string> { "", "methods and their options (defaults):" };
        foreach (var m in MergeMethods.All)
        {
            lines.Add($"  {m.Name}: {m.Summary}");
            foreach (var o in m.Options) lines.Add($"      --{o.Name,-14} {o.Help} (default: {o.Default})");
        }
        lines.Add("");
        lines.Add("defaults that depend on the sources' architecture (they replace the defaults above; a flag or the config file replaces both;");
        lines.Add("the dry run, merge.json and report.md say where each value came from):");
        foreach (var name in Architectures.Names)
            lines.Add($"  {name}: {string.Join(", ", Architectures.Get(name).MergeDefaults.Select(kv => $"--{kv.Key} {kv.Value}"))}");
        return string.Join(Environment.NewLine, lines);
    }

    public int Run(ParsedArgs args)
    {
        ProgressBar.Quiet = args.Has("quiet");
        var request = Request(args);
        bool dryRun = args.Has("dry-run");
        using var prepared = PreparedMerge.Prepare(request, writes: !dryRun);
        if (dryRun)
        {
            Console.Write(prepared.DescribePlan());
            Console.WriteLine($"dry run: nothing written{(request.Output != null ? $" (output would be {request.Output})" : "")}");
            return 0;
        }
        using var run = MergeRun.Start(args, request.Output!, request.Overwrite);   // work folder, log, checkpoints, Ctrl-C (MergeRun.cs)
        foreach (var note in prepared.Plan.Notes) Console.WriteLine($"note: {note}");
        try
        {
            Console.WriteLine($"merging {prepared.Plan.Sources.Count} models with {prepared.Method.Name}: {string.Join(", ", prepared.Plan.Tasks)} ({string.Join(", ", prepared.Plan.Data.Select(d => d.Count))} unlabeled images per task)");
            var checkpoints = run.Checkpoints(prepared.Method.Name, prepared.Settings, prepared.Plan, request.Seed);
            var (outcome, result) = prepared.Execute(prepared.Method, prepared.Settings, Progress(), checkpoints, Console.WriteLine);
            foreach (var recovery in outcome.LossCurves.SelectMany(c => c.Recoveries.Select(r => (c.Phase, r))))
                Console.WriteLine($"{recovery.Phase}: recovered from a loss of {recovery.r.Loss:G4} at step {recovery.r.Step}: restarted the phase at rate x{recovery.r.ToScale:G3}");
            if (result.LabelFree is { } estimate) Console.WriteLine(EvalCommand.ToTable(estimate, result.Test));
            else if (result.Test is { } test) Console.WriteLine(EvalCommand.ToTable(test));
            var summary = prepared.Summary([result], outcome.Merged?.Config, outcome.Merged != null ? result.Method : null);
            OutputWriter.WriteMerge(request.Output!, request.Overwrite, outcome.Merged, prepared.Record(result), staging =>
            {
                run.WriteReport(staging, summary);
            });
            Console.WriteLine($"merged in {result.Seconds:F1} s{(result.FinalLoss is { } loss ? $", final loss {loss:G6}" : "")}; wrote {request.Output}");
            outcome.Merged?.Dispose();
            return 0;
        }
        catch (Exception e) when (run.LogFailure(e)) { throw; }   // logs the error into merge.log; never catches
    }

    /// <summary>One progress bar per phase of the merge (feature extraction, training).</summary>
    public static MergeProgress Progress()
    {
        var bars = new Dictionary<string, ProgressBar>();
        return (phase, done, total, loss) =>
        {
            if (!bars.TryGetValue(phase, out var bar)) bars[phase] = bar = new ProgressBar(phase, total);
            bar.Report(done, loss is { } l ? $"loss {l:G4}" : "");
        };
    }

    /// <summary>The config file's run (if one is given) with every flag given on the command line laid over it.</summary>
    public static MergeRequest Request(ParsedArgs args)
    {
        var request = args.Get("config") is { } file
            ? MergeRequestFile.Read(file, warning => Console.Error.WriteLine($"warning: {Terminal.Escape(warning)}"))
            : new MergeRequest();
        if (args.Has("method")) request = request with { Method = args.Require("method") };
        var options = new Dictionary<string, string>(request.Options);
        var origins = request.Options.Keys.ToDictionary(k => k, _ => "config file");
        foreach (var name in MethodOptions.Select(o => o.Name).Where(args.Has)) (options[name], origins[name]) = (args.Get(name)!, "flag");
        request = request with { Options = options, OptionOrigins = origins };
        if (args.GetAll("model") is { Count: > 0 } models)
            request = request with { Sources = models.Select(m => new SourceRequest { Model = m }).ToList() };
        if (args.GetAll("task") is { Count: > 0 } tasks)
        {
            if (tasks.Count != request.Sources.Count)
                throw new FsMergeException($"fsmerge merge: {tasks.Count} --task given for {request.Sources.Count} models; give one per model or none");
            request = request with { Sources = request.Sources.Select((s, i) => s with { Task = tasks[i] }).ToList() };
        }
        if (args.Has("samples") || args.Get("config") == null)
        {
            int samples = args.Int("samples", min: 1, max: MergeRequest.MaxImagesPerTask);
            request = request with { Sources = request.Sources.Select(s => s with { Samples = samples }).ToList() };
        }
        if (args.Has("augment")) request = request with { Augment = args.Int("augment", min: 0, max: MergeRequest.MaxImagesPerTask) };
        if (args.Has("held-out")) request = request with { HeldOut = args.Int("held-out", min: 0, max: MergeRequest.MaxImagesPerTask) };
        if (args.Has("width")) request = request with { Width = args.IntList("width", ModelConfig.MaxWidth, ModelConfig.MaxLayers) };
        if (args.Has("seed")) request = request with { Seed = args.Int("seed") };
        if (args.Has("out")) request = request with { Output = args.Get("out") };
        if (args.Has("overwrite")) request = request with { Overwrite = true };
        if (args.Has("eval")) request = request with { Eval = true };
        if (args.Has("data-dir")) request = request with { DataDir = args.Get("data-dir") };
        if (args.Has("device")) request = request with { Device = args.Require("device") };
        if (args.Has("threads")) request = request with { Threads = args.Int("threads", min: 0, max: TorchRuntime.MaxThreads) };
        return request;
    }
}
