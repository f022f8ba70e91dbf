using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FsMerge;

/// <summary>
/// Typed access to JSON inputs (config.json, the shard index, safetensors headers). <see cref="Parse"/> checks
/// what the JSON reader lets through and later throws on: a duplicate key, or a string or key that is not valid
/// UTF-16 (an unpaired "\ud800" escape). The getters name the file and the field, the JSON kind found and what
/// is allowed, so a value of the wrong kind is an <see cref="FsMergeException"/>, never another exception.
/// </summary>
internal static class JsonInput
{
    /// <summary>Nesting deeper than this is refused (System.Text.Json's default).</summary>
    public const int MaxDepth = 64;

    static readonly JsonDocumentOptions Options = new()
    {
        MaxDepth = MaxDepth,
        AllowTrailingCommas = false,
        CommentHandling = JsonCommentHandling.Disallow,
    };

    /// <summary>Parses and checks UTF-8 JSON; <paramref name="source"/> (the file) starts every message.</summary>
    public static JsonDocument Parse(ReadOnlyMemory<byte> utf8, string source)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(utf8, Options);
        }
        catch (JsonException e)
        {
            throw new FsMergeException($"{source}: not valid JSON ({Terminal.OneLine(e.Message)})", e);
        }
        try
        {
            Check(doc.RootElement, source, "");
            return doc;
        }
        catch
        {
            doc.Dispose();
            throw;
        }
    }

    /// <summary>A JSON file whose top level must be an object, read whole (at most <paramref name="maxBytes"/>).</summary>
    public static JsonObject ReadObject(string path, string what, long maxBytes)
    {
        var bytes = InputFile.ReadAllBytes(path, what, maxBytes);
        using var doc = Parse(bytes, path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new FsMergeException($"{path}: the top level is {Kind(doc.RootElement.ValueKind)}, expected a JSON object ({what})");
        return JsonObject.Create(doc.RootElement.Clone())!;
    }

    static void Check(JsonElement element, string source, string where)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var seen = new HashSet<string>(StringComparer.Ordinal);
                int index = 0;
                foreach (var property in element.EnumerateObject())
                {
                    string name;
                    try { name = property.Name; }
                    catch (InvalidOperationException)
                    {
                        throw new FsMergeException($"{source}: key #{index + 1} of {Field(where, "the top level")} is not valid UTF-16 (an unpaired surrogate escape such as \\ud800)");
                    }
                    string field = where.Length == 0 ? name : $"{where}.{name}";
                    if (!seen.Add(name))
                        throw new FsMergeException($"{source}: duplicate key '{field}'; expected each key once");
                    Check(property.Value, source, field);
                    index++;
                }
                break;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in element.EnumerateArray()) Check(item, source, $"{where}[{i++}]");
                break;
            case JsonValueKind.String:
                try { element.GetString(); }
                catch (InvalidOperationException)
                {
                    throw new FsMergeException($"{source}: {Field(where, "the value")} is not valid UTF-16 (an unpaired surrogate escape such as \\ud800)");
                }
                break;
        }
    }

    static string Field(string where, string top) => where.Length == 0 ? top : $"field '{where}'";

    public static string Kind(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => "missing",
    };

    static string Kind(JsonNode? node) => node == null ? "missing or null" : Kind(node.GetValueKind());

    static FsMergeException Wrong(string source, string field, JsonNode? node, string expected) =>
        new($"{source}: field '{field}' is {Describe(node)}, expected {expected}");

    static string Describe(JsonNode? node)
    {
        if (node is not JsonValue) return Kind(node);
        var text = Terminal.Escape(node.ToJsonString());
        return $"{Kind(node)} ({(text.Length <= 40 ? text : text[..37] + "...")})";
    }

    /// <summary>A number's JSON text: the same for parsed values and for values built in memory (whose .NET type may be any).</summary>
    static string? Number(JsonNode? node) => node is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? v.ToJsonString() : null;

    /// <summary>A required string.</summary>
    public static string String(JsonNode? node, string source, string field) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : throw Wrong(source, field, node, "a string");

    /// <summary>A string, or <paramref name="fallback"/> when absent or null.</summary>
    public static string String(JsonNode? node, string source, string field, string fallback) =>
        node == null ? fallback : String(node, source, field);

    /// <summary>A required whole number in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static int Int(JsonNode? node, string source, string field, int min, int max) =>
        Number(node) is { } text && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long x) && x >= min && x <= max ? (int)x
            : throw Wrong(source, field, node, $"a whole number from {min.ToString(CultureInfo.InvariantCulture)} to {max.ToString(CultureInfo.InvariantCulture)}");

    /// <summary>A finite number in (<paramref name="above"/>, ∞), or <paramref name="fallback"/> when absent or null.</summary>
    public static double Double(JsonNode? node, string source, string field, double above, double fallback) =>
        node == null ? fallback
            : Number(node) is { } text && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double x) && double.IsFinite(x) && x > above ? x
            : throw Wrong(source, field, node, $"a finite number above {above.ToString(CultureInfo.InvariantCulture)}");

    /// <summary>A boolean, or <paramref name="fallback"/> when absent or null.</summary>
    public static bool Bool(JsonNode? node, string source, string field, bool fallback) =>
        node == null ? fallback
            : node is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False ? v.GetValue<bool>()
            : throw Wrong(source, field, node, "true or false");

    /// <summary>An object, or null when absent or null.</summary>
    public static JsonObject? Object(JsonNode? node, string source, string field) =>
        node == null ? null : node as JsonObject ?? throw Wrong(source, field, node, "an object");

    /// <summary>An array of at most <paramref name="maxItems"/> items, or null when absent or null.</summary>
    public static JsonArray? Array(JsonNode? node, string source, string field, int maxItems)
    {
        if (node == null) return null;
        var array = node as JsonArray ?? throw Wrong(source, field, node, "an array");
        if (array.Count > maxItems)
            throw new FsMergeException($"{source}: field '{field}' has {array.Count} items, expected at most {maxItems}");
        return array;
    }
}
