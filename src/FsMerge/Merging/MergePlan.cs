using FsMerge.Data;
using FsMerge.Models;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// Checks that the sources can be merged and gathers their tasks and merge data: the shared steps of
/// `fsmerge merge` and the benches.
/// </summary>
public sealed class MergePlan
{
    public required IReadOnlyList<Model> Sources { get; init; }
    public required IReadOnlyList<string> Tasks { get; init; }
    public required IReadOnlyList<ImageSet> Data { get; init; }
    /// <summary>Unlabeled held-out samples per task for early stopping, from the validation split (null when none asked).</summary>
    public IReadOnlyList<ImageSet>? HeldOut { get; init; }
    public required IReadOnlyList<TaskSplits> Splits { get; init; }
    public required ModelConfig Target { get; init; }

    public static MergePlan Prepare(IReadOnlyList<Model> sources, IReadOnlyList<string> names, IReadOnlyList<string> taskOverrides,
        string dataDir, int perTask, long seed, int[]? width, Device device, int augmentPerTask = 0, int heldOutPerTask = 0)
    {
        var first = sources[0].Config;
        for (int i = 0; i < sources.Count; i++)
        {
            var c = sources[i].Config;
            if (c.Architecture != first.Architecture)
                throw new FsMergeException($"{names[i]}: architecture {c.Architecture} differs from model 1's {first.Architecture}");
            if (c.Heads.Count != 1)
                throw new FsMergeException($"{names[i]}: has {c.Heads.Count} heads; merge sources must be single-task models");
        }
        if (taskOverrides.Count > 0 && taskOverrides.Count != sources.Count)
            throw new FsMergeException($"fsmerge merge: {taskOverrides.Count} --task given for {sources.Count} models; give one per model or none");
        var tasks = Enumerable.Range(0, sources.Count)
            .Select(i => taskOverrides.Count > 0 ? TaskSpec.Parse(taskOverrides[i]).ToString() : sources[i].Config.Heads[0].Task).ToList();
        var splits = new List<TaskSplits>();
        var data = new List<ImageSet>();
        for (int i = 0; i < sources.Count; i++)
        {
            var split = TaskData.Load(TaskSpec.Parse(tasks[i]), dataDir);
            sources[i].Config.CheckImages(split.Train.Images.shape, $"task {tasks[i]}");
            if (split.Train.LabelNames.Length != sources[i].Config.Heads[0].Labels.Length)
                throw new FsMergeException($"{names[i]}: its head has {sources[i].Config.Heads[0].Labels.Length} classes but task {tasks[i]} has {split.Train.LabelNames.Length}");
            splits.Add(split);
            // n original unlabeled images, then augmented ones made from them (spec §11.2-11.3).
            data.Add(MergeDataSet.Compose(MergeData.Sample(split.Train, perTask, seed + i), augmentPerTask, seed + i));
        }
        var target = first with
        {
            HiddenSizes = width ?? first.HiddenSizes,
            Heads = sources.SelectMany(s => s.Config.Heads).ToList(),
            Training = new(),
        };
        if (width != null && first.Architecture != "mlp")
            throw new FsMergeException("--width applies to MLP merges only");
        var heldOut = heldOutPerTask > 0 ? splits.Select((s, i) => MergeData.Sample(s.Validation, heldOutPerTask, seed + 100 + i)).ToList() : null;
        return new MergePlan { Sources = sources, Tasks = tasks, Data = data, HeldOut = heldOut, Splits = splits, Target = target };
    }

    public MergeInputs Inputs(Device device, long seed, MergeProgress? progress, TrainingCheckpoints? checkpoints = null) =>
        new() { Sources = Sources, Data = Data, HeldOut = HeldOut, Target = Target, Device = device, Seed = seed, Progress = progress, Checkpoints = checkpoints };

    public List<ImageSet> TestSets() => Splits.Select(s => s.Test).ToList();
}
