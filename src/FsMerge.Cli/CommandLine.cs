using System.Globalization;

namespace FsMerge.Cli;

/// <summary>One option of a command: "--name VALUE" or a flag, with its help and default.</summary>
public sealed record OptionSpec(string Name, string? Value, string Help, string? Default = null, bool Repeatable = false,
    bool Hidden = false)
{
    public bool IsFlag => Value == null;
}

/// <summary>A subcommand of fsmerge.</summary>
public interface ICommand
{
    string Name { get; }
    string Summary { get; }
    string Usage { get; }
    IReadOnlyList<OptionSpec> Options { get; }
    int Run(ParsedArgs args);
}

/// <summary>Arguments parsed strictly against a command's options: unknown options are errors.</summary>
public sealed class ParsedArgs
{
    readonly Dictionary<string, List<string>> values = new();
    readonly ICommand command;

    ParsedArgs(ICommand command) => this.command = command;

    public static ParsedArgs Parse(ICommand command, IReadOnlyList<string> args)
    {
        var parsed = new ParsedArgs(command);
        var specs = command.Options.ToDictionary(o => o.Name);
        for (int i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--"))
                throw new FsMergeException($"fsmerge {command.Name}: unexpected argument '{arg}' (see 'fsmerge {command.Name} --help')");
            var name = arg[2..];
            string? inline = null;
            int eq = name.IndexOf('=');
            if (eq >= 0) { inline = name[(eq + 1)..]; name = name[..eq]; }
            if (!specs.TryGetValue(name, out var spec))
                throw new FsMergeException($"fsmerge {command.Name}: unknown option '--{name}' (see 'fsmerge {command.Name} --help')");
            string value;
            if (spec.IsFlag)
            {
                if (inline != null) throw new FsMergeException($"fsmerge {command.Name}: option '--{name}' takes no value");
                value = "true";
            }
            else if (inline != null) value = inline;
            else if (i + 1 < args.Count) value = args[++i];
            else throw new FsMergeException($"fsmerge {command.Name}: option '--{name}' expects a value ({spec.Value})");
            // No option means anything by an empty value or a NUL (which no path or name can hold).
            if (value.Length == 0 || value.Contains('\0'))
                throw new FsMergeException($"fsmerge {command.Name}: option '--{name}' is {Terminal.Quote(value)}, expected {spec.Value}");
            if (!parsed.values.TryGetValue(name, out var list)) parsed.values[name] = list = new List<string>();
            if (list.Count > 0 && !spec.Repeatable)
                throw new FsMergeException($"fsmerge {command.Name}: option '--{name}' given twice");
            list.Add(value);
        }
        return parsed;
    }

    public bool Has(string name) => values.ContainsKey(name);

    public string? Get(string name) =>
        values.TryGetValue(name, out var list) ? list[^1] : command.Options.First(o => o.Name == name).Default;

    public IReadOnlyList<string> GetAll(string name) => values.TryGetValue(name, out var list) ? list : [];

    public string Require(string name) =>
        Get(name) ?? throw new FsMergeException($"fsmerge {command.Name}: option '--{name}' is required (see 'fsmerge {command.Name} --help')");

    /// <summary>A whole number in [<paramref name="min"/>, <paramref name="max"/>]; the bounds keep a typo from asking for a huge allocation or run.</summary>
    public int Int(string name, int min = int.MinValue, int max = int.MaxValue)
    {
        var text = Require(name);
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) || v < min || v > max)
            throw new FsMergeException($"fsmerge {command.Name}: --{name} '{text}' is not {Range(min, max)}");
        return v;
    }

    static string Range(int min, int max) => (min > int.MinValue, max < int.MaxValue) switch
    {
        (true, true) => $"an integer from {min} to {max}",
        (true, false) => $"an integer >= {min}",
        (false, true) => $"an integer <= {max}",
        _ => "an integer",
    };

    public double Double(string name)
    {
        var text = Require(name);
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new FsMergeException($"fsmerge {command.Name}: --{name} '{text}' is not a number");
        return v;
    }

    /// <summary>A comma-separated list of at most <paramref name="maxItems"/> integers from 1 to <paramref name="max"/>.</summary>
    public int[] IntList(string name, int max, int maxItems)
    {
        var text = Require(name);
        var items = text.Split(',', StringSplitOptions.TrimEntries);
        var list = new int[items.Length];
        for (int i = 0; i < items.Length; i++)
            if (items.Length > maxItems || !int.TryParse(items[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out list[i]) || list[i] < 1 || list[i] > max)
                throw new FsMergeException($"fsmerge {command.Name}: --{name} '{text}' is not a comma-separated list of at most {maxItems} integers from 1 to {max}");
        return list;
    }

    public static string Help(ICommand command)
    {
        var lines = new List<string> { $"usage: fsmerge {command.Usage}", "", command.Summary, "", "options:" };
        int width = command.Options.Max(o => o.Name.Length + (o.Value?.Length + 1 ?? 0)) + 4;
        foreach (var o in command.Options.Where(o => !o.Hidden))
        {
            var left = $"--{o.Name}" + (o.Value != null ? " " + o.Value : "");
            var help = o.Help + (o.Default != null ? $" (default: {o.Default})" : "") + (o.Repeatable ? " [repeatable]" : "");
            lines.Add($"  {left.PadRight(width)}{help}");
        }
        lines.Add($"  {"--help".PadRight(width)}show this help");
        return string.Join(Environment.NewLine, lines);
    }
}
