using System.Globalization;
using System.Text;

namespace FsMerge.Data;

/// <summary>
/// BERT's WordPiece tokenizer over a standard <c>vocab.txt</c> (one token per line, id = line index).
/// Basic tokenization as Hugging Face's BertTokenizer: control characters dropped, whitespace splits
/// words, every punctuation character is a word of its own, text lower-cased (accents are kept, as with
/// <c>strip_accents=False</c>: they carry the language). Each word is then split greedily into the longest
/// vocabulary pieces, continuation pieces prefixed "##"; a word with no split (or over 100 characters)
/// becomes [UNK]. Encoded sequences are [CLS] pieces… [SEP], truncated and padded with [PAD] to a fixed length.
/// </summary>
internal sealed class WordPiece
{
    public const string Pad = "[PAD]", Unknown = "[UNK]", Cls = "[CLS]", Sep = "[SEP]", Mask = "[MASK]";
    public static readonly string[] Specials = [Pad, Unknown, Cls, Sep, Mask];
    public const int MaxWordChars = 100;

    readonly Dictionary<string, int> ids;
    public IReadOnlyList<string> Tokens { get; }
    public int PadId => ids[Pad];
    public int UnknownId => ids[Unknown];
    public int ClsId => ids[Cls];
    public int SepId => ids[Sep];
    public int MaskId => ids[Mask];
    public int Count => Tokens.Count;

    public WordPiece(IReadOnlyList<string> tokens, string source = "vocabulary")
    {
        Tokens = tokens;
        ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++)
        {
            if (tokens[i].Length == 0) throw new FsMergeException($"{source}: line {i + 1} is empty; expected one token per line");
            if (!ids.TryAdd(tokens[i], i)) throw new FsMergeException($"{source}: token '{tokens[i]}' appears twice (lines {ids[tokens[i]] + 1} and {i + 1})");
        }
        var missing = Specials.Where(s => !ids.ContainsKey(s)).ToList();
        if (missing.Count > 0) throw new FsMergeException($"{source}: special token(s) {string.Join(", ", missing)} missing (expected {string.Join(", ", Specials)})");
    }

    public static WordPiece Read(string path)
    {
        var lines = InputFile.ReadAllLines(path, "a WordPiece vocab.txt, one token per line", TextFolder.MaxFileBytes).ToList();
        while (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        return new WordPiece(lines, path);
    }

    public void Write(string path) => AtomicFile.WriteAllText(path, string.Join("\n", Tokens) + "\n");

    /// <summary>Basic tokenization: lower-cased words, punctuation split off (see the class summary).</summary>
    public static List<string> Words(string text)
    {
        var words = new List<string>();
        var current = new StringBuilder();
        void Flush()
        {
            if (current.Length > 0) words.Add(current.ToString());
            current.Clear();
        }
        foreach (var ch in text.Normalize(NormalizationForm.FormC).ToLowerInvariant())
        {
            if (ch == 0 || ch == 0xFFFD || (char.IsControl(ch) && !char.IsWhiteSpace(ch))) continue;
            if (char.IsWhiteSpace(ch)) Flush();
            else if (IsPunctuation(ch))
            {
                Flush();
                words.Add(ch.ToString());
            }
            else current.Append(ch);
        }
        Flush();
        return words;
    }

    /// <summary>BERT's rule: ASCII symbols count as punctuation, as does every Unicode P* category.</summary>
    static bool IsPunctuation(char ch) =>
        ch is >= '!' and <= '/' or >= ':' and <= '@' or >= '[' and <= '`' or >= '{' and <= '~'
        || char.GetUnicodeCategory(ch) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    /// <summary>The WordPiece tokens of <paramref name="text"/> (no [CLS]/[SEP]).</summary>
    public List<string> Tokenize(string text)
    {
        var result = new List<string>();
        foreach (var word in Words(text))
        {
            if (word.Length > MaxWordChars) { result.Add(Unknown); continue; }
            var pieces = new List<string>();
            int start = 0;
            while (start < word.Length)
            {
                string? found = null;
                for (int end = word.Length; end > start; end--)
                {
                    var piece = (start > 0 ? "##" : "") + word[start..end];
                    if (ids.ContainsKey(piece)) { found = piece; break; }
                }
                if (found is null) { pieces = [Unknown]; break; }
                pieces.Add(found);
                start += found.Length - (start > 0 ? 2 : 0);
            }
            result.AddRange(pieces);
        }
        return result;
    }

    /// <summary>[CLS] ids… [SEP], truncated to <paramref name="length"/> (keeping the final [SEP]) and padded with [PAD].</summary>
    public long[] Encode(string text, int length)
    {
        if (length < 2) throw new FsMergeException($"sequence length {length}: expected at least 2 ([CLS] and [SEP])");
        var pieces = Tokenize(text).Take(length - 2).Select(t => (long)ids[t]);
        var sequence = new long[length];
        Array.Fill(sequence, PadId);
        int i = 0;
        sequence[i++] = ClsId;
        foreach (var id in pieces) sequence[i++] = id;
        sequence[i] = SepId;
        return sequence;
    }

    /// <summary>
    /// A vocabulary for our own models, built from a corpus by frequency (not Google's likelihood-based
    /// WordPiece training): the special tokens, every character seen at least <paramref name="minCount"/>
    /// times (as a word start and as a "##" continuation), then the word prefixes and "##" continuations of
    /// 2-8 characters with the largest (occurrences × characters saved), up to <paramref name="size"/> tokens.
    /// Ties break by ordinal order, so the same corpus always gives the same file.
    /// </summary>
    public static WordPiece Build(IEnumerable<string> corpus, int size, int minCount = 2)
    {
        var wordCounts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var text in corpus)
            foreach (var w in Words(text))
                if (w.Length <= MaxWordChars) wordCounts[w] = wordCounts.GetValueOrDefault(w) + 1;
        var chars = new Dictionary<string, long>(StringComparer.Ordinal);
        var pieces = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (word, count) in wordCounts)
        {
            for (int i = 0; i < word.Length; i++)
            {
                var c = (i > 0 ? "##" : "") + word[i];
                chars[c] = chars.GetValueOrDefault(c) + count;
            }
            for (int len = 2; len <= Math.Min(8, word.Length); len++)
                pieces[word[..len]] = pieces.GetValueOrDefault(word[..len]) + count * (len - 1);
            for (int start = 1; start < word.Length; start++)
                for (int len = 2; len <= Math.Min(8, word.Length - start); len++)
                {
                    var p = "##" + word.Substring(start, len);
                    pieces[p] = pieces.GetValueOrDefault(p) + count * (len - 1);
                }
        }
        var tokens = new List<string>(Specials);
        tokens.AddRange(chars.Where(kv => kv.Value >= minCount).Select(kv => kv.Key).Order(StringComparer.Ordinal));
        if (tokens.Count > size)
            throw new FsMergeException($"vocabulary size {size} is smaller than the {tokens.Count} special tokens and characters of the corpus");
        tokens.AddRange(pieces.Where(kv => kv.Value >= minCount).OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)
            .Take(size - tokens.Count).Select(kv => kv.Key));
        return new WordPiece(tokens);
    }
}
