using System.Text;
using System.Text.Json.Nodes;
using FsMerge.Data;
using Xunit;

namespace FsMerge.Tests;

/// <summary>
/// <see cref="WordPiece"/> against Hugging Face's own tokenizers library (the Rust code behind BertTokenizerFast,
/// through the Tokenizers.DotNet package), on texts chosen to reach every rule (case, accents, CJK, ASCII symbols,
/// control and format characters, exotic whitespace, long words, characters beyond the BMP, special tokens), for
/// each combination of do_lower_case, strip_accents and tokenize_chinese_chars. The library is given the text in
/// NFC: transformers' Python BertTokenizer composes it first and the Rust one does not, which differs only for
/// decomposed accents that are kept; FsMerge follows the Python one there.
/// </summary>
public class TokenizerOracleTests
{
    internal static readonly string[] Vocabulary =
    [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cafe", "café", "Café", "Cafe", "hello", "world", "Hello", "World", "$", "+", "<", "=", "^", "`",
        "|", "~", "a", "b", "##b", "ab", "中", "文", "##s", "i", "\u0307", "##\u0307", "𝒜", "##a", "[", "]", "mask", ".", "x", "##x", ",", "!", "¿", "-",
        "'", "s", "the", "##e", "naïve", "naive", "##ï", "na", "##ive", "ß", "straße", "strasse", "Ω", "ω", "é", "e", "##é", "2", "##2", "€", "😀",
        "un", "##aff", "##able", "ﬁ", "fi", "Å", "å", "Ǆ", "ǆ", "ǅ", "日", "本", "こ", "ん", "に", "ち", "は", "한", "국", "##어", "ä", "##ä", "o", "##o", "u",
    ];

    static readonly string[] Texts =
    [
        "Hello, World!", "Café cafe CAFÉ", "cafe\u0301 Cafe\u0301", "a$b+a<b=a^b`a|b~", "hel\u0000lo\uFFFD a\u00ADb a\u200Bb",
        " hello\tworld\r\nhello\u00A0world ", "hello\u2028world", "中文hello日本", "\U00020000b", new string('a', 100), new string('a', 101),
        "𝒜" + new string('a', 99), "𝒜" + new string('a', 100), "abx xab abq", "hello [MASK] world", "hello[SEP]world [mask]", "İ İstanbul",
        "naïve NAÏVE", "Straße STRASSE", "ΩΣ ωσ", "€2 2€ ¿hello? hello's", "😀hello 😀", "UNaffable", "ﬁ ﬁ", "Å Å", "Ǆ ǅ ǆ", "こんにちは 한국어",
        "Ä ä Ö ö Ü ü", "e\u0301\u0301", "a\u0300\u0316b", "\u3000hello\u3000", "hello\u0085world", "x\u001fy", "\u00a0\u1680a\u2000b\u202f",
    ];

    /// <summary>A tokenizer.json as BertTokenizerFast saves it: BertNormalizer, BertPreTokenizer, WordPiece, [CLS] $A [SEP].</summary>
    internal static string TokenizerJson(bool lower, bool? strip, bool cjk)
    {
        JsonObject Special(string name, int id) => new() { ["id"] = name, ["ids"] = new JsonArray(id), ["tokens"] = new JsonArray(name) };
        JsonObject Piece(string kind, string id) => new() { [kind] = new JsonObject { ["id"] = id, ["type_id"] = 0 } };
        return new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null,
            ["added_tokens"] = new JsonArray(Vocabulary.Take(5).Select((t, i) => (JsonNode)new JsonObject
            {
                ["id"] = i, ["content"] = t, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            }).ToArray()),
            ["normalizer"] = new JsonObject { ["type"] = "BertNormalizer", ["clean_text"] = true, ["handle_chinese_chars"] = cjk, ["strip_accents"] = strip, ["lowercase"] = lower },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing", ["single"] = new JsonArray(Piece("SpecialToken", "[CLS]"), Piece("Sequence", "A"), Piece("SpecialToken", "[SEP]")),
                ["pair"] = new JsonArray(Piece("SpecialToken", "[CLS]"), Piece("Sequence", "A"), Piece("SpecialToken", "[SEP]"), Piece("Sequence", "B"), Piece("SpecialToken", "[SEP]")),
                ["special_tokens"] = new JsonObject { ["[CLS]"] = Special("[CLS]", 2), ["[SEP]"] = Special("[SEP]", 3) },
            },
            ["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##", ["cleanup"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##", ["max_input_chars_per_word"] = 100,
                ["vocab"] = new JsonObject(Vocabulary.Select((t, i) => KeyValuePair.Create(t, (JsonNode?)i))),
            },
        }.ToJsonString();
    }

    [Theory]
    [InlineData(true, null, true)]     // bert-base-uncased
    [InlineData(true, false, true)]
    [InlineData(false, null, true)]    // bert-base-cased
    [InlineData(false, true, true)]
    [InlineData(true, null, false)]
    [InlineData(false, false, false)]
    public void Ids_equal_hugging_face_tokenizers(bool lower, bool? strip, bool cjk)
    {
        using var tmp = new TempDir();
        var path = tmp.Sub("tokenizer.json");
        File.WriteAllText(path, TokenizerJson(lower, strip, cjk));
        using var reference = new Tokenizers.DotNet.Tokenizer(path);
        var ours = new WordPiece(Vocabulary, "test vocabulary", TokenizerSettings.HuggingFace with { LowerCase = lower, StripAccents = strip, ChineseChars = cjk });
        foreach (var text in Texts)
        {
            var expected = reference.Encode(text.Normalize(NormalizationForm.FormC)).Select(id => (long)id).ToArray();
            var padded = ours.Encode(text, null, 512).Ids;
            var ids = padded[..(Array.LastIndexOf(padded, ours.SepId) + 1)];
            Assert.True(expected.SequenceEqual(ids), $"{text}: Hugging Face {string.Join(" ", expected.Select(i => Vocabulary[i]))}, FsMerge {string.Join(" ", ids.Select(i => Vocabulary[i]))}");
        }
    }

    [Fact]
    public void A_folder_with_only_tokenizer_json_gives_its_vocabulary_and_transformers_defaults()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.Sub(TokenizerFiles.FastFile), TokenizerJson(lower: false, strip: false, cjk: false));
        Assert.Equal(Vocabulary, TokenizerFiles.Vocabulary(tmp.Path));
        // BertTokenizerFast rebuilds the normalizer from its own arguments: without tokenizer_config.json, the defaults.
        Assert.Equal(TokenizerSettings.HuggingFace, TokenizerFiles.Read(tmp.Path));
        File.WriteAllText(tmp.Sub(TokenizerFiles.FastFile), "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}");
        Assert.Contains("model.type 'BPE' is not supported", Assert.Throws<FsMergeException>(() => TokenizerFiles.Vocabulary(tmp.Path)).Message);
        File.WriteAllText(tmp.Sub(TokenizerFiles.FastFile), "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[PAD]\": 0, \"[UNK]\": 0}}}");
        Assert.Contains("id 0 is given to both '[PAD]' and '[UNK]'", Assert.Throws<FsMergeException>(() => TokenizerFiles.Vocabulary(tmp.Path)).Message);
    }
}
