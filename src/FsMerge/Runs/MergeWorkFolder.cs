using System.Globalization;
using FsMerge.Merging;

namespace FsMerge.Runs;

/// <summary>
/// What surrounds a merge that writes an output OUT: the work folder OUT.partial (training checkpoints, and merge.log
/// while the run lasts), its lock, and the log (every line of the run, with timestamps). Once the output is complete
/// the log joins it and the work folder is removed; after a failure the folder is kept when it holds checkpoints to
/// resume from.
/// </summary>
sealed class MergeWorkFolder : IDisposable
{
    public const string LogFile = "merge.log";

    readonly string outDir;
    readonly string workDir;
    readonly int checkpointEvery;
    readonly bool resume;
    readonly FileStream lockFile;
    readonly StreamWriter log;
    bool complete;

    public MergeWorkFolder(string outDir, bool overwrite, int checkpointEvery, bool resume)
    {
        this.outDir = Path.GetFullPath(outDir);
        workDir = this.outDir + ".partial";
        this.checkpointEvery = checkpointEvery;
        this.resume = resume;
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
            foreach (var file in TrainingCheckpoints.Files(workDir).ToList()) File.Delete(file);
        }
        log = new StreamWriter(new FileStream(Path.Combine(workDir, LogFile), FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
    }

    /// <summary>Whether the run found no checkpoint to resume from although it was asked to.</summary>
    public bool NothingToResume => resume && !TrainingCheckpoints.ExistIn(workDir);

    /// <summary>The checkpoints of this run's training phases, keyed by the merge's inputs.</summary>
    public TrainingCheckpoints Checkpoints(PreparedMerge prepared, Action<string> logLine)
    {
        var checkpoints = new TrainingCheckpoints(workDir, checkpointEvery, resume,
            TrainingCheckpoints.Fingerprint(prepared.Method.Name, prepared.Settings.All, prepared.Request.Seed, prepared.Plan.Sources, prepared.Plan.Data)) { Log = logLine };
        checkpoints.CheckResumable();
        return checkpoints;
    }

    /// <summary>Appends a line to the log; after <see cref="Complete"/> the log is closed and lines go nowhere.</summary>
    public void Note(string line)
    {
        if (!complete) log.WriteLine($"{DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture)} {line}");
    }

    /// <summary>The output was written whole: the log joins it now, and the work folder goes on disposal.</summary>
    public void Complete()
    {
        log.Dispose();
        complete = true;
        if (Directory.Exists(outDir))
            AtomicFile.Write(Path.Combine(outDir, LogFile), temporary => File.Copy(Path.Combine(workDir, LogFile), temporary));
    }

    public void Dispose()
    {
        log.Dispose();
        if (complete && Directory.Exists(outDir))
            Directory.Delete(workDir, recursive: true);
        else if (!TrainingCheckpoints.ExistIn(workDir))
            Directory.Delete(workDir, recursive: true);
        lockFile.Dispose();
    }
}
