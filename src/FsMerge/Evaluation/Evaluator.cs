using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Evaluation;

public sealed record TaskAccuracy(string Task, double Accuracy, int Count);

/// <param name="TaskIdentified">Mean over tasks of the fraction of task t's test images whose joint argmax falls
/// among head t's classes: joint accuracy's upper bound, and what its errors of routing cost.</param>
public sealed record EvaluationResult(IReadOnlyList<TaskAccuracy> Tasks, double PerTaskMean, double Joint, double TaskIdentified)
{
    public JsonObject ToJson() => new()
    {
        ["tasks"] = new JsonArray(Tasks.Select(t => (JsonNode)new JsonObject
        {
            ["task"] = t.Task, ["accuracy"] = t.Accuracy, ["count"] = t.Count,
        }).ToArray()),
        ["per_task_mean"] = PerTaskMean,
        ["joint"] = Joint,
        ["task_identified"] = TaskIdentified,
    };
}

/// <summary>
/// Something that, given a batch of images, returns the logits of every task head in task order.
/// A merged model computes its features once and applies each head; a set of single-task source
/// models gives head t the features of model t.
/// </summary>
public delegate Tensor[] AllHeadLogits(Tensor images);

/// <summary>Per-task and joint accuracy (spec §10.3-10.4).</summary>
public static class Evaluator
{
    public const int BatchSize = 512;

    public static AllHeadLogits MultiTask(Model merged) => images =>
    {
        var features = merged.Features(images);
        return Enumerable.Range(0, merged.HeadCount).Select(t => merged.Logits(features, t)).ToArray();
    };

    public static AllHeadLogits SeparateModels(IReadOnlyList<Model> models) => images =>
        models.Select(m => m.Logits(m.Features(images), 0)).ToArray();

    /// <summary>Accuracy of one head of <paramref name="model"/> on a labelled set.</summary>
    public static double Accuracy(Model model, int head, ImageSet set, Device device) =>
        Evaluate(images => [model.Logits(model.Features(images), head)], [set], device).Tasks[0].Accuracy;

    /// <summary>
    /// Per-task accuracy: task t's test set classified by head t alone. Joint accuracy: the logits of all
    /// heads are concatenated in task order and the global argmax must hit task t's label plus the class
    /// offset of head t. Task identified: the global argmax falls among head t's classes, right label or not. <paramref name="names"/> labels the rows (defaults to task indices); <paramref name="progress"/> hears of every batch ("evaluate", images done, images).
    /// </summary>
    public static EvaluationResult Evaluate(AllHeadLogits heads, IReadOnlyList<ImageSet> testSets, Device device,
        IReadOnlyList<string>? names = null, MergeProgress? progress = null)
    {
        long totalImages = testSets.Sum(s => (long)s.Count), doneImages = 0;
        using var _ = torch.no_grad();
        var tasks = new List<TaskAccuracy>();
        double jointMean = 0, identifiedMean = 0;
        for (int t = 0; t < testSets.Count; t++)
        {
            var set = testSets[t];
            if (set.Count == 0) throw new FsMergeException($"task {names?[t] ?? t.ToString()}: the evaluation set is empty");
            long correct = 0, jointCorrect = 0, identified = 0;
            for (int start = 0; start < set.Count; start += BatchSize)
            {
                using var scope = torch.NewDisposeScope();
                int count = Math.Min(BatchSize, set.Count - start);
                var images = set.Images.narrow(0, start, count).to(device);
                var labels = torch.tensor(set.Labels.AsSpan(start, count).ToArray(), device: device);
                var logits = heads(images);
                if (t >= logits.Length) throw new FsMergeException($"task {t + 1} has no head (the model has {logits.Length})");
                correct += logits[t].argmax(1).eq(labels).sum().item<long>();
                long offset = logits.Take(t).Sum(l => l.shape[1]);
                var joint = torch.cat(logits, 1).argmax(1);
                jointCorrect += joint.eq(labels + offset).sum().item<long>();
                identified += joint.ge(offset).logical_and(joint.lt(offset + logits[t].shape[1])).sum().item<long>();
                doneImages += count;
                progress?.Invoke("evaluate", doneImages, totalImages, null, "samples");
            }
            tasks.Add(new TaskAccuracy(names?[t] ?? $"task {t + 1}", (double)correct / set.Count, set.Count));
            jointMean += (double)jointCorrect / set.Count;
            identifiedMean += (double)identified / set.Count;
        }
        return new EvaluationResult(tasks, tasks.Average(a => a.Accuracy), jointMean / testSets.Count, identifiedMean / testSets.Count);
    }
}
