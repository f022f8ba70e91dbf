using System.Collections;
using System.Globalization;
using System.Reflection;
using System.Text;

namespace FsMerge.Runs;

/// <summary>An option value that may also be "auto" (the method chooses it without labels, e.g. --lr auto).</summary>
public readonly record struct AutoOr<T>(T Value, bool IsAuto) where T : struct, IFormattable
{
    public static AutoOr<T> Auto => new(default, true);
    public static implicit operator AutoOr<T>(T value) => new(value, false);
    public override string ToString() => IsAuto ? Merging.MethodOption.Auto : Value.ToString(null, CultureInfo.InvariantCulture);
}

/// <summary>
/// A method's options with types, for <see cref="MergeRequest.Options"/>: a property left null keeps the value the
/// method's settings give it (its default, or the sources' architecture's: <see cref="Merging.MethodSettings"/>, the
/// one source of defaults). Property names are the options' names in PascalCase (<c>WeightDecay</c> is --weight-decay).
/// The record reads as the option dictionary the command line and the config file give, so the method checks it the same
/// way; <see cref="MergeRequest.Method"/> follows <see cref="Method"/> unless set otherwise.
/// </summary>
public abstract record MethodOptions : IReadOnlyDictionary<string, string>
{
    /// <summary>The method these options belong to (<see cref="Merging.MergeMethods"/>).</summary>
    public abstract string Method { get; }

    /// <summary>The option properties: every public one but <see cref="Method"/> and the dictionary's own.</summary>
    internal IEnumerable<(string Name, PropertyInfo Property)> OptionProperties() =>
        GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.GetGetMethod()!.GetBaseDefinition().DeclaringType != typeof(MethodOptions) && p.GetIndexParameters().Length == 0)
            .Select(p => (OptionName(p.Name), p));

    /// <summary>"WeightDecay" → "weight-decay".</summary>
    internal static string OptionName(string property)
    {
        var name = new StringBuilder();
        foreach (var ch in property)
        {
            if (char.IsUpper(ch) && name.Length > 0) name.Append('-');
            name.Append(char.ToLowerInvariant(ch));
        }
        return name.ToString();
    }

    static string Text(object value) => value switch
    {
        bool b => b ? "true" : "false",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        IEnumerable list and not string => string.Join(",", list.Cast<object>().Select(Text)),
        _ => value.ToString()!,
    };

    Dictionary<string, string> Values() =>
        OptionProperties().Select(o => (o.Name, Value: o.Property.GetValue(this))).Where(o => o.Value != null)
            .ToDictionary(o => o.Name, o => Text(o.Value!));

    public string this[string key] => Values()[key];
    public IEnumerable<string> Keys => Values().Keys;
    IEnumerable<string> IReadOnlyDictionary<string, string>.Values => Values().Values;
    public int Count => Values().Count;
    public bool ContainsKey(string key) => Values().ContainsKey(key);
    public bool TryGetValue(string key, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out string value) => Values().TryGetValue(key, out value);
    public IEnumerator<KeyValuePair<string, string>> GetEnumerator() => Values().GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>A method with no options (average, ensemble, slerp), or any method taken with its defaults.</summary>
public sealed record DefaultOptions : MethodOptions
{
    readonly string method;
    public DefaultOptions(string method) => this.method = method;
    public override string Method => method;
}

/// <summary>The training options of the methods that train (spec §4.6; transformers §7.4-7.7 through the architecture's defaults).</summary>
public abstract record TrainingOptions : MethodOptions
{
    /// <summary>sgd or adamw.</summary>
    public string? Optimizer { get; init; }
    /// <summary>Peak learning rate, or auto: a short sweep over <see cref="LrGrid"/> scored on held-out unlabeled samples.</summary>
    public AutoOr<double>? Lr { get; init; }
    public double[]? LrGrid { get; init; }
    public double? SweepFraction { get; init; }
    /// <summary>Passes over the merge samples, or auto: as many as give about <see cref="Steps"/> optimizer steps.</summary>
    public AutoOr<int>? Epochs { get; init; }
    public int? Steps { get; init; }
    /// <summary>Batch size; 0 = full batch.</summary>
    public int? Batch { get; init; }
    public double? Momentum { get; init; }
    public double? WeightDecay { get; init; }
    public double? Warmup { get; init; }
    /// <summary>cosine or onecycle.</summary>
    public string? Schedule { get; init; }
    public int? Recoveries { get; init; }
}

/// <summary>FS-Merge (fs-merge).</summary>
public sealed record FsMergeOptions : TrainingOptions
{
    public override string Method => "fs-merge";
    /// <summary>global or local.</summary>
    public string? Scope { get; init; }
    /// <summary>first, average, random, zipit, cca or rebasin, or auto (swept with the rates: <see cref="InitCandidates"/>).</summary>
    public string? Init { get; init; }
    public string[]? InitCandidates { get; init; }
    /// <summary>full, diagonal, low-rank or diagonal-low-rank.</summary>
    public string? Type { get; init; }
    public int? Rank { get; init; }
    /// <summary>all or own.</summary>
    public string? Targets { get; init; }
    public bool? Normalize { get; init; }
    public int? EarlyStop { get; init; }
    public int? Patience { get; init; }
}

/// <summary>FS-Merge seq. (fs-merge-seq).</summary>
public sealed record FsMergeSeqOptions : TrainingOptions
{
    public override string Method => "fs-merge-seq";
    public string? Type { get; init; }
    public int? Rank { get; init; }
    public bool? Normalize { get; init; }
    public int? EarlyStop { get; init; }
    public int? Patience { get; init; }
    /// <summary>Epochs per stage (N - 1 values).</summary>
    public int[]? StageEpochs { get; init; }
}

/// <summary>Distillation into one student (distill).</summary>
public sealed record DistillOptions : TrainingOptions
{
    public override string Method => "distill";
    /// <summary>The student's start: first, average, zipit or cca, or auto (swept with the rates: <see cref="InitCandidates"/>).</summary>
    public string? Init { get; init; }
    public string[]? InitCandidates { get; init; }
    /// <summary>final (the heads' feature) or layers (every unmerge site too).</summary>
    public string? Match { get; init; }
}

/// <summary>How attention is aligned by the matching methods (zipit, rebasin).</summary>
public abstract record HeadAlignedOptions : MethodOptions
{
    /// <summary>aware (whole heads, then dimensions within matched heads) or ignore.</summary>
    public string? Heads { get; init; }
    /// <summary>permute or orthogonal (Procrustes rotations within heads).</summary>
    public string? AttentionAlign { get; init; }
}

/// <summary>ZipIt (zipit).</summary>
public sealed record ZipItOptions : HeadAlignedOptions
{
    public override string Method => "zipit";
}

/// <summary>CCA Merge (cca).</summary>
public sealed record CcaOptions : MethodOptions
{
    public override string Method => "cca";
    /// <summary>Ridge added to each covariance, as a fraction of its mean variance.</summary>
    public double? Ridge { get; init; }
    public int? MaxImages { get; init; }
}

/// <summary>PLeaS (pleas).</summary>
public sealed record PLeaSOptions : MethodOptions
{
    public override string Method => "pleas";
    /// <summary>Least-squares ridge towards the matched weights, relative to the mean input energy.</summary>
    public double? Ridge { get; init; }
    /// <summary>permutation (the paper) or zipit.</summary>
    public string? Matching { get; init; }
    public int? MaxImages { get; init; }
}

/// <summary>RegMean (regmean).</summary>
public sealed record RegMeanOptions : MethodOptions
{
    public override string Method => "regmean";
    /// <summary>Scale of the Gram matrices' off-diagonal entries, or auto (chosen on held-out unlabeled samples from <see cref="AlphaGrid"/>).</summary>
    public AutoOr<double>? Alpha { get; init; }
    public double[]? AlphaGrid { get; init; }
}

/// <summary>Optimal-transport merging (opt).</summary>
public sealed record OptOptions : MethodOptions
{
    public override string Method => "opt";
    /// <summary>Sinkhorn regularization, or auto (chosen on held-out unlabeled samples from <see cref="EpsilonGrid"/>).</summary>
    public AutoOr<double>? Epsilon { get; init; }
    public double[]? EpsilonGrid { get; init; }
    public int? SinkhornIterations { get; init; }
    public int? MaxImages { get; init; }
    /// <summary>full, cls or window-K.</summary>
    public string? Filter { get; init; }
}

/// <summary>Git Re-Basin (rebasin).</summary>
public sealed record ReBasinOptions : HeadAlignedOptions
{
    public override string Method => "rebasin";
    /// <summary>weights or activations.</summary>
    public string? Matching { get; init; }
    public int? Iterations { get; init; }
}

/// <summary>The label-free choice among methods (auto).</summary>
public sealed record AutoOptions : MethodOptions
{
    public override string Method => "auto";
    public string[]? Candidates { get; init; }
}
