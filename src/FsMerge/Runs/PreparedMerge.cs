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
public sealed class PreparedMerge : IDisposable
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
        _ = new MethodSettings(method, request.Options);   // unknown options fail before anything loads
        if (writes) CheckOutput(request);
        TorchRuntime.Configure(request.Threads);
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
                if (source.Task == null && source.Data == null && task == HeadInfo.Unrecorded)
                    throw new FsMergeException($"{source.Model}: config.json records no task (as in a Hugging Face checkpoint); give this source a task (task: mnist:0-4, --task) or its data (data: {{images: DIR}})");
                tasks.Add(task);
                var from = source.Data ?? new DataSource("task", task);
                used.Add(from);
                var (images, held) = DataSources.SampleWithHeldOut(from, dataDir, source.Samples, request.HeldOut, request.Seed + i);
                data.Add(images);
                if (held != null) heldOut.Add(held);
                if (from.Kind == "task") MergePlan.CheckClasses(model, source.Model, images, $"task {from.Value}");
                if (request.Eval) tests.Add(DataSources.Labelled(source.Test ?? new DataSource("task", task), dataDir));
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
        var output = request.Output ?? throw new FsMergeException("no output directory given (--out DIR, or 'output:' in the config file)");
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

    /// <summary>The report's description of the sources and the run (methods filled in by the caller).</summary>
    public MergeRunSummary Summary(IReadOnlyList<MethodResult> methods, ModelConfig? saved, string? savedMethod) => new()
    {
        Sources = Request.Sources.Select((s, i) => new ReportSource(Path.GetFullPath(s.Model), Plan.Tasks[i], Plan.Sources[i].Config,
            Plan.Data[i].Count - Request.Augment)).ToList(),
        Methods = methods,
        SavedModel = savedMethod,
        SavedConfig = saved,
        Seed = Request.Seed,
        Threads = Request.Threads,
        Device = Request.Device,
        AugmentedPerTask = Request.Augment,
        Notes = Plan.Notes,
    };

    /// <summary>merge.json: what was merged, how, how long it took and, if evaluated, the accuracies.</summary>
    public JsonObject Record(MethodResult result)
    {
        var record = new JsonObject
        {
            ["method"] = result.Method,
            ["options"] = new JsonObject(result.Options.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["sources"] = new JsonArray(Request.Sources.Select((s, i) => (JsonNode)new JsonObject
            {
                ["path"] = Path.GetFullPath(s.Model),
                ["task"] = Plan.Tasks[i],
                ["data"] = DataUsed[i].ToString(),
                ["samples"] = Plan.Data[i].Count - Request.Augment,
            }).ToArray()),
            ["data_per_task"] = new JsonArray(Plan.Data.Select(d => (JsonNode)(d.Count - Request.Augment)).ToArray()),
            ["augmented_per_task"] = Request.Augment,
            ["seed"] = Request.Seed,
            ["seconds"] = Math.Round(result.Seconds, 2),
            ["held_out_per_task"] = Plan.HeldOut is { } held ? new JsonArray(held.Select(d => (JsonNode)d.Count).ToArray()) : null,
            ["option_origins"] = new JsonObject(result.OptionOrigins.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["recoveries"] = MergeReport.RecoveriesJson(result.LossCurves),
            ["heads"] = "one per source task, in source order; each source's final unmerge block is folded into its head",
            ["details"] = result.Details.DeepClone(),
        };
        if (result.LabelFree is { } estimate) record["label_free"] = estimate.ToJson();
        if (result.Test is { } test) record["test"] = test.ToJson();
        return record;
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
        text.AppendLine($"plan: merge {Plan.Sources.Count} models with {Method.Name} (seed {Request.Seed}, device {Request.Device}, threads {(Request.Threads == 0 ? "LibTorch default" : Request.Threads)})");
        text.AppendLine("models:");
        for (int i = 0; i < Plan.Sources.Count; i++)
        {
            var c = Plan.Sources[i].Config;
            text.AppendLine($"  {i + 1}. {Request.Sources[i].Model}");
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
                text.AppendLine($"--lr auto: first {Settings.Doubles("lr-grid").Length} short runs of {Settings.String("sweep-fraction")} x the steps, one per rate of --lr-grid, scored on the held-out samples");
        }
        else text.AppendLine("optimized parameters: none (the method computes its result in closed form)");

        var (bytes, seconds, how) = Estimate(inputs, samples, batch, optimized);
        text.AppendLine($"estimate: about {bytes / (1 << 20):N0} MiB of tensor memory (this process peaked at {Process.GetCurrentProcess().PeakWorkingSet64 / (1 << 20):N0} MiB so far), about {FormatSeconds(seconds)}");
        text.AppendLine("  memory = sources + merged weights + merge images + optimized parameters x4 (value, gradient, two optimizer moments)");
        text.AppendLine("           + 2 activations per site per sample of a batch; float32 throughout");
        text.AppendLine($"  time: {how}");
        return text.ToString();
    }

    /// <summary>
    /// Memory from the sizes involved; time measured: a trained method is run for 1 and for up to 21 epochs, which
    /// separates its fixed cost (features, initialization) from its cost per epoch; a method without epochs is
    /// run once. Either way the method also checks every option value, as the real run would.
    /// </summary>
    (long Bytes, double Seconds, string How) Estimate(MergeInputs inputs, long samples, long batch, long optimized)
    {
        long weights = Plan.Sources.Sum(s => ParameterCount(s.Config)) + ParameterCount(Plan.Target);
        long images = Plan.Data.Sum(d => d.Images.numel());
        // Rows per sample in the activations: ViT tokens, BERT sequence positions, one for an MLP.
        long tokens = Plan.Target.Arch.TokensPerInput(Plan.Target) ?? (Plan.Data[0].Images.dim() == 2 ? Plan.Data[0].Images.shape[1] : 1);
        long activations = 2 * batch * tokens * inputs.Sites.Sites.Sum(s => s.StackedWidth + s.MergedWidth);
        long bytes = 4 * (weights + images + 4 * optimized + activations);

        // Timed at a fixed rate (--lr auto's first candidate): the sweep's runs cost what runs of their length cost.
        var timed = LearningRateSearch.Applies(Settings) ? Settings.With("lr", Settings.Doubles("lr-grid")[0].ToString(CultureInfo.InvariantCulture), "dry run") : Settings;
        int fullEpochs = Method is ITrainedMergeMethod ? OptimizerSettings.EpochsFor(Settings, samples, Settings.Int("batch", min: 0)) : 0;
        if (fullEpochs > 5)
        {
            double TimeFor(int epochs)
            {
                var settings = timed.With("epochs", epochs.ToString(CultureInfo.InvariantCulture), "dry run");
                var clock = Stopwatch.StartNew();
                Method.Merge(inputs, settings).Merged?.Dispose();
                return clock.Elapsed.TotalSeconds;
            }
            TimeFor(1); // warm-up: first calls pay for JIT and allocator growth
            // 1 epoch against up to 21: enough epochs that their cost stands out of the fixed cost's noise.
            int more = Math.Min(fullEpochs, 21);
            double one = TimeFor(1), many = TimeFor(more);
            double perEpoch = Math.Max(0, (many - one) / (more - 1)), fixedCost = Math.Max(0, one - perEpoch);
            double total = fixedCost + fullEpochs * perEpoch;
            string sweep = "";
            if (LearningRateSearch.Applies(Settings))
            {
                int rates = Settings.Doubles("lr-grid").Length;
                int sweepEpochs = Math.Max(1, (int)Math.Round(fullEpochs * Settings.Double("sweep-fraction")));
                double shortRun = fixedCost + sweepEpochs * perEpoch, fullRun = fixedCost + fullEpochs * perEpoch;
                total += rates * shortRun;
                sweep = $" + the --lr auto sweep, {rates} x ({fixedCost:F2} s + {sweepEpochs} x {perEpoch:F3} s); up to {FormatSeconds(total + fullRun + shortRun)} " +
                        "if the first full run ends worse than its short run (a second full run, and a short one kept)";
            }
            return (bytes, total,
                $"measured just now by running {Method.Name} for 1 epoch ({one:F2} s) and {more} epochs ({many:F2} s) after a warm-up run: {fixedCost:F2} s fixed + {fullEpochs} x {perEpoch:F3} s per epoch{sweep}");
        }
        var watch = Stopwatch.StartNew();
        Method.Merge(inputs, timed).Merged?.Dispose();
        double seconds = watch.Elapsed.TotalSeconds;
        return (bytes, seconds, $"measured just now by running {Method.Name} once ({seconds:F2} s; it has no epochs to scale by)");
    }

    static string FormatSeconds(double s) => s < 120 ? $"{s:F1} s" : s < 7200 ? $"{s / 60:F1} min" : $"{s / 3600:F1} h";

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
