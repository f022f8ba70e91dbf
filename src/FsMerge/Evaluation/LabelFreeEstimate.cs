using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Evaluation;

/// <summary>
/// How closely a merged model's head t reproduces source model t on task t's held-out unlabeled samples.
/// <see cref="Agreement"/>: the fraction of samples on which both predict the same class. <see cref="LogitError"/>:
/// Σ‖z_merged − z_source‖² / Σ‖z_source − mean z_source‖² over the samples (0 = the same logits; 1 = no better
/// than always answering the source's mean logits): the feature reconstruction error as head t reads it.
/// </summary>
public sealed record TaskAgreement(string Task, double Agreement, double LogitError, int Count);

/// <summary>
/// The label-free quality estimate of a merge: per task <see cref="TaskAgreement"/>, their means, and
/// <see cref="JointAgreement"/>: on every task's held-out samples, how often the argmax over all the merged
/// heads' logits is the argmax over all source models' logits (the ensemble's joint prediction).
/// <see cref="LogitError"/> is the mean over tasks of each task's logit error capped at <see cref="ErrorCap"/>.
/// </summary>
public sealed record LabelFreeEstimate(IReadOnlyList<TaskAgreement> Tasks, double Agreement, double LogitError, double JointAgreement)
{
    /// <summary>
    /// A task's logit error counts at most this much in the mean: above 1 a head tells no more about its source than
    /// the source's mean logits would, and without the cap a task whose source barely varies over its samples (a
    /// near-constant model: the error's denominator near 0) swamped the others and picked the rate that collapsed
    /// every other task (a BERT triple with a 34%-accurate source: 10 points lost).
    /// </summary>
    public const double ErrorCap = 1;

    /// <summary>
    /// The estimate of these per-task scores: means of agreement and of the capped logit error, which stays infinite
    /// when a task's is not finite (a diverged model is out, not merely capped).
    /// </summary>
    public static LabelFreeEstimate Of(IReadOnlyList<TaskAgreement> tasks, double jointAgreement) =>
        new(tasks, tasks.Average(t => t.Agreement),
            tasks.All(t => double.IsFinite(t.LogitError)) ? tasks.Average(t => Math.Min(t.LogitError, ErrorCap)) : double.PositiveInfinity,
            jointAgreement);

    /// <summary>The label-free choice's order: the lower mean (capped) logit error, and on a tie the higher agreement.</summary>
    public bool IsBetterThan(LabelFreeEstimate other) =>
        LogitError < other.LogitError || (LogitError == other.LogitError && Agreement > other.Agreement);

    public JsonObject ToJson() => new()
    {
        ["tasks"] = new JsonArray(Tasks.Select(t => (JsonNode)new JsonObject
        {
            ["task"] = t.Task, ["agreement"] = t.Agreement, ["logit_error"] = t.LogitError, ["count"] = t.Count,
        }).ToArray()),
        ["agreement"] = Agreement,
        ["logit_error"] = LogitError,
        ["joint_agreement"] = JointAgreement,
    };
}

/// <summary>
/// The source models' logits on held-out unlabeled samples, computed once, against which any merge is scored
/// without labels (<see cref="Estimate"/>): the learning-rate sweep, --method auto and every report use it.
/// </summary>
internal sealed class HeldOutReference : IDisposable
{
    readonly IReadOnlyList<ImageSet> sets;
    readonly IReadOnlyList<string> names;
    readonly Device device;
    /// <summary>[t][s]: source s's head logits on task t's held-out samples (CPU).</summary>
    readonly Tensor[][] sourceLogits;

    public HeldOutReference(IReadOnlyList<Model> sources, IReadOnlyList<ImageSet> heldOut, IReadOnlyList<string> names, Device device)
    {
        if (heldOut.Count != sources.Count || heldOut.Any(s => s.Count == 0))
            throw new FsMergeException("the label-free estimate needs held-out samples for every task");
        (sets, this.names, this.device) = (heldOut, names, device);
        sourceLogits = heldOut.Select(set => Logits(Evaluator.SeparateModels(sources), set)).ToArray();
    }

    /// <summary>
    /// The reference for a method's inputs (tasks named by number); a method whose label-free choice needs held-out
    /// samples it was not given fails with one line saying so (<paramref name="what"/>: what it was choosing).
    /// </summary>
    public static HeldOutReference For(Merging.MergeInputs inputs, string method, string what) =>
        new(inputs.Sources, inputs.HeldOut ?? throw new FsMergeException($"{method}: {what} is chosen on held-out samples; give some (--held-out N)"),
            Enumerable.Range(1, inputs.Sources.Count).Select(i => $"task {i}").ToList(), inputs.Device);

    public int Samples => sets.Sum(s => s.Count);

    Tensor[] Logits(AllHeadLogits heads, ImageSet set)
    {
        using var _ = torch.no_grad();
        var batches = new List<Tensor[]>();
        for (int start = 0; start < set.Count; start += Evaluator.BatchSize)
        {
            using var scope = torch.NewDisposeScope();
            var images = set.Images.narrow(0, start, Math.Min(Evaluator.BatchSize, set.Count - start)).to(device);
            batches.Add(heads(images).Select(l => l.cpu().MoveToOuterDisposeScope()).ToArray());
        }
        return Enumerable.Range(0, batches[0].Length).Select(h => torch.cat(batches.Select(b => b[h]).ToArray(), 0)).ToArray();
    }

    /// <summary>Scores <paramref name="merged"/> (every head's logits, in task order) against the sources.</summary>
    public LabelFreeEstimate Estimate(AllHeadLogits merged)
    {
        using var scope = torch.NewDisposeScope();
        var tasks = new List<TaskAgreement>();
        long jointSame = 0;
        for (int t = 0; t < sets.Count; t++)
        {
            var mine = Logits(merged, sets[t]);
            if (mine.Length != sourceLogits[t].Length)
                throw new FsMergeException($"the merged model has {mine.Length} heads for {sourceLogits[t].Length} tasks");
            var (m, s) = (mine[t], sourceLogits[t][t]);
            double agreement = m.argmax(1).eq(s.argmax(1)).to(ScalarType.Float64).mean().item<double>();
            double error = (m - s).pow(2).sum().item<float>();
            double spread = (s - s.mean([0], keepdim: true)).pow(2).sum().item<float>();
            double logitError = double.IsFinite(error) ? error / Math.Max(spread, 1e-12) : double.PositiveInfinity;
            tasks.Add(new TaskAgreement(names[t], agreement, logitError, sets[t].Count));
            jointSame += torch.cat(mine, 1).argmax(1).eq(torch.cat(sourceLogits[t], 1).argmax(1)).sum().item<long>();
        }
        return LabelFreeEstimate.Of(tasks, (double)jointSame / Samples);
    }

    public void Dispose()
    {
        foreach (var t in sourceLogits.SelectMany(l => l)) t.Dispose();
    }
}
