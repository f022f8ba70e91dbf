using FsMerge;
using FsMerge.Cli;
using FsMerge.Cli.Commands;

var commands = new ICommand[] { new DemoCommand(), new DataCommand(), new TrainCommand(), new PretrainCommand(), new MergeCommand(), new CompareCommand(), new EvalCommand(), new BenchCommand(), new FuzzCommand() };

if (args.Length == 0 || args[0] is "--help" or "-h" or "help")
{
    Console.WriteLine("fsmerge — merge neural networks trained from different initializations on different tasks");
    Console.WriteLine();
    Console.WriteLine("usage: fsmerge COMMAND [options]   (fsmerge COMMAND --help for its options)");
    Console.WriteLine();
    foreach (var c in commands) Console.WriteLine($"  {c.Name,-8} {c.Summary}");
    return args.Length == 0 ? 2 : 0;
}

var command = commands.FirstOrDefault(c => c.Name == args[0]);
if (command == null)
{
    Console.Error.WriteLine($"error: unknown command '{Terminal.Escape(args[0])}' (expected one of: {string.Join(", ", commands.Select(c => c.Name))})");
    return 2;
}
// Subcommand words ("bench mlp") are flags of their command.
var rest = args.Skip(1).Select(a => command is BenchCommand && a is "mlp" or "vit" or "bert" or "perf" or "load" ? "--" + a : a).ToList();
// "merge CONFIG.yaml" and "compare CONFIG.yaml" name their config file first.
if (command is MergeCommand or CompareCommand && rest.Count > 0 && !rest[0].StartsWith("--")) rest.Insert(0, "--config");
if (rest.Contains("--help") || rest.Contains("-h"))
{
    Console.WriteLine(ParsedArgs.Help(command));
    if (command is MergeCommand or CompareCommand) Console.WriteLine(MergeCommand.MethodHelp());
    return 0;
}
try
{
    return command.Run(ParsedArgs.Parse(command, rest));
}
catch (FsMergeException e)
{
    // Messages quote file names, keys and labels from the inputs: escaped, they can neither drive the terminal nor add lines.
    Console.Error.WriteLine($"error: {Terminal.Escape(e.Message)}");
    return 2;
}
catch (Exception e) when (Environment.GetEnvironmentVariable("FSMERGE_DEBUG") == null)
{
    // Anything else is our bug; say so in one line (FSMERGE_DEBUG=1 shows the stack trace).
    Console.Error.WriteLine($"error: internal error ({e.GetType().Name}: {Terminal.Escape(Terminal.OneLine(e.Message))}); rerun with FSMERGE_DEBUG=1 for details");
    return 1;
}
