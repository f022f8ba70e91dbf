using System.Diagnostics;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Models;
using FsMerge.Runs;
using FsMerge.Training;

namespace FsMerge.Cli.Commands;

sealed class TrainCommand : ICommand
{
    public string Name => "train";
    public string Summary => "train a single-task source model (MLP, ViT or BERT) and save it Hugging Face-style (config.json + model.safetensors)";
    public string Usage => "train --arch mlp|vit|bert --task TASK --seed S --out DIR [options]";

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("arch", "mlp|vit|bert", "architecture (bert reads a text dataset: lang, fortunes, or your own text folder)", "mlp"),
        new("task", "TASK", "task to learn: mnist, fashion, mnist:0-4, fashion:5-9, mnist:0,3,7, lang:0-2, fortunes:0-1, or a folder name under the data folder", Short: "-t"),
        new("seed", "S", "seed of the initialization and the data order", "1", Short: "-s"),
        new("out", "DIR", "output model directory (written whole at the end: a stopped run leaves none)", Short: "-o"),
        new("overwrite", null, "replace an existing output directory"),
        new("epochs", "N", "training epochs", "2"),
        new("lr", "LR", "peak learning rate of AdamW (warm-up 5% of steps, then cosine)", "0.001"),
        new("batch", "B", "batch size (default: 10 for mlp, 128 for vit and bert)"),
        new("weight-decay", "WD", "AdamW decoupled weight decay", "0.01"),
        new("init", "DIR", "fine-tune from this checkpoint's backbone (a fresh head is made for the task); a classifier or a pre-trained backbone (ViTModel, BertModel, BertForMaskedLM)"),
        new("head", "linear|cosine", "the head: linear (W·f + b), or cosine (CLIP-like: a projection, L2 normalization, logit scale × cosine with each class; heads of equal scale are comparable in joint accuracy)", "linear"),
        new("logit-scale", "S", "cosine head: the logit scale", "16"),
        new("hidden", "W,W,..", "MLP hidden widths", "128,128"),
        new("patch", "P", "ViT patch size", "7"),
        new("width", "D", "ViT/BERT width (hidden_size)", "64"),
        new("depth", "L", "ViT/BERT encoder blocks", "4"),
        new("heads", "H", "ViT/BERT attention heads", "4"),
        new("mlp-width", "DM", "ViT/BERT MLP width (intermediate_size)", "256"),
        Common.MaxLength, Common.Data, Common.Device, Common.Threads, Common.Quiet,
    ];

    public int Run(ParsedArgs args)
    {
        var device = Common.Setup(args);
        var task = TaskSpec.Parse(args.Require("task"));
        var outDir = args.Require("out");
        OutputWriter.CheckOutput(outDir, args.Has("overwrite"), args.GetAll("init"));
        var options = new TrainOptions
        {
            Epochs = args.Int("epochs", min: 1),
            LearningRate = args.Double("lr"),
            BatchSize = args.Has("batch") ? args.Int("batch", min: 1) : args.Get("arch") is "vit" or "bert" ? 128 : 10,
            WeightDecay = args.Double("weight-decay"),
            Seed = args.Int("seed"),
        };
        var data = TaskData.Load(task, Common.DataDir(args));
        var arch = args.Require("arch");
        if (!Architectures.Names.Contains(arch))
            throw new FsMergeException($"fsmerge train: --arch '{arch}' is not one of: {string.Join(", ", Architectures.Names)}");

        using var initial = args.Get("init") is { } initDir
            ? FromCheckpoint(initDir, args, data, options.Seed, device).WithMaxLength(Common.MaxLengthOf(args), initDir)
            : Model.Create(NewConfig(args, arch, data), options.Seed, device);
        // The checkpoint's preprocessing (a new model's is the plain [0, 1] one) feeds every split.
        var config = initial.Config;
        data = data with
        {
            Train = config.Prepare(data.Train, $"task {task} train"),
            Validation = config.Prepare(data.Validation, $"task {task} validation"),
            Test = config.Prepare(data.Test, $"task {task} test"),
        };
        config.CheckImages(data.Train.Images.shape, $"task {task}");
        TrainAndSave(initial, data, options, args.Get("init"), outDir, args.Has("overwrite"), device,
            staging => TextFolder.CopyVocabulary(Path.Combine(Common.DataDir(args), task.Dataset), staging, config));
        return 0;
    }

    /// <summary>Trains with progress output, evaluates on the test split, records provenance, then writes the model
    /// (and <paramref name="alsoWrite"/>'s files) into a staging folder that is renamed to <paramref name="outDir"/>.</summary>
    public static double TrainAndSave(Model initial, TaskSplits data, TrainOptions options, string? initDir, string outDir, bool overwrite,
        TorchSharp.torch.Device device, Action<string>? alsoWrite = null)
    {
        var task = data.Task;
        Console.WriteLine($"training {initial.Config.Architecture} on {task}: {data.Train.Count} train, {data.Validation.Count} validation, {data.Test.Count} test images");

        var clock = Stopwatch.StartNew();
        var bar = new ProgressBar("", 1);
        var (model, history) = SourceTrainer.Train(initial, data, options, device,
            onStep: p =>
            {
                if (p.Step == 1) bar = new ProgressBar($"epoch {p.Epoch}/{p.Epochs}", p.StepsPerEpoch, "batches");
                bar.Report(p.Step, $"loss {p.Loss:F4} acc {Common.Percent(p.RunningAccuracy)}%");
            },
            onEpoch: e => Console.WriteLine($"epoch {e.Epoch}: train loss {e.TrainLoss:F4}, train acc {Common.Percent(e.TrainAccuracy)}%, validation acc {Common.Percent(e.ValidationAccuracy)}%"));
        using (model)
        {
            var (test, best) = SourceTrainer.Record(model, history, data, options, initDir, clock.Elapsed, device);
            OutputWriter.Write(outDir, overwrite, staging =>
            {
                model.Save(staging);
                alsoWrite?.Invoke(staging);
            });
            Console.WriteLine($"test accuracy on {task}: {Common.Percent(test)}% (best validation epoch {best}, {clock.Elapsed.TotalSeconds:F0} s)");
            Console.WriteLine($"saved {Path.Combine(outDir, Model.WeightsFile)}");
            return test;
        }
    }

    public static ModelConfig NewConfig(ParsedArgs args, string arch, TaskSplits data)
    {
        var backbone = BackboneConfig(args, arch, data);
        return backbone with { Heads = [Head(args, data, (int)backbone.Arch.FeatureWidth(backbone))] };
    }

    static ModelConfig BackboneConfig(ParsedArgs args, string arch, TaskSplits data)
    {
        var shape = data.Train.Images.shape;  // [n, C, H, W], or [n, L] token ids
        List<HeadInfo> heads = [];
        if ((arch == "bert") != (shape.Length == 2))
            throw new FsMergeException($"task {data.Task}: {(shape.Length == 2 ? "a text dataset needs --arch bert" : $"--arch {arch} reads text; {data.Task.Dataset} is an image dataset")}");
        if (arch == "bert")
            return TextFolder.BertConfig(Common.DataDir(args), data.Task.Dataset, Width(args, "width"), args.Int("depth", min: 1, max: ModelConfig.MaxLayers),
                Width(args, "heads"), Width(args, "mlp-width"), heads, Common.MaxLengthOf(args) ?? TextFolder.SequenceLength);
        if (arch == "mlp")
            return new ModelConfig { Architecture = "mlp", InputSize = (int)(shape[1] * shape[2] * shape[3]), HiddenSizes = args.IntList("hidden", ModelConfig.MaxWidth, ModelConfig.MaxLayers), Heads = heads };
        if (shape[2] != shape[3]) throw new FsMergeException($"task {data.Task}: ViT needs square images, got {shape[2]}x{shape[3]}");
        var config = new ModelConfig
        {
            Architecture = "vit",
            ImageSize = (int)shape[2],
            NumChannels = (int)shape[1],
            PatchSize = args.Int("patch", min: 1, max: ModelConfig.MaxImageSize),
            HiddenSize = Width(args, "width"),
            NumHiddenLayers = args.Int("depth", min: 1, max: ModelConfig.MaxLayers),
            NumAttentionHeads = Width(args, "heads"),
            IntermediateSize = Width(args, "mlp-width"),
            LayerNormEps = 1e-12,
            Heads = heads,
        };
        Vit.Patches(config); // validates patch and head divisibility
        return config;
    }

    /// <summary>A width option, within the bounds config.json allows.</summary>
    internal static int Width(ParsedArgs args, string name) => args.Int(name, min: 1, max: ModelConfig.MaxWidth);

    /// <summary>The task's head from --head and --logit-scale; a cosine head's embedding is as wide as the feature (null: the checkpoint's).</summary>
    static HeadInfo Head(ParsedArgs args, TaskSplits data, int featureWidth)
    {
        double scale = args.Double("logit-scale");
        if (!(scale > 0) || !double.IsFinite(scale)) throw new FsMergeException($"--logit-scale: expected a positive number, got {scale}");
        return HeadInfo.Create(HeadInfo.ParseKind(args.Get("head")!, "--head"), data.Task.ToString(), data.Train.LabelNames, featureWidth, scale);
    }

    /// <summary>Fine-tuning: the checkpoint's backbone and architecture, a fresh head for the new task.</summary>
    static Model FromCheckpoint(string dir, ParsedArgs args, TaskSplits data, long seed, TorchSharp.torch.Device device)
    {
        using var source = Model.Load(dir, device, freshSeed: seed);
        if (source.FreshWeights.Count > 0)
            Console.WriteLine($"note: {dir} has no {string.Join(", ", source.FreshWeights)}; initialized fresh for fine-tuning, as Hugging Face does");
        return source.WithFreshHead(Head(args, data, (int)source.Config.Arch.FeatureWidth(source.Config)), seed);
    }
}
