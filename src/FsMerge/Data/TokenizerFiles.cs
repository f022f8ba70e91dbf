using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using FsMerge.IO;

namespace FsMerge.Data;

/// <summary>
/// The tokenizer files of a BERT model folder, as Hugging Face's BertTokenizer reads them: vocab.txt,
/// tokenizer_config.json (do_lower_case, strip_accents, tokenize_chinese_chars, model_max_length, special tokens) and
/// special_tokens_map.json. Read into <see cref="TokenizerSettings"/>, which the model's data is tokenized with; written
/// with every field stated, since transformers' defaults for an absent field (accents stripped, CJK spaced) differ
/// from FsMerge's own.
/// </summary>
internal static class TokenizerFiles
{
    public const string ConfigFile = "tokenizer_config.json";
    public const string SpecialTokensFile = "special_tokens_map.json";
    /// <summary>The "fast" tokenizer's single file; read for its vocabulary when a folder has no vocab.txt.</summary>
    public const string FastFile = "tokenizer.json";
    const long MaxBytes = 16 << 20;

    static readonly (string Field, Func<TokenizerSettings, string> Get, Func<TokenizerSettings, string, TokenizerSettings> Set)[] SpecialFields =
    [
        ("unk_token", s => s.Unknown, (s, v) => s with { Unknown = v }), ("sep_token", s => s.Sep, (s, v) => s with { Sep = v }),
        ("pad_token", s => s.Pad, (s, v) => s with { Pad = v }), ("cls_token", s => s.Cls, (s, v) => s with { Cls = v }),
        ("mask_token", s => s.Mask, (s, v) => s with { Mask = v }),
    ];

    static JsonObject SpecialTokens(TokenizerSettings settings) => new(SpecialFields.Select(f => KeyValuePair.Create(f.Field, (JsonNode?)f.Get(settings))));

    /// <summary>Writes the three files into <paramref name="dir"/>, each atomically; <paramref name="maxLength"/> is the length the model's data is tokenized to.</summary>
    public static void Write(string dir, IReadOnlyList<string> vocabulary, TokenizerSettings settings, int maxLength)
    {
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, TextFolder.VocabFile), string.Join("\n", vocabulary) + "\n");
        var config = new JsonObject
        {
            ["tokenizer_class"] = "BertTokenizer", ["do_basic_tokenize"] = true, ["do_lower_case"] = settings.LowerCase,
            ["strip_accents"] = settings.StripsAccents, ["tokenize_chinese_chars"] = settings.ChineseChars, ["model_max_length"] = maxLength,
            ["padding_side"] = "right", ["truncation_side"] = "right",
        };
        foreach (var (name, token) in SpecialTokens(settings)) config[name] = token!.DeepClone();
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJsonString(JsonFormat.Indented));
        AtomicFile.WriteAllText(Path.Combine(dir, SpecialTokensFile), SpecialTokens(settings).ToJsonString(JsonFormat.Indented));
    }

    /// <summary>
    /// The settings a model folder states: tokenizer_config.json with transformers' defaults for absent fields
    /// (lower case, accents following it, CJK spacing, no length limit), special token names from it or else from
    /// special_tokens_map.json; <see cref="TokenizerSettings.FsMerge"/> when the folder has neither file (FsMerge's own
    /// models before these files were written). Settings transformers would tokenize with otherwise are refused.
    /// </summary>
    public static TokenizerSettings Read(string dir)
    {
        var configPath = Path.Combine(dir, ConfigFile);
        var mapPath = Path.Combine(dir, SpecialTokensFile);
        bool hasConfig = File.Exists(configPath), hasMap = File.Exists(mapPath);
        if (!hasConfig && !hasMap && !File.Exists(Path.Combine(dir, FastFile))) return TokenizerSettings.FsMerge;
        var settings = TokenizerSettings.HuggingFace;
        if (hasMap) settings = Specials(JsonInput.ReadObject(mapPath, "a special_tokens_map.json", MaxBytes), mapPath, settings);
        if (!hasConfig) return settings;
        var root = JsonInput.ReadObject(configPath, "a tokenizer_config.json", MaxBytes);
        if (root["tokenizer_class"] is JsonValue c && c.GetValueKind() == JsonValueKind.String
            && c.GetValue<string>() is var cls && cls is not ("BertTokenizer" or "BertTokenizerFast"))
            throw new FsMergeException($"{configPath}: tokenizer_class '{cls}' is not supported (expected BertTokenizer or BertTokenizerFast)");
        if (!JsonInput.Bool(root["do_basic_tokenize"], configPath, "do_basic_tokenize", true))
            throw new FsMergeException($"{configPath}: do_basic_tokenize false is not supported (FsMerge always splits words and punctuation first, as BertTokenizer does by default)");
        if (!JsonInput.Bool(root["do_split_on_punc"], configPath, "do_split_on_punc", true))
            throw new FsMergeException($"{configPath}: do_split_on_punc false is not supported (FsMerge splits punctuation off, as BertTokenizer does by default)");
        if (JsonInput.String(root["truncation_side"], configPath, "truncation_side", "right") != "right")
            throw new FsMergeException($"{configPath}: truncation_side '{root["truncation_side"]}' is not supported (expected \"right\")");
        settings = Specials(root, configPath, settings) with
        {
            LowerCase = JsonInput.Bool(root["do_lower_case"], configPath, "do_lower_case", true),
            StripAccents = root["strip_accents"] is null ? null : JsonInput.Bool(root["strip_accents"], configPath, "strip_accents", false),
            ChineseChars = JsonInput.Bool(root["tokenize_chinese_chars"], configPath, "tokenize_chinese_chars", true),
            MaxLength = MaxLength(root["model_max_length"], configPath),
        };
        return settings;
    }

    /// <summary>
    /// The vocabulary of a model folder: vocab.txt, else the WordPiece vocabulary of tokenizer.json (ids 0..n−1), else
    /// null. tokenizer.json's normalizer flags are not read: transformers replaces them by tokenizer_config.json's
    /// settings (its defaults when that file is absent), which <see cref="Read"/> gives.
    /// </summary>
    public static IReadOnlyList<string>? Vocabulary(string dir)
    {
        var vocab = Path.Combine(dir, TextFolder.VocabFile);
        if (File.Exists(vocab)) return WordPiece.Read(vocab).Tokens;
        var path = Path.Combine(dir, FastFile);
        if (!File.Exists(path)) return null;
        var model = JsonInput.Object(JsonInput.ReadObject(path, "a tokenizer.json", TextFolder.MaxFileBytes)["model"], path, "model")
            ?? throw new FsMergeException($"{path}: field 'model' is missing; expected the tokenizer's model");
        var type = JsonInput.String(model["type"], path, "model.type");
        if (type != "WordPiece") throw new FsMergeException($"{path}: model.type '{type}' is not supported (expected WordPiece, as BERT's)");
        var entries = JsonInput.Object(model["vocab"], path, "model.vocab") ?? throw new FsMergeException($"{path}: field 'model.vocab' is missing");
        var tokens = new string?[entries.Count];
        foreach (var (token, id) in entries)
        {
            int index = JsonInput.Int(id, path, $"model.vocab.{token}", 0, entries.Count - 1);
            if (tokens[index] is { } other) throw new FsMergeException($"{path}: id {index} is given to both '{other}' and '{token}' in model.vocab");
            tokens[index] = token;
        }
        return new WordPiece(tokens.Select(t => t!).ToList(), path).Tokens;
    }

    /// <summary>model_max_length; transformers writes a huge number (1e30) for "no limit", which is null here.</summary>
    static int? MaxLength(JsonNode? node, string path)
    {
        if (node is null) return null;
        if (node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number
            || !double.TryParse(v.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture, out double length) || length < 2 || length != Math.Floor(length))
            throw new FsMergeException($"{path}: field 'model_max_length' is {node.ToJsonString()}, expected a whole number of at least 2");
        return length > int.MaxValue ? null : (int)length;
    }

    /// <summary>Special token names: a string or an object with "content", as transformers saves AddedToken.</summary>
    static TokenizerSettings Specials(JsonObject root, string path, TokenizerSettings settings)
    {
        foreach (var (field, _, set) in SpecialFields)
        {
            var node = root[field] is JsonObject added ? added["content"] : root[field];
            if (node is not null) settings = set(settings, JsonInput.String(node, path, field));
        }
        return settings;
    }
}
