using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Globalization;

namespace FsMerge.Cli;

/// <summary>
/// One option of a command: "--name VALUE" or a flag, with its help and default. <paramref name="Short"/> is a
/// one-letter alias ("-o"); <paramref name="OldNames"/> are earlier names, still accepted for one release with a warning.
/// A config file key is the option's name (YAML `samples:` is `--samples`).
/// </summary>
public sealed record OptionSpec(string Name, string? Value, string Help, string? Default = null, bool Repeatable = false,
    bool Hidden = false, string? Short = null, string[]? OldNames = null)
{
    public bool IsFlag => Value == null;

    /// <summary>The help line: the text, then the default once.</summary>
    public string Description => Help + (Default != null ? $" (default: {Default})" : "") + (Repeatable ? " [repeatable]" : "");
}

/// <summary>A positional argument of a command (merge's CONFIG.yaml, bench's benchmark name); <paramref name="Values"/>, if given, are the only ones allowed.</summary>
public sealed record ArgumentSpec(string Name, string Value, string Help, string[]? Values = null);

/// <summary>A subcommand of fsmerge.</summary>
public interface ICommand
{
    string Name { get; }
    string Summary { get; }
    string Usage { get; }
    IReadOnlyList<OptionSpec> Options { get; }
    /// <summary>Positional arguments, in order; read like options (<see cref="ParsedArgs.Get"/> by name).</summary>
    IReadOnlyList<ArgumentSpec> Arguments => [];
    /// <summary>Text printed after the options in --help (merge lists every method's options).</summary>
    string? HelpFooter => null;
    int Run(ParsedArgs args);
}

/// <summary>
/// The command line, parsed by System.CommandLine from the commands' <see cref="OptionSpec"/> lists: it gives -h/--help,
/// --version, short aliases, "--name=value", and shell completion (the [suggest] directive that `fsmerge completion`
/// scripts call). Strict: an unknown option, a missing value or an option given twice is one line and exit code 2.
/// </summary>
public static class CommandLine
{
    /// <summary>The exit code of bad input: a usage error, or an FsMergeException.</summary>
    public const int BadInput = 2;

    public static RootCommand Build(IReadOnlyList<ICommand> commands, Func<ICommand, ParseResult, int> run)
    {
        var root = new RootCommand("fsmerge — merge neural networks trained from different initializations on different tasks");
        foreach (var command in commands)
        {
            var sub = new Command(command.Name, command.Summary);
            foreach (var spec in command.Arguments)
            {
                var argument = new Argument<string>(spec.Name) { HelpName = spec.Value, Description = spec.Help, Arity = ArgumentArity.ZeroOrOne };
                if (spec.Values != null) argument.AcceptOnlyFromAmong(spec.Values);
                sub.Add(argument);
            }
            foreach (var option in command.Options.SelectMany(spec => ToOptions(command, spec))) sub.Add(option);
            sub.SetAction(result => run(command, result));
            root.Add(sub);
        }
        var help = root.Options.OfType<HelpOption>().Single();
        help.Action = new Help(commands);
        return root;
    }

    /// <summary>The option, and a hidden twin for each old name (hidden, so completion and help offer only the new name).</summary>
    static IEnumerable<Option> ToOptions(ICommand command, OptionSpec spec) =>
        new[] { ToOption(command, spec, "--" + spec.Name, spec.Short, spec.Hidden) }
            .Concat((spec.OldNames ?? []).Select(old => ToOption(command, spec, "--" + old, null, hidden: true)));

    static Option ToOption(ICommand command, OptionSpec spec, string name, string? alias, bool hidden)
    {
        string[] aliases = alias != null ? [alias] : [];
        if (spec.IsFlag)
            return new Option<bool>(name, aliases) { Description = spec.Description, Hidden = hidden, Arity = ArgumentArity.Zero };
        // Repeatable options collect every occurrence (one value each); the others take exactly one value, once.
        Option option = spec.Repeatable
            ? new Option<string[]>(name, aliases) { Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false }
            : new Option<string>(name, aliases) { Arity = ArgumentArity.ExactlyOne };
        option.Description = spec.Description;
        option.Hidden = hidden;
        option.HelpName = spec.Value;
        // No option means anything by an empty value or a NUL (which no path or name can hold).
        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens.Where(t => t.Value.Length == 0 || t.Value.Contains('\0')))
                result.AddError($"fsmerge {command.Name}: option '{name}' is {Terminal.Quote(token.Value)}, expected {spec.Value}");
        });
        if (spec.Value is { } value && value.Contains('|') && !value.Contains(' '))
            option.CompletionSources.Add(value.Split('|'));
        return option;
    }

    /// <summary>The most specific parse error as one line, naming the command's help.</summary>
    public static string Error(ParseResult result)
    {
        bool atRoot = result.CommandResult.Command is RootCommand;
        var name = atRoot ? "" : " " + result.CommandResult.Command.Name;
        // A word the parser did not know is the news (the library would first say that no command was given).
        var message = result.UnmatchedTokens.FirstOrDefault() is { } unknown
            ? unknown.StartsWith('-') ? $"unknown option '{unknown}'"
                : atRoot ? $"unknown command '{unknown}' (expected one of: {string.Join(", ", result.RootCommandResult.Command.Subcommands.Select(c => c.Name))})"
                : $"unexpected argument '{unknown}'"
            : string.Join(" ", result.Errors[0].Message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
        return message.StartsWith("fsmerge ") ? message : $"fsmerge{name}: {message} (see 'fsmerge{name} --help')";
    }

    /// <summary>Old option names the command line used, as one warning each.</summary>
    public static IEnumerable<string> Deprecations(ICommand command, ParseResult result) =>
        from spec in command.Options
        from old in spec.OldNames ?? []
        where result.Tokens.Any(t => t.Value == "--" + old || t.Value.StartsWith("--" + old + "="))
        select $"--{old} is now --{spec.Name}; the old name will be removed in the next release";

    /// <summary>
    /// Help made from the definitions, as System.CommandLine's would be, but with each command's own usage line (it shows
    /// the forms an option list cannot) and footer; its help layout cannot be changed from outside the library.
    /// </summary>
    sealed class Help(IReadOnlyList<ICommand> commands) : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult result)
        {
            var command = commands.FirstOrDefault(c => c.Name == result.CommandResult.Command.Name && result.CommandResult.Command is not RootCommand);
            result.InvocationConfiguration.Output.WriteLine(command is null ? Overview(commands) : Text(command));
            return 0;
        }
    }

    public static string Overview(IReadOnlyList<ICommand> commands)
    {
        var lines = new List<string>
        {
            "fsmerge — merge neural networks trained from different initializations on different tasks", "",
            "usage: fsmerge COMMAND [options]   (fsmerge COMMAND --help for its options; fsmerge --version)", "",
        };
        lines.AddRange(commands.Select(c => $"  {c.Name,-10} {c.Summary}"));
        return string.Join(Environment.NewLine, lines);
    }

    public static string Text(ICommand command)
    {
        var lines = new List<string> { $"usage: fsmerge {command.Usage}", "", command.Summary };
        var rows = command.Arguments.Select(a => (Left: a.Value, a.Help))
            .Concat(command.Options.Where(o => !o.Hidden).Select(o => (Left: (o.Short != null ? o.Short + ", " : "    ") + $"--{o.Name}" + (o.Value != null ? " " + o.Value : ""),
                Help: o.Description + (o.OldNames is { } old ? $" (was: {string.Join(", ", old.Select(n => "--" + n))})" : ""))))
            .Append((Left: "-h, --help", Help: "show this help")).ToList();
        int width = rows.Max(r => r.Left.Length) + 4;
        lines.Add("");
        lines.Add("options:");
        lines.AddRange(rows.Select(r => $"  {r.Left.PadRight(width)}{r.Help}"));
        if (command.HelpFooter is { } footer) lines.Add(footer);
        return string.Join(Environment.NewLine, lines);
    }
}

/// <summary>A command's parsed arguments, read by option name; values are checked where they are read.</summary>
public sealed class ParsedArgs
{
    readonly ICommand command;
    readonly ParseResult result;

    public ParsedArgs(ICommand command, ParseResult result) => (this.command, this.result) = (command, result);

    /// <summary>The values given for an option (a flag given: "true"), else for the positional argument of that name;
    /// none for a name the command does not have (compare shares merge's reading code but has no --method).</summary>
    IReadOnlyList<string> Values(string name)
    {
        if (command.Options.FirstOrDefault(o => o.Name == name) is { } spec)
        {
            var given = new[] { name }.Concat(spec.OldNames ?? []).Select(n => result.GetResult("--" + n))
                .OfType<OptionResult>().Where(o => o.IdentifierTokenCount > 0).ToList();
            if (given.Count > 1 && !spec.Repeatable)
                throw new FsMergeException($"fsmerge {command.Name}: option '--{name}' given twice (once by its old name)");
            if (given.Count > 0)
                return given.SelectMany(o => o.Tokens.Count > 0 ? o.Tokens.Select(t => t.Value) : ["true"]).ToList();
        }
        if (command.Arguments.Any(a => a.Name == name) && result.GetResult(name) is ArgumentResult argument)
            return argument.Tokens.Select(t => t.Value).ToList();
        return [];
    }

    public bool Has(string name) => Values(name).Count > 0;

    public string? Get(string name) =>
        Values(name) is { Count: > 0 } list ? list[^1] : command.Options.FirstOrDefault(o => o.Name == name)?.Default;

    public IReadOnlyList<string> GetAll(string name) => Values(name);

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
}
