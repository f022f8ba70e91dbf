using System.Globalization;

namespace FsMerge;

/// <summary>This process's peak resident memory (Linux VmHWM, LibTorch's native allocations included).</summary>
public static class ProcessMemory
{
    /// <summary>Starts a new peak from the current resident size (where the kernel allows it).</summary>
    public static void ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>Peak resident memory in MB since start or the last <see cref="ResetPeak"/>; NaN where /proc is missing.</summary>
    public static double PeakMegabytes()
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return double.NaN;
        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("VmHWM:"));
        return line == null ? double.NaN : double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
    }
}
