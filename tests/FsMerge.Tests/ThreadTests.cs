using System.Diagnostics;
using System.Runtime.CompilerServices;
using Xunit;

namespace FsMerge.Tests;

/// <summary>The automatic thread count (TorchRuntime.AutomaticThreads) against real load on this machine.</summary>
public class ThreadTests
{
    /// <summary>
    /// Tests check that a failing command writes exactly one line to standard error; on a busy machine the first
    /// automatic thread choice in the process would add its note there. The note itself is tested below.
    /// </summary>
    [ModuleInitializer]
    internal static void QuietThreadNotes() => TorchRuntime.Notes = TextWriter.Null;

    [Fact]
    public void Beside_a_busy_loop_on_every_cpu_it_takes_fewer_threads_than_cores_and_says_so()
    {
        int cores = CpuLoad.PhysicalCores();
        Assert.InRange(cores, 1, Environment.ProcessorCount);
        var burners = Enumerable.Range(0, 2 * Environment.ProcessorCount)
            .Select(_ => Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "while :; do :; done"]))!).ToList();
        try
        {
            Thread.Sleep(200);
            var notes = new StringWriter();
            int threads = TorchRuntime.AutomaticThreads(notes);
            Assert.InRange(threads, 1, cores);
            if (cores > 1)
            {
                Assert.True(threads < cores, $"{threads} threads on {cores} busy cores");
                Assert.Contains("other work keeps", notes.ToString());
            }
        }
        finally
        {
            foreach (var p in burners) { p.Kill(); p.WaitForExit(); p.Dispose(); }
        }
    }
}
