using System.Globalization;
using System.Text.Json.Nodes;
using FsMerge.Merging;

namespace FsMerge.Runs;

/// <summary>
/// Method options carry no declared types; their defaults do (an integer default takes integers, a true/false default
/// takes true or false, a list of numbers takes such lists; an option with an example also takes "auto"). The config
/// file checks values by this, and merge.json stores them as JSON of that type.
/// </summary>
static class OptionValues
{
    public static bool IsInt(string s) => long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out _);
    public static bool IsNumber(string s) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && double.IsFinite(d);
    public static bool IsBool(string s) => s is "true" or "false";
    static bool IsNumberList(string s) => s.Contains(',') && s.Split(',', StringSplitOptions.TrimEntries).All(IsNumber);

    /// <summary>Whether <paramref name="value"/> has the type of <paramref name="typeExample"/> (<see cref="MethodOption.TypeExample"/>).</summary>
    public static bool Fits(string value, string typeExample) =>
        IsInt(typeExample) ? IsInt(value) : IsNumber(typeExample) ? IsNumber(value) : !IsBool(typeExample) || IsBool(value);

    public static string TypeName(string typeExample) =>
        IsInt(typeExample) ? "a whole number" : IsNumber(typeExample) ? "a number" : IsBool(typeExample) ? "true or false" : "a word";

    /// <summary>The value as JSON of its option's type; "auto", and a value that does not fit its type, stay strings.</summary>
    public static JsonNode? ToJson(string value, MethodOption? option)
    {
        var example = option?.TypeExample ?? value;
        if (IsInt(example) && long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out long i)) return i;
        if (IsNumber(example) && IsNumber(value)) return double.Parse(value, NumberStyles.Float, CultureInfo.InvariantCulture);
        if (IsBool(example) && IsBool(value)) return value == "true";
        if (IsNumberList(example) && (IsNumberList(value) || IsNumber(value)))
            return new JsonArray(value.Split(',', StringSplitOptions.TrimEntries).Select(p => (JsonNode)double.Parse(p, NumberStyles.Float, CultureInfo.InvariantCulture)).ToArray());
        return value;
    }

    /// <summary>A method's option values as a JSON object of typed values, in the method's order.</summary>
    public static JsonObject ToJson(IMergeMethod method, IReadOnlyDictionary<string, string> values) =>
        new(values.Select(kv => KeyValuePair.Create(kv.Key, ToJson(kv.Value, method.Options.FirstOrDefault(o => o.Name == kv.Key)))));
}
