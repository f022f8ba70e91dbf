using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace FsMerge.Cli;

/// <summary>
/// A progress bar on stderr with its detail (loss), rate (in <c>unit</c>s per second) and ETA. On a terminal it is a
/// Spectre.Console live bar; when stderr is not a terminal (CI, pipes) it prints a plain line at every tenth of the
/// work, and at least every <see cref="PlainEvery"/> so that a slow run never looks stalled. --quiet turns it off.
/// Either way the plain lines go to <see cref="Log"/> (the run's log file) when one is set.
/// </summary>
public sealed class ProgressBar
{
    public static bool Quiet { get; set; }
    /// <summary>Receives the plain progress lines (every tenth of the work), whatever is shown on screen.</summary>
    public static Action<string>? Log { get; set; }

    /// <summary>
    /// Notes about the run held back until its work starts (the first bar): the busy-machine note of the thread
    /// default is written when LibTorch is configured, before the inputs are checked, and bad input must stay one line.
    /// </summary>
    public static readonly StringWriter PendingNotes = new();

    /// <summary>The longest a plain-line run stays silent while work goes on.</summary>
    public static readonly TimeSpan PlainEvery = TimeSpan.FromSeconds(30);

    readonly string label;
    readonly long total;
    readonly string unit;
    readonly Stopwatch clock = Stopwatch.StartNew();
    readonly bool interactive = !Console.IsErrorRedirected;
    LiveBar? live;
    long lastDecile = -1;
    TimeSpan lastLine;
    // The rate counts the work done since the first report: a resumed run starts at its checkpoint's step, which
    // took no time in this process.
    long? firstDone;
    TimeSpan firstAt;

    /// <param name="unit">what <c>done</c> counts, for the rate: "steps", "samples", "batches".</param>
    public ProgressBar(string label, long total, string unit = "steps")
    {
        this.label = label;
        this.total = Math.Max(1, total);
        this.unit = unit;
        if (PendingNotes.GetStringBuilder().Length > 0)
        {
            foreach (var note in PendingNotes.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                Log?.Invoke(note);
                if (!Quiet) Console.Error.WriteLine(note);
            }
            PendingNotes.GetStringBuilder().Clear();
        }
    }

    public void Report(long done, string detail = "")
    {
        var now = clock.Elapsed;
        if (firstDone == null) (firstDone, firstAt) = (done, now);
        double fraction = Math.Min(1.0, (double)done / total);
        double seconds = (now - firstAt).TotalSeconds;
        double? rate = done > firstDone && seconds > 0 ? (done - firstDone.Value) / seconds : null;
        if (interactive && !Quiet) (live ??= new LiveBar(label, total, unit)).Report(done, detail, rate);
        long decile = (long)(fraction * 10);
        if (decile == lastDecile && now - lastLine < PlainEvery) return;
        (lastDecile, lastLine) = (decile, now);
        var line = string.Join(" ", new[] { $"{(int)(fraction * 100),3}%", label, $"{done}/{total}", detail, Rate(rate, unit), $"eta {Eta(rate, total - done)}" }
            .Where(part => part.Length > 0));
        Log?.Invoke(line);
        if (!Quiet && !interactive) Console.Error.WriteLine(line);
    }

    /// <summary>"12.3 steps/s", or "4.2 s/step" when slower than one per second; "-" before anything was measured.</summary>
    public static string Rate(double? perSecond, string unit)
    {
        if (perSecond is not { } r) return $"- {unit}/s";
        if (r >= 1) return $"{r.ToString(r >= 100 ? "F0" : "F1", CultureInfo.InvariantCulture)} {unit}/s";
        string one = unit.EndsWith('s') ? unit[..^1] : unit;
        return $"{(1 / r).ToString("F1", CultureInfo.InvariantCulture)} s/{one}";
    }

    /// <summary>The time left at the measured rate, as m:ss or h:mm:ss (hours are never dropped); "-" before a rate exists.</summary>
    public static string Eta(double? perSecond, long left)
    {
        if (perSecond is not { } r || r <= 0) return "-";
        var eta = TimeSpan.FromSeconds(Math.Min(left / r, TimeSpan.MaxValue.TotalSeconds / 2));
        return eta.TotalHours >= 1
            ? $"{(long)eta.TotalHours}:{eta.Minutes:D2}:{eta.Seconds:D2}"
            : $"{eta.Minutes}:{eta.Seconds:D2}";
    }

    /// <summary>
    /// One Spectre.Console progress display, drawn on stderr by a background thread (Spectre's display runs the
    /// work inside its own callback; here the work runs on the caller's thread and reports into it). It closes
    /// when the work is done, when the next bar opens (Spectre draws one live display at a time) or when the
    /// process exits.
    /// </summary>
    sealed class LiveBar
    {
        static readonly IAnsiConsole Screen = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        static readonly List<LiveBar> Open = [];

        static LiveBar() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            lock (Open) foreach (var bar in Open.ToList()) bar.Close();
        };

        readonly ManualResetEventSlim started = new(), finished = new();
        readonly Thread thread;
        readonly string label;
        readonly long total;
        readonly string unit;
        ProgressTask? task;
        double? rate;

        public LiveBar(string label, long total, string unit)
        {
            this.label = label;
            this.total = total;
            this.unit = unit;
            lock (Open) foreach (var bar in Open.ToList()) bar.Close();
            thread = new Thread(() => Screen.Progress().AutoClear(false).HideCompleted(false)
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                    new RateColumn(this), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(context =>
                {
                    task = context.AddTask(Markup.Escape(label), maxValue: total);
                    started.Set();
                    finished.Wait();
                    context.Refresh();
                })) { IsBackground = true, Name = "progress" };
            lock (Open) Open.Add(this);
            thread.Start();
            started.Wait();
        }

        public void Report(long done, string detail, double? perSecond)
        {
            rate = perSecond;
            task!.Value = done;
            if (detail.Length > 0) task.Description = Markup.Escape($"{label} {detail}");
            if (done >= total) Close();
        }

        void Close()
        {
            finished.Set();
            thread.Join(TimeSpan.FromSeconds(2));
            lock (Open) Open.Remove(this);
        }

        sealed class RateColumn(LiveBar bar) : ProgressColumn
        {
            public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
                new Text(Rate(bar.rate, bar.unit), new Style(Color.Grey));
        }
    }
}
