using System.Globalization;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// An option of a merge method, with its default and help (listed by `fsmerge merge --help`). Its values have the
/// type of its default; an option with an <paramref name="Example"/> also takes "auto", and its other values have
/// the example's type.
/// </summary>
public sealed record MethodOption(string Name, string Default, string Help, string? Example = null)
{
    public const string Auto = "auto";
    /// <summary>A value that shows the option's type: the example, else the default.</summary>
    public string TypeExample => Example ?? Default;
}

/// <summary>Progress of a long merge phase (training, evaluation), for progress bars: <paramref name="done"/> of
/// <paramref name="total"/> <paramref name="unit"/>s ("steps", "samples"); <paramref name="loss"/> is the last
/// finished epoch's mean loss, if any.</summary>
public delegate void MergeProgress(string phase, long done, long total, double? loss, string unit);

/// <summary>What every merge method receives.</summary>
public sealed class MergeInputs
{
    /// <summary>Source models in merge order; model i was trained on task i.</summary>
    public required IReadOnlyList<Model> Sources { get; init; }
    /// <summary>Unlabeled merge images, one set per source (labels are never read).</summary>
    public required IReadOnlyList<ImageSet> Data { get; init; }
    /// <summary>The merged model's shape (widths); its heads are every source's heads in order.</summary>
    public required ModelConfig Target { get; init; }
    public required Device Device { get; init; }
    public long Seed { get; init; } = 1;
    public MergeProgress? Progress { get; init; }
    /// <summary>Where training phases save checkpoints and whether they resume from them; null = no checkpoints.</summary>
    public TrainingCheckpoints? Checkpoints { get; init; }

    /// <summary>
    /// Own-model target features per task, [n_t, e_t] for <see cref="Data"/>[t], when they are not the
    /// sources' own features (FS-Merge seq.: the original models'). Then the head-input unmerge has one
    /// block per task instead of one per source.
    /// </summary>
    public IReadOnlyList<Tensor>? Targets { get; init; }

    /// <summary>
    /// Unlabeled held-out samples per task (not merge data) for early stopping (spec §6), used by methods
    /// whose --early-stop option is set; null = none.
    /// </summary>
    public IReadOnlyList<ImageSet>? HeldOut { get; init; }

    /// <summary>Initial dense U at the head-input site (FS-Merge seq. carries earlier stages' blocks); null = the init rule.</summary>
    public Tensor? HeadInputInit { get; init; }

    SiteTable? sites;
    public SiteTable Sites => sites ??= Targets is null
        ? Target.Arch.Sites(Sources.Select(s => s.Config).ToList(), Target)
        : Target.Arch.Sites(Sources.Select(s => s.Config).ToList(), Target).WithHeadInputWidths(Targets.Select(t => t.shape[1]).ToArray());

    /// <summary>Hears notable events (the --lr auto sweep's trials) for the run's log; null = none.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// These inputs with other checkpoints and progress (the --lr auto sweep's trials run without checkpoints), and
    /// other sources computing the same functions when given (FS-Merge's Re-Basin init).
    /// </summary>
    public MergeInputs With(TrainingCheckpoints? checkpoints, MergeProgress? progress, IReadOnlyList<Model>? sources = null) => new()
    {
        Sources = sources ?? Sources, Data = Data, Target = Target, Device = Device, Seed = Seed, Targets = Targets, HeldOut = HeldOut,
        HeadInputInit = HeadInputInit, Log = Log, Checkpoints = checkpoints, Progress = progress,
    };

    public IReadOnlyList<int> HeadCounts => Sources.Select(s => s.HeadCount).ToList();
    public IReadOnlyList<IReadOnlyDictionary<string, Tensor>> SourceWeights => Sources.Select(s => (IReadOnlyDictionary<string, Tensor>)s.Weights).ToList();

    /// <summary>The merge images of source i on the device.</summary>
    public Tensor Images(int source) => Data[source].Images.to(Device);
}

/// <summary>
/// A merge's result: a folded model (null for the ensemble, which is no single model), a predictor, details for
/// merge.json, and the loss curve of every training phase (none for methods that do not train).
/// </summary>
public sealed record MergeOutcome(Model? Merged, AllHeadLogits Predict, JsonObject Details)
{
    public IReadOnlyList<LossCurve> LossCurves { get; init; } = [];
    /// <summary>The settings the result was trained with (--lr auto resolved); null = those given.</summary>
    public MethodSettings? Settings { get; init; }
    /// <summary>The --lr auto sweep, when one ran.</summary>
    public IReadOnlyList<RateTrial> RateTrials { get; init; } = [];
}

/// <summary>A merge method, registered by name in <see cref="MergeMethods"/>.</summary>
public interface IMergeMethod
{
    string Name { get; }
    string Summary { get; }
    IReadOnlyList<MethodOption> Options { get; }
    MergeOutcome Merge(MergeInputs inputs, MethodSettings settings);
}

/// <summary>A method that trains parameters: a dry run asks it how many, without training.</summary>
public interface ITrainedMergeMethod : IMergeMethod
{
    long OptimizedParameterCount(MergeInputs inputs, MethodSettings settings);
}

/// <summary>
/// A method's option values with typed reads that fail with clear messages. Each value comes from the first of:
/// the user's (<paramref name="given"/>, named by <paramref name="givenFrom"/>: "flag", "config file"), the
/// architecture's defaults (<see cref="IArchitecture.MergeDefaults"/>), the method's own default.
/// </summary>
public sealed class MethodSettings
{
    readonly IMergeMethod method;
    readonly Dictionary<string, string> values;
    readonly Dictionary<string, string> origins;

    public MethodSettings(IMergeMethod method, IReadOnlyDictionary<string, string> given, IArchitecture? architecture = null,
        Func<string, string>? givenFrom = null)
    {
        this.method = method;
        values = method.Options.ToDictionary(o => o.Name, o => o.Default);
        origins = method.Options.ToDictionary(o => o.Name, _ => "default");
        // Shared keys first, so that a "method:option" key of this method overrides them.
        foreach (var (key, value) in (architecture?.MergeDefaults ?? new Dictionary<string, string>()).OrderBy(kv => kv.Key.Contains(':')))
        {
            var name = key.StartsWith(method.Name + ":", StringComparison.Ordinal) ? key[(method.Name.Length + 1)..] : key;
            if (values.ContainsKey(name))
                (values[name], origins[name]) = (value, $"default for {architecture!.Name}");
        }
        foreach (var (key, value) in given)
        {
            if (!values.ContainsKey(key))
                throw new FsMergeException($"method '{method.Name}' has no option --{key} (options: {string.Join(", ", method.Options.Select(o => "--" + o.Name))})");
            (values[key], origins[key]) = (value, givenFrom?.Invoke(key) ?? "given");
        }
    }

    MethodSettings(IMergeMethod method, Dictionary<string, string> values, Dictionary<string, string> origins) =>
        (this.method, this.values, this.origins) = (method, values, origins);

    public IReadOnlyDictionary<string, string> All => values;

    /// <summary>Where each value came from: "default", "default for ARCH", "flag", "config file", or what changed it (<see cref="With"/>).</summary>
    public IReadOnlyDictionary<string, string> Origins => origins;

    /// <summary>These settings with <paramref name="name"/> set to <paramref name="value"/>, recorded as coming from <paramref name="origin"/>.</summary>
    public MethodSettings With(string name, string value, string origin)
    {
        if (!values.ContainsKey(name)) throw new ArgumentException($"method '{method.Name}' has no option {name}", nameof(name));
        return new(method, new(values) { [name] = value }, new(origins) { [name] = origin });
    }

    public bool Has(string name) => values.ContainsKey(name);

    public string String(string name, params string[] allowed)
    {
        var v = values[name];
        if (allowed.Length > 0 && !allowed.Contains(v))
            throw new FsMergeException($"{method.Name}: --{name} '{v}' is not one of: {string.Join(", ", allowed)}");
        return v;
    }

    public int Int(string name, int min = int.MinValue)
    {
        var v = values[name];
        if (!int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) || i < min)
            throw new FsMergeException($"{method.Name}: --{name} '{v}' is not an integer{(min > int.MinValue ? $" >= {min}" : "")}");
        return i;
    }

    public double Double(string name, double min = double.NegativeInfinity, double max = double.PositiveInfinity)
    {
        var v = values[name];
        if (!double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) || !double.IsFinite(d) || d < min || d > max)
            throw new FsMergeException($"{method.Name}: --{name} '{v}' is not a number in [{min}, {max}]");
        return d;
    }

    /// <summary>A comma-separated list of numbers in [min, max], at least one.</summary>
    public double[] Doubles(string name, double min = double.NegativeInfinity, double max = double.PositiveInfinity)
    {
        var parts = values[name].Split(',', StringSplitOptions.TrimEntries);
        var parsed = parts.Select(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d) && d >= min && d <= max ? d : (double?)null).ToArray();
        if (parts.Length == 0 || parts.Length > 64 || parsed.Any(d => d is null))
            throw new FsMergeException($"{method.Name}: --{name} '{values[name]}' is not a comma-separated list of 1 to 64 numbers in [{min}, {max}]");
        return parsed.Select(d => d!.Value).ToArray();
    }

    /// <summary>Values only, as merge.json has always stored them.</summary>
    public JsonObject ToJson() => new(values.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));

    /// <summary>Each option's value and where it came from.</summary>
    public JsonObject OriginsJson() => new(values.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)new JsonObject { ["value"] = kv.Value, ["from"] = origins[kv.Key] })));
}
