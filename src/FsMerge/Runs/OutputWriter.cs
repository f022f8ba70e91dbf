using System.Text;
using System.Text.Json.Nodes;
using FsMerge.IO;
using FsMerge.Models;
using Tmds.Linux;

namespace FsMerge.Runs;

/// <summary>
/// Writes a run's output directory all at once: everything goes into a temporary sibling directory that
/// is renamed into place at the end, so a failed or interrupted run leaves no half-written output.
/// The layout of a merged model (README, "Merge your own models"):
/// <code>
/// OUT/config.json, OUT/model.safetensors   the multi-task model: backbone + heads classifier.{t}, t = 0, 1, ...
///                                          (Hugging Face ViTModel loads the backbone; fsmerge eval reads all);
///                                          with a shard size, model-0000K-of-0000N.safetensors + model.safetensors.index.json
/// OUT/tasks/{t}-{task}/                    one single-task model per head t (the same 0-based t as classifier.{t}): the
///                                          backbone with that head as "classifier" and its id2label/label2id
///                                          (ViTForImageClassification), as two shards: backbone.safetensors, a hard link
///                                          shared by every task folder, and head.safetensors
/// OUT/merge.json                           what was merged, how (the resolved run config), and the accuracies if evaluated
/// </code>
/// </summary>
internal static class OutputWriter
{
    public const string TasksFolder = "tasks";

    /// <summary>
    /// Fails now, before any compute, when the output cannot or must not be written: it is a file, it exists and
    /// <paramref name="overwrite"/> is false, it would replace, hold or sit inside a source (compared on real paths, symbolic
    /// links resolved, so a link to a source is that source), or its folder is not writable.
    /// </summary>
    public static void CheckOutput(string output, bool overwrite, IEnumerable<string> sources)
    {
        if (File.Exists(output)) throw new FsMergeException($"{output}: output path is a file; expected a directory name");
        var real = RealPath(output);
        foreach (var source in sources)
        {
            var model = RealPath(source);
            if (real == model || Inside(model, real))
                throw new FsMergeException($"{output}: the output would replace the source model {source}; choose another output directory");
            if (Inside(real, model))
                throw new FsMergeException($"{output}: the output would be written inside the source model {source}; choose another output directory");
        }
        if (Directory.Exists(output) && !overwrite)
            throw new FsMergeException($"{output}: output directory exists (use --overwrite to replace it)");
        CheckWritable(output);
    }

    static bool Inside(string path, string folder) => path.StartsWith(folder == "/" ? folder : folder + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>The absolute path with every symbolic link resolved; components that do not exist yet are kept as they are.</summary>
    public static string RealPath(string path)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        var current = Path.GetPathRoot(full)!;
        try
        {
            foreach (var part in full[current.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
            {
                current = Path.Combine(current, part);
                // The final target's own folders may be links too: resolve it again (a loop throws IOException).
                var entry = new FileInfo(current);
                if (entry.LinkTarget != null && entry.ResolveLinkTarget(returnFinalTarget: true) is { } target) current = RealPath(target.FullName);
            }
        }
        catch (IOException e)
        {
            throw new FsMergeException($"{path}: cannot resolve the path ({Terminal.OneLine(e.Message)})");
        }
        return current;
    }

    /// <summary>Fails now, before any compute, if the output's folder cannot be written.</summary>
    static void CheckWritable(string output)
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

    /// <summary>The folder name of head <paramref name="index"/>'s single-task model: the head's 0-based index (as in classifier.{index}) and its task.</summary>
    public static string TaskFolder(int index, string task) =>
        $"{index}-{new string(task.Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '-' or '_' or '.' ? ch : '-').ToArray())}";

    public const string BackboneShard = "backbone.safetensors", HeadShard = "head.safetensors";

    /// <summary>Writes <paramref name="merged"/> (null for the ensemble), its single-task models, merge.json (with how the
    /// task folders share the backbone), then <paramref name="alsoWrite"/> (the report).</summary>
    public static void WriteMerge(string output, bool overwrite, Model? merged, JsonObject record, WeightFormat format, Action<string>? alsoWrite = null) => Write(output, overwrite, staging =>
    {
        if (merged != null) record["tasks_backbone"] = SaveWithTasks(merged, staging, format);
        File.WriteAllText(Path.Combine(staging, "merge.json"), record.ToJsonString(JsonFormat.Indented));
        alsoWrite?.Invoke(staging);
    });

    /// <summary>
    /// Saves a multi-task model into <paramref name="dir"/> and each of its heads as a single-task model under tasks/.
    /// The task folders' backbone shard is one file hard-linked into each, so N tasks cost one backbone on disk; where
    /// the file system refuses hard links it is copied. Returns which happened, and why.
    /// </summary>
    public static string SaveWithTasks(Model merged, string dir, WeightFormat format)
    {
        merged.Save(dir, format);
        var backboneNames = merged.Config.Arch.BackboneWeights(merged.Config).Select(w => w.Name).ToList();
        string? shared = null;
        string how = "hard links: every tasks/*/backbone.safetensors is one file";
        for (int t = 0; t < merged.HeadCount; t++)
        {
            var single = merged.SingleTask(t);
            var folder = Path.Combine(dir, TasksFolder, TaskFolder(t, merged.Config.Heads[t].Task));
            single.SaveConfig(folder, format.DType);
            var backbone = Path.Combine(folder, BackboneShard);
            if (shared == null) format.WriteFile(backbone, backboneNames.ToDictionary(n => n, n => single.Weights[n]));
            else if (HardLink(shared, backbone) is { } reason)
            {
                File.Copy(shared, backbone);
                how = $"copies: the file system refused a hard link ({reason})";
            }
            shared ??= backbone;
            var headNames = single.Weights.Keys.Except(backboneNames).ToList();
            format.WriteFile(Path.Combine(folder, HeadShard), headNames.ToDictionary(n => n, n => single.Weights[n]));
            var map = new JsonObject();
            foreach (var name in backboneNames) map[name] = BackboneShard;
            foreach (var name in headNames) map[name] = HeadShard;
            AtomicFile.WriteAllText(Path.Combine(folder, Model.IndexFile), new JsonObject { ["weight_map"] = map }.ToJsonString(JsonFormat.Indented));
        }
        return how;
    }

    /// <summary>link(2); .NET has no hard-link call. Null when linked, else the reason it was not.</summary>
    static unsafe string? HardLink(string existing, string link)
    {
        int result;
        fixed (byte* from = Encoding.UTF8.GetBytes(existing + "\0"))
        fixed (byte* to = Encoding.UTF8.GetBytes(link + "\0"))
            result = LibC.link(from, to);
        return result == 0 ? null : $"errno {LibC.errno}";
    }

    /// <summary>Fills a temporary sibling of <paramref name="output"/> with <paramref name="fill"/>, then renames it into place.</summary>
    public static void Write(string output, bool overwrite, Action<string> fill)
    {
        var full = Path.GetFullPath(output);
        var staging = Staging(full);
        try
        {
            RemoveStale(full);
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

    static string Staging(string output) => $"{Path.GetFullPath(output)}{StagingSuffix}{Environment.ProcessId}";

    const string StagingSuffix = ".partial-";

    /// <summary>Deletes the staging folders that runs killed while writing <paramref name="full"/> left behind (their process is gone).</summary>
    static void RemoveStale(string full)
    {
        var folder = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(folder)) return;
        var prefix = Path.GetFileName(full) + StagingSuffix;
        foreach (var dir in Directory.EnumerateDirectories(folder, prefix + "*"))
            if (int.TryParse(Path.GetFileName(dir)[prefix.Length..], out int pid) && pid != Environment.ProcessId && !Alive(pid))
                Directory.Delete(dir, recursive: true);
    }

    static bool Alive(int pid)
    {
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
