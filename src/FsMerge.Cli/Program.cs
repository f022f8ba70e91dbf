using System.CommandLine;
using FsMerge;
using FsMerge.Cli;
using FsMerge.Cli.Commands;

var commands = Commands.All;
// The thread default's busy-machine note waits for the first progress bar (ProgressBar.PendingNotes).
TorchRuntime.Notes ??= ProgressBar.PendingNotes;
var root = CommandLine.Build(commands, (command, parsed) =>
{
    foreach (var warning in CommandLine.Deprecations(command, parsed)) Console.Error.WriteLine($"warning: {warning}");
    try
    {
        return command.Run(new ParsedArgs(command, parsed));
    }
    catch (FsMergeException e)
    {
        // Messages quote file names, keys and labels from the inputs: escaped, they can neither drive the terminal nor add lines.
        Console.Error.WriteLine($"error: {Terminal.Escape(e.Message)}");
        return CommandLine.BadInput;
    }
    catch (Exception e) when (Environment.GetEnvironmentVariable("FSMERGE_DEBUG") == null)
    {
        // Anything else is our bug; say so in one line (FSMERGE_DEBUG=1 shows the stack trace).
        Console.Error.WriteLine($"error: internal error ({e.GetType().Name}: {Terminal.Escape(Terminal.OneLine(e.Message))}); rerun with FSMERGE_DEBUG=1 for details");
        return 1;
    }
});

// No command at all: the overview, as an error (a script that forgot its command should not pass).
bool bare = args.Length == 0;
// A response file (@FILE) would read arguments from any path that starts with '@': not a convention of this tool.
var parsed = root.Parse(bare || args is ["help"] ? ["--help"] : args, new ParserConfiguration { ResponseFileTokenReplacer = null });
if (parsed.Errors.Count > 0 && parsed.Action is not { ClearsParseErrors: true })
{
    Console.Error.WriteLine($"error: {Terminal.Escape(CommandLine.Error(parsed))}");
    return CommandLine.BadInput;
}
int code = parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = Console.Out, Error = Console.Error });
return bare ? CommandLine.BadInput : code;
