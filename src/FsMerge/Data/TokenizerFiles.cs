using System.Text.Json;
using System.Text.Json.Nodes;
using FsMerge.IO;

namespace FsMerge.Data;

/// <summary>
/// The tokenizer files of a BERT model folder, as Hugging Face's BertTokenizer reads them: vocab.txt,
/// tokenizer_config.json and special_tokens_map.json. They state exactly what <see cref="WordPiece"/> does (lower
/// case, accents kept, no CJK spacing, <see cref="TextFolder.SequenceLength"/> tokens), since transformers' defaults
/// for a folder with vocab.txt alone (accents stripped) give other ids.
/// </summary>
internal static class TokenizerFiles
{
    public const string ConfigFile = "tokenizer_config.json";
    public const string SpecialTokensFile = "special_tokens_map.json";

    /// <summary>The settings FsMerge tokenizes with, by tokenizer_config.json field.</summary>
    static readonly (string Field, bool Value)[] Settings = [("do_lower_case", true), ("strip_accents", false), ("tokenize_chinese_chars", false)];

    static JsonObject SpecialTokens() => new()
    {
        ["unk_token"] = WordPiece.Unknown, ["sep_token"] = WordPiece.Sep, ["pad_token"] = WordPiece.Pad,
        ["cls_token"] = WordPiece.Cls, ["mask_token"] = WordPiece.Mask,
    };

    /// <summary>Writes the three files into <paramref name="dir"/>, each atomically.</summary>
    public static void Write(string dir, IReadOnlyList<string> vocabulary)
    {
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, TextFolder.VocabFile), string.Join("\n", vocabulary) + "\n");
        var config = new JsonObject { ["tokenizer_class"] = "BertTokenizer", ["do_basic_tokenize"] = true };
        foreach (var (field, value) in Settings) config[field] = value;
        config["model_max_length"] = TextFolder.SequenceLength;
        foreach (var (name, token) in SpecialTokens()) config[name] = token!.DeepClone();
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJsonString(JsonFormat.Indented));
        AtomicFile.WriteAllText(Path.Combine(dir, SpecialTokensFile), SpecialTokens().ToJsonString(JsonFormat.Indented));
    }

    /// <summary>
    /// Fails when a model folder's tokenizer_config.json asks for a tokenization FsMerge's data does not have (Hugging
    /// Face's defaults where a field is absent: do_lower_case true, strip_accents following it, CJK spacing on).
    /// </summary>
    public static void Check(string dir)
    {
        var path = Path.Combine(dir, ConfigFile);
        if (!File.Exists(path)) return;
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new FsMergeException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new FsMergeException($"{path}: invalid JSON ({e.Message.Split('\n')[0]})");
        }
        bool Flag(string field, bool fallback) => root[field] switch
        {
            null => fallback,
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => fallback,
            JsonValue v when v.TryGetValue<bool>(out bool b) => b,
            _ => throw new FsMergeException($"{path}: field '{field}' must be true, false or null"),
        };
        bool lower = Flag("do_lower_case", true);
        var stated = new Dictionary<string, bool>
        {
            ["do_lower_case"] = lower, ["strip_accents"] = Flag("strip_accents", lower), ["tokenize_chinese_chars"] = Flag("tokenize_chinese_chars", true),
        };
        foreach (var (field, value) in Settings)
            if (stated[field] != value)
                throw new FsMergeException($"{path}: {field} {(stated[field] ? "true" : "false")}{(root[field] is null ? " (Hugging Face's default)" : "")} is not supported; FsMerge's text data is tokenized with {string.Join(", ", Settings.Select(s => $"{s.Field} {(s.Value ? "true" : "false")}"))}");
    }
}
