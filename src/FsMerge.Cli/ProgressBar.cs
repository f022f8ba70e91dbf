using System.Diagnostics;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace FsMerge.Cli;

/// <summary>
/// A progress bar on stderr with its detail (loss), rate and ETA. On a terminal it is a Spectre.Console live bar;
/// when stderr is not a terminal (CI, pipes) it prints a plain line at every tenth of the work instead. --quiet
/// turns it off. Either way the plain lines go to <see cref="Log"/> (the run's log file) when one is set.
/// </summary>
public sealed class ProgressBar
{
    public static bool Quiet { get; set; }
    /// <summary>Receives the plain progress lines (every tenth of the work), whatever is shown on screen.</summary>
    public static Action<string>? Log { get; set; }

    readonly string label;
    readonly long total;
    readonly Stopwatch clock = Stopwatch.StartNew();
    readonly bool interactive = !Console.IsErrorRedirected;
    LiveBar? live;
    long lastDecile = -1;

    public ProgressBar(string label, long total)
    {
        this.label = label;
        this.total = Math.Max(1, total);
    }

    public void Report(long done, string detail = "")
    {
        double fraction = Math.Min(1.0, (double)done / total);
        double rate = done / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
        if (interactive && !Quiet) (live ??= new LiveBar(label, total)).Report(done, detail, rate);
        long decile = (long)(fraction * 10);
        if (decile == lastDecile) return;
        lastDecile = decile;
        var eta = done > 0 ? TimeSpan.FromSeconds((total - done) / Math.Max(rate, 1e-9)) : TimeSpan.Zero;
        var line = $"{(int)(fraction * 100),3}% {label} {done}/{total} {detail} {rate:F1}/s eta {eta:mm\\:ss}";
        Log?.Invoke(line);
        if (!Quiet && !interactive) Console.Error.WriteLine(line);
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
        ProgressTask? task;
        double rate;

        public LiveBar(string label, long total)
        {
            this.label = label;
            this.total = total;
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

        public void Report(long done, string detail, double perSecond)
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
                new Text($"{bar.rate:F1}/s", new Style(Color.Grey));
        }
    }
}
