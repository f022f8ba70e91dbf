using System.Text.Json.Nodes;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Reporting;

namespace FsMerge.Runs;

/// <summary>How a caller follows a merge: progress, log lines, cancellation. All optional.</summary>
public sealed record MergeCallbacks
{
    /// <summary>Progress of each long phase (feature extraction, training), for progress bars.</summary>
    public MergeProgress? Progress { get; init; }
    /// <summary>Hears every line the run logs (with an output folder they also go to its merge.log).</summary>
    public Action<string>? Log { get; init; }
    /// <summary>Cancelled: a training phase saves a checkpoint after its current step (with an output folder) and the
    /// merge stops with an <see cref="FsMergeException"/>; rerun with <see cref="MergeRequest.Resume"/> to continue.</summary>
    public CancellationToken Cancellation { get; init; }
    /// <summary>What started the run, for the log and the report (the CLI gives its command line).</summary>
    public string? CommandLine { get; init; }
}

/// <summary>
/// A finished merge: the merged model (null for the ensemble, which is no single model; yours to dispose with the
/// result), its metrics, the report, and what was written when the request named an output folder.
/// </summary>
public sealed class MergeResult : IDisposable
{
    public Model? Model { get; }
    /// <summary>The method's options (--lr auto resolved), cost, loss curves, accuracies and label-free estimate.</summary>
    public MethodResult Metrics { get; }
    /// <summary>report.md's text (plots are only drawn into an output folder).</summary>
    public string Report { get; }
    /// <summary>merge.json's content: what was merged, how (the resolved request under "config"), and the numbers.</summary>
    public JsonObject Record { get; }
    /// <summary>The output folder, when one was written.</summary>
    public string? Output { get; }
    /// <summary>Every file of <see cref="Output"/>, relative to it (empty without an output).</summary>
    public IReadOnlyList<string> Files { get; }
    /// <summary>Notes of the plan (a source re-expressed for model 1's preprocessing).</summary>
    public IReadOnlyList<string> Notes { get; }

    internal MergeResult(Model? model, MethodResult metrics, string report, JsonObject record, string? output, IReadOnlyList<string> files, IReadOnlyList<string> notes) =>
        (Model, Metrics, Report, Record, Output, Files, Notes) = (model, metrics, report, record, output, files, notes);

    /// <summary>Accuracies on the labelled test data (<see cref="MergeRequest.Eval"/>); null when not evaluated.</summary>
    public EvaluationResult? Test => Metrics.Test;
    /// <summary>Agreement with the source models on held-out unlabeled samples; null without held-out samples.</summary>
    public LabelFreeEstimate? LabelFree => Metrics.LabelFree;

    public void Dispose() => Model?.Dispose();
}

/// <summary>
/// The library's entry point: one call checks a <see cref="MergeRequest"/>, loads the sources and data, merges, evaluates
/// if asked, and (when <see cref="MergeRequest.Output"/> is set) writes the output folder atomically with its report,
/// checkpoints and resume. The library changes no process-wide setting on its own (but the thread count a request asks for): call
/// <see cref="TorchRuntime.Configure"/> first, before any other torch call, for the measured CPU speed settings (allocator, MKL).
/// </summary>
public static class Merger
{
    public static MergeResult Merge(MergeRequest request, MergeCallbacks? callbacks = null)
    {
        callbacks ??= new MergeCallbacks();
        using var prepared = PreparedMerge.Prepare(request, writes: request.Output != null);
        using var work = request.Output != null ? new MergeWorkFolder(request.Output, request.Overwrite, request.CheckpointEvery, request.Resume) : null;
        void Log(string line)
        {
            work?.Note(line);
            callbacks.Log?.Invoke(line);
        }
        work?.Note(callbacks.CommandLine ?? "FsMerge.Runs.Merger.Merge");
        if (work is { NothingToResume: true }) Log($"resume: no checkpoint in {request.Output}.partial; starting from the beginning");
        try
        {
            foreach (var note in prepared.Plan.Notes) Log($"note: {note}");
            Log($"merging {prepared.Plan.Sources.Count} models with {prepared.Method.Name}: {string.Join(", ", prepared.Plan.Tasks)} ({string.Join(", ", prepared.Plan.Data.Select(d => d.Count))} unlabeled {prepared.Plan.Target.Arch.Samples} per task)");
            var checkpoints = work?.Checkpoints(prepared, Log);
            using var cancel = checkpoints != null ? callbacks.Cancellation.Register(checkpoints.Interrupt) : default;
            var (outcome, metrics) = prepared.Execute(prepared.Method, prepared.Settings, callbacks.Progress, checkpoints, Log);
            try
            {
                foreach (var curve in outcome.LossCurves)
                    foreach (var r in curve.Recoveries)
                        Log($"{curve.Phase}: recovered from a loss of {r.Loss:G4} at step {r.Step}: restarted the phase at rate x{r.ToScale:G3}");
                var summary = prepared.Summary([metrics], outcome.Merged?.Config, outcome.Merged != null ? metrics.Method : null) with { CommandLine = callbacks.CommandLine };
                var record = prepared.Record(metrics);
                IReadOnlyList<string> files = [];
                if (request.Output is { } output)
                {
                    OutputWriter.WriteMerge(output, request.Overwrite, outcome.Merged, record, prepared.SaveFormat, staging => MergeReport.Write(staging, summary));
                    Log($"merged in {metrics.Seconds:F1} s{(metrics.FinalLoss is { } loss ? $", final loss {loss:G6}" : "")}; wrote {output}");
                    work!.Complete();
                    files = Directory.EnumerateFiles(output, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(output, f)).Order(StringComparer.Ordinal).ToList();
                }
                return new MergeResult(outcome.Merged, metrics, MergeReport.Markdown(summary, []), record, request.Output, files, prepared.Plan.Notes);
            }
            catch
            {
                outcome.Merged?.Dispose();
                throw;
            }
        }
        catch (Exception e) when (LogFailure(work, e)) { throw; }   // logs the error into merge.log; never catches
    }

    /// <summary>The dry run: checks everything, loads the models and data, and describes the plan (shapes, sites, options
    /// and where each came from, steps, memory and time estimate). Writes nothing.</summary>
    public static string DescribePlan(MergeRequest request)
    {
        using var prepared = PreparedMerge.Prepare(request, writes: false);
        return prepared.DescribePlan();
    }

    static bool LogFailure(MergeWorkFolder? work, Exception e)
    {
        work?.Note($"error: {Terminal.Escape(Terminal.OneLine(e.Message))}");
        return false;
    }
}
