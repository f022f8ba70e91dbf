using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace FsMerge.Bench;

/// <summary>One thread setting on one machine state: its median step time over the rounds.</summary>
internal sealed record ThreadResult(string Setting, string Machine, int Threads, double MillisecondsPerStep, double IdleCpus, double[] Rounds);

/// <summary>
/// The default thread count against one thread, on this machine as it is ("idle") and with a CPU-burning process per
/// logical CPU beside it ("busy"): the bench vit model's FS-Merge training step (fold every step), each setting in its
/// own process because OpenMP reads its wait policy once, at load. Settings: 1 thread; the default
/// (<see cref="TorchRuntime.DefaultThreads"/>: a thread per physical core, passive OpenMP waits); as many threads as
/// cores were idle just before (passive waits), the alternative the default was chosen over; and LibTorch's own
/// default (a thread per core, spinning waits), which fsmerge used before.
/// </summary>
internal static class ThreadBench
{
    /// <summary>Each setting's name, its --threads given the idle CPUs measured before the runs, and FSMERGE_THREADS.</summary>
    static readonly (string Name, Func<double, int> Threads, string? Policy)[] Settings =
    [
        ("1 thread", _ => 1, null),
        ("default: a thread per core, passive waits", _ => 0, null),
        ("idle cores only, passive waits", idle => Math.Clamp((int)Math.Round(idle), 1, CpuLoad.PhysicalCores()), null),
        ("LibTorch's default (fsmerge before)", _ => 0, "libtorch"),
    ];

    public static List<ThreadResult> Run(PerfSettings s, int rounds, string outDir, Action<string> log)
    {
        s.Check();
        var measured = new List<ThreadResult>();
        for (int round = 1; round <= rounds; round++)
            foreach (var machine in new[] { "idle", "busy" })
            {
                using var burners = machine == "busy" ? Burners.Start(Environment.ProcessorCount) : null;
                double idle = CpuLoad.IdleCpus(TimeSpan.FromMilliseconds(500)) ?? CpuLoad.PhysicalCores();
                foreach (var (name, threads, policy) in Settings)
                {
                    var environment = new Dictionary<string, string?> { [TorchRuntime.ThreadsVariable] = policy };
                    var result = PerfBench.Child<PerfResult>("fold-every-step", 2, threads(idle), s, environment);
                    log($"  round {round}, {machine} ({idle:F1} CPUs idle): {name,-42} {result.Threads} thread(s) {result.MillisecondsPerStep,8:F1} ms/step");
                    measured.Add(new ThreadResult(name, machine, result.Threads, result.MillisecondsPerStep, idle, [result.MillisecondsPerStep]));
                }
            }
        var results = measured.GroupBy(r => (r.Setting, r.Machine)).Select(g =>
        {
            var times = g.Select(r => r.MillisecondsPerStep).ToArray();
            return g.First() with { MillisecondsPerStep = PerfBench.Median(times), IdleCpus = PerfBench.Median(g.Select(r => r.IdleCpus).ToArray()), Rounds = times };
        }).ToList();
        Write(results, s, rounds, outDir);
        return results;
    }

    static void Write(List<ThreadResult> results, PerfSettings s, int rounds, string outDir)
    {
        var inv = CultureInfo.InvariantCulture;
        ThreadResult At(string setting, string machine) => results.First(r => r.Setting == setting && r.Machine == machine);
        var md = new StringBuilder();
        md.AppendLine("# Thread settings on an idle and a busy machine\n");
        md.AppendLine($"Command: `./fsmerge bench load{(s.Steps == PerfSettings.DefaultSteps ? "" : $" --steps {s.Steps}")} --rounds {rounds} --out {outDir}`. " +
            $"Workload: FS-Merge training of 2 models, fold every step ({s.Shape}), median ms/step over {rounds} round(s). " +
            $"Busy: one CPU-burning process per logical CPU ({Environment.ProcessorCount}) beside the run. " +
            $"Machine: {Environment.ProcessorCount} logical CPUs, {CpuLoad.PhysicalCores()} physical cores; 'CPUs idle' is measured just before each machine state's runs.\n");
        md.AppendLine("| setting | threads idle / busy | idle ms/step | busy ms/step | busy / idle | vs 1 thread, idle | vs 1 thread, busy |");
        md.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var (name, _, _) in Settings)
        {
            var (idle, busy) = (At(name, "idle"), At(name, "busy"));
            var (oneIdle, oneBusy) = (At(Settings[0].Name, "idle"), At(Settings[0].Name, "busy"));
            md.AppendLine(string.Create(inv, $"| {name} | {idle.Threads} / {busy.Threads} | {idle.MillisecondsPerStep:F1} | {busy.MillisecondsPerStep:F1} | {busy.MillisecondsPerStep / idle.MillisecondsPerStep:F2}× | {idle.MillisecondsPerStep / oneIdle.MillisecondsPerStep:F2}× | {busy.MillisecondsPerStep / oneBusy.MillisecondsPerStep:F2}× |"));
        }
        md.AppendLine(string.Create(inv, $"\nCPUs idle before the runs: idle {At(Settings[0].Name, "idle").IdleCpus:F1}, busy {At(Settings[0].Name, "busy").IdleCpus:F1} (medians over rounds)."));
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "threads.md"), md.ToString());
        File.WriteAllText(Path.Combine(outDir, "threads.json"), JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// CPU-burning processes that stand for other work on the machine; ended on dispose. Each is a shell loop that
    /// also ends by itself once this process is gone, so an interrupted bench leaves none behind.
    /// </summary>
    sealed class Burners : IDisposable
    {
        readonly List<Process> processes = [];

        public static Burners Start(int count)
        {
            var burners = new Burners();
            for (int i = 0; i < count; i++)
                burners.processes.Add(Process.Start(new ProcessStartInfo("/bin/sh", ["-c", $"while kill -0 {Environment.ProcessId} 2>/dev/null; do :; done"]))!);
            return burners;
        }

        public void Dispose()
        {
            foreach (var p in processes)
            {
                try { p.Kill(); p.WaitForExit(); } catch (InvalidOperationException) { }
                p.Dispose();
            }
        }
    }
}
