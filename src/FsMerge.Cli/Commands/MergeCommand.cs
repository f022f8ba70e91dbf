using System.Runtime.InteropServices;
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

    /// <summary>Training checkpoints and resume (merge only: compare keeps no checkpoints).</summary>
    public static readonly OptionSpec[] CheckpointOptions =
    [
        new("checkpoint-every", "K", "save a training checkpoint every K steps, at the end of each training phase and on Ctrl-C, in OUT.partial/", MergeRequest.DefaultCheckpointEvery.ToString()),
        new("resume", null, "continue an interrupted run from its checkpoints in OUT.partial/ (same models, data and options; same --threads for bit-identical weights); without it such checkpoints stop a new run unless --overwrite"),
    ];

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
        new("held-out", "N", "unlabeled held-out samples per task, drawn from the same data as the merge samples and never trained on: they choose --lr auto, give the label-free estimate (agreement with the source models and the divergence from their predictions) and serve --early-stop; 0 = none", MergeRequest.DefaultHeldOut.ToString()),
        new("width", "W,W,..", "merged MLP hidden widths (default: model 1's)"),
        new("seed", "S", "seed for the merge data draw and the method", "1", Short: "-s"),
        new("out", "DIR", "output directory: config.json, model.safetensors, tasks/ (one single-task model per head), merge.json, report.md, metrics.json/.csv, plots, README.md (model card), merge.log", Short: "-o"),
        new("overwrite", null, "replace an existing output directory"),
        new("eval", null, "evaluate the result on each task's labelled test data after merging"),
        new("dry-run", null, "check everything and print the plan (shapes, sites, parameters, data, steps, memory and time estimate); write nothing"),
        new("dtype", "TYPE", $"the saved weights' dtype: {string.Join(", ", WeightFormat.Names)} (default: the sources')"),
        new("shard-size", "BYTES", $"save the merged model as Hugging Face shards of at most BYTES each (at least {WeightFormat.MinShardSize}), with model.safetensors.index.json (default: one file)"),
        Common.MaxLength, Common.Data, Common.Device, Common.Threads, Common.Quiet,
        .. CheckpointOptions,
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
            lines.Add($"  {name}: {Common.ArchitectureDefaults(name)}");
        return string.Join(Environment.NewLine, lines);
    }

    public int Run(ParsedArgs args)
    {
        ProgressBar.Quiet = args.Has("quiet");
        TorchRuntime.Configure();   // before any torch call: the process-wide speed settings (the library leaves them to its caller)
        var request = Request(args);
        if (args.Has("dry-run"))
        {
            Console.Write(Merger.DescribePlan(request));
            Console.WriteLine($"dry run: nothing written{(request.Output != null ? $" (output would be {request.Output})" : "")}");
            return 0;
        }
        // Ctrl-C or SIGTERM (a scheduler, `kill`): the training phase saves a checkpoint and the run stops; a second signal quits at once.
        using var stop = new CancellationTokenSource();
        int signals = 0;
        void OnSignal(PosixSignalContext context)
        {
            if (++signals > 1) return;
            context.Cancel = true;
            stop.Cancel();
            Console.Error.WriteLine($"stopping ({context.Signal}): saving a checkpoint after this step (Ctrl-C again to quit at once)");
        }
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var result = Merger.Merge(request, new MergeCallbacks
        {
            Progress = Progress(),
            Log = Console.WriteLine,
            Cancellation = stop.Token,
            CommandLine = $"fsmerge {string.Join(" ", Environment.GetCommandLineArgs().Skip(1))}",
        });
        if (result.LabelFree is { } estimate) Console.WriteLine(EvalCommand.ToTable(estimate, result.Test));
        else if (result.Test is { } test) Console.WriteLine(EvalCommand.ToTable(test));
        // Training had ended when the signal came; nothing checks for it any more, and the output was written whole.
        if (signals > 0) Console.Error.WriteLine($"the interrupt came after training: {request.Output} was completed all the same");
        return 0;
    }

    /// <summary>One progress bar per phase of the merge (feature extraction, training).</summary>
    public static MergeProgress Progress()
    {
        var bars = new Dictionary<string, ProgressBar>();
        return (phase, done, total, loss, unit) =>
        {
            if (!bars.TryGetValue(phase, out var bar)) bars[phase] = bar = new ProgressBar(phase, total, unit);
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
        if (Common.MaxLengthOf(args) is { } maxLength) request = request with { MaxLength = maxLength };
        if (args.Has("seed")) request = request with { Seed = args.Int("seed") };
        if (args.Has("out")) request = request with { Output = args.Get("out") };
        if (args.Has("overwrite")) request = request with { Overwrite = true };
        if (args.Has("eval")) request = request with { Eval = true };
        if (args.Has("data-dir")) request = request with { DataDir = args.Get("data-dir") };
        if (args.Has("device")) request = request with { Device = args.Require("device") };
        if (args.Has("threads")) request = request with { Threads = args.Int("threads", min: 0, max: TorchRuntime.MaxThreads) };
        if (args.Has("dtype")) request = request with { DType = args.Require("dtype") };
        if (args.Has("shard-size"))
            request = request with
            {
                ShardSize = long.TryParse(args.Get("shard-size"), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long bytes) ? bytes
                    : throw new FsMergeException($"--shard-size '{args.Get("shard-size")}': expected a number of bytes"),
            };
        if (args.Has("checkpoint-every")) request = request with { CheckpointEvery = args.Int("checkpoint-every", min: 1) };
        if (args.Has("resume")) request = request with { Resume = true };
        return request;
    }
}
