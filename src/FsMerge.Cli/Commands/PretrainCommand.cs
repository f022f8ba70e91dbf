using System.Diagnostics;
using FsMerge.Data;
using FsMerge.Models;
using FsMerge.Runs;
using FsMerge.Training;

namespace FsMerge.Cli.Commands;

sealed class PretrainCommand : ICommand
{
    public string Name => "pretrain";
    public string Summary => "pre-train a BERT backbone by masked-language modelling on the pooled train text of text datasets (no task head)";
    public string Usage => "pretrain --corpus lang,fortunes --seed S --out DIR [options]; then fsmerge train --init DIR --task TASK";

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("corpus", "NAME,NAME", "text datasets whose train splits form the corpus (they must share vocab.txt)", "lang,fortunes"),
        new("seed", "S", "seed of the initialization, the masking and the data order", "1", Short: "-s"),
        new("out", "DIR", "output directory (config.json, model.safetensors, vocab.txt), written whole at the end", Short: "-o"),
        new("overwrite", null, "replace an existing output directory"),
        new("epochs", "N", "passes over the corpus", "3"),
        new("lr", "LR", "peak learning rate of AdamW (warm-up 5% of steps, then cosine)", "0.001"),
        new("batch", "B", "batch size", "128"),
        new("weight-decay", "WD", "AdamW decoupled weight decay", "0.01"),
        new("width", "D", "hidden_size", "64"),
        new("depth", "L", "encoder blocks", "4"),
        new("heads", "H", "attention heads", "4"),
        new("mlp-width", "DM", "intermediate_size", "256"),
        Common.Data, Common.Device, Common.Threads, Common.Quiet,
    ];

    public int Run(ParsedArgs args)
    {
        var device = Common.Setup(args);
        var dataDir = Common.DataDir(args);
        var datasets = args.Require("corpus").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (datasets.Length == 0) throw new FsMergeException("fsmerge pretrain: --corpus names no dataset");
        var outDir = args.Require("out");
        OutputWriter.CheckOutput(outDir, args.Has("overwrite"), []);
        var options = new TrainOptions
        {
            Epochs = args.Int("epochs", min: 1), LearningRate = args.Double("lr"), BatchSize = args.Int("batch", min: 1),
            WeightDecay = args.Double("weight-decay"), Seed = args.Int("seed"),
        };
        var config = TextFolder.BertConfig(dataDir, datasets[0], TrainCommand.Width(args, "width"), args.Int("depth", min: 1, max: ModelConfig.MaxLayers),
            TrainCommand.Width(args, "heads"), TrainCommand.Width(args, "mlp-width"), []);
        var vocab = TextFolder.Vocabulary(dataDir, datasets[0]);
        using var corpus = TextFolder.Corpus(dataDir, datasets);
        Console.WriteLine($"masked-language pre-training of a BERT (width {config.HiddenSize}, depth {config.NumHiddenLayers}) on {corpus.shape[0]} sequences of {string.Join(", ", datasets)}");
        var clock = Stopwatch.StartNew();
        var (model, _) = MlmPretrainer.Train(config, corpus, [vocab.PadId, vocab.ClsId, vocab.SepId], vocab.MaskId, options, device,
            (epoch, loss) => Console.WriteLine($"epoch {epoch}: masked-token loss {loss:F4}"));
        using (model)
        {
            OutputWriter.Write(outDir, args.Has("overwrite"), dir => model.Save(dir));
        }
        Console.WriteLine($"saved {outDir} ({clock.Elapsed.TotalSeconds:F0} s)");
        return 0;
    }
}
