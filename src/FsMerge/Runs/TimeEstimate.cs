using System.Diagnostics;
using System.Globalization;
using FsMerge.Data;
using FsMerge.Merging;

namespace FsMerge.Runs;

/// <summary>
/// The dry run's time estimate, from a short probe instead of the run itself. A trained method runs a few timed
/// steps in every training phase; each phase's step time (the median, past the first step's warm-up) is scaled by
/// the phase's real step count, and everything else the probe took (features, initialization, the first steps,
/// the fold) is the fixed cost. A method without training is timed on a small subset of the merge data and on a
/// larger one, and the two times are extrapolated linearly to the real data size.
/// </summary>
internal static class TimeEstimate
{
    /// <summary>Timed steps per training phase.</summary>
    public const int ProbeSteps = 12;
    /// <summary>Samples per task of the closed-form probes (a warm-up and the small probe use a quarter).</summary>
    public const int ProbeSamples = 64;

    public static (double Seconds, string How) Measure(IMergeMethod method, MethodSettings settings, MergeInputs inputs)
    {
        // Timed at the sweep's first candidate (rate and start): the sweep's runs cost what runs of their length cost.
        var timed = LearningRateSearch.Applies(settings) ? LearningRateSearch.FirstCandidate(settings) : settings;
        return method is ITrainedMergeMethod ? Trained(method, settings, timed, inputs) : ClosedForm(method, timed, inputs);
    }

    static (double, string) Trained(IMergeMethod method, MethodSettings settings, MethodSettings timed, MergeInputs inputs)
    {
        long samples = inputs.Data.Sum(d => (long)d.Count);
        int batchSize = settings.Int("batch", min: 0);
        long batch = batchSize == 0 ? samples : Math.Min(batchSize, samples);
        long perEpoch = (samples + batch - 1) / batch;
        int epochs = OptimizerSettings.EpochsFor(settings, samples, batchSize);
        long steps = epochs * perEpoch;

        // An epoch longer than the probe is cut by probing on fewer samples at the same batch size (a step costs
        // what its batch costs); the preparation of the merge data is then measured on that subset only.
        var probe = inputs;
        string subset = "";
        if (batchSize > 0 && perEpoch > ProbeSteps)
        {
            int perTask = (int)Math.Ceiling((double)ProbeSteps * batch / inputs.Data.Count);
            probe = Subset(inputs, perTask);
            subset = $"; the probe used {perTask} samples per task (the data preparation is timed on those only)";
        }
        long probeSamples = probe.Data.Sum(d => (long)d.Count);
        long probePerEpoch = (probeSamples + batch - 1) / batch;
        int probeEpochs = (int)Math.Max(2, (ProbeSteps + probePerEpoch - 1) / probePerEpoch);
        if (ReferenceEquals(probe, inputs)) probeEpochs = Math.Min(probeEpochs, epochs);   // a run this short is timed whole

        var clock = Stopwatch.StartNew();
        var stamps = new Dictionary<string, List<double>>();
        MergeProgress record = (phase, _, _, _, unit) =>
        {
            if (unit != "steps") return;
            if (!stamps.TryGetValue(phase, out var list)) stamps[phase] = list = [];
            list.Add(clock.Elapsed.TotalSeconds);
        };
        method.Merge(probe.With(checkpoints: null, progress: record),
            timed.With("epochs", probeEpochs.ToString(CultureInfo.InvariantCulture), "dry run")).Merged?.Dispose();
        double wall = clock.Elapsed.TotalSeconds;

        // The first step of a phase carries its warm-up; the steps after it give the step time.
        var perStep = stamps.ToDictionary(kv => kv.Key, kv => StepTime(kv.Value));
        double timedSpan = stamps.Values.Sum(s => s[^1] - s[0]);
        double fixedCost = Math.Max(0, wall - timedSpan);
        double stepCost = perStep.Values.Sum();
        double run = fixedCost + Math.Max(0, steps - 1) * stepCost;
        string phases = string.Join(", ", perStep.Select(kv => $"{kv.Key} {kv.Value * 1000:F1} ms"));
        string how = $"measured just now: {method.Name} ran {probeEpochs} epochs of {probePerEpoch} step(s) per phase in {wall:F2} s; " +
                     $"step time per phase (median past the first step): {phases}; {fixedCost:F2} s fixed + {steps} steps{subset}";
        if (!LearningRateSearch.Applies(settings)) return (run, how);
        int rates = LearningRateSearch.TrialCount(settings);
        long sweepSteps = Math.Max(1, (long)Math.Round(epochs * settings.Double("sweep-fraction"))) * perEpoch;
        double shortRun = fixedCost + Math.Max(0, sweepSteps - 1) * stepCost;
        double total = run + rates * shortRun;
        return (total, how + $" + the --lr auto sweep, {rates} x ({fixedCost:F2} s + {sweepSteps} steps); {Format(total + run)} when a larger rate than " +
                       $"the chosen one trains fully too, up to {Format(total + 2 * run + shortRun)} if the first full run also ends worse than its short run (a second full run, and a short one kept)");
    }

    static double StepTime(List<double> stamps)
    {
        if (stamps.Count < 2) return 0;
        var gaps = stamps.Zip(stamps.Skip(1), (a, b) => b - a).Skip(stamps.Count > 2 ? 1 : 0).Order().ToList();
        return gaps[gaps.Count / 2];
    }

    static (double, string) ClosedForm(IMergeMethod method, MethodSettings timed, MergeInputs inputs)
    {
        double Time(MergeInputs probe)
        {
            var clock = Stopwatch.StartNew();
            method.Merge(probe.With(checkpoints: null, progress: null), timed).Merged?.Dispose();
            return clock.Elapsed.TotalSeconds;
        }
        int largest = inputs.Data.Max(d => d.Count);
        if (largest <= ProbeSamples)
        {
            double once = Time(inputs);
            return (once, $"measured just now by running {method.Name} once on all the merge data ({once:F2} s)");
        }
        int small = ProbeSamples / 4;
        Time(Subset(inputs, small));   // warm-up: the first call pays for JIT and allocator growth
        double a = Time(Subset(inputs, small)), b = Time(Subset(inputs, ProbeSamples));
        double perSample = Math.Max(0, (b - a) / (ProbeSamples - small));
        double seconds = a + (largest - small) * perSample;
        return (seconds, $"measured just now: {method.Name} took {a:F2} s on {small} and {b:F2} s on {ProbeSamples} samples per task " +
                         $"(after a warm-up run), extrapolated linearly to {largest} per task");
    }

    /// <summary>The inputs with at most <paramref name="perTask"/> merge samples per task (views, not copies).</summary>
    static MergeInputs Subset(MergeInputs inputs, int perTask) => new()
    {
        Sources = inputs.Sources, Target = inputs.Target, Device = inputs.Device, Seed = inputs.Seed, HeldOut = inputs.HeldOut,
        Log = inputs.Log,
        Data = inputs.Data.Select(d => d.Count <= perTask ? d
            : new ImageSet(d.Images.narrow(0, 0, perTask), d.Labels[..perTask], d.LabelNames)).ToList(),
    };

    public static string Format(double s) => s < 120 ? $"{s:F1} s" : s < 7200 ? $"{s / 60:F1} min" : $"{s / 3600:F1} h";
}
