using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using FsMerge.Merging;
using FsMerge.Reporting;

namespace FsMerge.Cli;

/// <summary>
/// What surrounds a merge in `fsmerge merge`: the work folder OUT.partial (training checkpoints, and merge.log while
/// the run lasts), the log (everything printed, with timestamps), Ctrl-C or SIGTERM (save a checkpoint and stop), and at the
/// end the report and the log in the output folder. The work folder is removed once the output is complete, and
/// kept after a failure when it holds checkpoints to resume from.
/// </summary>
sealed class MergeRun : IDisposable
{
    public const string LogFile = "merge.log";

    public static readonly OptionSpec[] Options =
    [
        new("checkpoint-every", "K", "save a training checkpoint every K steps, at the end of each training phase and on Ctrl-C, in OUT.partial/", "200"),
        new("resume", null, "continue an interrupted run from its checkpoints in OUT.partial/ (same models, data and options; same --threads for bit-identical weights); without it such checkpoints stop a new run unless --overwrite"),
    ];

    readonly string outDir;
    readonly string workDir;
    readonly ParsedArgs args;
    readonly FileStream lockFile;
    readonly StreamWriter log;
    readonly TextWriter screenOut;
    readonly PosixSignalRegistration[] signals;
    TrainingCheckpoints? checkpoints;
    bool complete;
    int interrupts;

    MergeRun(ParsedArgs args, string outDir, bool overwrite)
    {
        this.args = args;
        this.outDir = Path.GetFullPath(outDir);
        workDir = this.outDir + ".partial";
        bool resume = args.Has("resume");
        try
        {
            Directory.CreateDirectory(workDir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{workDir}: cannot create the run's work folder ({e.Message})");
        }
        try
        {
            // One run at a time per output: an exclusive lock (flock) that the kernel drops when the process dies.
            lockFile = new FileStream(Path.Combine(workDir, ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            throw new FsMergeException($"{workDir}: another fsmerge run is writing this output");
        }
        if (TrainingCheckpoints.ExistIn(workDir) && !resume)
        {
            if (!overwrite)
            {
                lockFile.Dispose();
                throw new FsMergeException($"{workDir}: holds checkpoints of an interrupted run; add --resume to continue it, or --overwrite to start over");
            }
            foreach (var file in Directory.GetFiles(workDir, "train-*.ckpt")) File.Delete(file);
        }
        log = new StreamWriter(new FileStream(Path.Combine(workDir, LogFile), FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
        screenOut = Console.Out;
        Console.SetOut(new TeeWriter(screenOut, Note));
        ProgressBar.Log = Note;
        // SIGTERM (a scheduler, `kill`) stops a run the way Ctrl-C does.
        signals = [PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal), PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal)];
        Note($"fsmerge {string.Join(" ", Environment.GetCommandLineArgs().Skip(1))}");
        if (resume && !TrainingCheckpoints.ExistIn(workDir)) Console.WriteLine($"--resume: no checkpoint in {workDir}; starting from the beginning");
    }

    /// <summary>Opens the run's work folder and log for the output folder <paramref name="outDir"/>.</summary>
    /// <param name="overwrite">From the flags or the config file: an interrupted run's checkpoints may be discarded.</param>
    public static MergeRun Start(ParsedArgs args, string outDir, bool overwrite) => new(args, outDir, overwrite);

    /// <summary>The checkpoints of this run's training phases (--checkpoint-every, --resume), keyed by the merge's inputs.</summary>
    public TrainingCheckpoints Checkpoints(string method, MethodSettings settings, MergePlan plan, long seed)
    {
        checkpoints = new TrainingCheckpoints(workDir, args.Int("checkpoint-every", min: 1), args.Has("resume"),
            TrainingCheckpoints.Fingerprint(method, settings.All, seed, plan.Sources, plan.Data)) { Log = Console.WriteLine };
        checkpoints.CheckResumable();
        return checkpoints;
    }

    /// <summary>Writes the report into <paramref name="dir"/> (the output being assembled) and marks the run complete.</summary>
    public void WriteReport(string dir, MergeRunSummary summary)
    {
        var files = MergeReport.Write(dir, summary with { CommandLine = $"fsmerge {string.Join(" ", Environment.GetCommandLineArgs().Skip(1))}" });
        Note($"report: {string.Join(", ", files)}");
        complete = true;
    }

    /// <summary>For an exception filter: logs the failure and lets it propagate. The run is not complete even if its
    /// report was written: the output may belong to another run that won the race for it, and gets nothing of this one.</summary>
    public bool LogFailure(Exception e)
    {
        complete = false;
        Note($"error: {Terminal.Escape(Terminal.OneLine(e.Message))}");
        return false;
    }

    public void Note(string line) => log.WriteLine($"{DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture)} {line}");

    void OnSignal(PosixSignalContext context)
    {
        if (checkpoints == null || ++interrupts > 1) return;   // nothing to save yet, or a second signal: quit at once
        context.Cancel = true;
        checkpoints.Interrupt();
        Console.Error.WriteLine($"stopping ({context.Signal}): saving a checkpoint after this step (Ctrl-C again to quit at once)");
    }

    public void Dispose()
    {
        foreach (var signal in signals) signal.Dispose();
        Console.SetOut(screenOut);
        ProgressBar.Log = null;
        log.Dispose();
        if (complete && Directory.Exists(outDir))
        {
            // The output is in place: the log joins it, and the checkpoints are no longer needed.
            AtomicFile.Write(Path.Combine(outDir, LogFile), temporary => File.Copy(Path.Combine(workDir, LogFile), temporary));
            Directory.Delete(workDir, recursive: true);
            // Training had ended when the signal came; nothing checks for it any more, and the output was written whole.
            if (interrupts > 0) Console.Error.WriteLine($"the interrupt came after training: {outDir} was completed all the same");
        }
        else if (!TrainingCheckpoints.ExistIn(workDir))
            Directory.Delete(workDir, recursive: true);
        lockFile.Dispose();
    }

    /// <summary>Writes through to the screen and hands every complete line to the log.</summary>
    sealed class TeeWriter(TextWriter screen, Action<string> logLine) : TextWriter
    {
        readonly StringBuilder line = new();
        public override Encoding Encoding => screen.Encoding;

        public override void Write(char value)
        {
            screen.Write(value);
            if (value == '\n')
            {
                logLine(line.ToString().TrimEnd('\r'));
                line.Clear();
            }
            else line.Append(value);
        }

        public override void Write(string? value)
        {
            screen.Write(value);
            foreach (var c in value ?? "")
            {
                if (c != '\n') { line.Append(c); continue; }
                logLine(line.ToString().TrimEnd('\r'));
                line.Clear();
            }
        }

        public override void Flush() => screen.Flush();
    }
}
