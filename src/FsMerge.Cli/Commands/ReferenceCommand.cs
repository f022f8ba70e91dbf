using System.Text;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Runs;

namespace FsMerge.Cli.Commands;

/// <summary>
/// `fsmerge reference`: the command-line and config-file reference in Markdown, made from the commands' option
/// definitions, the methods' options and the config reader's keys. docs/cli.md is its output; a test compares the two.
/// </summary>
sealed class ReferenceCommand : ICommand
{
    public string Name => "reference";
    public string Summary => "print the command-line and config-file reference (Markdown; docs/cli.md is its output)";
    public string Usage => "reference [--out FILE]";
    public IReadOnlyList<OptionSpec> Options => [new("out", "FILE", "write it to FILE instead of printing it", Short: "-o")];

    /// <summary>Config file keys that are no option of merge, with their meaning.</summary>
    static readonly Dictionary<string, string> ConfigOnlyKeys = new()
    {
        ["sources"] = "the source models, in merge order (at least two); each a mapping with the keys below",
        ["options"] = "the method's options by name, as on the command line without '--' (e.g. `{init: zipit, epochs: 300}`)",
        ["data"] = "unlabeled merge data: `{task: mnist:0-4}` (a dataset task's train split), `{images: DIR}` (a folder of images) or `{idx: FILE}` (an IDX image file); default: the task's train split",
        ["test"] = "labelled test data for --eval: `{task: TASK}` or `{images: DIR}` (one sub-folder per class); default: the task's test split",
    };

    public int Run(ParsedArgs args)
    {
        var text = Markdown(Commands.All);
        if (args.Get("out") is { } file) AtomicFile.WriteAllText(file, text);
        else Console.Write(text);
        return 0;
    }

    public static string Markdown(IReadOnlyList<ICommand> commands)
    {
        var md = new StringBuilder();
        md.AppendLine("# Command-line and config-file reference");
        md.AppendLine();
        md.AppendLine("Made by `fsmerge reference --out docs/cli.md` from the option definitions in the code; a test fails when this");
        md.AppendLine("file differs from what the program prints, so it cannot go stale.");
        md.AppendLine();
        md.AppendLine("Every command takes `-h`/`--help`; `fsmerge --version` prints the version. Options take their value as");
        md.AppendLine("`--name VALUE` or `--name=VALUE`; a one-letter alias, where there is one, is given beside the name. A config");
        md.AppendLine("file key is the name of the option it sets (`samples:` is `--samples`). An old name still works for one release");
        md.AppendLine("and prints a warning. Shell completion: `eval \"$(fsmerge completion bash)\"`.");
        md.AppendLine();
        md.AppendLine(string.Join(Environment.NewLine, commands.Select(c => $"- [`fsmerge {c.Name}`](#fsmerge-{c.Name}): {Cell(c.Summary)}")));
        foreach (var command in commands)
        {
            md.AppendLine();
            md.AppendLine($"## fsmerge {command.Name}");
            md.AppendLine();
            md.AppendLine(command.Summary);
            md.AppendLine();
            md.AppendLine($"    fsmerge {command.Usage}");
            md.AppendLine();
            if (command.Arguments.Count > 0)
            {
                md.AppendLine("| argument | meaning |");
                md.AppendLine("| --- | --- |");
                foreach (var a in command.Arguments) md.AppendLine($"| `{Cell(a.Value)}` | {Cell(a.Help)} |");
                md.AppendLine();
            }
            var options = command.Options.Where(o => !o.Hidden).ToList();
            if (options.Count > 0)
            {
                md.AppendLine("| option | meaning | default | old name |");
                md.AppendLine("| --- | --- | --- | --- |");
                foreach (var o in options)
                    md.AppendLine($"| {Cell(Synopsis(o))} | {Cell(o.Help)}{(o.Repeatable ? " (repeatable)" : "")} | {(o.Default != null ? $"`{Cell(o.Default)}`" : "")} | {string.Join(", ", (o.OldNames ?? []).Select(n => $"`--{n}`"))} |");
                md.AppendLine();
            }
            if (command is MergeCommand) AppendMethods(md);
        }
        AppendConfigFile(md);
        return md.ToString().Replace("\r\n", "\n");
    }

    static string Synopsis(OptionSpec o) =>
        (o.Short != null ? $"`{o.Short}`, " : "") + $"`--{o.Name}{(o.Value != null ? " " + o.Value : "")}`";

    static void AppendMethods(StringBuilder md)
    {
        md.AppendLine("### Merge methods and their options");
        md.AppendLine();
        md.AppendLine("`--method NAME` picks one; its options are given as flags (`--epochs 300`) or under `options:` in the config file.");
        foreach (var m in MergeMethods.All)
        {
            md.AppendLine();
            md.AppendLine($"**{m.Name}**: {m.Summary}");
            if (m.Options.Count == 0) continue;
            md.AppendLine();
            md.AppendLine("| option | meaning | default |");
            md.AppendLine("| --- | --- | --- |");
            foreach (var o in m.Options) md.AppendLine($"| `--{o.Name}` | {Cell(o.Help)} | `{Cell(o.Default)}` |");
        }
        md.AppendLine();
        md.AppendLine("Defaults that depend on the sources' architecture replace the ones above (a flag or the config file replaces both):");
        md.AppendLine();
        foreach (var name in Architectures.Names)
            md.AppendLine($"- {name}: {Common.ArchitectureDefaults(name, "`")}");
    }

    static void AppendConfigFile(StringBuilder md)
    {
        md.AppendLine();
        md.AppendLine("## The merge config file (YAML)");
        md.AppendLine();
        md.AppendLine("`fsmerge merge CONFIG.yaml` and `fsmerge compare CONFIG.yaml` read it; flags given beside it replace its values.");
        md.AppendLine("Relative paths are taken from the file's folder. Unknown keys are errors.");
        md.AppendLine();
        md.AppendLine("| key | meaning | default |");
        md.AppendLine("| --- | --- | --- |");
        var merge = MergeCommand.RunOptions;
        foreach (var key in MergeRequestFile.TopKeys) md.AppendLine(ConfigRow(key, merge));
        md.AppendLine();
        md.AppendLine("Each entry of `sources`:");
        md.AppendLine();
        md.AppendLine("| key | meaning | default |");
        md.AppendLine("| --- | --- | --- |");
        foreach (var key in MergeRequestFile.SourceKeys) md.AppendLine(ConfigRow(key, merge));
        md.AppendLine();
        md.AppendLine("Old key names, still read for one release with a warning: "
            + string.Join(", ", MergeRequestFile.OldTopKeys.Select(kv => $"`{kv.Key}` (now `{kv.Value}`)")) + ".");
    }

    static string ConfigRow(string key, IReadOnlyList<OptionSpec> merge)
    {
        if (ConfigOnlyKeys.TryGetValue(key, out var meaning)) return $"| `{key}` | {Cell(meaning)} | |";
        var option = merge.FirstOrDefault(o => o.Name == key)
            ?? throw new InvalidOperationException($"config key '{key}' is neither an option of merge nor described here");
        return $"| `{key}` | as `--{key}`: {Cell(option.Help)} | {(option.Default != null ? $"`{Cell(option.Default)}`" : "")} |";
    }

    static string Cell(string text) => text.Replace("|", "\\|").Replace("\n", " ");
}
