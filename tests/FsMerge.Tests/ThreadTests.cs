using System.Diagnostics;
using System.Runtime.CompilerServices;
using Xunit;

namespace FsMerge.Tests;

/// <summary>The default thread count (TorchRuntime.DefaultThreads) against real load on this machine.</summary>
public class ThreadTests
{
    /// <summary>
    /// Tests check that a failing command writes exactly one line to standard error; on a busy machine the first
    /// default thread choice in the process would add its note there. The note itself is tested below.
    /// </summary>
    [ModuleInitializer]
    internal static void QuietThreadNotes() => TorchRuntime.Notes = TextWriter.Null;

    [Fact]
    public void Beside_busy_loops_on_every_cpu_it_keeps_a_thread_per_core_and_says_the_machine_is_busy()
    {
        int cores = CpuLoad.PhysicalCores();
        Assert.InRange(cores, 1, Environment.ProcessorCount);
        var burners = Enumerable.Range(0, 2 * Environment.ProcessorCount)
            .Select(_ => Process.Start(new ProcessStartInfo("/bin/sh", ["-c", $"while kill -0 {Environment.ProcessId} 2>/dev/null; do :; done"]))!).ToList();
        try
        {
            Thread.Sleep(200);
            var notes = new StringWriter();
            Assert.Equal(cores, TorchRuntime.DefaultThreads(notes));
            Assert.Contains("other work keeps", notes.ToString());
        }
        finally
        {
            foreach (var p in burners) { p.Kill(); p.WaitForExit(); p.Dispose(); }
        }
    }
}
