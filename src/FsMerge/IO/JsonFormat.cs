using System.Text.Encodings.Web;
using System.Text.Json;

namespace FsMerge;

/// <summary>How FsMerge writes JSON files: indented, and readable (no \u escapes for quotes or non-ASCII).</summary>
internal static class JsonFormat
{
    public static readonly JsonSerializerOptions Indented = new()
    {
        WriteIndented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}
