using System.Text;

namespace FsMerge;

/// <summary>Text from inputs (file names, keys, labels) made safe for one line of a terminal.</summary>
internal static class Terminal
{
    /// <summary>Control characters (ESC, newline, C1) and unpaired surrogates as visible escapes, so an input
    /// can neither drive the terminal nor split an error message over lines.</summary>
    public static string Escape(string text)
    {
        StringBuilder? escaped = null;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            bool pair = char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]);
            string? replacement = c switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                _ when char.IsControl(c) => $"\\x{(int)c:x2}",
                _ when char.IsSurrogate(c) && !pair => $"\\u{(int)c:x4}",
                _ => null,
            };
            if (replacement == null && escaped == null)
            {
                if (pair) i++;
                continue;
            }
            escaped ??= new StringBuilder(text, 0, i, text.Length + 16);
            if (replacement != null) escaped.Append(replacement);
            else
            {
                escaped.Append(c);
                if (pair) escaped.Append(text[++i]);
            }
        }
        return escaped?.ToString() ?? text;
    }

    /// <summary>A name in double quotes, escaped.</summary>
    public static string Quote(string text) => "\"" + Escape(text).Replace("\"", "\\\"") + "\"";

    /// <summary>The first line of a (library's) message.</summary>
    public static string OneLine(string message) => message.Split('\n')[0].Trim();
}
