using FsMerge.Bench;

namespace FsMerge.Cli.Commands;

sealed class BenchCommand : ICommand
{
    public string Name => "bench";
    public string Summary => "reproduce the paper's experiments (bench mlp): writes Markdown, CSV and JSON tables";
    public string Usage => "bench mlp [--quick] [--seeds N] --out DIR";

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("mlp", null, "the MLP experiments: MNIST / Fashion-MNIST halves by depth and width (also accepted as 'bench mlp')"),
        new("quick", null, "one setting (MNIST, depth 2), one seed, shorter training: a few minutes"),
        new("seeds", "N", "seeds per setting", "5"),
        new("data-per-task", "N", "unlabeled merge images per task", "64"),
        new("out", "DIR", "output directory", "runs/bench-mlp"),
        Common.Data, Common.Device, Common.Threads, Common.Quiet,
    ];

    public int Run(ParsedArgs args)
    {
        if (!args.Has("mlp")) throw new FsMergeException("fsmerge bench: name the benchmark: 'fsmerge bench mlp' (see 'fsmerge bench --help')");
        var device = Common.Setup(args);
        var options = new MlpBenchOptions
        {
            Quick = args.Has("quick"),
            Seeds = args.Int("seeds", min: 1),
            DataPerTask = args.Int("data-per-task", min: 1),
            OutDir = args.Require("out"),
            DataDir = Common.DataDir(args),
            Device = device,
        };
        MlpBench.Run(options, Console.WriteLine);
        Console.WriteLine($"wrote {Path.Combine(options.OutDir, "mlp.md")}, mlp.csv, mlp.json");
        return 0;
    }
}
