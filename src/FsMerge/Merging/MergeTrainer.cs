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

/// <summary>The optimization loop of FS-Merge and distillation: shuffled batches, warm-up then cosine decay.</summary>
public static class MergeTrainer
{
    /// <summary>
    /// Minimizes <paramref name="lossOf"/>(batch indices) over <paramref name="samples"/> items and returns the
    /// mean loss of the last epoch (NaN when there are zero epochs).
    /// </summary>
    public static double Train(IReadOnlyList<Parameter> parameters, long samples, OptimizerSettings s,
        Func<Tensor, Tensor> lossOf, long seed, MergeProgress? progress, string phase, EarlyStopping? stop = null)
    {
        if (samples == 0) throw new FsMergeException("no merge samples: every task needs at least one image");
        if (s.Epochs == 0 || parameters.Count == 0) return double.NaN;
        int batch = s.BatchSize == 0 ? (int)samples : (int)Math.Min(s.BatchSize, samples);
        long stepsPerEpoch = (samples + batch - 1) / batch;
        long total = stepsPerEpoch * s.Epochs;
        long warmup = Math.Max(1, (long)(s.WarmupFraction * total));
        optim.Optimizer optimizer = s.Optimizer == "adamw"
            ? torch.optim.AdamW(parameters, s.LearningRate, weight_decay: s.WeightDecay)
            : torch.optim.SGD(parameters, s.LearningRate, momentum: s.Momentum, weight_decay: s.WeightDecay);
        var scheduler = s.Schedule == "onecycle"
            ? torch.optim.lr_scheduler.OneCycleLR(optimizer, s.LearningRate, total_steps: (int)total,
                anneal_strategy: optim.lr_scheduler.impl.OneCycleLR.AnnealStrategy.Linear)
            : torch.optim.lr_scheduler.LambdaLR(optimizer, step => step < warmup
                ? (step + 1.0) / warmup
                : 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1.0, (step - warmup) / (double)Math.Max(1, total - warmup)))));
        var generator = new Generator((ulong)seed);
        double epochLoss = double.NaN;
        long step = 0;
        Tensor[]? best = null;
        int misses = 0;
        for (int epoch = 0; epoch < s.Epochs; epoch++)
        {
            using var order = batch == samples ? torch.arange(samples) : torch.randperm(samples, generator: generator);
            double sum = 0;
            for (long start = 0; start < samples; start += batch)
            {
                using var scope = torch.NewDisposeScope();
                // The order is drawn on the CPU (seeded generator); the index must live where the data do.
                var index = order.narrow(0, start, Math.Min(batch, samples - start)).to(parameters[0].device);
                var loss = lossOf(index);
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                scheduler.step();
                double value = loss.item<float>();
                if (!double.IsFinite(value))
                    throw new FsMergeException($"{phase}: the loss became {value} at step {step + 1}; lower --lr");
                sum += value * index.shape[0];
                step++;
            }
            epochLoss = sum / samples;
            progress?.Invoke(phase, step, total, epochLoss);
            if (stop != null && (epoch + 1) % stop.CheckEvery == 0 && Check(stop, epoch + 1, parameters, ref best, ref misses)) break;
        }
        if (best != null)
        {
            using (torch.no_grad())
                for (int i = 0; i < parameters.Count; i++) parameters[i].copy_(best[i]);
            foreach (var t in best) t.Dispose();
        }
        return epochLoss;
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
