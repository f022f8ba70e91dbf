using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Training;

internal sealed record TrainOptions
{
    public int Epochs { get; init; } = 2;
    public double LearningRate { get; init; } = 1e-3;
    public int BatchSize { get; init; } = 64;
    public double WeightDecay { get; init; } = 1e-2;
    /// <summary>Fraction of all steps spent in linear warm-up before the cosine decay.</summary>
    public double WarmupFraction { get; init; } = 0.05;
    public long Seed { get; init; } = 1;
}

/// <summary>Progress of one training step, for progress bars.</summary>
internal sealed record TrainProgress(int Epoch, int Epochs, int Step, int StepsPerEpoch, double Loss, double RunningAccuracy);

/// <summary>Per-epoch record of a source-model training run.</summary>
internal sealed record EpochRecord(int Epoch, double TrainLoss, double TrainAccuracy, double ValidationAccuracy);

/// <summary>
/// Trains a single-task source model with AdamW (decoupled weight decay), linear warm-up then cosine
/// decay, and keeps the weights of the epoch with the best validation accuracy.
/// </summary>
internal static class SourceTrainer
{
    public static (Model Model, List<EpochRecord> History) Train(
        Model model, TaskSplits data, TrainOptions options, Device device,
        Action<TrainProgress>? onStep = null, Action<EpochRecord>? onEpoch = null)
    {
        if (model.HeadCount != 1) throw new FsMergeException("a source model is trained with exactly one head");
        if (data.Train.Count == 0) throw new FsMergeException($"task {data.Task}: the training split is empty");
        if (options.Epochs < 1) throw new FsMergeException($"--epochs {options.Epochs}: expected at least 1");
        if (options.BatchSize < 1) throw new FsMergeException($"--batch {options.BatchSize}: expected at least 1");
        if (!(options.LearningRate > 0)) throw new FsMergeException($"--lr {options.LearningRate}: expected a positive number");

        var parameters = model.Weights.ToDictionary(kv => kv.Key, kv => new Parameter(kv.Value.detach().clone(), requires_grad: true));
        var weights = parameters.ToDictionary(kv => kv.Key, kv => (Tensor)kv.Value);
        var trainable = new Model(model.Config, weights);

        int n = data.Train.Count;
        int stepsPerEpoch = (n + options.BatchSize - 1) / options.BatchSize;
        int totalSteps = stepsPerEpoch * options.Epochs;
        int warmup = Math.Max(1, (int)(options.WarmupFraction * totalSteps));
        var optimizer = torch.optim.AdamW(parameters.Values, options.LearningRate, weight_decay: options.WeightDecay);
        var scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, step => WarmupCosine(step, warmup, totalSteps));

        var generator = new Generator((ulong)options.Seed);
        var labels = torch.tensor(data.Train.Labels);
        var history = new List<EpochRecord>();
        Dictionary<string, Tensor>? best = null;
        double bestAccuracy = double.NegativeInfinity;

        for (int epoch = 1; epoch <= options.Epochs; epoch++)
        {
            var order = torch.randperm(n, generator: generator);
            double lossSum = 0; long correct = 0, seen = 0;
            for (int step = 0; step < stepsPerEpoch; step++)
            {
                using var scope = torch.NewDisposeScope();
                var index = order.narrow(0, step * options.BatchSize, Math.Min(options.BatchSize, n - step * options.BatchSize));
                var x = data.Train.Images.index_select(0, index).to(device);
                var y = labels.index_select(0, index).to(device);
                var logits = trainable.Logits(trainable.Features(x), 0);
                var loss = nn.functional.cross_entropy(logits, y);
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                scheduler.step();

                double batchLoss = loss.item<float>();
                lossSum += batchLoss * y.shape[0];
                correct += logits.argmax(1).eq(y).sum().item<long>();
                seen += y.shape[0];
                onStep?.Invoke(new TrainProgress(epoch, options.Epochs, step + 1, stepsPerEpoch, batchLoss, (double)correct / seen));
            }
            order.Dispose();

            double validation = data.Validation.Count > 0
                ? Evaluator.Accuracy(trainable, 0, data.Validation, device)
                : double.NaN;
            var record = new EpochRecord(epoch, lossSum / seen, (double)correct / seen, validation);
            history.Add(record);
            onEpoch?.Invoke(record);
            // Best on validation; without a validation split the last epoch wins.
            double score = double.IsNaN(validation) ? epoch : validation;
            if (score > bestAccuracy)
            {
                bestAccuracy = score;
                if (best != null) foreach (var t in best.Values) t.Dispose();
                best = weights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
            }
        }
        foreach (var p in parameters.Values) p.Dispose();
        return (new Model(model.Config, best!), history);
    }

    /// <summary>
    /// Evaluates the trained model on the test split and records its provenance in config.json
    /// (fsmerge.training). Returns the test accuracy and the epoch kept.
    /// </summary>
    public static (double Test, int BestEpoch) Record(Model model, List<EpochRecord> history, TaskSplits data, TrainOptions options,
        string? initDir, TimeSpan elapsed, Device device)
    {
        double test = Evaluator.Accuracy(model, 0, data.Test, device);
        var best = history.MaxBy(h => double.IsNaN(h.ValidationAccuracy) ? h.Epoch : h.ValidationAccuracy)!;
        var t = model.Config.Training;
        t.Clear();
        t["task"] = data.Task.ToString();
        t["seed"] = options.Seed;
        t["epochs"] = options.Epochs;
        t["lr"] = options.LearningRate;
        t["batch"] = options.BatchSize;
        t["weight_decay"] = options.WeightDecay;
        t["optimizer"] = "AdamW, linear warm-up 5% then cosine";
        t["init"] = initDir;
        t["best_epoch"] = best.Epoch;
        t["data"] = new JsonObject { ["train"] = data.Train.Count, ["validation"] = data.Validation.Count, ["test"] = data.Test.Count };
        t["validation_accuracy"] = double.IsNaN(best.ValidationAccuracy) ? null : best.ValidationAccuracy;
        t["test_accuracy"] = test;
        t["seconds"] = Math.Round(elapsed.TotalSeconds, 1);
        return (test, best.Epoch);
    }

    /// <summary>The learning-rate factor of linear warm-up then cosine decay to zero (also used by <see cref="MlmPretrainer"/>).</summary>
    internal static double WarmupCosine(int step, int warmup, int total)
    {
        if (step < warmup) return (step + 1.0) / warmup;
        double progress = Math.Min(1.0, (step - warmup) / (double)Math.Max(1, total - warmup));
        return 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
