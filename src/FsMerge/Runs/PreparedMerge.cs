using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Reporting;
using static TorchSharp.torch;

namespace FsMerge.Runs;

/// <summary>
/// A checked and loaded <see cref="MergeRequest"/>: the source models, their merge and test data, the
/// method and its settings. <see cref="Prepare"/> checks everything a merge needs before any compute,
/// so a dry run (<see cref="DescribePlan"/>) catches every input error a real run would.
/// </summary>
sealed class PreparedMerge : IDisposable
{
    public MergeRequest Request { get; }
    public IMergeMethod Method { get; }
    public MethodSettings Settings { get; }
    public MergePlan Plan { get; }
    public Device Device { get; }
    public IReadOnlyList<DataSource> DataUsed { get; }
    /// <summary>The sources' logits on the held-out samples, for --lr auto and the label-free estimate; null without held-out samples.</summary>
    public HeldOutReference? HeldOut { get; }

    PreparedMerge(MergeRequest request, IMergeMethod method, MethodSettings settings, MergePlan plan, Device device, IReadOnlyList<DataSource> dataUsed)
    {
        Request = request;
        Method = method;
        Settings = settings;
        Plan = plan;
        Device = device;
        DataUsed = dataUsed;
        HeldOut = plan.HeldOut is { } heldOut ? new HeldOutReference(plan.Sources, heldOut, plan.Tasks, device) : null;
    }

    /// <summary><paramref name="method"/>'s settings for this merge: the request's options over the sources' architecture's defaults.</summary>
    public MethodSettings SettingsFor(IMergeMethod method, IReadOnlyDictionary<string, string> options) =>
        new(method, options, Plan.Target.Arch, key => Request.OptionOrigins.GetValueOrDefault(key, "given"));

    /// <summary>Checks the request, loads the models and data. <paramref name="writes"/>: the output must be writable (not for a dry run).</summary>
    public static PreparedMerge Prepare(MergeRequest request, bool writes)
    {
        if (request.Sources.Count < 2)
            throw new FsMergeException($"a merge needs at least two source models (got {request.Sources.Count})");
        var method = MergeMethods.Get(request.Method);
        if (request.Options is MethodOptions typed && typed.Method != method.Name)
            throw new FsMergeException($"method '{method.Name}' was asked for with the options of '{typed.Method}' ({typed.GetType().Name})");
        _ = new MethodSettings(method, request.Options);   // unknown options fail before anything loads
        if (writes) CheckOutput(request);
        if (request.DType is { } dtype && !WeightFormat.Names.Contains(dtype))
            throw new FsMergeException($"dtype '{dtype}' (--dtype, or 'dtype:' in the config file): expected one of: {string.Join(", ", WeightFormat.Names)}");
        if (request.ShardSize < WeightFormat.MinShardSize)
            throw new FsMergeException($"shard size {request.ShardSize} (--shard-size, or 'shard_size:' in the config file): expected at least {WeightFormat.MinShardSize} bytes");
        if (request.CheckpointEvery < 1) throw new FsMergeException($"checkpoint every {request.CheckpointEvery} steps: expected at least 1");
        if (request.Threads is < 0 or > TorchRuntime.MaxThreads)
            throw new FsMergeException($"threads {request.Threads}: expected 0 (LibTorch's default) to {TorchRuntime.MaxThreads}");
        if (request.Threads > 0) TorchSharp.torch.set_num_threads(request.Threads);   // asked for; the rest of TorchRuntime.Configure is the caller's call
        var device = TorchRuntime.ParseDevice(request.Device);
        var dataDir = DataDirectory.Resolve(request.DataDir);

        var sources = new List<Model>();
        var data = new List<ImageSet>();
        var tests = new List<ImageSet>();
        var heldOut = new List<ImageSet>();
        try
        {
            var names = request.Sources.Select(s => s.Model).ToList();
            var tasks = new List<string>();
            var used = new List<DataSource>();
            for (int i = 0; i < request.Sources.Count; i++)
            {
                var source = request.Sources[i];
                var model = Model.Load(source.Model, device).WithMaxLength(request.MaxLength, source.Model);
                sources.Add(model);
                if (model.HeadCount != 1)
                    throw new FsMergeException($"{source.Model}: has {model.HeadCount} heads; a merge source is a single-task classifier (such as ViTForImageClassification)");
                var task = source.Task ?? model.Config.Heads[0].Task;
                if (source.Task == null && source.Data == null && source.Images is null && task == HeadInfo.Unrecorded)
                    throw new FsMergeException($"{source.Model}: config.json records no task (as in a Hugging Face checkpoint); give this source a task (task: mnist:0-4, --task) or its data (data: {{images: DIR}})");
                tasks.Add(task);
                var from = source.Images is { } memory ? DataSources.InMemory(memory) : source.Data ?? new DataSource("task", task);
                used.Add(from);
                var (images, held) = source.Images is { } items
                    ? DataSources.SampleWithHeldOut(items, source.Samples, request.HeldOut, request.Seed + i)
                    : DataSources.SampleWithHeldOut(from, dataDir, source.Samples, request.HeldOut, request.Seed + i);
                data.Add(images);
                if (held != null) heldOut.Add(held);
                if (from.Kind == "task") MergePlan.CheckClasses(model, source.Model, images, $"task {from.Value}");
                if (request.Eval)
                    tests.Add(source.TestImages is { } test ? new ImageSet(test.Images.clone(), test.Labels, test.LabelNames)
                        : DataSources.Labelled(source.Test ?? new DataSource("task", task), dataDir));
            }
            var plan = MergePlan.FromData(sources, names, tasks, data, tests, request.Width, request.Augment, request.Seed,
                heldOut.Count == sources.Count ? heldOut : null);
            foreach (var d in data) d.Dispose();
            var settings = new MethodSettings(method, request.Options, plan.Target.Arch, key => request.OptionOrigins.GetValueOrDefault(key, "given"));
            return new PreparedMerge(request, method, settings, plan, device, used);
        }
        catch
        {
            foreach (var d in data.Concat(tests).Concat(heldOut)) d.Dispose();
            foreach (var s in sources) s.Dispose();
            throw;
        }
    }

    /// <summary>An existing output is kept unless overwrite is asked for; the output's folder must be writable.</summary>
    static void CheckOutput(MergeRequest request)
    {
        var output = request.Output ?? throw new FsMergeException("no output directory given (--out DIR, or 'out:' in the config file)");
        OutputWriter.CheckOutput(output, request.Overwrite, request.Sources.Select(s => s.Model));
    }

    public MergeInputs Inputs(MergeProgress? progress, TrainingCheckpoints? checkpoints = null) =>
        Plan.Inputs(Device, Request.Seed, progress, checkpoints);

    /// <summary>
    /// Runs <paramref name="method"/> with <paramref name="settings"/> on the prepared inputs, evaluates the result
    /// if the request asks for it, and returns the outcome (its merged model is the caller's to dispose) and the
    /// result for the report.
    /// </summary>
    /// <remarks>With --lr auto the learning-rate sweep runs first (<see cref="LearningRateSearch"/>); the result's
    /// options hold the chosen rate. Every result carries the label-free estimate when there are held-out samples.</remarks>
    public (MergeOutcome Outcome, MethodResult Result) Execute(IMergeMethod method, MethodSettings settings, MergeProgress? progress,
        TrainingCheckpoints? checkpoints = null, Action<string>? log = null)
    {
        PeakMemory.Reset();   // each method's own peak when several run in one process (compare)
        var clock = Stopwatch.StartNew();
        var outcome = method.Merge(Plan.Inputs(Device, Request.Seed, progress, checkpoints, log), settings);
        double seconds = clock.Elapsed.TotalSeconds;
        double peak = PeakMemory.Megabytes();
        var labelFree = HeldOut?.Estimate(outcome.Predict);
        var test = Request.Eval ? Evaluator.Evaluate(outcome.Predict, Plan.Tests, Device, Plan.Tasks, progress) : null;
        return (outcome, MethodResult.From(method.Name, outcome.Settings ?? settings, outcome, seconds, peak, test, labelFree));
    }

    /// <summary>The saved weights' format: the request's dtype, else the sources' when they agree (float32 when not), and its shard size.</summary>
    public WeightFormat SaveFormat => new(Request.DType is { } name ? WeightFormat.Parse(name)
        : Plan.Sources.Select(s => s.StoredDType).Distinct().Count() == 1 ? Plan.Sources[0].StoredDType : ScalarType.Float32, Request.ShardSize);

    /// <summary>A path as the output shows it: relative to the output folder when there is one (the folder may be moved with its sources).</summary>
    string Shown(string path) => Request.Output is { } output ? Path.GetRelativePath(Path.GetFullPath(output), Path.GetFullPath(path)) : Path.GetFullPath(path);

    /// <summary>The report's description of the sources and the run (methods filled in by the caller).</summary>
    public MergeRunSummary Summary(IReadOnlyList<MethodResult> methods, ModelConfig? saved, string? savedMethod) => new()
    {
        Sources = Request.Sources.Select((s, i) => new ReportSource(Shown(s.Model), Plan.Tasks[i], Plan.Sources[i].Config,
            Plan.Data[i].Count - Request.Augment)).ToList(),
        Methods = methods,
        SavedModel = savedMethod,
        SavedConfig = saved,
        Seed = Request.Seed,
        Threads = TorchRuntime.Threads,   // the count in effect: the default is the machine's core count
        Device = Request.Device,
        AugmentedPerTask = Request.Augment,
        Notes = Plan.Notes,
        SourcesTest = Request.Eval ? Evaluator.Evaluate(Evaluator.SeparateModels(Plan.Sources), Plan.Tests, Device, Plan.Tasks) : null,
        SavedDType = WeightFormat.Name(SaveFormat.DType),
    };

    /// <summary>merge.json: what was merged, how (the resolved run as a config file would give it), how long it took and, if evaluated, the accuracies.</summary>
    public JsonObject Record(MethodResult result)
    {
        var method = MergeMethods.Get(result.Method);
        var record = new JsonObject
        {
            ["method"] = result.Method,
            ["options"] = OptionValues.ToJson(method, result.Options),
            ["config"] = Config(),
            ["sources"] = new JsonArray(Request.Sources.Select((s, i) => (JsonNode)new JsonObject
            {
                ["path"] = Shown(s.Model),
                ["task"] = Plan.Tasks[i],
                ["data"] = DataUsed[i].Kind is "task" or "memory" ? DataUsed[i].ToString() : $"{DataUsed[i].Kind}: {Shown(DataUsed[i].Value)}",
                ["samples"] = Plan.Data[i].Count - Request.Augment,
            }).ToArray()),
            ["data_per_task"] = new JsonArray(Plan.Data.Select(d => (JsonNode)(d.Count - Request.Augment)).ToArray()),
            ["augmented_per_task"] = Request.Augment,
            ["seed"] = Request.Seed,
            ["seconds"] = Math.Round(result.Seconds, 2),
            ["held_out_per_task"] = Plan.HeldOut is { } held ? new JsonArray(held.Select(d => (JsonNode)d.Count).ToArray()) : null,
            ["option_origins"] = new JsonObject(result.OptionOrigins.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["recoveries"] = MergeReport.RecoveriesJson(result.LossCurves),
            ["dtype"] = WeightFormat.Name(SaveFormat.DType),
            ["heads"] = new JsonArray(Plan.Tasks.Select((task, t) => (JsonNode)new JsonObject
            {
                ["head"] = t, ["task"] = task, ["source"] = Shown(Request.Sources[t].Model),
                ["tensors"] = $"{Heads.Prefix(t, Plan.Tasks.Count)}.*", ["folder"] = $"{OutputWriter.TasksFolder}/{OutputWriter.TaskFolder(t, task)}",
            }).ToArray()),
            ["details"] = result.Details.DeepClone(),
        };
        if (result.LabelFree is { } estimate) record["label_free"] = estimate.ToJson();
        if (result.Test is { } test) record["test"] = test.ToJson();
        return record;
    }

    /// <summary>
    /// The resolved run in the config file's keys (<see cref="MergeRequestFile"/>; JSON is YAML, so this object saved
    /// as a file runs again with `fsmerge merge FILE --out DIR`): paths relative to the output folder, every method
    /// option with its value (typed), data as drawn.
    /// </summary>
    JsonObject Config() => WithoutEmpty(new()
    {
        ["sources"] = new JsonArray(Request.Sources.Select((s, i) => (JsonNode)new JsonObject
        {
            ["model"] = Shown(s.Model),
            ["task"] = Plan.Tasks[i],
            // Data given in memory is named by its shape: a config file cannot hold it, and reading this one says so.
            ["data"] = new JsonObject { [DataUsed[i].Kind] = DataUsed[i].Kind is "task" or "memory" ? DataUsed[i].Value : Shown(DataUsed[i].Value) },
            ["samples"] = s.Samples,
            ["test"] = s.Test is { } test ? new JsonObject { [test.Kind] = test.Kind == "task" ? test.Value : Shown(test.Value) } : null,
        }).ToArray()),
        ["method"] = Method.Name,
        ["options"] = OptionValues.ToJson(Method, Settings.All),
        ["seed"] = Request.Seed,
        ["threads"] = Request.Threads,
        ["device"] = Request.Device,
        ["augment"] = Request.Augment,
        ["held-out"] = Request.HeldOut,
        ["width"] = Request.Width is { } width ? new JsonArray(width.Select(w => (JsonNode)w).ToArray()) : null,
        ["max-length"] = Request.MaxLength,
        ["eval"] = Request.Eval,
        ["dtype"] = WeightFormat.Name(SaveFormat.DType),
        ["shard-size"] = Request.ShardSize,
        ["checkpoint-every"] = Request.CheckpointEvery,
    });

    /// <summary>The object without null or empty-string values, recursively (a config file has no empty values).</summary>
    static JsonObject WithoutEmpty(JsonObject o)
    {
        foreach (var (key, value) in o.ToList())
        {
            if (value is null || value is JsonValue v && v.TryGetValue<string>(out var text) && text.Length == 0) o.Remove(key);
            else if (value is JsonObject inner) WithoutEmpty(inner);
            else if (value is JsonArray list) foreach (var item in list.OfType<JsonObject>()) WithoutEmpty(item);
        }
        return o;
    }

    /// <summary>
    /// The dry run's plan: models and their shapes, sites, the method's optimized parameter count, data
    /// counts, steps, and a rough estimate of memory and time (how each is estimated is printed with it).
    /// </summary>
    public string DescribePlan()
    {
        var text = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        string N(long v) => v.ToString("N0", inv);
        var target = Plan.Target;
        text.AppendLine($"plan: merge {Plan.Sources.Count} models with {Method.Name} (seed {Request.Seed}, device {Request.Device}, threads {(Request.Threads == 0 ? $"{TorchRuntime.Threads} (default)" : Request.Threads)})");
        text.AppendLine("models (source t becomes head t, 0-based as in classifier.{t} and tasks/{t}-{task}):");
        for (int i = 0; i < Plan.Sources.Count; i++)
        {
            var c = Plan.Sources[i].Config;
            text.AppendLine($"  {i}. {Request.Sources[i].Model}");
            text.AppendLine($"     {Shape(c)}, head {Plan.Tasks[i]} ({c.Heads[0].Labels.Length} classes: {string.Join(", ", c.Heads[0].Labels.Take(10))}{(c.Heads[0].Labels.Length > 10 ? ", ..." : "")}), {N(ParameterCount(c))} parameters");
        }
        text.AppendLine($"merged model: {Shape(target)}, {target.Heads.Count} heads, {N(ParameterCount(target))} parameters");
        text.AppendLine("merge data (unlabeled):");
        for (int i = 0; i < Plan.Data.Count; i++)
        {
            var shape = Plan.Data[i].Images.shape;
            string what = shape.Length == 4 ? $"images {shape[1]}x{shape[2]}x{shape[3]}" : $"sequences of {shape[1]} tokens";
            text.AppendLine($"  {Plan.Tasks[i]}: {Plan.Data[i].Count - Request.Augment} {what} from {DataUsed[i]}"
                + (Request.Augment > 0 ? $" + {Request.Augment} augmented" : "") + (i < Plan.Tests.Count ? $"; test: {Plan.Tests[i].Count} labelled" : ""));
        }
        var inputs = Inputs(null);
        var sites = inputs.Sites;
        text.AppendLine($"sites ({sites.Sites.Count}; M merges the stacked widths into one, U unmerges it; head input: {sites.HeadInput}):");
        foreach (var s in sites.Sites)
            text.AppendLine($"  {s.Name,-28} {(s.Kind == SiteKind.Merge ? "M" : "U")} [{string.Join(" + ", s.ModelWidths)}] {(s.Kind == SiteKind.Merge ? "->" : "<-")} {s.MergedWidth}");
        text.AppendLine($"method: {Method.Name} ({Method.Summary}); options (value, where it came from):");
        foreach (var (name, value) in Settings.All)
            text.AppendLine($"  --{name,-16} {(value.Length == 0 ? "(empty)" : value),-26} {Settings.Origins[name]}");
        if (Plan.HeldOut is { } heldOut)
            text.AppendLine($"held-out samples (unlabeled, never trained on; for --lr auto and the label-free estimate): {string.Join(", ", heldOut.Select(h => h.Count))} per task");

        long samples = Plan.Data.Sum(d => (long)d.Count);
        long optimized = Method is ITrainedMergeMethod trained ? trained.OptimizedParameterCount(inputs, Settings) : 0;
        long batch = samples;
        if (Method is ITrainedMergeMethod)
        {
            int batchSize = Settings.Int("batch", min: 0);
            int epochs = OptimizerSettings.EpochsFor(Settings, samples, batchSize);
            batch = batchSize == 0 ? samples : Math.Min(batchSize, samples);
            long perEpoch = (samples + batch - 1) / batch;
            text.AppendLine($"optimized parameters: {N(optimized)}");
            text.AppendLine($"steps: {epochs} epochs x {perEpoch} batch(es) of {batch} (of {samples} merge samples) = {N(epochs * perEpoch)}");
            if (LearningRateSearch.Applies(Settings))
                text.AppendLine($"--lr auto: first {LearningRateSearch.TrialCount(Settings)} short runs of {Settings.String("sweep-fraction")} x the steps, one per rate of --lr-grid" +
                                (Settings.Has("init") && Settings.String("init") == MethodOption.Auto ? " and start of --init-candidates" : "") + ", scored on the held-out samples");
        }
        else text.AppendLine("optimized parameters: none (the method computes its result in closed form)");

        var (bytes, seconds, how) = Estimate(inputs, batch, optimized);
        text.AppendLine($"estimate: about {bytes / (1 << 20):N0} MiB of tensor memory (this process peaked at {Process.GetCurrentProcess().PeakWorkingSet64 / (1 << 20):N0} MiB so far), about {TimeEstimate.Format(seconds)}");
        text.AppendLine("  memory = sources + merged weights + merge samples + optimized parameters x4 (value, gradient, two optimizer moments)");
        text.AppendLine("           + 2 activations per site per sample of a batch; float32 throughout");
        text.AppendLine($"  time: {how}");
        return text.ToString();
    }

    /// <summary>Memory from the sizes involved; time from a short probe of the method (<see cref="TimeEstimate"/>), which
    /// also checks every option value, as the real run would.</summary>
    (long Bytes, double Seconds, string How) Estimate(MergeInputs inputs, long batch, long optimized)
    {
        long weights = Plan.Sources.Sum(s => ParameterCount(s.Config)) + ParameterCount(Plan.Target);
        long images = Plan.Data.Sum(d => d.Images.numel());
        // Rows per sample in the activations: ViT tokens, BERT sequence positions, one for an MLP.
        long tokens = Plan.Target.Arch.TokensPerInput(Plan.Target) ?? (Plan.Data[0].Images.dim() == 2 ? Plan.Data[0].Images.shape[1] : 1);
        long activations = 2 * batch * tokens * inputs.Sites.Sites.Sum(s => s.StackedWidth + s.MergedWidth);
        long bytes = 4 * (weights + images + 4 * optimized + activations);
        var (seconds, how) = TimeEstimate.Measure(Method, Settings, inputs);
        return (bytes, seconds, how);
    }

    static long ParameterCount(ModelConfig c) => Model.ExpectedWeights(c).Sum(w => w.Shape.Aggregate(1L, (a, b) => a * b));

    static string Shape(ModelConfig c) => MergeReport.Describe(c);

    public void Dispose()
    {
        HeldOut?.Dispose();
        foreach (var d in Plan.HeldOut ?? []) d.Dispose();
        foreach (var d in Plan.Data.Concat(Plan.Tests)) d.Dispose();
        foreach (var s in Plan.Sources) s.Dispose();
    }
}
