namespace FsMerge;

/// <summary>
/// What the CPUs are doing when a run starts: how many physical cores this process may use and how many CPUs
/// other work keeps busy. LibTorch's default (one thread per core, OpenMP threads that spin while they wait) assumes
/// the cores are free; on a busy machine that made runs 10-20x slower (docs/threads.md).
/// <see cref="TorchRuntime.DefaultThreads"/> uses this to say so when a run starts on a busy machine.
/// </summary>
internal static class CpuLoad
{
    /// <summary>
    /// Physical cores among the CPUs this process may run on: logical CPUs that share a core (SMT) count once.
    /// Falls back to <see cref="Environment.ProcessorCount"/> where /sys does not tell.
    /// </summary>
    public static int PhysicalCores()
    {
        int logical = Environment.ProcessorCount;   // honours the affinity mask and a cgroup CPU limit
        try
        {
            var cores = Directory.GetDirectories("/sys/devices/system/cpu", "cpu*")
                .Where(d => File.Exists(Path.Combine(d, "topology/core_id")))
                .Select(d => File.ReadAllText(Path.Combine(d, "topology/physical_package_id")).Trim() + "/" + File.ReadAllText(Path.Combine(d, "topology/core_id")).Trim())
                .Distinct().Count();
            int cpus = Directory.GetDirectories("/sys/devices/system/cpu", "cpu*").Count(d => File.Exists(Path.Combine(d, "topology/core_id")));
            if (cores == 0 || cpus == 0) return logical;
            int threadsPerCore = Math.Max(1, cpus / cores);
            return Math.Max(1, logical / threadsPerCore);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return logical; }
    }

    /// <summary>
    /// CPUs that were idle over <paramref name="window"/> (from /proc/stat: idle and I/O-wait time over all time),
    /// a fraction; null where /proc/stat cannot be read.
    /// </summary>
    public static double? IdleCpus(TimeSpan window)
    {
        var before = ReadCpuTimes();
        if (before == null) return null;
        Thread.Sleep(window);
        var after = ReadCpuTimes();
        if (after == null) return null;
        double total = after.Value.Total - before.Value.Total, idle = after.Value.Idle - before.Value.Idle;
        return total <= 0 ? null : after.Value.Cpus * idle / total;
    }

    /// <summary>The first line of /proc/stat: cumulative time of all CPUs, and how much of it was idle.</summary>
    static (double Total, double Idle, int Cpus)? ReadCpuTimes()
    {
        try
        {
            var lines = File.ReadAllLines("/proc/stat");
            var fields = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields[0] != "cpu" || fields.Length < 6) return null;
            var values = fields.Skip(1).Take(8).Select(double.Parse).ToArray();   // user nice system idle iowait irq softirq steal
            int cpus = lines.Count(l => l.StartsWith("cpu") && l.Length > 3 && char.IsDigit(l[3]));
            return (values.Sum(), values[3] + values[4], cpus);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException) { return null; }
    }
}
