using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Evaluation;

/// <summary>
/// How closely a merged model's head t reproduces source model t on task t's held-out unlabeled samples.
/// <see cref="Agreement"/>: the fraction of samples on which both predict the same class. <see cref="Divergence"/>:
/// Σ KL(p_source ‖ p_merged) / Σ KL(p_source ‖ p̄_source) over the samples, p the heads' softmax and p̄_source the
/// source's mean prediction (0 = the same predictions; 1 = no better than always answering that mean): the
/// distillation loss, relative to a constant answer. <see cref="LogitError"/>: Σ‖z_merged − z_source‖² /
/// Σ‖z_source − mean z_source‖² (the same scale on the logits): the feature reconstruction error as head t reads it.
/// </summary>
public sealed record TaskAgreement(string Task, double Agreement, double Divergence, double LogitError, int Count);

/// <summary>
/// The label-free quality estimate of a merge: per task <see cref="TaskAgreement"/>, their means, and
/// <see cref="JointAgreement"/>: on every task's held-out samples, how often the argmax over all the merged
/// heads' logits is the argmax over all source models' logits (the ensemble's joint prediction).
/// <see cref="Divergence"/> and <see cref="LogitError"/> are means over tasks of each task's value capped at
/// <see cref="ErrorCap"/>. Every label-free choice ranks by <see cref="Divergence"/>: the logit error also counts
/// differences the predictions ignore (a shift of all of a sample's logits) and weighs every logit alike, and on
/// unseen ViT pairs it preferred merges that kept one source intact and lost the other task (docs/results.md).
/// </summary>
public sealed record LabelFreeEstimate(IReadOnlyList<TaskAgreement> Tasks, double Agreement, double Divergence, double LogitError, double JointAgreement)
{
    /// <summary>
    /// A task's divergence (and logit error) counts at most this much in the mean: above 1 a head tells no more about
    /// its source than the source's mean prediction would, and without the cap a task whose source barely varies over
    /// its samples (a near-constant model: the denominator near 0) swamped the others and picked the rate that
    /// collapsed every other task (a BERT triple with a 34%-accurate source: 10 points lost).
    /// </summary>
    public const double ErrorCap = 1;

    /// <summary>
    /// The estimate of these per-task scores: means of agreement and of the capped divergence and logit error, which
    /// stay infinite when a task's is not finite (a diverged model is out, not merely capped).
    /// </summary>
    public static LabelFreeEstimate Of(IReadOnlyList<TaskAgreement> tasks, double jointAgreement) =>
        new(tasks, tasks.Average(t => t.Agreement), CappedMean(tasks.Select(t => t.Divergence)), CappedMean(tasks.Select(t => t.LogitError)), jointAgreement);

    static double CappedMean(IEnumerable<double> values) =>
        values.All(double.IsFinite) ? values.Average(v => Math.Min(v, ErrorCap)) : double.PositiveInfinity;

    /// <summary>The label-free choice's order: the lower mean (capped) divergence, and on a tie the higher agreement.</summary>
    public bool IsBetterThan(LabelFreeEstimate other) =>
        Divergence < other.Divergence || (Divergence == other.Divergence && Agreement > other.Agreement);

    public JsonObject ToJson() => new()
    {
        ["tasks"] = new JsonArray(Tasks.Select(t => (JsonNode)new JsonObject
        {
            ["task"] = t.Task, ["agreement"] = t.Agreement, ["divergence"] = t.Divergence, ["logit_error"] = t.LogitError, ["count"] = t.Count,
        }).ToArray()),
        ["agreement"] = Agreement,
        ["divergence"] = Divergence,
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
            tasks.Add(new TaskAgreement(names[t], agreement, Divergence(m, s), Relative(error, spread), sets[t].Count));
            jointSame += torch.cat(mine, 1).argmax(1).eq(torch.cat(sourceLogits[t], 1).argmax(1)).sum().item<long>();
        }
        return LabelFreeEstimate.Of(tasks, (double)jointSame / Samples);
    }

    /// <summary>
    /// How much lower <paramref name="challenger"/>'s divergence is than <paramref name="incumbent"/>'s on these samples
    /// (uncapped means), and the standard error of that gain over the samples (paired: the same samples score both).
    /// A gain within a standard error or so is what another draw of the held-out samples could reverse.
    /// </summary>
    public (double Gain, double StandardError) DivergenceGain(AllHeadLogits incumbent, AllHeadLogits challenger)
    {
        using var scope = torch.NewDisposeScope();
        var differences = torch.cat(Enumerable.Range(0, sets.Count).Select(t => PerSample(incumbent, t) - PerSample(challenger, t)).ToArray());
        long n = differences.shape[0];
        double gain = differences.sum().item<double>();
        double standardError = n > 1 ? differences.std().item<double>() * Math.Sqrt(n) : double.PositiveInfinity;
        return (gain, standardError);
    }

    /// <summary>Task t's samples' shares of the mean divergence (uncapped): KL_i / (T · Σ_j KL of the mean prediction).</summary>
    Tensor PerSample(AllHeadLogits merged, int t)
    {
        var (kl, constant) = KullbackLeibler(Logits(merged, sets[t])[t], sourceLogits[t][t]);
        return kl / (sets.Count * Math.Max(constant, 1e-12));
    }

    /// <summary>
    /// --alpha auto, --epsilon auto: the value of <paramref name="grid"/> whose model (<paramref name="build"/>) has the
    /// lowest held-out divergence; the others are disposed. Returns it with the search for the method's details.
    /// </summary>
    public (Model Model, double Value, JsonObject Search) Choose(string method, string option, IReadOnlyList<double> grid, Func<double, Model> build, Action<string>? log)
    {
        var trials = new JsonArray();
        (Model Model, double Value, double Divergence)? best = null;
        foreach (var value in grid)
        {
            var model = build(value);
            double divergence = Estimate(Evaluator.MultiTask(model)).Divergence;
            trials.Add((JsonNode)new JsonObject { [option] = value, ["divergence"] = double.IsFinite(divergence) ? divergence : null });
            log?.Invoke($"{method} --{option} auto: {option} {value}: held-out divergence {divergence:F4}");
            if (best is null || divergence < best.Value.Divergence)
            {
                best?.Model.Dispose();
                best = (model, value, divergence);
            }
            else model.Dispose();
        }
        return (best!.Value.Model, best.Value.Value, new JsonObject { ["rule"] = "the lowest mean held-out divergence", ["trials"] = trials });
    }

    /// <summary>Σ KL(softmax(source) ‖ softmax(merged)) over the samples relative to the KL of the source's mean prediction (float64).</summary>
    static double Divergence(Tensor merged, Tensor source)
    {
        var (kl, constant) = KullbackLeibler(merged, source);
        return Relative(kl.sum().item<double>(), constant);
    }

    /// <summary>KL(softmax(source) ‖ softmax(merged)) per sample (float64), and Σ KL(softmax(source) ‖ its mean over the samples).</summary>
    static (Tensor PerSample, double Constant) KullbackLeibler(Tensor merged, Tensor source)
    {
        var logSource = source.to(ScalarType.Float64).log_softmax(1);
        var pSource = logSource.exp();
        var logMean = logSource.logsumexp(0, keepdim: true) - Math.Log(source.shape[0]);   // log of the mean prediction
        return ((pSource * (logSource - merged.to(ScalarType.Float64).log_softmax(1))).sum(1), (pSource * (logSource - logMean)).sum().item<double>());
    }

    static double Relative(double error, double spread) => double.IsFinite(error) ? error / Math.Max(spread, 1e-12) : double.PositiveInfinity;

    public void Dispose()
    {
        foreach (var t in sourceLogits.SelectMany(l => l)) t.Dispose();
    }
}
