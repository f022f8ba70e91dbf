using FsMerge.Fuzzing;

namespace FsMerge.Cli.Commands;

/// <summary>`fsmerge fuzz`: the reader fuzzer (<see cref="Fuzzer"/>) for as long as asked; the test suite runs it briefly.</summary>
sealed class FuzzCommand : ICommand
{
    public string Name => "fuzz";
    public string Summary => "fuzz every file reader (safetensors, index, config.json, YAML, IDX, images, text, vocab, checkpoints) with mutated files";
    public string Usage => "fuzz [--seconds N | --executions N] [--seed S] [--target NAME ...] [--out DIR]";

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("seconds", "N", "run for N seconds", "60"),
        new("executions", "N", "instead: N inputs per target (the same run on every machine)"),
        new("seed", "S", "seed of the mutations", "1", Short: "-s"),
        new("target", "NAME", $"fuzz only this reader ({string.Join(", ", FuzzTargets.Names)})", Repeatable: true),
        new("out", "DIR", "where inputs that crash a reader, or take too long or too much memory, are saved (one folder per target)", "runs/fuzz", Short: "-o"),
        Common.Threads,
    ];

    public int Run(ParsedArgs args)
    {
        TorchRuntime.Configure(args.Int("threads", min: 0, max: TorchRuntime.MaxThreads));
        var work = Path.Combine(Path.GetTempPath(), $"fsmerge-fuzz-{Environment.ProcessId}");
        try
        {
            var report = Fuzzer.Run(work, Path.GetFullPath(args.Require("out")), args.Int("seed"),
                args.Has("executions") ? null : TimeSpan.FromSeconds(args.Int("seconds", min: 1)),
                args.Has("executions") ? args.Int("executions", min: 1) : null,
                args.GetAll("target"), Console.WriteLine);
            foreach (var (target, count) in report.Executions) Console.WriteLine($"{target,-12} {count,9} executions");
            Console.WriteLine($"{report.Total} executions in {report.Elapsed.TotalSeconds:F1} s ({report.Total / report.Elapsed.TotalSeconds:F0}/s), {report.Findings.Count} finding(s)");
            foreach (var f in report.Findings) Console.WriteLine($"  {f.Target}: {f.Kind}: {f.Cause}: {f.Detail} -> {f.File}");
            return report.Findings.Count == 0 ? 0 : 1;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
