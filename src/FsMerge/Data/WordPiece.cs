using System.Globalization;
using System.Text;

namespace FsMerge.Data;

/// <summary>
/// Hugging Face BertTokenizer's settings, as tokenizer_config.json states them. <see cref="StripAccents"/> null
/// follows <see cref="LowerCase"/> (transformers' rule); <see cref="MaxLength"/> counts [CLS] and [SEP]s, null meaning
/// the model's max_position_embeddings.
/// </summary>
public sealed record TokenizerSettings
{
    public bool LowerCase { get; init; } = true;
    public bool? StripAccents { get; init; }
    public bool ChineseChars { get; init; } = true;
    public int? MaxLength { get; init; }
    public string Pad { get; init; } = "[PAD]";
    public string Unknown { get; init; } = "[UNK]";
    public string Cls { get; init; } = "[CLS]";
    public string Sep { get; init; } = "[SEP]";
    public string Mask { get; init; } = "[MASK]";

    public bool StripsAccents => StripAccents ?? LowerCase;
    public string[] Specials => [Pad, Unknown, Cls, Sep, Mask];

    /// <summary>transformers' defaults for a field tokenizer_config.json does not state.</summary>
    public static readonly TokenizerSettings HuggingFace = new();

    /// <summary>What FsMerge's own text data and models use: lower case, accents kept (they carry the language), no CJK spacing, 32 tokens.</summary>
    public static readonly TokenizerSettings FsMerge = new() { StripAccents = false, ChineseChars = false, MaxLength = TextFolder.SequenceLength };
}

/// <summary>
/// BERT's WordPiece tokenizer over a standard <c>vocab.txt</c> (one token per line, id = line index), giving the ids
/// Hugging Face's BertTokenizer gives for the same <see cref="TokenizerSettings"/>:
/// <list type="number">
/// <item>the special tokens ([CLS], [SEP], [PAD], [UNK], [MASK]) written in the text are kept whole;</item>
/// <item>clean-up: NUL, U+FFFD and other control/format characters (Unicode C*, except tab and newlines) dropped, whitespace (Zs, \t, \n, \r) made a space;</item>
/// <item>with tokenize_chinese_chars, spaces around every CJK ideograph; then NFC;</item>
/// <item>words split at whitespace; each word lower-cased (do_lower_case) and/or stripped of accents (NFD, nonspacing marks dropped);</item>
/// <item>every punctuation character a word of its own (ASCII 33-47, 58-64, 91-96, 123-126 and Unicode P*);</item>
/// <item>each word split greedily into the longest vocabulary pieces, continuations prefixed "##"; a word with no
/// complete split, or over 100 code points, is [UNK].</item>
/// </list>
/// Everything counts code points (Python's characters), not UTF-16 units. Encoded: [CLS] a [SEP] (b [SEP]), token
/// types 0 then 1, padded with [PAD].
/// <para>
/// Hand-written on purpose: Microsoft.ML.Tokenizers 3.0.0's BertTokenizer (the maintained package served here) gives
/// other ids than Hugging Face: it does not split the ASCII symbols $ + &lt; = &gt; ^ ` | ~ off as punctuation ("a$b" is one
/// word for it, three for BertTokenizer), treats a soft hyphen (U+00AD) or U+FFFD as a word break where Hugging Face
/// drops them ("a\u00ADb" is "a b" for it, "ab" for BertTokenizer), and drops CJK ideographs outside the BMP (U+20000)
/// instead of making them words. Tokenizers.DotNet (Hugging Face's Rust tokenizers) encodes a single text from a
/// tokenizer.json and nothing more (no pairs, token types or truncation rule), so it serves as the tests' oracle instead.
/// </para>
/// </summary>
internal sealed class WordPiece
{
    public const int MaxWordChars = 100;

    readonly Dictionary<string, int> ids;
    public IReadOnlyList<string> Tokens { get; }
    public TokenizerSettings Settings { get; }
    public int PadId => ids[Settings.Pad];
    public int UnknownId => ids[Settings.Unknown];
    public int ClsId => ids[Settings.Cls];
    public int SepId => ids[Settings.Sep];
    public int MaskId => ids[Settings.Mask];
    public int Count => Tokens.Count;

    public WordPiece(IReadOnlyList<string> tokens, string source = "vocabulary", TokenizerSettings? settings = null)
    {
        Tokens = tokens;
        Settings = settings ?? TokenizerSettings.FsMerge;
        ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++)
        {
            if (tokens[i].Length == 0) throw new FsMergeException($"{source}: line {i + 1} is empty; expected one token per line");
            if (!ids.TryAdd(tokens[i], i)) throw new FsMergeException($"{source}: token '{tokens[i]}' appears twice (lines {ids[tokens[i]] + 1} and {i + 1})");
        }
        var missing = Settings.Specials.Where(s => !ids.ContainsKey(s)).ToList();
        if (missing.Count > 0) throw new FsMergeException($"{source}: special token(s) {string.Join(", ", missing)} missing (expected {string.Join(", ", Settings.Specials)})");
    }

    /// <summary>The same vocabulary tokenizing with other settings.</summary>
    public WordPiece With(TokenizerSettings settings, string source = "vocabulary") => new(Tokens, source, settings);

    public static WordPiece Read(string path, TokenizerSettings? settings = null)
    {
        var lines = InputFile.ReadAllLines(path, "a WordPiece vocab.txt, one token per line", TextFolder.MaxFileBytes).ToList();
        while (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        return new WordPiece(lines, path, settings);
    }

    public void Write(string path) => AtomicFile.WriteAllText(path, string.Join("\n", Tokens) + "\n");

    /// <summary>Basic tokenization (steps 1-5 of the class summary): the words WordPiece then splits.</summary>
    public List<string> Words(string text)
    {
        var words = new List<string>();
        int start = 0;
        // Special tokens written in the text stay whole; the longest one wins where several start at one place.
        for (int i = 0; i < text.Length; i++)
        {
            var special = Settings.Specials.Where(s => string.CompareOrdinal(text, i, s, 0, s.Length) == 0).MaxBy(s => s.Length);
            if (special is null) continue;
            words.AddRange(BasicWords(text[start..i], Settings));
            words.Add(special);
            i += special.Length - 1;
            start = i + 1;
        }
        words.AddRange(BasicWords(text[start..], Settings));
        return words;
    }

    static List<string> BasicWords(string text, TokenizerSettings settings)
    {
        var words = new List<string>();
        var cleaned = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes())
        {
            int cp = rune.Value;
            if (cp == 0 || cp == 0xFFFD || IsControl(rune)) continue;
            if (IsWhitespace(rune)) cleaned.Append(' ');
            else if (settings.ChineseChars && IsCjk(cp)) cleaned.Append(' ').Append(rune.ToString()).Append(' ');
            else cleaned.Append(rune.ToString());
        }
        // Python's str.split() also breaks at line and paragraph separators (Zl, Zp), which the clean-up keeps.
        foreach (var token in cleaned.ToString().Normalize(NormalizationForm.FormC)
                     .Split((char[])[' ', '\u2028', '\u2029'], StringSplitOptions.RemoveEmptyEntries))
        {
            var word = settings.LowerCase ? Lower(token) : token;
            if (settings.StripsAccents) word = WithoutAccents(word);
            var current = new StringBuilder();
            foreach (var rune in word.EnumerateRunes())
            {
                if (!IsPunctuation(rune))
                {
                    current.Append(rune.ToString());
                    continue;
                }
                if (current.Length > 0) words.Add(current.ToString());
                current.Clear();
                words.Add(rune.ToString());
            }
            if (current.Length > 0) words.Add(current.ToString());
        }
        return words;
    }

    /// <summary>Python's str.lower(): the Unicode lower-case mapping per code point, with İ's full mapping (i + combining dot).</summary>
    static string Lower(string word)
    {
        var lowered = new StringBuilder(word.Length);
        foreach (var rune in word.EnumerateRunes())
            lowered.Append(rune.Value == 0x130 ? "i\u0307" : Rune.ToLowerInvariant(rune).ToString());
        return lowered.ToString();
    }

    static string WithoutAccents(string word)
    {
        var stripped = new StringBuilder(word.Length);
        foreach (var rune in word.Normalize(NormalizationForm.FormD).EnumerateRunes())
            if (Rune.GetUnicodeCategory(rune) != UnicodeCategory.NonSpacingMark) stripped.Append(rune.ToString());
        return stripped.ToString();
    }

    static bool IsWhitespace(Rune r) => r.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(r) == UnicodeCategory.SpaceSeparator;

    /// <summary>BERT's control characters: every C* category (control, format, private use, unassigned, surrogate) but tab and newlines.</summary>
    static bool IsControl(Rune r) => r.Value is not ('\t' or '\n' or '\r') && Rune.GetUnicodeCategory(r) is UnicodeCategory.Control
        or UnicodeCategory.Format or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned or UnicodeCategory.Surrogate;

    /// <summary>The CJK Unified Ideographs blocks (and their extensions and compatibility blocks) BERT spaces out; not Japanese kana or Hangul.</summary>
    static bool IsCjk(int cp) => cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF
        or >= 0x2A700 and <= 0x2B73F or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;

    /// <summary>BERT's rule: ASCII symbols count as punctuation, as does every Unicode P* category.</summary>
    static bool IsPunctuation(Rune r) =>
        r.Value is >= '!' and <= '/' or >= ':' and <= '@' or >= '[' and <= '`' or >= '{' and <= '~'
        || Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    /// <summary>The WordPiece tokens of <paramref name="text"/> (no [CLS]/[SEP]).</summary>
    public List<string> Tokenize(string text)
    {
        var result = new List<string>();
        foreach (var word in Words(text))
        {
            if (Settings.Specials.Contains(word)) { result.Add(word); continue; }
            // Code point boundaries: pieces never split a surrogate pair, and the length limit counts code points.
            var bounds = new List<int>();
            for (int i = 0; i < word.Length; i += char.IsSurrogatePair(word, i) ? 2 : 1) bounds.Add(i);
            if (bounds.Count > MaxWordChars) { result.Add(Settings.Unknown); continue; }
            bounds.Add(word.Length);
            var pieces = new List<string>();
            int start = 0;
            while (start < bounds.Count - 1)
            {
                int end = bounds.Count - 1;
                string? found = null;
                for (; end > start; end--)
                {
                    var piece = (start > 0 ? "##" : "") + word[bounds[start]..bounds[end]];
                    if (ids.ContainsKey(piece)) { found = piece; break; }
                }
                if (found is null) { pieces = [Settings.Unknown]; break; }
                pieces.Add(found);
                start = end;
            }
            result.AddRange(pieces);
        }
        return result;
    }

    /// <summary>[CLS] ids… [SEP], truncated to <paramref name="length"/> (keeping the final [SEP]) and padded with [PAD].</summary>
    public long[] Encode(string text, int length) => Encode(text, null, length).Ids;

    /// <summary>
    /// [CLS] a [SEP] (b [SEP]) as input_ids and token_type_ids (0 through a's [SEP], 1 after), padded with [PAD] (type 0)
    /// to <paramref name="length"/>. Too long, a single text loses its last pieces; a pair is truncated 'longest_first'
    /// as transformers' BertTokenizer does it: one piece at a time from the end of the longer text, from b when both are
    /// equally long. (The Rust "fast" tokenizer cuts pairs in one step and, for an odd budget, can keep the extra
    /// piece in b where this keeps it in a.)
    /// </summary>
    public (long[] Ids, long[] TypeIds) Encode(string a, string? b, int length)
    {
        int specials = b is null ? 2 : 3;
        if (length < specials) throw new FsMergeException($"sequence length {length}: expected at least {specials} ([CLS] and [SEP]s)");
        var first = Tokenize(a);
        var second = b is null ? [] : Tokenize(b);
        for (int excess = first.Count + second.Count + specials - length; excess > 0; excess--)
        {
            if (b is null || first.Count > second.Count) first.RemoveAt(first.Count - 1);
            else second.RemoveAt(second.Count - 1);
        }
        var sequence = new long[length];
        var types = new long[length];
        Array.Fill(sequence, PadId);
        int i = 0;
        sequence[i++] = ClsId;
        foreach (var piece in first) sequence[i++] = ids[piece];
        sequence[i++] = SepId;
        if (b is null) return (sequence, types);
        foreach (var piece in second)
        {
            types[i] = 1;
            sequence[i++] = ids[piece];
        }
        types[i] = 1;
        sequence[i] = SepId;
        return (sequence, types);
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
            foreach (var w in BasicWords(text, TokenizerSettings.FsMerge))
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
        var tokens = new List<string>(TokenizerSettings.FsMerge.Specials);
        tokens.AddRange(chars.Where(kv => kv.Value >= minCount).Select(kv => kv.Key).Order(StringComparer.Ordinal));
        if (tokens.Count > size)
            throw new FsMergeException($"vocabulary size {size} is smaller than the {tokens.Count} special tokens and characters of the corpus");
        tokens.AddRange(pieces.Where(kv => kv.Value >= minCount).OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)
            .Take(size - tokens.Count).Select(kv => kv.Key));
        return new WordPiece(tokens);
    }
}
