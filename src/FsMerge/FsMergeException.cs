namespace FsMerge;

/// <summary>
/// A problem with the user's input (a file, a field, an option). The CLI prints only the message,
/// as one line, and exits non-zero; so the message must name the file or field and what was expected.
/// </summary>
public class FsMergeException : Exception
{
    public FsMergeException(string message) : base(message) { }
    public FsMergeException(string message, Exception inner) : base(message, inner) { }
}
