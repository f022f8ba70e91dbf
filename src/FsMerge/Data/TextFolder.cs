using FsMerge.Models;
using TorchSharp;

namespace FsMerge.Data;

/// <summary>One example of a text dataset: a text, or a sentence pair (text_a, text_b).</summary>
internal sealed record TextExample(string A, string? B);

/// <summary>
/// The texts behind a set of token ids, with the vocabulary of their dataset: a model tokenizes them again with its own
/// <see cref="TokenizerSettings"/> and length (<see cref="ModelConfig.Prepare"/>), as images are resized and normalized
/// by the model's preprocessor.
/// </summary>
internal sealed record TextSamples(IReadOnlyList<TextExample> Examples, WordPiece Vocabulary)
{
    public TextSamples Select(IEnumerable<long> rows) => this with { Examples = rows.Select(r => Examples[(int)r]).ToList() };

    public TextSamples Slice(int start, int count) => this with { Examples = Examples.Skip(start).Take(count).ToList() };

    /// <summary>Token ids [n, <paramref name="length"/>] of the examples, each with its token types folded in (<see cref="Bert.PackTokenTypes"/>).</summary>
    public torch.Tensor Encode(WordPiece tokenizer, int length)
    {
        var ids = new long[(long)Examples.Count * length];
        for (int i = 0; i < Examples.Count; i++)
        {
            var (tokens, types) = tokenizer.Encode(Examples[i].A, Examples[i].B, length);
            Bert.PackTokenTypes(tokens, types).CopyTo(ids, (long)i * length);
        }
        return torch.tensor(ids, new long[] { Examples.Count, length }, dtype: torch.ScalarType.Int64);
    }

    /// <summary>
    /// <paramref name="set"/>'s texts tokenized as <paramref name="config"/> states: its tokenizer settings, sequence
    /// length and vocabulary (the dataset's when the model folder has no vocab.txt), as Hugging Face's tokenizer travels
    /// with its model. Takes over the set as <see cref="ImageProcessor.Apply"/> does.
    /// </summary>
    public ImageSet Prepare(ImageSet set, ModelConfig config, string what)
    {
        var tokenizer = new WordPiece(config.Vocabulary ?? Vocabulary.Tokens, what, config.Tokenizer);
        if (tokenizer.PadId != config.PadTokenId)
            throw new FsMergeException($"{what}: the tokenizer's pad token {config.Tokenizer.Pad} has id {tokenizer.PadId}, but config.json's pad_token_id is {config.PadTokenId}");
        var prepared = set with { Images = Encode(tokenizer, config.SequenceLength) };
        set.Images.Dispose();
        return prepared;
    }
}

/// <summary>Text examples with class ids 0..K-1, before any split or filtering; tokenized when selected.</summary>
internal sealed class RawTexts : IRawSamples
{
    public required List<TextExample> Examples { get; init; }
    public required long[] Labels { get; init; }
    public required WordPiece Vocabulary { get; init; }
    public int Count => Labels.Length;

    public ImageSet Select(IReadOnlyList<int> indices, long[]? relabel, string[] labelNames)
    {
        var texts = new TextSamples(indices.Select(i => Examples[i]).ToList(), Vocabulary);
        var labels = indices.Select(i => relabel is null ? Labels[i] : relabel[Labels[i]]).ToArray();
        return new ImageSet(texts.Encode(Vocabulary, TextFolder.SequenceLength), labels, labelNames) { Texts = texts };
    }
}

/// <summary>
/// A text dataset: <c>NAME/vocab.txt</c> (WordPiece, see <see cref="WordPiece"/>) and
/// <c>NAME/train/CLASS.txt</c>, <c>NAME/test/CLASS.txt</c> with one example per line (UTF-8; blank lines
/// skipped): a text, or a sentence pair as <c>text_a&lt;TAB&gt;text_b</c> (encoded [CLS] a [SEP] b [SEP], token types
/// 0 then 1). Classes are the train file names without ".txt" in ordinal order; test must have the same
/// files. A sample is int64 token ids [L]: as loaded, FsMerge's tokenization at <see cref="SequenceLength"/> tokens;
/// the texts travel along (<see cref="ImageSet.Texts"/>) and a model tokenizes them its own way.
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
        return new RawDataset(folder, Examples(trainDir, names, vocab), Examples(testDir, names, vocab), names);
    }

    /// <summary>The examples of every class file in a split, in file order, class after class; a class with none is an error.</summary>
    public static List<(TextExample Text, int Label)> Lines(string dir, IReadOnlyList<string> names)
    {
        var examples = new List<(TextExample, int)>();
        for (int c = 0; c < names.Count; c++)
        {
            var file = Path.Combine(dir, names[c] + ".txt");
            int before = examples.Count;
            int number = 0;
            foreach (var line in InputFile.ReadAllLines(file, "a class file (one example per line)", MaxFileBytes))
            {
                number++;
                if (line.Trim().Length == 0) continue;
                var parts = line.Split('\t');
                if (parts.Length > 2)
                    throw new FsMergeException($"{file}: line {number} has {parts.Length - 1} tabs; expected a text, or a sentence pair as text_a<TAB>text_b");
                examples.Add((new TextExample(parts[0], parts.Length == 2 ? parts[1] : null), c));
            }
            if (examples.Count == before)
                throw new FsMergeException($"{file}: no examples (the file has no non-blank line); every class needs at least one, one per line");
        }
        return examples;
    }

    /// <summary>A vocab.txt's text, to compare two vocabularies.</summary>
    static string VocabText(string path) => InputFile.ReadAllText(path, "a WordPiece vocab.txt", MaxFileBytes);

    /// <summary>The vocabulary a text dataset is tokenized with.</summary>
    public static WordPiece Vocabulary(string dataDir, string dataset) => WordPiece.Read(Path.Combine(dataDir, dataset, VocabFile));

    /// <summary>A BERT config for the vocabulary of <paramref name="dataset"/>, tokenizing FsMerge's way to <paramref name="maxLength"/> tokens (its positions).</summary>
    public static ModelConfig BertConfig(string dataDir, string dataset, int width, int depth, int heads, int intermediate, List<HeadInfo> taskHeads,
        int maxLength = SequenceLength)
    {
        var vocab = Vocabulary(dataDir, dataset);
        var config = new ModelConfig
        {
            Architecture = "bert", VocabSize = vocab.Count, MaxPositionEmbeddings = maxLength, TypeVocabSize = 2, PadTokenId = vocab.PadId,
            Vocabulary = vocab.Tokens, Tokenizer = TokenizerSettings.FsMerge with { MaxLength = maxLength },
            HiddenSize = width, NumHiddenLayers = depth, NumAttentionHeads = heads, IntermediateSize = intermediate, LayerNormEps = 1e-12,
            Heads = taskHeads,
        };
        Bert.Validate(config);
        return config;
    }

    /// <summary>The pooled train splits (never validation or test) of text datasets that share one vocab.txt, as token ids [n, L] without token types.</summary>
    public static torch.Tensor Corpus(string dataDir, IReadOnlyList<string> datasets)
    {
        var first = VocabText(Path.Combine(dataDir, datasets[0], VocabFile));
        foreach (var name in datasets.Skip(1))
            if (VocabText(Path.Combine(dataDir, name, VocabFile)) != first)
                throw new FsMergeException($"{Path.Combine(dataDir, name, VocabFile)} differs from {datasets[0]}'s: a pooled corpus needs one vocabulary");
        var parts = datasets.Select(name =>
        {
            using var splits = TaskData.Load(TaskSpec.Parse(name), dataDir);
            return Bert.UnpackTokenTypes(splits.Train.Images).Ids;   // masked-language targets are plain ids: a pair is one sequence
        }).ToArray();
        return torch.cat(parts, 0);
    }

    /// <summary>Writes the tokenizer files of <paramref name="fromDir"/>'s vocab.txt with <paramref name="config"/>'s tokenization next to a saved model's config.json, when there is one.</summary>
    public static void CopyVocabulary(string fromDir, string modelDir, ModelConfig config)
    {
        var source = Path.Combine(fromDir, VocabFile);
        if (File.Exists(source)) TokenizerFiles.Write(modelDir, WordPiece.Read(source).Tokens, config.Tokenizer, config.SequenceLength);
    }

    static RawTexts Examples(string dir, string[] names, WordPiece vocab)
    {
        var examples = Lines(dir, names);
        return new RawTexts { Examples = examples.Select(e => e.Text).ToList(), Labels = examples.Select(e => (long)e.Label).ToArray(), Vocabulary = vocab };
    }
}
