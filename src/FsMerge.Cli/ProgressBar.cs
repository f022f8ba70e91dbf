using System.Diagnostics;

namespace FsMerge.Cli;

/// <summary>
/// A progress bar on stderr with rate and ETA. When stderr is not a terminal (CI, pipes) it prints a
/// plain line at every tenth of the work instead of redrawing. --quiet turns it off.
/// </summary>
public sealed class ProgressBar
{
    public static bool Quiet { get; set; }

    readonly string label;
    readonly long total;
    readonly Stopwatch clock = Stopwatch.StartNew();
    readonly bool interactive = !Console.IsErrorRedirected;
    long lastDecile = -1;
    TimeSpan lastDraw = TimeSpan.Zero;

    public ProgressBar(string label, long total)
    {
        this.label = label;
        this.total = Math.Max(1, total);
    }

    public void Report(long done, string detail = "")
    {
        if (Quiet) return;
        double fraction = Math.Min(1.0, (double)done / total);
        double elapsed = clock.Elapsed.TotalSeconds;
        double rate = done / Math.Max(elapsed, 1e-9);
        var eta = done > 0 ? TimeSpan.FromSeconds((total - done) / Math.Max(rate, 1e-9)) : TimeSpan.Zero;
        var text = $"{label} {done}/{total} {detail} {rate:F1}/s eta {eta:mm\\:ss}";
        if (interactive)
        {
            if (done < total && clock.Elapsed - lastDraw < TimeSpan.FromMilliseconds(100)) return;
            lastDraw = clock.Elapsed;
            const int width = 24;
            int filled = (int)(fraction * width);
            Console.Error.Write($"\r[{new string('#', filled)}{new string('.', width - filled)}] {text}\u001b[K");
            if (done >= total) Console.Error.WriteLine();
        }
        else
        {
            long decile = (long)(fraction * 10);
            if (decile == lastDecile) return;
            lastDecile = decile;
            Console.Error.WriteLine($"{(int)(fraction * 100),3}% {text}");
        }
    }
}
