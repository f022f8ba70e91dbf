using FsMerge.Data;

namespace FsMerge.Runs;

/// <summary>
/// Where a source's images come from: <see cref="Kind"/> names a reader in <see cref="DataSources"/>
/// ("task": a dataset task such as mnist:0-4 read from the data folder; "images": a folder of images;
/// "idx": an IDX image file) and <see cref="Value"/> is what that reader takes.
/// </summary>
public sealed record DataSource(string Kind, string Value)
{
    public override string ToString() => $"{Kind}: {Value}";
}

/// <summary>One source model of a merge run, in merge order.</summary>
public sealed record SourceRequest
{
    /// <summary>A Hugging Face-style model directory (config.json + model.safetensors or a sharded index).</summary>
    public required string Model { get; init; }
    /// <summary>The task's name; null = the task recorded in the model's config.json.</summary>
    public string? Task { get; init; }
    /// <summary>Unlabeled merge images; null = the train split of <see cref="Task"/>.</summary>
    public DataSource? Data { get; init; }
    /// <summary>How many merge images to draw from <see cref="Data"/>.</summary>
    public int Samples { get; init; } = MergeRequest.DefaultSamples;
    /// <summary>Labelled evaluation images; null = the test split of <see cref="Task"/>.</summary>
    public DataSource? Test { get; init; }
    /// <summary>
    /// Unlabeled merge data held in memory instead of <see cref="Data"/>: images [n, C, H, W] float32 in [0, 1] (int64
    /// token ids [n, L] for BERT). <see cref="Samples"/> are drawn from it, and the held-out ones after them. The caller
    /// keeps ownership: the merge copies what it uses.
    /// </summary>
    public TorchSharp.torch.Tensor? Images { get; init; }
    /// <summary>Labelled evaluation data held in memory instead of <see cref="Test"/> (for <see cref="MergeRequest.Eval"/>); the caller keeps ownership.</summary>
    public ImageSet? TestImages { get; init; }
}

/// <summary>
/// Everything that describes one merge run, built from command-line flags or a YAML file
/// (<see cref="MergeRequestFile"/>), flags overriding the file. Nothing here is loaded yet:
/// <see cref="PreparedMerge.Prepare"/> checks and loads it.
/// </summary>
public sealed record MergeRequest
{
    public const int DefaultSamples = 64;
    public const int DefaultHeldOut = 32;

    /// <summary>The most merge, augmented or held-out images per task (each is kept in memory as float32).</summary>
    public const int MaxImagesPerTask = 1 << 16;

    public IReadOnlyList<SourceRequest> Sources { get; init; } = [];
    /// <summary>The merge method (<see cref="Merging.MergeMethods"/>); unset, the method of typed <see cref="Options"/>, else fs-merge.</summary>
    public string Method { get => method ?? (Options as MethodOptions)?.Method ?? "fs-merge"; init => method = value; }
    readonly string? method;
    /// <summary>
    /// Method options: typed (<see cref="FsMergeOptions"/>, <see cref="RegMeanOptions"/>, ...), or by name as on the
    /// command line without "--" with their values as text; the method checks them. Options not given take the method's
    /// defaults for the sources' architecture.
    /// </summary>
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();
    /// <summary>Where each of <see cref="Options"/> was given: "flag" or "config file".</summary>
    public IReadOnlyDictionary<string, string> OptionOrigins { get; init; } = new Dictionary<string, string>();
    public long Seed { get; init; } = 1;
    /// <summary>CPU threads for LibTorch; 0 = <see cref="TorchRuntime.DefaultThreads"/>.</summary>
    public int Threads { get; init; }
    public string Device { get; init; } = "cpu";
    /// <summary>Output directory; required unless the run is a dry run.</summary>
    public string? Output { get; init; }
    public bool Overwrite { get; init; }
    /// <summary>Augmented images per task made from the originals (spec §11.3).</summary>
    public int Augment { get; init; }
    /// <summary>
    /// Unlabeled held-out samples per task, drawn from the same data as the merge samples and never trained on:
    /// they score --lr auto, the label-free estimate and a method's early stopping (spec §6); 0 = none.
    /// </summary>
    public int HeldOut { get; init; } = DefaultHeldOut;
    /// <summary>Merged MLP hidden widths; null = model 1's.</summary>
    public int[]? Width { get; init; }
    /// <summary>BERT: tokens per sequence for every source and the merged model; null = the sources' own (tokenizer_config.json).</summary>
    public int? MaxLength { get; init; }
    /// <summary>Evaluate the result on each source's labelled test data after merging.</summary>
    public bool Eval { get; init; }
    /// <summary>The data folder for "task" sources; null = $FSMERGE_DATA, else data/ in the repository.</summary>
    public string? DataDir { get; init; }
    /// <summary>With <see cref="Output"/>: save a training checkpoint every this many steps (and at each phase end and on cancellation) in OUTPUT.partial/.</summary>
    public int CheckpointEvery { get; init; } = DefaultCheckpointEvery;
    public const int DefaultCheckpointEvery = 200;
    /// <summary>Continue an interrupted run from its checkpoints in OUTPUT.partial/ (same models, data and options).</summary>
    public bool Resume { get; init; }
    /// <summary>The saved weights' dtype: float32, float16 or bfloat16; null = the sources' (float32 when they differ).</summary>
    public string? DType { get; init; }
    /// <summary>Largest safetensors shard in bytes: a bigger model is saved as Hugging Face shards with an index; null = one file.</summary>
    public long? ShardSize { get; init; }
}
