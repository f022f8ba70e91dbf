using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>Optimizer settings shared by FS-Merge and distillation (spec §4.6, §7.4-7.5).</summary>
public sealed record OptimizerSettings(string Optimizer, double LearningRate, int Epochs, int BatchSize,
    double Momentum, double WeightDecay, double WarmupFraction, string Schedule = "cosine")
{
    /// <summary>The options behind these settings, with per-method defaults.</summary>
    public static IReadOnlyList<MethodOption> Options(string optimizer, string lr, string epochs, string batch) =>
    [
        new("optimizer", optimizer, "sgd (with momentum; the paper's MLP setting) or adamw (the paper's transformer setting)"),
        new("lr", lr, "peak learning rate"),
        new("epochs", epochs, "passes over all merge samples"),
        new("batch", batch, "batch size; 0 = full batch"),
        new("momentum", "0.9", "SGD momentum"),
        new("weight-decay", "0.001", "decoupled weight decay (AdamW) or L2 (SGD)"),
        new("warmup", "0.02", "fraction of steps of linear warm-up before cosine decay"),
        new("schedule", "cosine", "cosine (linear warm-up, then cosine; the paper's MLP setting) or onecycle (the reference's transformer setting, spec §7.5: OneCycle with linear annealing, 30% warm-up, cycling Adam's beta1 0.95-0.85)"),
    ];

    public static OptimizerSettings From(MethodSettings s) => new(
        s.String("optimizer", "sgd", "adamw"), s.Double("lr", min: 0), s.Int("epochs", min: 0), s.Int("batch", min: 0),
        s.Double("momentum", 0, 1), s.Double("weight-decay", min: 0), s.Double("warmup", 0, 1),
        s.String("schedule", "cosine", "onecycle"));
}

/// <summary>
/// Early stopping (spec §6): every <paramref name="CheckEvery"/> epochs the loss on held-out samples is measured;
/// after <paramref name="Patience"/> checks without a new best, training stops, and the parameters of the best
/// check are restored. <see cref="BestEpoch"/> and <see cref="StoppedEpoch"/> report what happened.
/// </summary>
public sealed class EarlyStopping(int CheckEvery, int Patience, Func<double> HeldOutLoss)
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

/// <summary>The loss curve of one training phase and its last epoch's mean loss (NaN for zero epochs).</summary>
public sealed record LossCurve(string Phase, IReadOnlyList<LossPoint> Points, double FinalLoss);

/// <summary>The optimization loop of FS-Merge and distillation: shuffled batches, warm-up then cosine decay.</summary>
public static class MergeTrainer
{
    /// <summary>At most this many points per loss curve (one every ⌈total steps / this⌉ steps, and the last step).</summary>
    public const int CurvePoints = 200;

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
        OptimizerHelper optimizer = s.Optimizer == "adamw"
            ? torch.optim.AdamW(parameters, s.LearningRate, weight_decay: s.WeightDecay)
            : torch.optim.SGD(parameters, s.LearningRate, momentum: s.Momentum, weight_decay: s.WeightDecay);
        var scheduler = s.Schedule == "onecycle"
            ? torch.optim.lr_scheduler.OneCycleLR(optimizer, s.LearningRate, total_steps: (int)total,
                anneal_strategy: optim.lr_scheduler.impl.OneCycleLR.AnnealStrategy.Linear)
            : torch.optim.lr_scheduler.LambdaLR(optimizer, step => step < warmup
                ? (step + 1.0) / warmup
                : 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1.0, (step - warmup) / (double)Math.Max(1, total - warmup)))));
        var generator = new Generator((ulong)seed);
        var file = checkpoints?.NextPhaseFile();
        var state = new TrainingCheckpoints.LoopState();
        if (stop != null && checkpoints != null)
            throw new ArgumentException("early stopping keeps its best parameters in memory: a phase with it is not checkpointed", nameof(stop));
        Tensor[]? best = null;
        int misses = 0;
        if (checkpoints is { Resume: true } && checkpoints.Load(file!, phase, total, parameters, optimizer) is { } saved)
        {
            // The schedules are functions of the step count: replaying it puts the scheduler where it was; the
            // optimizer's saved hyper-parameters (learning rate, OneCycle's betas) were restored with its state.
            state = saved;
            checkpoints.Log?.Invoke($"{phase}: resumed at step {state.Step} of {total} from {file}");
            for (long i = 0; i < state.Step; i++) scheduler.step();
            using var generatorState = torch.tensor(state.GeneratorState);
            generator.set_state(generatorState);
        }
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
            using (var scope = torch.NewDisposeScope())
            {
                // The order is drawn on the CPU (seeded generator); the index must live where the data do.
                var index = order!.narrow(0, start, Math.Min(batch, samples - start)).to(parameters[0].device);
                var loss = lossOf(index);
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                scheduler.step();
                double value = loss.item<float>();
                if (!double.IsFinite(value))
                    throw new FsMergeException($"{phase}: the loss became {value} at step {state.Step + 1}; lower --lr");
                state.EpochSum += value * index.shape[0];
                state.WindowSum += value * index.shape[0];
                state.WindowSamples += index.shape[0];
            }
            state.Step++;
            if (state.Step % every == 0 || state.Step == total)
            {
                state.Points.Add(new LossPoint(state.Step, state.WindowSum / state.WindowSamples));
                (state.WindowSum, state.WindowSamples) = (0, 0);
            }
            bool epochEnd = state.Step % stepsPerEpoch == 0;
            if (epochEnd)
            {
                state.EpochLoss = state.EpochSum / samples;
                progress?.Invoke(phase, state.Step, total, state.EpochLoss);
            }
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
        if (best != null)
        {
            using (torch.no_grad())
                for (int i = 0; i < parameters.Count; i++) parameters[i].copy_(best[i]);
            foreach (var t in best) t.Dispose();
        }
        order?.Dispose();
        return new LossCurve(phase, state.Points, state.EpochLoss);
    }

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
