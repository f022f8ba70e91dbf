using System.Globalization;

namespace FsMerge;

/// <summary>The process's peak resident set (Linux VmHWM), LibTorch's allocations included.</summary>
internal static class PeakMemory
{
    /// <summary>Restarts the peak at the current resident set (writing 5 to clear_refs); a no-op where not allowed.</summary>
    public static void Reset()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>Peak resident megabytes since the last <see cref="Reset"/> (0 where /proc is not available).</summary>
    public static double Megabytes()
    {
        if (!File.Exists("/proc/self/status")) return 0;
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:"));
        return line == null ? 0 : StatusMegabytes(line);
    }

    /// <summary>
    /// Megabytes of a /proc status line such as "VmHWM:\t 123456 kB": the padding before the number shrinks to
    /// nothing from 10 GB on, so tabs separate as well as spaces.
    /// </summary>
    internal static double StatusMegabytes(string line) =>
        double.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
}
