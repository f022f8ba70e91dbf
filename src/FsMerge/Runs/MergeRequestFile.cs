using System.Globalization;
using FsMerge.Merging;
using FsMerge.Models;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace FsMerge.Runs;

/// <summary>
/// Reads a merge run from YAML. Every key is checked: an unknown key, a wrong type or a missing required
/// key is an error naming the file, the line, the key and what is allowed. Relative paths are taken
/// from the folder of the YAML file. The layout (see README, "Merge your own models"):
/// <code>
/// sources:                   # in merge order; at least two
///   - model: runs/a          # Hugging Face-style directory
///     task: mnist:0-4        # optional: the task's name (default: the one in the model's config.json)
///     data: {task: mnist:0-4} # optional: unlabeled merge data (task | images | idx); default: the task's train split
///     samples: 64            # optional: merge images drawn from data
///     test: {images: DIR}    # optional: labelled test data (task | images); default: the task's test split
/// method: fs-merge
/// options: {init: zipit, epochs: 300}
/// seed: 1
/// threads: 0
/// device: cpu
/// out: merged
/// dtype: bfloat16            # optional: saved weights' dtype (default: the sources')
/// shard-size: 2000000000     # optional: largest safetensors shard in bytes (default: one file)
/// </code>
/// Top-level keys are the names of `fsmerge merge`'s options (held-out, data-dir, out); the underscore spellings and
/// 'output' of earlier releases are still read, with a warning.
/// </summary>
public static class MergeRequestFile
{
    public static readonly string[] TopKeys = ["sources", "method", "options", "seed", "threads", "device", "out", "overwrite", "augment", "held-out", "width", "max-length", "eval", "data-dir", "dtype", "shard-size", "checkpoint-every"];
    public static readonly string[] SourceKeys = ["model", "task", "data", "samples", "test"];

    /// <summary>Keys of earlier releases, read as their new names with a warning; to be removed in the next release.</summary>
    public static readonly IReadOnlyDictionary<string, string> OldTopKeys = new Dictionary<string, string>
    {
        ["output"] = "out", ["held_out"] = "held-out", ["data_dir"] = "data-dir",
    };

    /// <summary>Limits on a config file: its size, its nesting, and the values its aliases (*name) expand to.
    /// A merge config needs a few dozen values; a deeply nested or alias-multiplied file is refused before it is built.</summary>
    public const int MaxBytes = 1 << 20, MaxDepth = 32, MaxValues = 100_000;

    /// <param name="warn">Receives one line per deprecated key the file uses.</param>
    public static MergeRequest Read(string path, Action<string>? warn = null)
    {
        string text = InputFile.ReadAllText(path, "a merge config file (YAML)", MaxBytes);
        var stream = new YamlStream();
        try
        {
            CheckShape(path, text);
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw new FsMergeException($"{path}:{e.Start.Line}: invalid YAML ({(e.InnerException ?? e).Message.Split('\n')[0]})");
        }
        catch (InvalidOperationException)
        {
            // YamlDotNet's scanner throws this (not a YamlException) when the file ends inside a flow collection.
            throw new FsMergeException($"{path}: invalid YAML (the file ends inside an unclosed '[', '{{' or quote)");
        }
        catch (ArgumentException e)
        {
            // YamlStream.Load throws this for node kinds it cannot represent, such as an empty key with a value ("- : x").
            throw new FsMergeException($"{path}: invalid YAML ({Terminal.OneLine(e.Message)})");
        }
        if (stream.Documents.Count == 0) throw new FsMergeException($"{path}: the config file is empty; expected a mapping with at least 'sources'");
        var reader = new Reader(path, Path.GetDirectoryName(Path.GetFullPath(path))!, warn ?? (_ => { }));
        return reader.Request(stream.Documents[0].RootNode);
    }

    /// <summary>Walks the parser's events (no recursion, no tree) to bound nesting depth and the values aliases expand to.</summary>
    static void CheckShape(string path, string text)
    {
        var parser = new Parser(new StringReader(text));
        var expanded = new Dictionary<string, long>(StringComparer.Ordinal);  // anchor → values it stands for
        var open = new Stack<(string? Anchor, long Values)>();                 // the collections being read, with their values so far
        long total = 0;
        void Add(long values)
        {
            if (open.Count > 0)
            {
                var (anchor, sum) = open.Pop();
                open.Push((anchor, sum + values));
            }
        }
        void Count(long values, ParsingEvent at)
        {
            total += values;
            if (total > MaxValues)
                throw new FsMergeException($"{path}:{at.Start.Line}: the file expands to more than {MaxValues} values (through aliases *name); a merge config needs far fewer");
            Add(values);
        }
        while (parser.MoveNext())
        {
            var e = parser.Current!;
            switch (e)
            {
                case MappingStart or SequenceStart:
                    if (open.Count >= MaxDepth)
                        throw new FsMergeException($"{path}:{e.Start.Line}: nested more than {MaxDepth} levels deep; a merge config needs a few");
                    total++;
                    var anchor = ((NodeEvent)e).Anchor;
                    open.Push((anchor.IsEmpty ? null : anchor.Value, 1));
                    break;
                case MappingEnd or SequenceEnd:
                    var (name, values) = open.Pop();
                    if (name != null) expanded[name] = values;
                    Add(values);
                    break;
                case Scalar scalar:
                    if (!scalar.Anchor.IsEmpty) expanded[scalar.Anchor.Value] = 1;
                    Count(1, e);
                    break;
                case AnchorAlias alias:
                    Count(expanded.GetValueOrDefault(alias.Value.Value, 1), e);
                    break;
            }
        }
    }

    sealed class Reader(string path, string folder, Action<string> warn)
    {
        FsMergeException Error(YamlNode node, string message) => new($"{path}:{node.Start.Line}: {message}");

        YamlMappingNode Mapping(YamlNode node, string key) =>
            node as YamlMappingNode ?? throw Error(node, $"'{key}' must be a mapping of keys to values");

        Dictionary<string, (YamlScalarNode Key, YamlNode Value)> Keys(YamlMappingNode map, string where, string[] allowed)
        {
            var result = new Dictionary<string, (YamlScalarNode, YamlNode)>();
            foreach (var (keyNode, value) in map.Children)
            {
                var key = (keyNode as YamlScalarNode)?.Value ?? throw Error(keyNode, $"{where}: keys must be plain words");
                if (allowed == TopKeys && OldTopKeys.TryGetValue(key, out var renamed))
                {
                    warn($"{path}:{keyNode.Start.Line}: '{key}' is now '{renamed}'; the old name will be removed in the next release");
                    key = renamed;
                }
                if (result.ContainsKey(key)) throw Error(keyNode, $"'{key}' is given twice in {where}");
                if (!allowed.Contains(key))
                    throw Error(keyNode, $"unknown key '{key}' in {where} (allowed: {string.Join(", ", allowed)})");
                result[key] = ((YamlScalarNode)keyNode, value);
            }
            return result;
        }

        string Scalar(YamlNode node, string key) =>
            node is YamlScalarNode { Value: { Length: > 0 } s } ? s : throw Error(node, $"'{key}' must be a single value, not {Describe(node)}");

        string PathValue(YamlNode node, string key)
        {
            var text = Scalar(node, key);
            return text.Contains('\0') ? throw Error(node, $"'{key}' holds a NUL character; no path can") : Path.GetFullPath(text, folder);
        }

        long Long(YamlNode node, string key, long min)
        {
            var s = Scalar(node, key);
            return long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v >= min ? v
                : throw Error(node, $"'{key}' is '{s}'; expected a whole number >= {min}");
        }

        int Int(YamlNode node, string key, int min, int max) =>
            Long(node, key, min) is var v && v <= max ? (int)v : throw Error(node, $"'{key}' is {v}; expected at most {max}");

        bool Bool(YamlNode node, string key) => Scalar(node, key) switch
        {
            "true" => true,
            "false" => false,
            var s => throw Error(node, $"'{key}' is '{s}'; expected true or false"),
        };

        static string Describe(YamlNode node) => node switch
        {
            YamlSequenceNode => "a list",
            YamlMappingNode => "a mapping",
            _ => "an empty value",
        };

        public MergeRequest Request(YamlNode root)
        {
            var top = Keys(Mapping(root, "the file"), "the file", TopKeys);
            if (!top.TryGetValue("sources", out var sourcesEntry))
                throw Error(root, "missing required key 'sources' (a list of source models, each with 'model' and optionally task, data, samples, test)");
            var request = new MergeRequest { Sources = Sources(sourcesEntry.Value) };
            if (top.TryGetValue("method", out var m))
            {
                var name = Scalar(m.Value, "method");
                if (!MergeMethods.All.Any(x => x.Name == name))
                    throw Error(m.Value, $"unknown method '{name}' (expected one of: {string.Join(", ", MergeMethods.All.Select(x => x.Name))})");
                request = request with { Method = name };
            }
            if (top.TryGetValue("options", out var o)) request = request with { Options = Options(o.Value, MergeMethods.Get(request.Method)) };
            foreach (var (key, (_, value)) in top)
                request = key switch
                {
                    "seed" => request with { Seed = Long(value, key, 0) },
                    "threads" => request with { Threads = Int(value, key, 0, TorchRuntime.MaxThreads) },
                    "device" => request with { Device = Device(value) },
                    "out" => request with { Output = PathValue(value, key) },
                    "overwrite" => request with { Overwrite = Bool(value, key) },
                    "augment" => request with { Augment = Int(value, key, 0, MergeRequest.MaxImagesPerTask) },
                    "held-out" => request with { HeldOut = Int(value, key, 0, MergeRequest.MaxImagesPerTask) },
                    "width" => request with { Width = Widths(value) },
                    "max-length" => request with { MaxLength = Int(value, key, 3, Models.ModelConfig.MaxPositions) },
                    "eval" => request with { Eval = Bool(value, key) },
                    "data-dir" => request with { DataDir = PathValue(value, key) },
                    "dtype" => request with { DType = DType(value) },
                    "shard-size" => request with { ShardSize = Long(value, key, WeightFormat.MinShardSize) },
                    "checkpoint-every" => request with { CheckpointEvery = Int(value, key, 1, int.MaxValue) },
                    _ => request,
                };
            return request;
        }

        string Device(YamlNode node)
        {
            var s = Scalar(node, "device");
            try
            {
                TorchRuntime.ParseDevice(s);
                return s;
            }
            catch (FsMergeException e)
            {
                throw Error(node, $"'device': {e.Message}");
            }
        }

        string DType(YamlNode node)
        {
            var s = Scalar(node, "dtype");
            return WeightFormat.Names.Contains(s) ? s : throw Error(node, $"'dtype' is '{s}'; expected one of: {string.Join(", ", WeightFormat.Names)}");
        }

        int[] Widths(YamlNode node)
        {
            var items = node is YamlSequenceNode seq ? seq.Children.ToList() : [node];
            if (items.Count == 0) throw Error(node, "'width' is an empty list; expected hidden widths like [128, 64]");
            if (items.Count > Models.ModelConfig.MaxLayers) throw Error(node, $"'width' lists {items.Count} widths; expected at most {Models.ModelConfig.MaxLayers}");
            return items.Select(i => Int(i, "width", 1, Models.ModelConfig.MaxWidth)).ToArray();
        }

        IReadOnlyDictionary<string, string> Options(YamlNode node, IMergeMethod method)
        {
            var map = Mapping(node, "options");
            var allowed = method.Options.Select(x => x.Name).ToArray();
            var result = new Dictionary<string, string>();
            foreach (var (key, (_, value)) in Keys(map, $"options of method '{method.Name}'", allowed))
            {
                var option = method.Options.First(x => x.Name == key);
                // A list (as merge.json stores lists of numbers) stands for its comma-separated values.
                var s = value is YamlSequenceNode list ? string.Join(",", list.Children.Select(c => Scalar(c, key))) : Scalar(value, key);
                if (!(s == MethodOption.Auto && option.Example != null) && !OptionValues.Fits(s, option.TypeExample))
                    throw Error(value, $"option '{key}' of {method.Name} is '{s}'; expected {OptionValues.TypeName(option.TypeExample)}{(option.Example != null ? " or auto" : "")} like its default {option.Default} ({option.Help})");
                result[key] = s;
            }
            return result;
        }

        List<SourceRequest> Sources(YamlNode node)
        {
            if (node is not YamlSequenceNode list)
                throw Error(node, $"'sources' must be a list of source models (lines starting with '- model: DIR'), not {Describe(node)}");
            if (list.Children.Count < 2) throw Error(node, $"'sources' lists {list.Children.Count} model(s); a merge needs at least two");
            return list.Children.Select((item, i) => Source(item, $"sources[{i + 1}]")).ToList();
        }

        SourceRequest Source(YamlNode node, string where)
        {
            if (node is not YamlMappingNode map)
                throw Error(node, $"{where} must be a mapping with 'model' (and optionally {string.Join(", ", SourceKeys.Skip(1))})");
            var keys = Keys(map, where, SourceKeys);
            if (!keys.TryGetValue("model", out var model))
                throw Error(node, $"{where}: missing required key 'model' (a model directory with config.json and model.safetensors)");
            var source = new SourceRequest { Model = PathValue(model.Value, "model") };
            if (keys.TryGetValue("task", out var task)) source = source with { Task = Scalar(task.Value, "task") };
            if (keys.TryGetValue("samples", out var samples)) source = source with { Samples = Int(samples.Value, "samples", 1, MergeRequest.MaxImagesPerTask) };
            if (keys.TryGetValue("data", out var data)) source = source with { Data = Data(data.Value, $"{where}.data", labelled: false) };
            if (keys.TryGetValue("test", out var test)) source = source with { Test = Data(test.Value, $"{where}.test", labelled: true) };
            return source;
        }

        /// <summary>A one-key mapping {kind: value}; a plain word is a dataset task.</summary>
        DataSource Data(YamlNode node, string where, bool labelled)
        {
            var readers = DataSources.All.Where(r => !labelled || r.Labelled != null).ToList();
            var kinds = readers.Select(r => r.Kind).ToArray();
            if (node is YamlScalarNode) return new DataSource("task", Scalar(node, where));
            if (node is not YamlMappingNode map || map.Children.Count != 1)
                throw Error(node, $"{where} must name one source: {string.Join("; ", readers.Select(r => $"{{{r.Kind}: ...}} for {r.Help}"))}");
            var (kind, (_, value)) = Keys(map, where, kinds).Single();
            return new DataSource(kind, kind == "task" ? Scalar(value, kind) : PathValue(value, kind));
        }
    }
}
