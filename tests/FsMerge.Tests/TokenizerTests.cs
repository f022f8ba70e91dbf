using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// The BERT tokenizer against ids derived by hand from Hugging Face's BertTokenizer algorithm (BasicTokenizer: clean-up,
/// CJK spacing, NFC, whitespace split, lower case / accent stripping per word, punctuation split; then greedy WordPiece)
/// on small vocabularies, for each tokenizer_config.json setting; sentence pairs and their 'longest_first' truncation.
/// </summary>
public class TokenizerTests
{
    static readonly string[] Tokens =
    [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cafe", "café", "Café", "Cafe", "hello", "world", "Hello", "$", "+", "<", "=", "^", "`", "|",
        "~", "a", "b", "##b", "ab", "中", "文", "##s", "i", "\u0307", "##\u0307", "𝒜", "##a", "[", "]", "mask", ".", "x", "##x",
    ];

    static WordPiece Vocab(TokenizerSettings settings) => new(Tokens, "test vocabulary", settings);

    static readonly TokenizerSettings Uncased = TokenizerSettings.HuggingFace;                              // do_lower_case true, strip_accents null
    static readonly TokenizerSettings UncasedKeepAccents = TokenizerSettings.HuggingFace with { StripAccents = false };
    static readonly TokenizerSettings Cased = TokenizerSettings.HuggingFace with { LowerCase = false };    // strip_accents null: kept
    static readonly TokenizerSettings CasedStripped = TokenizerSettings.HuggingFace with { LowerCase = false, StripAccents = true };
    static readonly TokenizerSettings NoCjk = TokenizerSettings.HuggingFace with { ChineseChars = false };

    static string Tokenize(TokenizerSettings settings, string text) => string.Join(" ", Vocab(settings).Tokenize(text));

    [Fact]
    public void Accents_follow_do_lower_case_unless_strip_accents_says_otherwise()
    {
        // "Café" → lower "café" → NFD "cafe\u0301" → the nonspacing mark dropped: "cafe".
        Assert.Equal("cafe", Tokenize(Uncased, "Café"));
        Assert.Equal("café", Tokenize(UncasedKeepAccents, "Café"));
        Assert.Equal("Café", Tokenize(Cased, "Café"));
        Assert.Equal("Cafe", Tokenize(CasedStripped, "Café"));
        // A decomposed é is composed (NFC) before the vocabulary lookup.
        Assert.Equal("Café", Tokenize(Cased, "Cafe\u0301"));
        // Cased: "hello" and "Hello" are different tokens.
        Assert.Equal("Hello hello", Tokenize(Cased, "Hello hello"));
        Assert.Equal("hello hello", Tokenize(Uncased, "Hello hello"));
        // İ lower-cases to i + U+0307 (Python's full mapping); stripping accents then drops the dot.
        Assert.Equal("i ##\u0307", Tokenize(UncasedKeepAccents, "İ"));
        Assert.Equal("i", Tokenize(Uncased, "İ"));
    }

    [Fact]
    public void Ascii_symbols_are_punctuation_words()
    {
        // 33-47, 58-64, 91-96, 123-126 are punctuation for BERT although $ + < = ^ ` | ~ are Unicode symbols (S*).
        Assert.Equal("a $ b + a < b = a ^ b ` a | b ~", Tokenize(Uncased, "a$b+a<b=a^b`a|b~"));
        Assert.Equal("hello . world", Tokenize(Uncased, "hello.world"));
        Assert.Equal("[UNK] hello", Tokenize(Uncased, "\u00bfhello"));   // ¿ is Po: its own word, not in the vocabulary
    }

    [Fact]
    public void Control_and_format_characters_are_dropped_and_whitespace_separates()
    {
        Assert.Equal("ab", Tokenize(Uncased, "a\u00ADb"));              // soft hyphen (Cf)
        Assert.Equal("ab", Tokenize(Uncased, "a\u200Bb"));              // zero-width space (Cf)
        Assert.Equal("hello", Tokenize(Uncased, "hel\u0000lo\uFFFD"));  // NUL and the replacement character
        Assert.Equal("ab", Tokenize(Uncased, "a\u0007b"));              // BEL (Cc)
        Assert.Equal("hello world hello world", Tokenize(Uncased, " hello\tworld\r\nhello\u00A0world "));
        Assert.Equal("hello world", Tokenize(Uncased, "hello\u2028world")); // Python's split() breaks at a line separator
    }

    [Fact]
    public void Cjk_ideographs_are_words_when_tokenize_chinese_chars()
    {
        Assert.Equal("中 文 hello", Tokenize(Uncased, "中文hello"));
        Assert.Equal("[UNK]", Tokenize(NoCjk, "中文hello"));           // one word, "中" then no "##文": [UNK]
        Assert.Equal("[UNK] b", Tokenize(Uncased, "\U00020000b"));      // CJK extension B, beyond the BMP
    }

    [Fact]
    public void Wordpiece_counts_code_points_and_gives_up_a_word_whole()
    {
        Assert.Equal(string.Join(" ", ["a", .. Enumerable.Repeat("##a", 99)]), Tokenize(Uncased, new string('a', 100)));
        Assert.Equal("[UNK]", Tokenize(Uncased, new string('a', 101)));
        // 𝒜 is two UTF-16 units but one character: "𝒜" + 99 "a" is a word of 100 (101 units), one more is too long.
        Assert.Equal(string.Join(" ", ["𝒜", .. Enumerable.Repeat("##a", 99)]), Tokenize(Cased, "𝒜" + new string('a', 99)));
        Assert.Equal("[UNK]", Tokenize(Cased, "𝒜" + new string('a', 100)));
        Assert.Equal("ab ##x", Tokenize(Uncased, "abx"));              // longest first: "ab", not "a ##b"
        Assert.Equal("x ##a ##b", Tokenize(Uncased, "xab"));
        Assert.Equal("[UNK]", Tokenize(Uncased, "abq"));               // no "##q": the whole word, not "ab [UNK]"
    }

    [Fact]
    public void Special_tokens_in_the_text_stay_whole()
    {
        Assert.Equal("hello [MASK] world", Tokenize(Uncased, "hello [MASK] world"));
        Assert.Equal("hello [SEP] world", Tokenize(Uncased, "hello[SEP]world"));
        Assert.Equal("[ mask ]", Tokenize(Uncased, "[mask]"));           // not the special token: punctuation and a word
    }

    [Fact]
    public void Pairs_are_cls_a_sep_b_sep_with_token_types()
    {
        var v = Vocab(Uncased);
        var (ids, types) = v.Encode("hello world", "a b", 9);
        Assert.Equal(new long[] { 2, 9, 10, 3, 20, 21, 3, 0, 0 }, ids);
        Assert.Equal(new long[] { 0, 0, 0, 0, 1, 1, 1, 0, 0 }, types);
    }

    [Theory]
    // lengths of a and b (pieces), max length → kept pieces of a and b. Budget = length − 3; one piece at a time from
    // the longer text, from b on a tie (transformers' truncate_sequences, 'longest_first').
    [InlineData(5, 5, 10, 4, 3)]   // 7: b 4, a 4, b 3
    [InlineData(5, 6, 10, 4, 3)]   // b 5, b 4 (tie → b)… then a 4, b 3
    [InlineData(2, 8, 9, 2, 4)]    // only b is cut
    [InlineData(7, 1, 6, 2, 1)]    // only a is cut
    [InlineData(3, 3, 9, 3, 3)]    // fits
    public void Pairs_are_truncated_longest_first(int a, int b, int length, int keptA, int keptB)
    {
        var v = Vocab(Uncased);
        var (ids, types) = v.Encode(string.Join(" ", Enumerable.Repeat("hello", a)), string.Join(" ", Enumerable.Repeat("world", b)), length);
        Assert.Equal(keptA, ids.Count(i => i == 9));
        Assert.Equal(keptB, ids.Count(i => i == 10));
        Assert.Equal(keptA + 2, types.TakeWhile(t => t == 0).Count());   // [CLS] a [SEP] are type 0
        Assert.Equal(3, ids.Count(i => i is 2 or 3));
    }

    [Fact]
    public void Settings_are_read_as_transformers_reads_tokenizer_config_json()
    {
        var dir = Directory.CreateTempSubdirectory("fsmerge-tokenizer-").FullName;
        try
        {
            // No files: FsMerge's own older models.
            Assert.Equal(TokenizerSettings.FsMerge, TokenizerFiles.Read(dir));
            // Absent fields take transformers' defaults; AddedToken objects; "no limit" as transformers writes it.
            File.WriteAllText(Path.Combine(dir, TokenizerFiles.ConfigFile),
                "{\"do_lower_case\": false, \"strip_accents\": null, \"model_max_length\": 1000000000000000019884624838656, \"unk_token\": {\"content\": \"<unk>\", \"lstrip\": false}}");
            File.WriteAllText(Path.Combine(dir, TokenizerFiles.SpecialTokensFile), "{\"pad_token\": \"<pad>\", \"unk_token\": \"[UNK]\"}");
            var read = TokenizerFiles.Read(dir);
            Assert.Equal(TokenizerSettings.HuggingFace with { LowerCase = false, Unknown = "<unk>", Pad = "<pad>" }, read);
            Assert.False(read.StripsAccents);
            // Written settings read back the same, every field stated.
            var written = TokenizerSettings.HuggingFace with { StripAccents = false, ChineseChars = false };
            TokenizerFiles.Write(dir, Tokens, written, 24);
            Assert.Equal(written with { MaxLength = 24 }, TokenizerFiles.Read(dir));
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, TokenizerFiles.ConfigFile)))!;
            Assert.False((bool)json["strip_accents"]!);
            Assert.Equal(24, (int)json["model_max_length"]!);
            File.WriteAllText(Path.Combine(dir, TokenizerFiles.ConfigFile), "{\"strip_accents\": \"yes\"}");
            Assert.Contains("strip_accents", Assert.Throws<FsMergeException>(() => TokenizerFiles.Read(dir)).Message);
            File.WriteAllText(Path.Combine(dir, TokenizerFiles.ConfigFile), "{\"do_basic_tokenize\": false}");
            Assert.Contains("do_basic_tokenize false is not supported", Assert.Throws<FsMergeException>(() => TokenizerFiles.Read(dir)).Message);
            File.WriteAllText(Path.Combine(dir, TokenizerFiles.ConfigFile), "{\"do_split_on_punc\": false}");
            Assert.Contains("do_split_on_punc false is not supported", Assert.Throws<FsMergeException>(() => TokenizerFiles.Read(dir)).Message);
            File.WriteAllText(Path.Combine(dir, TokenizerFiles.ConfigFile), "{\"tokenizer_class\": \"BertTokenizerFast\", \"model_max_length\": 512}");
            Assert.Equal(512, TokenizerFiles.Read(dir).MaxLength);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_text_folder_line_with_a_tab_is_a_sentence_pair()
    {
        var dir = Directory.CreateTempSubdirectory("fsmerge-pairs-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "yes.txt"), "hello world\ta b\n\nhello\n");
            var lines = TextFolder.Lines(dir, ["yes"]);
            Assert.Equal([(new TextExample("hello world", "a b"), 0), (new TextExample("hello", null), 0)], lines);
            File.WriteAllText(Path.Combine(dir, "yes.txt"), "a\tb\tc\n");
            Assert.Equal($"{Path.Combine(dir, "yes.txt")}: line 1 has 2 tabs; expected a text, or a sentence pair as text_a<TAB>text_b",
                Assert.Throws<FsMergeException>(() => TextFolder.Lines(dir, ["yes"])).Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>A model tokenizes its texts with its own tokenizer_config.json and length; pairs train and evaluate end to end.</summary>
[Collection("torch")]
public class TextPreparationTests
{
    static readonly string[] Vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cafe", "café", "Café", "yes", "no", "a", "b"];

    [Fact]
    public void A_bert_config_tokenizes_the_texts_its_way()
    {
        var texts = new TextSamples([new TextExample("Café", "yes"), new TextExample("café yes no a b", null)], new WordPiece(Vocabulary));
        using var initial = new ImageSet(zeros(2, 4, ScalarType.Int64), [0, 1], ["x", "y"]) { Texts = texts };
        var config = BertOracleTests.Config("t") with { Tokenizer = TokenizerSettings.HuggingFace with { MaxLength = 6 } };
        using var uncased = config.Prepare(initial, "test");
        // Accents stripped (do_lower_case, strip_accents null); the pair's second part type 1; six tokens, the single text cut.
        // Cased at 4 tokens: the pair keeps one piece, a's ("yes" goes on the tie: longest_first cuts b first).
        Assert.Equal(new long[] { 2, 5, 3, 8 | 1L << 32, 3 | 1L << 32, 0, 2, 5, 8, 9, 10, 3 }, uncased.Images.data<long>().ToArray());
        using var cased = (config with { Tokenizer = TokenizerSettings.HuggingFace with { LowerCase = false, MaxLength = 4 } })
            .Prepare(uncased with { Images = zeros(2, 4, ScalarType.Int64) }, "test");
        Assert.Equal(new long[] { 2, 7, 3, 3 | 1L << 32, 2, 6, 8, 3 }, cased.Images.data<long>().ToArray());
    }

    [Fact]
    public void Sentence_pairs_train_and_evaluate_at_the_chosen_length()
    {
        using var tmp = new TempDir();
        var data = tmp.Sub("data", "pairs");
        Directory.CreateDirectory(Path.Combine(data, "train"));
        Directory.CreateDirectory(Path.Combine(data, "test"));
        File.WriteAllLines(Path.Combine(data, "vocab.txt"), Vocabulary);
        foreach (var split in new[] { "train", "test" })
        {
            File.WriteAllLines(Path.Combine(data, split, "same.txt"), Enumerable.Range(0, 20).Select(i => i % 2 == 0 ? "yes a\tyes a" : "no b\tno b"));
            File.WriteAllLines(Path.Combine(data, split, "differ.txt"), Enumerable.Range(0, 20).Select(i => i % 2 == 0 ? "yes a\tno b" : "no b\tyes a"));
        }
        string[] tiny = ["--width", "8", "--depth", "1", "--heads", "2", "--mlp-width", "16", "--quiet", "--threads", "1", "--data-dir", tmp.Sub("data")];
        var (code, _, err) = CliTests.Run(["train", "--arch", "bert", "--task", "pairs", "--epochs", "1", "--max-length", "12", "--out", tmp.Sub("m"), .. tiny]);
        Assert.True(code == 0, err);
        var written = JsonNode.Parse(File.ReadAllText(tmp.Sub("m", TokenizerFiles.ConfigFile)))!;
        Assert.Equal(12, (int)written["model_max_length"]!);
        Assert.Equal(12, (int)JsonNode.Parse(File.ReadAllText(tmp.Sub("m", "config.json")))!["max_position_embeddings"]!);
        (code, _, err) = CliTests.Run(["eval", "--model", tmp.Sub("m"), "--max-length", "7", "--data-dir", tmp.Sub("data"), "--quiet"]);
        Assert.True(code == 0, err);
        (code, _, err) = CliTests.Run(["eval", "--model", tmp.Sub("m"), "--max-length", "13", "--data-dir", tmp.Sub("data"), "--quiet"]);
        Assert.Equal(2, code);
        Assert.Equal($"error: {tmp.Sub("m")}: --max-length 13 exceeds the model's max_position_embeddings 12", err.Trim());

        // Merge sources tokenize alike; --max-length sets one length for all and the merged folder states it.
        (code, _, err) = CliTests.Run(["train", "--arch", "bert", "--task", "pairs", "--epochs", "1", "--max-length", "12", "--seed", "2", "--out", tmp.Sub("n"), .. tiny]);
        Assert.True(code == 0, err);
        string[] merge = ["merge", "--method", "average", "--model", tmp.Sub("m"), "--model", tmp.Sub("n"), "--samples", "8", "--quiet", "--threads", "1", "--data-dir", tmp.Sub("data")];
        (code, _, err) = CliTests.Run([.. merge, "--max-length", "8", "--out", tmp.Sub("merged")]);
        Assert.True(code == 0, err);
        Assert.Equal(8, (int)JsonNode.Parse(File.ReadAllText(tmp.Sub("merged", TokenizerFiles.ConfigFile)))!["model_max_length"]!);
        File.WriteAllText(tmp.Sub("n", TokenizerFiles.ConfigFile), "{\"do_lower_case\": false, \"model_max_length\": 12}");
        (code, _, err) = CliTests.Run([.. merge, "--out", tmp.Sub("refused")]);
        Assert.Equal(2, code);
        Assert.Contains("tokenizes otherwise than model 1", err);
        Assert.Single(err.Trim().Split('\n'));
        (code, _, err) = CliTests.Run(["eval", "--model", tmp.Sub("m"), "--model", tmp.Sub("n"), "--task", "pairs", "--task", "pairs", "--data-dir", tmp.Sub("data"), "--quiet"]);
        Assert.Equal(2, code);
        Assert.Contains("evaluate such models one at a time", err);
    }
}

/// <summary>Token types reach BERT's embeddings: type 1 reads token_type_embeddings row 1.</summary>
[Collection("torch")]
public class TokenTypeTests
{
    [Fact]
    public void Type_one_tokens_read_the_second_token_type_embedding()
    {
        var config = BertOracleTests.Config("t");
        using var model = Model.Create(config, 3, CPU);
        var ids = BertOracleTests.Ids(5);
        var types = ids.ne(0).to(ScalarType.Int64);                      // every real token of type 1, padding type 0
        var packed = tensor(Bert.PackTokenTypes(ids.data<long>().ToArray(), types.data<long>().ToArray()), ids.shape);
        var withTypes = model.Features(packed);
        // The same as type 0 everywhere with row 0 replaced by row 1: padding is masked, so its type does not matter.
        var table = model.Weights["bert.embeddings.token_type_embeddings.weight"];
        Assert.False(withTypes.allclose(model.Features(ids), 1e-4, 1e-4));
        table[0].copy_(table[1]);
        Assert.True(withTypes.allclose(model.Features(ids), 1e-5, 1e-6));
    }
}
