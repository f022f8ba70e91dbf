namespace FsMerge.Cli.Commands;

/// <summary>Every fsmerge command, in the order the overview lists them.</summary>
static class Commands
{
    public static readonly IReadOnlyList<ICommand> All =
    [
        new DemoCommand(), new DataCommand(), new TrainCommand(), new PretrainCommand(), new MergeCommand(), new CompareCommand(),
        new EvalCommand(), new BenchCommand(), new FuzzCommand(), new CompletionCommand(), new ReferenceCommand(),
    ];
}
