using FsMerge.Models;
using FsMerge.Data;
using TorchSharp;

namespace FsMerge.Cli.Commands;

/// <summary>Options every compute command takes, and their interpretation.</summary>
static class Common
{
    /// <summary>
    /// The architecture defaults as flags, <paramref name="quote"/> around each: "--type full", and a default for one
    /// method only ("fs-merge:init") as "--init auto (fs-merge)".
    /// </summary>
    public static string ArchitectureDefaults(string architecture, string quote = "") =>
        string.Join(", ", Architectures.Get(architecture).MergeDefaults.Select(kv => kv.Key.Split(':') is [var method, var option]
            ? $"{quote}--{option} {kv.Value}{quote} ({method})" : $"{quote}--{kv.Key} {kv.Value}{quote}"));

    public static readonly OptionSpec Data = new("data-dir", "DIR", "the datasets' folder (default: $FSMERGE_DATA, else data/ in the repository)", OldNames: ["data"]);
    public static readonly OptionSpec Device = new("device", "NAME", "cpu, cuda or cuda:N", "cpu");
    public static readonly OptionSpec Threads = new("threads", "N", "CPU threads for LibTorch (0 = one per physical core, waiting passively; docs/threads.md)", "0", Short: "-j");
    public static readonly OptionSpec Quiet = new("quiet", null, "no progress bars", Short: "-q");
    public static readonly OptionSpec MaxLength = new("max-length", "N",
        "BERT: tokens per sequence, [CLS] and [SEP]s included (default: the model's tokenizer_config.json model_max_length, else its max_position_embeddings; a new model: 32); at most max_position_embeddings");

    /// <summary>--max-length, when given: applied to a BERT's config (other architectures have no sequences).</summary>
    public static int? MaxLengthOf(ParsedArgs args) => args.Has("max-length") ? args.Int("max-length", min: 3, max: Models.ModelConfig.MaxPositions) : null;

    /// <summary>Applies --threads/--quiet and returns the device.</summary>
    public static torch.Device Setup(ParsedArgs args)
    {
        ProgressBar.Quiet = args.Has("quiet");
        TorchRuntime.Configure(args.Int("threads", min: 0, max: TorchRuntime.MaxThreads));
        return TorchRuntime.ParseDevice(args.Require("device"));
    }

    public static string DataDir(ParsedArgs args) => DataDirectory.Resolve(args.Get("data-dir"));

    public static string Percent(double accuracy) => (100 * accuracy).ToString("F2");
}
