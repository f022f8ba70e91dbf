using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using FsMerge.Evaluation;

namespace FsMerge.Merging;

/// <summary>
/// One short run of a --lr auto sweep: its rate (and, with --init auto, its start), its held-out divergence and
/// agreement, or that it diverged.
/// </summary>
public sealed record RateTrial(double Rate, double Divergence, double Agreement, bool Diverged, double Seconds, string? Init = null)
{
    public JsonObject ToJson()
    {
        var json = new JsonObject
        {
            ["lr"] = Rate, ["divergence"] = Diverged ? null : Divergence, ["agreement"] = Diverged ? null : Agreement,
            ["diverged"] = Diverged, ["seconds"] = Math.Round(Seconds, 2),
        };
        if (Init != null) json["init"] = Init;
        return json;
    }

    /// <summary>"lr 0.01", or "init zipit, lr 0.01" when the sweep chose the start too.</summary>
    public string Label => (Init is null ? "" : $"init {Init}, ") + $"lr {Rate.ToString("G6", CultureInfo.InvariantCulture)}";
}

/// <summary>
/// --lr auto, the default of every trained method: each rate of --lr-grid trains for --sweep-fraction of the
/// full run's steps (its own complete, shorter schedule, without divergence recovery: a rate that diverges is
/// out), and the merged model it gives is scored without labels on held-out samples that training never sees:
/// the mean over tasks of head t's divergence from source model t (<see cref="HeldOutReference"/>). The
/// rate with the lowest divergence then trains the full run, and so does the best larger rate (short runs favour low
/// rates), kept only if clearly better. With the defaults (5 rates × 0.2) the sweep costs about one full run, so a
/// merge with --lr auto takes two to four full runs' time: the sweep, the chosen rate, usually a larger one, and at
/// most one more full run and one short run when those checks call for them.
/// With --init auto (distillation's default) every start of --init-candidates is swept at every rate, and the best
/// (start, rate) pair wins: the best start differs between settings (ZipIt's ahead by 4-13 points per task on the
/// BERT pairs of bench bert, model 1's by 10 on the first ViT pair of bench vit), and each start costs one sweep.
/// </summary>
internal static class LearningRateSearch
{
    /// <summary>Whether these settings ask for the sweep: --lr auto (or --init auto), with epochs to train.</summary>
    public static bool Applies(MethodSettings settings) =>
        (Auto(settings, "lr") || Auto(settings, "init")) && settings.String("epochs") != "0";

    static bool Auto(MethodSettings settings, string option) => settings.Has(option) && settings.String(option) == MethodOption.Auto;

    /// <summary>The rates the sweep tries: --lr-grid with --lr auto, else the given rate.</summary>
    static double[] Rates(MethodSettings settings) =>
        Auto(settings, "lr") ? settings.Doubles("lr-grid", min: 1e-12, max: 1e3) : [settings.Double("lr", min: 1e-12, max: 1e3)];

    /// <summary>The starts the sweep tries: --init-candidates with --init auto, else none of its own (null).</summary>
    static string?[] Inits(MethodSettings settings) =>
        Auto(settings, "init") ? settings.String("init-candidates").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries) : [null];

    /// <summary>The number of short runs the sweep trains (rates × starts).</summary>
    public static int TrialCount(MethodSettings settings) => Rates(settings).Length * Inits(settings).Length;

    /// <summary>
    /// With --init auto: --init-candidates checked against the method's starts (<paramref name="known"/>), those this
    /// merge cannot use dropped (<paramref name="unusable"/> says why, or null), and a single one left taken as the start.
    /// </summary>
    public static MethodSettings UsableInits(string method, MethodSettings settings, IReadOnlyCollection<string> known, Func<string, string?> unusable, Action<string>? log)
    {
        if (!Auto(settings, "init")) return settings;
        var candidates = Inits(settings).Select(c => c!).ToList();
        if (candidates.Count == 0 || candidates.Any(c => !known.Contains(c)))
            throw new FsMergeException($"{method}: --init-candidates '{settings.String("init-candidates")}': expected a comma-separated list of {string.Join(", ", known)}");
        var usable = new List<string>();
        foreach (var candidate in candidates)
            if (unusable(candidate) is { } why) log?.Invoke($"{method} --init auto: skips {candidate} ({why})");
            else usable.Add(candidate);
        if (usable.Count == 0)
            throw new FsMergeException($"{method}: none of --init-candidates ({string.Join(", ", candidates)}) can start this merge ({unusable(candidates[0])}); give --init");
        return usable.Count == 1
            ? settings.With("init", usable[0], "--init auto (the only usable candidate)")
            : settings.With("init-candidates", string.Join(",", usable), settings.Origins["init-candidates"]);
    }

    /// <summary>The settings of the sweep's first candidate (for timing it: the dry run).</summary>
    public static MethodSettings FirstCandidate(MethodSettings settings) => At(settings, Rates(settings)[0], Inits(settings)[0]);

    /// <summary>The settings of one (start, rate) candidate, each recorded as chosen by the sweep.</summary>
    static MethodSettings At(MethodSettings settings, double rate, string? init)
    {
        var at = settings.With("lr", Format(rate), Auto(settings, "lr") ? "--lr auto" : settings.Origins.GetValueOrDefault("lr", "default"));
        return init is null ? at : at.With("init", init, "--init auto");
    }

    /// <summary>
    /// What a trained method's Merge calls: with --lr auto, runs the sweep on <paramref name="inputs"/>' held-out
    /// samples and then <paramref name="train"/> at the chosen rate; otherwise <paramref name="train"/> as given.
    /// The outcome carries the trials and the settings it ran with (the chosen rate recorded as "--lr auto").
    /// </summary>
    public static MergeOutcome Merge(IMergeMethod method, MergeInputs inputs, MethodSettings settings, Func<MergeInputs, MethodSettings, MergeOutcome> train)
    {
        // Nothing to choose with (no training, or a given rate without held-out samples): --init auto takes its first candidate.
        if (Auto(settings, "init") && (!Applies(settings) || (!Auto(settings, "lr") && inputs.HeldOut is null)))
            settings = settings.With("init", Inits(settings)[0]!, inputs.HeldOut is null ? "--init auto (no held-out samples)" : "--init auto (no training)");
        if (!Applies(settings)) return train(inputs, settings) with { Settings = settings };
        var grid = Inits(settings).SelectMany(init => Rates(settings).Select(rate => (Rate: rate, Init: init))).ToArray();
        double fraction = settings.Double("sweep-fraction", min: 1e-6, max: 1);
        using var heldOut = HeldOutReference.For(inputs, method.Name, "the rate (--lr auto; or give --lr)");
        // The trials themselves train without checkpoints; each finished one is saved, and a resumed run skips those.
        var finished = inputs.Checkpoints?.LoadSweep(method.Name) ?? [];
        var probe = inputs.With(checkpoints: null,
            progress: inputs.Progress is { } progress ? (phase, done, total, loss, unit) => progress($"lr sweep: {phase}", done, total, loss, unit) : null);
        var trials = new List<RateTrial>();
        foreach (var (rate, init) in grid)
        {
            if (trials.Count < finished.Count && finished[trials.Count] is var done && done.Rate == rate && done.Init == init)
            {
                trials.Add(done);
                inputs.Log?.Invoke($"{method.Name} lr sweep: {done.Label}: from the checkpoint");
                continue;
            }
            var clock = Stopwatch.StartNew();
            var trial = Shortened(At(settings, rate, init), inputs, fraction).With("recoveries", "0", "--lr auto sweep");
            try
            {
                var shortRun = train(probe, trial);
                var estimate = heldOut.Estimate(shortRun.Predict);
                shortRun.Merged?.Dispose();
                bool diverged = !double.IsFinite(estimate.Divergence);
                trials.Add(new RateTrial(rate, estimate.Divergence, estimate.Agreement, diverged, clock.Elapsed.TotalSeconds, init));
            }
            catch (DivergenceException)
            {
                trials.Add(new RateTrial(rate, double.PositiveInfinity, 0, true, clock.Elapsed.TotalSeconds, init));
            }
            var last = trials[^1];
            inputs.Log?.Invoke($"{method.Name} lr sweep: {last.Label}: {(last.Diverged ? "diverged" : $"held-out divergence {last.Divergence:F4}, agreement {100 * last.Agreement:F1}%")} ({last.Seconds:F1} s)");
            if (inputs.Checkpoints is { } checkpoints)
            {
                checkpoints.SaveSweep(method.Name, trials);
                if (checkpoints.Interrupted)
                    throw new FsMergeException($"interrupted: the --lr auto sweep saved {trials.Count} of {grid.Length} short runs in {checkpoints.Directory}; run the same command with --resume to continue");
            }
        }
        // The full run at the best rate. A short run can favour a rate too high for the full one (a run that
        // settles somewhere bad without exploding): when the full run ends worse on the held-out samples than its
        // own short trial, the next rate in the trials' order trains fully too, up to FullRuns, and the full run
        // with the lowest held-out divergence is kept. All diverged: the lowest rate, which recovers from there.
        // Equal divergences (every task at the cap) fall to the higher agreement.
        var ranked = trials.Where(t => !t.Diverged).OrderBy(t => t.Divergence).ThenByDescending(t => t.Agreement).ToList();
        if (ranked.Count == 0) ranked = [trials.MinBy(t => t.Rate)!];   // (of the first start)
        var full = new JsonArray();
        (MergeOutcome Outcome, MethodSettings Settings, double Divergence)? kept = null;
        var trainedFully = new List<RateTrial>();
        RateTrial keptTrial = ranked[0];
        foreach (var candidate in ranked.Take(FullRuns))
        {
            var chosen = At(settings, candidate.Rate, candidate.Init);
            inputs.Log?.Invoke($"{method.Name}: --lr auto trains the full run at {candidate.Label}");
            var result = train(kept is null ? inputs : probe, chosen);
            trainedFully.Add(candidate);
            double divergence = heldOut.Estimate(result.Predict).Divergence;
            full.Add((JsonNode)new JsonObject { ["run"] = "full", ["lr"] = candidate.Rate, ["init"] = candidate.Init, ["divergence"] = double.IsFinite(divergence) ? divergence : null });
            if (kept is null || divergence < kept.Value.Divergence)
            {
                kept?.Outcome.Merged?.Dispose();
                kept = (result, chosen, divergence);
                keptTrial = candidate;
            }
            else result.Merged?.Dispose();
            if (divergence <= candidate.Divergence) break;
            inputs.Log?.Invoke($"{method.Name}: the full run at {candidate.Label} ends with held-out divergence {divergence:F4}, above its short run's {candidate.Divergence:F4}");
        }

        // A challenger replaces the kept run only if its gain on the held-out samples is beyond their noise
        // (ShortRunMargin standard errors of the paired gain).
        void Challenge(RateTrial candidate, string run, MethodSettings challengerSettings, MergeOutcome challenger, double divergence, string why)
        {
            var (gain, standardError) = heldOut.DivergenceGain(kept!.Value.Outcome.Predict, challenger.Predict);
            bool keep = gain > ShortRunMargin * standardError;
            inputs.Log?.Invoke($"{method.Name}: {why}: the {run} run at {candidate.Label} ({divergence:F4}) against the kept run ({kept.Value.Divergence:F4}) " +
                $"gains {gain:F4} on the held-out samples (standard error {standardError:F4}): " + (keep ? "keeping it" : "within the noise, keeping the kept run"));
            full.Add((JsonNode)new JsonObject
            {
                ["run"] = run, ["lr"] = candidate.Rate, ["init"] = candidate.Init, ["divergence"] = double.IsFinite(divergence) ? divergence : null,
                ["gain"] = gain, ["standard_error"] = double.IsFinite(standardError) ? standardError : null, ["kept"] = keep,
            });
            if (keep)
            {
                kept.Value.Outcome.Merged?.Dispose();
                kept = (challenger, challengerSettings, divergence);
            }
            else challenger.Merged?.Dispose();
        }

        // Short runs are biased towards low rates (short-horizon bias: a fifth of the steps rewards the rate that
        // moves least from the start). So the larger rate of the kept start that scored best in the sweep trains
        // fully too, if none did: on the mixed ViT pair of bench vit, distillation's sweep put 1e-4 ahead of 1e-3
        // (the full runs end at 0.52 and 0.20), and the kept 1e-4 was 18 points below the grid.
        if (ranked.FirstOrDefault(t => t.Init == keptTrial.Init && t.Rate > keptTrial.Rate && !trainedFully.Contains(t)) is { } larger)
        {
            var largerSettings = At(settings, larger.Rate, larger.Init);
            inputs.Log?.Invoke($"{method.Name}: --lr auto trains the full run at the larger {larger.Label} too (short runs favour low rates)");
            var largerRun = train(probe, largerSettings);
            Challenge(larger, "full", largerSettings, largerRun, heldOut.Estimate(largerRun.Predict).Divergence, "a larger rate");
        }

        // The number of steps is chosen the same way: when a short run beat every full run on the held-out samples
        // (a full run over-fits the few merge samples), the best short run is trained again (it is deterministic) and
        // kept, if its gain is beyond the held-out samples' noise: on an unseen ViT pair a short run 0.119 against the
        // full run's 0.126 (0.2 standard errors) was kept and cost 8 points of test accuracy; on a BERT pair one 1.5
        // standard errors ahead was worth 4.6 points.
        var bestShort = ranked[0];
        if (double.IsFinite(bestShort.Divergence) && bestShort.Divergence < kept!.Value.Divergence)
        {
            var shortSettings = Shortened(At(settings, bestShort.Rate, bestShort.Init), inputs, fraction);
            Challenge(bestShort, "short", shortSettings, train(probe, shortSettings), bestShort.Divergence, "a short run beats every full run");
        }
        var (outcome, used, _) = kept!.Value;
        var search = ToJson(trials, used.Double("lr"));
        if (Auto(settings, "init")) search["chosen_init"] = used.String("init");
        search["full_runs"] = full;
        outcome.Details["lr_search"] = search;
        inputs.Log?.Invoke($"{method.Name}: --lr auto chose {used.All["lr"]}" + (Auto(settings, "init") ? $", --init auto chose {used.All["init"]}" : ""));
        return outcome with { Settings = used, RateTrials = trials };
    }

    /// <summary>
    /// How many standard errors of the held-out gain a challenger (a short run, or a larger rate's full run) must beat
    /// the kept run by to replace it. One, as in
    /// the one-standard-error rule of model selection; on the unseen cases of docs/results.md, short runs kept at 1.1,
    /// 1.5 and 1.7 standard errors were 0.2 points worse, 4.6 and 0.5 better than their full runs, one at 0.2 was 8 worse.
    /// </summary>
    const double ShortRunMargin = 1;

    /// <summary>At most this many full runs (the best rate's, then the next ones' while a full run ends worse than its short trial).</summary>
    const int FullRuns = 2;

    /// <summary>The settings for a trial: epochs (and FS-Merge seq.'s stage epochs) scaled by the fraction, at least 1.</summary>
    static MethodSettings Shortened(MethodSettings settings, MergeInputs inputs, double fraction)
    {
        static string Scale(int epochs, double fraction) => Math.Max(1, (int)Math.Round(epochs * fraction)).ToString(CultureInfo.InvariantCulture);
        long samples = inputs.Data.Sum(d => (long)d.Count);
        int full = OptimizerSettings.EpochsFor(settings, samples, settings.Int("batch", min: 0));
        var shortened = settings.With("epochs", Scale(full, fraction), "--lr auto sweep");
        if (settings.Has("stage-epochs") && settings.String("stage-epochs") is { Length: > 0 } stages)
            shortened = shortened.With("stage-epochs", string.Join(",", stages.Split(',').Select(e =>
                int.TryParse(e.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) ? Scale(n, fraction) : e)), "--lr auto sweep");
        return shortened;
    }

    static string Format(double rate) => rate.ToString("G6", CultureInfo.InvariantCulture);

    public static JsonObject ToJson(IReadOnlyList<RateTrial> trials, double chosen) => new()
    {
        ["rule"] = "each rate trains for --sweep-fraction of the steps; the lowest mean held-out divergence wins, unless its full run ends worse than its short run (then the next rate trains fully too and the better full run is kept); the best larger rate of the kept start trains fully too and replaces the kept run if it is better by more than one standard error of the paired held-out gain; so does a short run better than every full run",
        ["chosen"] = chosen,
        ["trials"] = new JsonArray(trials.Select(t => (JsonNode)t.ToJson()).ToArray()),
    };
}
