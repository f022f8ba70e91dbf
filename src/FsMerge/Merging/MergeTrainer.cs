using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>Optimizer settings shared by FS-Merge and distillation (spec §4.6, §7.4-7.5).</summary>
/// <param name="Recoveries">How many times a divergent loss may be recovered from (see <see cref="MergeTrainer"/>); 0 = fail at once.</param>
internal sealed record OptimizerSettings(string Optimizer, double LearningRate, int Epochs, int BatchSize,
    double Momentum, double WeightDecay, double WarmupFraction, string Schedule = "cosine", int Recoveries = OptimizerSettings.DefaultRecoveries)
{
    public const int DefaultRecoveries = 6;

    /// <summary>
    /// The options behind these settings. Their defaults are the paper's MLP setting (spec §4.6); an architecture
    /// overrides them with its own (<see cref="Models.IArchitecture.MergeDefaults"/>, spec §7.7 for transformers).
    /// </summary>
    public static IReadOnlyList<MethodOption> Options =>
    [
        new("optimizer", "sgd", "sgd (with momentum; the paper's MLP setting) or adamw (the paper's transformer setting)"),
        new("lr", MethodOption.Auto, "peak learning rate, or auto: a short sweep over --lr-grid scored on held-out unlabeled samples picks it (see --held-out)", Example: "0.01"),
        new("lr-grid", "0.3,0.1,0.03,0.01,0.003", "the rates --lr auto tries, each for --sweep-fraction of the steps"),
        new("sweep-fraction", "0.2", "--lr auto: the fraction of the full run's steps each candidate rate trains for"),
        new("epochs", MethodOption.Auto, "passes over all merge samples, or auto: as many as give about --steps optimizer steps", Example: "1000"),
        new("steps", "1000", "optimizer steps of a run when --epochs is auto"),
        new("batch", "0", "batch size; 0 = full batch"),
        new("momentum", "0.9", "SGD momentum"),
        new("weight-decay", "0.001", "decoupled weight decay (AdamW) or L2 (SGD)"),
        new("warmup", "0.02", "fraction of steps of linear warm-up before cosine decay"),
        new("schedule", "cosine", "cosine (linear warm-up, then cosine; the paper's MLP setting) or onecycle (the reference's transformer setting, spec §7.5: OneCycle with linear annealing, 30% warm-up, cycling Adam's beta1 0.95-0.85)"),
        new("recoveries", DefaultRecoveries.ToString(System.Globalization.CultureInfo.InvariantCulture),
            $"times a NaN/Inf or exploding loss is recovered from (last good parameters restored, rate divided by {1 / MergeTrainer.RecoveryFactor:G3}) before the merge fails"),
    ];

    /// <summary>The settings of a run over <paramref name="samples"/> merge items; --lr must be a number by now (auto is resolved by <see cref="LearningRateSearch"/>).</summary>
    public static OptimizerSettings From(MethodSettings s, long samples)
    {
        if (s.String("lr") == MethodOption.Auto && s.String("epochs") != "0")
            throw new InvalidOperationException("--lr auto reached the trainer: the method's Merge runs LearningRateSearch first");
        int batch = s.Int("batch", min: 0);
        return new(s.String("optimizer", "sgd", "adamw"), s.String("lr") == MethodOption.Auto ? 0 : s.Double("lr", min: 0), EpochsFor(s, samples, batch), batch,
            s.Double("momentum", 0, 1), s.Double("weight-decay", min: 0), s.Double("warmup", 0, 1),
            s.String("schedule", "cosine", "onecycle"), s.Int("recoveries", min: 0));
    }

    /// <summary>--epochs, or with auto the epochs of about --steps steps at this batch size.</summary>
    public static int EpochsFor(MethodSettings s, long samples, int batch)
    {
        if (s.String("epochs") != MethodOption.Auto) return s.Int("epochs", min: 0);
        int steps = s.Int("steps", min: 1);
        long perEpoch = batch == 0 || samples == 0 ? 1 : (samples + Math.Min(batch, samples) - 1) / Math.Min(batch, samples);
        return (int)Math.Max(1, (steps + perEpoch - 1) / perEpoch);
    }
}

/// <summary>
/// Early stopping (spec §6): every <paramref name="CheckEvery"/> epochs the loss on held-out samples is measured;
/// after <paramref name="Patience"/> checks without a new best, training stops, and the parameters of the best
/// check are restored. <see cref="BestEpoch"/> and <see cref="StoppedEpoch"/> report what happened.
/// </summary>
internal sealed class EarlyStopping(int CheckEvery, int Patience, Func<double> HeldOutLoss)
{
    public int CheckEvery { get; } = CheckEvery;
    public int Patience { get; } = Patience;
    public Func<double> HeldOutLoss { get; } = HeldOutLoss;
    public int BestEpoch { get; internal set; }
    public int StoppedEpoch { get; internal set; }
    public double BestLoss { get; internal set; } = double.PositiveInfinity;
}

/// <summary>A point of a training-loss curve: the mean loss of the batches since the previous point, after <see cref="Step"/> steps.</summary>
public sealed record LossPoint(long Step, double Loss);

/// <summary>
/// One recovery from a divergent loss: at step <see cref="Step"/> the loss was <see cref="Loss"/>; the phase restarted
/// from its start with the rate scaled from <see cref="FromScale"/> to <see cref="ToScale"/> of the chosen rate.
/// </summary>
public sealed record Recovery(long Step, double Loss, double FromScale, double ToScale);

/// <summary>The loss curve of one training phase, its last epoch's mean loss (NaN for zero epochs) and its recoveries.</summary>
public sealed record LossCurve(string Phase, IReadOnlyList<LossPoint> Points, double FinalLoss)
{
    public IReadOnlyList<Recovery> Recoveries { get; init; } = [];
}

/// <summary>The loss diverged and no recovery was left (or none was allowed): the learning-rate sweep scores such a rate as failed.</summary>
internal sealed class DivergenceException(string message) : FsMergeException(message);

/// <summary>
/// The optimization loop of FS-Merge and distillation: shuffled batches, warm-up then cosine decay (or OneCycle).
/// A NaN/Inf loss, or one above <see cref="ExplosionFactor"/> times the first step's, never ends a run at once:
/// the phase restarts from its initial parameters and data order, with a fresh optimizer, at the rate times
/// <see cref="RecoveryFactor"/>, up to <see cref="OptimizerSettings.Recoveries"/> times. Why from the start and not
/// from the latest finite parameters: those of a run about to diverge often diverge again at any lower rate (on
/// an MLP pair at lr 0.1, seven times down to lr 1e-4), and the start is a known-good point that needs no
/// snapshot in the checkpoint, so a killed and resumed run recovers exactly as an uninterrupted one whatever
/// the checkpoint interval. Divergence usually comes in the first steps (the warm-up's peak), so little is redone.
/// </summary>
internal static class MergeTrainer
{
    /// <summary>At most this many points per loss curve (one every ⌈total steps / this⌉ steps, and the last step).</summary>
    public const int CurvePoints = 200;
    /// <summary>Each recovery divides the rate by about 3 (one step of the paper's rate grids, spec §4.6, §7.7).</summary>
    public const double RecoveryFactor = 1 / 3.0;
    /// <summary>A loss this many times the first step's counts as divergent.</summary>
    public const double ExplosionFactor = 100;

    /// <summary>
    /// Minimizes <paramref name="lossOf"/>(batch indices) over <paramref name="samples"/> items and returns the
    /// loss curve, whose <see cref="LossCurve.FinalLoss"/> is the mean loss of the last epoch. With
    /// <paramref name="checkpoints"/>, saves and resumes this phase (see <see cref="TrainingCheckpoints"/>). With
    /// <paramref name="stop"/> (not together with checkpoints), stops early and restores the best parameters.
    /// </summary>
    public static LossCurve Train(IReadOnlyList<Parameter> parameters, long samples, OptimizerSettings s,
        Func<Tensor, Tensor> lossOf, long seed, MergeProgress? progress, string phase, TrainingCheckpoints? checkpoints = null,
        EarlyStopping? stop = null)
    {
        if (samples == 0) throw new FsMergeException("no merge samples: every task needs at least one image");
        if (s.Epochs == 0 || parameters.Count == 0) return new LossCurve(phase, [], double.NaN);
        int batch = s.BatchSize == 0 ? (int)samples : (int)Math.Min(s.BatchSize, samples);
        long stepsPerEpoch = (samples + batch - 1) / batch;
        long total = stepsPerEpoch * s.Epochs;
        long warmup = Math.Max(1, (long)(s.WarmupFraction * total));
        long every = (total + CurvePoints - 1) / CurvePoints;
        OptimizerHelper optimizer = null!;
        optim.lr_scheduler.LRScheduler scheduler = null!;
        // The optimizer and schedule at a rate scale, with the schedule moved to step `at` (schedules are functions of the step count).
        void Build(double scale, long at)
        {
            double lr = s.LearningRate * scale;
            optimizer = s.Optimizer == "adamw"
                ? torch.optim.AdamW(parameters, lr, weight_decay: s.WeightDecay)
                : torch.optim.SGD(parameters, lr, momentum: s.Momentum, weight_decay: s.WeightDecay);
            scheduler = s.Schedule == "onecycle"
                ? torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps: (int)total,
                    anneal_strategy: optim.lr_scheduler.impl.OneCycleLR.AnnealStrategy.Linear)
                : torch.optim.lr_scheduler.LambdaLR(optimizer, step => step < warmup
                    ? (step + 1.0) / warmup
                    : 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1.0, (step - warmup) / (double)Math.Max(1, total - warmup)))));
            for (long i = 0; i < at; i++) scheduler.step();
        }
        var generator = new Generator((ulong)seed);
        var file = checkpoints?.NextPhaseFile();
        var state = new TrainingCheckpoints.LoopState();
        if (stop != null && checkpoints != null)
            throw new ArgumentException("early stopping keeps its best parameters in memory: a phase with it is not checkpointed", nameof(stop));
        Tensor[]? best = null;
        int misses = 0;
        // What a recovery restarts from: the phase's initial parameters and data order (see the class comment).
        var initial = parameters.Select(p => p.detach().clone()).ToArray();
        byte[] initialGenerator;
        using (var generatorState = generator.get_state()) initialGenerator = generatorState.bytes.ToArray();
        if (checkpoints is { Resume: true } && checkpoints.Load(file!, phase, total, parameters, scale => { Build(scale, 0); return optimizer; }) is { } saved)
        {
            // The optimizer's saved hyper-parameters (learning rate, OneCycle's betas) were restored with its state.
            state = saved;
            checkpoints.Log?.Invoke($"{phase}: resumed at step {state.Step} of {total} from {file}{(state.RateScale != 1 ? $" (rate scale {state.RateScale:G3} after {state.Recoveries.Count} recoveries)" : "")}");
            for (long i = 0; i < state.Step; i++) scheduler.step();
            using var generatorState = torch.tensor(state.GeneratorState);
            generator.set_state(generatorState);
        }
        else Build(1, 0);
        Tensor? order = state.Order is { } savedOrder ? torch.tensor(savedOrder) : null;
        while (state.Step < total)
        {
            if (state.Step % stepsPerEpoch == 0)
            {
                order?.Dispose();
                order = batch == samples ? torch.arange(samples) : torch.randperm(samples, generator: generator);
                state.EpochSum = 0;
            }
            long start = state.Step % stepsPerEpoch * batch;
            double value;
            using (var scope = torch.NewDisposeScope())
            {
                // The order is drawn on the CPU (seeded generator); the index must live where the data do.
                var index = order!.narrow(0, start, Math.Min(batch, samples - start)).to(parameters[0].device);
                var loss = lossOf(index);
                value = loss.item<float>();
                if (state.FirstLoss is null && double.IsFinite(value)) state.FirstLoss = value;
                if (!Diverged(value, state.FirstLoss))
                {
                    optimizer.zero_grad();
                    loss.backward();
                    optimizer.step();
                    scheduler.step();
                    state.EpochSum += value * index.shape[0];
                    state.WindowSum += value * index.shape[0];
                    state.WindowSamples += index.shape[0];
                }
            }
            if (Diverged(value, state.FirstLoss))
            {
                if (state.Recoveries.Count >= s.Recoveries)
                    throw new DivergenceException(state.Recoveries.Count == 0
                        ? $"{phase}: the loss became {value:G4} at step {state.Step + 1} (lr {s.LearningRate:G3}); lower --lr"
                        : $"{phase}: the loss diverged {state.Recoveries.Count + 1} times (lr {s.LearningRate:G3}, each recovery divided it by {1 / RecoveryFactor:G3}, down to {s.LearningRate * state.RateScale:G3}); lower --lr or check the data");
                double from = state.RateScale;
                state = new TrainingCheckpoints.LoopState
                {
                    FirstLoss = state.FirstLoss, RateScale = state.RateScale * RecoveryFactor,
                    Recoveries = [.. state.Recoveries, new Recovery(state.Step + 1, value, from, state.RateScale * RecoveryFactor)],
                };
                checkpoints?.Log?.Invoke($"{phase}: loss {value:G4} at step {state.Recoveries[^1].Step}; restarting the phase at rate x{state.RateScale:G3}");
                using (torch.no_grad())
                    for (int i = 0; i < parameters.Count; i++) parameters[i].copy_(initial[i]);
                using (var generatorState = torch.tensor(initialGenerator))
                    generator.set_state(generatorState);
                order?.Dispose();
                order = null;
                Build(state.RateScale, 0);
                continue;
            }
            state.Step++;
            if (state.Step % every == 0 || state.Step == total)
            {
                state.Points.Add(new LossPoint(state.Step, state.WindowSum / state.WindowSamples));
                (state.WindowSum, state.WindowSamples) = (0, 0);
            }
            bool epochEnd = state.Step % stepsPerEpoch == 0;
            if (epochEnd) state.EpochLoss = state.EpochSum / samples;
            // Every step, not every epoch: a transformer's epoch can take minutes.
            progress?.Invoke(phase, state.Step, total, double.IsNaN(state.EpochLoss) ? null : state.EpochLoss, "steps");
            if (checkpoints != null && (state.Step % checkpoints.Every == 0 || state.Step == total || checkpoints.Interrupted))
            {
                state.Order = epochEnd ? null : order!.data<long>().ToArray();
                using (var generatorState = generator.get_state())
                    state.GeneratorState = generatorState.bytes.ToArray();
                checkpoints.Save(file!, phase, total, parameters, optimizer, state);
                if (checkpoints.Interrupted && state.Step < total)
                    throw new FsMergeException($"interrupted: {phase} saved at step {state.Step} of {total} in {checkpoints.Directory}; run the same command with --resume to continue");
            }
            if (stop != null && epochEnd && state.Step / stepsPerEpoch % stop.CheckEvery == 0
                && Check(stop, (int)(state.Step / stepsPerEpoch), parameters, ref best, ref misses)) break;
        }
        foreach (var t in initial) t.Dispose();
        if (best != null)
        {
            using (torch.no_grad())
                for (int i = 0; i < parameters.Count; i++) parameters[i].copy_(best[i]);
            foreach (var t in best) t.Dispose();
        }
        order?.Dispose();
        return new LossCurve(phase, state.Points, state.EpochLoss) { Recoveries = state.Recoveries };
    }

    static bool Diverged(double loss, double? first) =>
        !double.IsFinite(loss) || first is > 0 && loss > ExplosionFactor * first;

    /// <summary>One early-stopping check; true when training should stop.</summary>
    static bool Check(EarlyStopping stop, int epoch, IReadOnlyList<Parameter> parameters, ref Tensor[]? best, ref int misses)
    {
        double loss;
        using (torch.no_grad())
        using (torch.NewDisposeScope())
            loss = stop.HeldOutLoss();
        stop.StoppedEpoch = epoch;
        if (loss < stop.BestLoss)
        {
            stop.BestLoss = loss;
            stop.BestEpoch = epoch;
            if (best != null) foreach (var t in best) t.Dispose();
            best = parameters.Select(p => p.detach().clone().DetachFromDisposeScope()).ToArray();
            misses = 0;
            return false;
        }
        return ++misses >= stop.Patience;
    }
}
