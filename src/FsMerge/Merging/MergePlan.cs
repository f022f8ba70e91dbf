using FsMerge.Data;
using FsMerge.Models;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// Checks that the sources can be merged and gathers their tasks and merge data: the shared steps of
/// `fsmerge merge` and the benches.
/// </summary>
internal sealed class MergePlan
{
    public required IReadOnlyList<Model> Sources { get; init; }
    public required IReadOnlyList<string> Tasks { get; init; }
    public required IReadOnlyList<ImageSet> Data { get; init; }
    /// <summary>Labelled test images per task (labels index that task's head); empty when not loaded.</summary>
    public required IReadOnlyList<ImageSet> Tests { get; init; }
    /// <summary>Unlabeled held-out samples per task for early stopping, from the validation split (null when none asked).</summary>
    public IReadOnlyList<ImageSet>? HeldOut { get; init; }
    public required ModelConfig Target { get; init; }
    /// <summary>What the plan changed that the log and report should say (sources re-expressed for model 1's preprocessing).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>Sources given by directory with their tasks' train splits as merge data (the benches and the demo).</summary>
    public static MergePlan Prepare(IReadOnlyList<Model> sources, IReadOnlyList<string> names, IReadOnlyList<string> taskOverrides,
        string dataDir, int perTask, long seed, int[]? width, Device device, int augmentPerTask = 0, int heldOutPerTask = 0)
    {
        if (taskOverrides.Count > 0 && taskOverrides.Count != sources.Count)
            throw new FsMergeException($"fsmerge merge: {taskOverrides.Count} --task given for {sources.Count} models; give one per model or none");
        var tasks = Enumerable.Range(0, sources.Count)
            .Select(i => taskOverrides.Count > 0 ? TaskSpec.Parse(taskOverrides[i]).ToString() : sources[i].Config.Heads[0].Task).ToList();
        var data = new List<ImageSet>();
        var tests = new List<ImageSet>();
        var heldOut = new List<ImageSet>();
        for (int i = 0; i < sources.Count; i++)
        {
            var split = TaskData.Load(TaskSpec.Parse(tasks[i]), dataDir);
            CheckClasses(sources[i], names[i], split.Train, $"task {tasks[i]}");
            data.Add(MergeData.Sample(split.Train, perTask, seed + i));
            tests.Add(split.Test);
            if (heldOutPerTask > 0) heldOut.Add(MergeData.Sample(split.Validation, heldOutPerTask, seed + 100 + i));
        }
        return FromData(sources, names, tasks, data, tests, width, augmentPerTask, seed, heldOutPerTask > 0 ? heldOut : null);
    }

    /// <summary>
    /// Checks that the sources can be merged into one model (same architecture and depth, one head each)
    /// and that each source's images fit it. <paramref name="data"/>[i] holds source i's unlabeled merge
    /// images; n originals are followed by <paramref name="augmentPerTask"/> augmented ones (spec §11.2-11.3).
    /// <paramref name="heldOut"/>: unlabeled held-out samples per task for early stopping, or null.
    /// </summary>
    public static MergePlan FromData(IReadOnlyList<Model> sources, IReadOnlyList<string> names, IReadOnlyList<string> tasks,
        IReadOnlyList<ImageSet> data, IReadOnlyList<ImageSet> tests, int[]? width, int augmentPerTask, long seed,
        IReadOnlyList<ImageSet>? heldOut = null)
    {
        var first = sources[0].Config;
        for (int i = 0; i < sources.Count; i++)
        {
            var c = sources[i].Config;
            if (c.Architecture != first.Architecture)
                throw new FsMergeException($"{names[i]}: architecture {c.Architecture} differs from model 1's {first.Architecture}");
            if (c.Heads.Count != 1)
                throw new FsMergeException($"{names[i]}: has {c.Heads.Count} heads; merge sources must be single-task models");
            // One input for all: every task's texts are tokenized as model 1 tokenizes them.
            if (c.Architecture == "bert" && !c.TokenizesLike(first))
                throw new FsMergeException($"{names[i]}: tokenizes otherwise than model 1 (vocab.txt, or tokenizer_config.json: {c.DescribeTokenizer()} against {first.DescribeTokenizer()}); merge sources must tokenize alike (--max-length sets one length for all)");
        }
        // Every source reads every task's images (probes, ensembles), and the merged model has one input: model 1's
        // preprocessing. A source that normalizes otherwise is re-expressed for it, exactly, so it computes its own
        // target features as on its own preprocessing.
        var notes = new List<string>();
        var readers = sources.ToList();
        for (int i = 1; i < sources.Count; i++)
        {
            if (sources[i].Config.Preprocessor.Equals(first.Preprocessor)) continue;
            readers[i] = sources[i].ReadingInputOf(first.Preprocessor)
                ?? throw new FsMergeException($"{names[i]}: its {ImageProcessor.FileName} resizes or converts images otherwise than model 1's; merge sources must agree on size, resample and RGB conversion");
            notes.Add($"{names[i]} normalizes images otherwise than model 1; its pixel layer was re-expressed for model 1's preprocessing (exact), which the merged model keeps");
        }
        sources = readers;
        // Augmentation works on [0, 1] images; the sources' preprocessing (resize, normalization) follows it.
        var composed = data.Select((d, i) => first.Prepare(MergeDataSet.Compose(d, augmentPerTask, seed + i), $"{names[i]}: merge data")).ToList();
        tests = tests.Select((t, i) => first.Prepare(t, $"{names[i]}: test data")).ToList();
        heldOut = heldOut?.Select((h, i) => first.Prepare(h, $"{names[i]}: held-out data")).ToList();
        for (int i = 0; i < sources.Count; i++)
        {
            var c = sources[i].Config;
            c.CheckImages(composed[i].Images.shape, $"{names[i]}: merge data for {tasks[i]}");
            if (i < tests.Count)
            {
                c.CheckImages(tests[i].Images.shape, $"{names[i]}: test data for {tasks[i]}");
                CheckClasses(sources[i], names[i], tests[i], $"the test data of {tasks[i]}");
            }
        }
        if (width != null && first.Architecture != "mlp")
            throw new FsMergeException("width applies to MLP merges only");
        var target = first with
        {
            HiddenSizes = width ?? first.HiddenSizes,
            Heads = sources.Select((s, i) => s.Config.Heads[0] with { Task = tasks[i] }).ToList(),
            Training = new(),
        };
        for (int i = 0; i < sources.Count; i++)
        {
            try
            {
                target.Arch.Sites([sources[i].Config], target);
            }
            catch (FsMergeException e)
            {
                throw new FsMergeException($"{names[i]}: cannot be merged with model 1 ({e.Message})");
            }
        }
        return new MergePlan { Notes = notes, Sources = sources, Tasks = tasks, Data = composed, Tests = tests, HeldOut = heldOut, Target = target };
    }

    /// <summary>Labelled images must name classes the source's head has.</summary>
    public static void CheckClasses(Model source, string name, ImageSet set, string what)
    {
        int classes = source.Config.Heads[0].Labels.Length;
        if (set.LabelNames.Length != classes)
            throw new FsMergeException($"{name}: its head has {classes} classes but {what} has {set.LabelNames.Length} ({string.Join(", ", set.LabelNames.Take(12))}{(set.LabelNames.Length > 12 ? ", ..." : "")})");
    }

    public MergeInputs Inputs(Device device, long seed, MergeProgress? progress, TrainingCheckpoints? checkpoints = null, Action<string>? log = null) =>
        new() { Sources = Sources, Data = Data, HeldOut = HeldOut, Target = Target, Device = device, Seed = seed, Progress = progress, Checkpoints = checkpoints, Log = log };

}
