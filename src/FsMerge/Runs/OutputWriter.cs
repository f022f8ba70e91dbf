using System.Text.Json.Nodes;
using FsMerge.IO;
using FsMerge.Models;

namespace FsMerge.Runs;

/// <summary>
/// Writes a run's output directory all at once: everything goes into a temporary sibling directory that
/// is renamed into place at the end, so a failed or interrupted run leaves no half-written output.
/// The layout of a merged model (README, "Merge your own models"):
/// <code>
/// OUT/config.json, OUT/model.safetensors   the multi-task model: backbone + heads classifier.{t}
///                                          (Hugging Face ViTModel loads the backbone; fsmerge eval reads all)
/// OUT/tasks/{t}-{task}/                    one single-task model per head: the same backbone with that head
///                                          as "classifier" and its id2label/label2id (ViTForImageClassification)
/// OUT/merge.json                           what was merged, how, and the accuracies if evaluated
/// </code>
/// </summary>
public static class OutputWriter
{
    public const string TasksFolder = "tasks";

    /// <summary>Fails now, before any compute, if the output's folder cannot be written.</summary>
    public static void CheckWritable(string output)
    {
        var staging = Staging(output);
        try
        {
            Directory.CreateDirectory(staging);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{output}: cannot write the output ({e.Message})");
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging);
        }
    }

    /// <summary>The folder name of head <paramref name="task"/>'s single-task model.</summary>
    public static string TaskFolder(int index, string task) =>
        $"{index + 1}-{new string(task.Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '-' or '_' or '.' ? ch : '-').ToArray())}";

    /// <summary>Writes <paramref name="merged"/> (null for the ensemble), its single-task models, merge.json, then <paramref name="alsoWrite"/> (the report).</summary>
    public static void WriteMerge(string output, bool overwrite, Model? merged, JsonObject record, Action<string>? alsoWrite = null) => Write(output, overwrite, staging =>
    {
        if (merged != null) SaveWithTasks(merged, staging);
        File.WriteAllText(Path.Combine(staging, "merge.json"), record.ToJsonString(JsonFormat.Indented));
        alsoWrite?.Invoke(staging);
    });

    /// <summary>Saves a multi-task model into <paramref name="dir"/> and each of its heads as a single-task model under tasks/.</summary>
    public static void SaveWithTasks(Model merged, string dir)
    {
        merged.Save(dir);
        for (int t = 0; t < merged.HeadCount; t++)
            merged.SingleTask(t).Save(Path.Combine(dir, TasksFolder, TaskFolder(t, merged.Config.Heads[t].Task)));
    }

    /// <summary>Fills a temporary sibling of <paramref name="output"/> with <paramref name="fill"/>, then renames it into place.</summary>
    public static void Write(string output, bool overwrite, Action<string> fill)
    {
        var full = Path.GetFullPath(output);
        var staging = Staging(full);
        try
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
            Directory.CreateDirectory(staging);
            fill(staging);
            if (Directory.Exists(full))
            {
                if (!overwrite) throw new FsMergeException($"{output}: output directory exists (use --overwrite to replace it)");
                Directory.Delete(full, recursive: true);
            }
            Directory.Move(staging, full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException && e is not FileNotFoundException)
        {
            throw new FsMergeException($"{output}: cannot write the output ({e.Message})");
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
    }

    static string Staging(string output) => $"{Path.GetFullPath(output)}.partial-{Environment.ProcessId}";
}
