using FsMerge.Models;
using TorchSharp;

namespace FsMerge.Data;

/// <summary>Tokenized texts as token ids [n, L] with class ids 0..K-1, before any split or filtering.</summary>
internal sealed class RawTokens : IRawSamples
{
    public required long[] Ids { get; init; }
    public required long[] Labels { get; init; }
    public required int Length { get; init; }
    public int Count => Labels.Length;

    public ImageSet Select(IReadOnlyList<int> indices, long[]? relabel, string[] labelNames)
    {
        var ids = new long[(long)indices.Count * Length];
        var labels = new long[indices.Count];
        for (int i = 0; i < indices.Count; i++)
        {
            Array.Copy(Ids, (long)indices[i] * Length, ids, (long)i * Length, Length);
            labels[i] = relabel is null ? Labels[indices[i]] : relabel[Labels[indices[i]]];
        }
        return new ImageSet(torch.tensor(ids, new long[] { indices.Count, Length }, dtype: torch.ScalarType.Int64), labels, labelNames);
    }
}

/// <summary>
/// A text dataset: <c>NAME/vocab.txt</c> (WordPiece, see <see cref="WordPiece"/>) and
/// <c>NAME/train/CLASS.txt</c>, <c>NAME/test/CLASS.txt</c> with one example per line (UTF-8; blank lines
/// skipped). Classes are the train file names without ".txt" in ordinal order; test must have the same
/// files. Every example is encoded as [CLS] pieces… [SEP], truncated or padded with [PAD] to
/// <see cref="SequenceLength"/> tokens: a sample is int64 token ids [L].
/// </summary>
internal static class TextFolder
{
    public const int SequenceLength = 32;
    public const string VocabFile = "vocab.txt";

    /// <summary>The largest class file or vocab.txt read (each is read whole).</summary>
    public const long MaxFileBytes = 256 << 20;

    public static bool IsText(string folder) =>
        File.Exists(Path.Combine(folder, VocabFile)) || (Directory.Exists(Path.Combine(folder, "train"))
            && Directory.EnumerateFiles(Path.Combine(folder, "train"), "*.txt").Any());

    internal static RawDataset Read(string folder)
    {
        var vocab = WordPiece.Read(Path.Combine(folder, VocabFile));
        var trainDir = Path.Combine(folder, "train");
        var testDir = Path.Combine(folder, "test");
        foreach (var dir in new[] { trainDir, testDir })
            if (!Directory.Exists(dir))
                throw new FsMergeException($"{dir}: folder not found; a text dataset needs train/CLASS.txt and test/CLASS.txt files (one example per line) and vocab.txt");
        var names = Directory.GetFiles(trainDir, "*.txt").Select(f => Path.GetFileNameWithoutExtension(f)!)
            .Order(StringComparer.Ordinal).ToArray();
        if (names.Length == 0) throw new FsMergeException($"{trainDir}: no CLASS.txt files");
        var testNames = Directory.GetFiles(testDir, "*.txt").Select(f => Path.GetFileNameWithoutExtension(f)!).Order(StringComparer.Ordinal);
        if (!testNames.SequenceEqual(names))
            throw new FsMergeException($"{testDir}: class files ({string.Join(", ", testNames)}) differ from train/ ({string.Join(", ", names)})");
        return new RawDataset(folder, Encode(trainDir, names, vocab), Encode(testDir, names, vocab), names);
    }

    /// <summary>The examples of every class file in a split, in file order, class after class; a class with none is an error.</summary>
    public static List<(string Text, int Label)> Lines(string dir, IReadOnlyList<string> names)
    {
        var examples = new List<(string, int)>();
        for (int c = 0; c < names.Count; c++)
        {
            var file = Path.Combine(dir, names[c] + ".txt");
            int before = examples.Count;
            foreach (var line in InputFile.ReadAllLines(file, "a class file (one example per line)", MaxFileBytes))
                if (line.Trim().Length > 0) examples.Add((line, c));
            if (examples.Count == before)
                throw new FsMergeException($"{file}: no examples (the file has no non-blank line); every class needs at least one, one per line");
        }
        return examples;
    }

    /// <summary>A vocab.txt's text, to compare two vocabularies.</summary>
    static string VocabText(string path) => InputFile.ReadAllText(path, "a WordPiece vocab.txt", MaxFileBytes);

    /// <summary>The vocabulary a text dataset is tokenized with.</summary>
    public static WordPiece Vocabulary(string dataDir, string dataset) => WordPiece.Read(Path.Combine(dataDir, dataset, VocabFile));

    /// <summary>A BERT config for the vocabulary of <paramref name="dataset"/> (positions = <see cref="SequenceLength"/>).</summary>
    public static ModelConfig BertConfig(string dataDir, string dataset, int width, int depth, int heads, int intermediate, List<HeadInfo> taskHeads)
    {
        var vocab = Vocabulary(dataDir, dataset);
        var config = new ModelConfig
        {
            Architecture = "bert", VocabSize = vocab.Count, MaxPositionEmbeddings = SequenceLength, TypeVocabSize = 2, PadTokenId = vocab.PadId,
            HiddenSize = width, NumHiddenLayers = depth, NumAttentionHeads = heads, IntermediateSize = intermediate, LayerNormEps = 1e-12,
            Heads = taskHeads,
        };
        Bert.Validate(config);
        return config;
    }

    /// <summary>The pooled train splits (never validation or test) of text datasets that share one vocab.txt, as token ids [n, L].</summary>
    public static torch.Tensor Corpus(string dataDir, IReadOnlyList<string> datasets)
    {
        var first = VocabText(Path.Combine(dataDir, datasets[0], VocabFile));
        foreach (var name in datasets.Skip(1))
            if (VocabText(Path.Combine(dataDir, name, VocabFile)) != first)
                throw new FsMergeException($"{Path.Combine(dataDir, name, VocabFile)} differs from {datasets[0]}'s: a pooled corpus needs one vocabulary");
        var parts = datasets.Select(name =>
        {
            using var splits = TaskData.Load(TaskSpec.Parse(name), dataDir);
            return splits.Train.Images.clone();
        }).ToArray();
        return torch.cat(parts, 0);
    }

    /// <summary>
    /// Fails when a model directory carries a vocab.txt that is not the dataset's: its token ids would mean
    /// other words. Models without vocab.txt, or image datasets, are not checked.
    /// </summary>
    public static void CheckVocabulary(string modelDir, string dataDir, string dataset)
    {
        var own = Path.Combine(modelDir, VocabFile);
        var data = Path.Combine(dataDir, dataset, VocabFile);
        if (Path.Exists(own) && Path.Exists(data) && VocabText(own) != VocabText(data))
            throw new FsMergeException($"{own} differs from {data}: the model was trained with another vocabulary than task data '{dataset}' uses");
    }

    /// <summary>
    /// <see cref="CheckVocabulary"/>, and the model folder's tokenizer settings must be the ones the data was
    /// tokenized with (<see cref="TokenizerFiles.Check"/>): for data fed to a model as it stands (eval, merge).
    /// </summary>
    public static void CheckTokenizer(string modelDir, string dataDir, string dataset)
    {
        if (!IsText(Path.Combine(dataDir, dataset))) return;
        CheckVocabulary(modelDir, dataDir, dataset);
        TokenizerFiles.Check(modelDir);
    }

    /// <summary>Writes the tokenizer files of <paramref name="fromDir"/>'s vocab.txt next to a saved model's config.json, when there is one.</summary>
    public static void CopyVocabulary(string fromDir, string modelDir)
    {
        var source = Path.Combine(fromDir, VocabFile);
        if (File.Exists(source)) TokenizerFiles.Write(modelDir, WordPiece.Read(source).Tokens);
    }

    static RawTokens Encode(string dir, string[] names, WordPiece vocab)
    {
        var examples = Lines(dir, names);
        var ids = new long[(long)examples.Count * SequenceLength];
        for (int i = 0; i < examples.Count; i++)
            vocab.Encode(examples[i].Text, SequenceLength).CopyTo(ids, (long)i * SequenceLength);
        return new RawTokens { Ids = ids, Labels = examples.Select(e => (long)e.Label).ToArray(), Length = SequenceLength };
    }
}
