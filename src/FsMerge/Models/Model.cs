using FsMerge.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// A model on disk is a Hugging Face-style directory: config.json + model.safetensors (backbone and
/// one head per task). In memory it is its config plus a weight dictionary that the architecture's
/// functional forward reads.
/// </summary>
public sealed class Model : IDisposable
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";

    public ModelConfig Config { get; }
    public Dictionary<string, Tensor> Weights { get; }

    public Model(ModelConfig config, Dictionary<string, Tensor> weights)
    {
        Config = config;
        Weights = weights;
    }

    public int HeadCount => Config.Heads.Count;

    public Tensor Features(Tensor images, Probe? probe = null) => Config.Arch.Features(Config, Weights, images, probe);

    public Tensor Logits(Tensor features, int task) => Heads.Logits(Weights, features, Config.Heads[task], task, HeadCount);

    /// <summary>Every weight the config implies, backbone then heads.</summary>
    public static IEnumerable<WeightSpec> ExpectedWeights(ModelConfig config) =>
        config.Arch.BackboneWeights(config).Concat(Heads.Weights(config));

    /// <summary>A freshly initialized model (heads as PyTorch's nn.Linear default).</summary>
    public static Model Create(ModelConfig config, long seed, Device device)
    {
        var generator = new Generator((ulong)seed);
        var weights = config.Arch.InitBackbone(config, generator, device);
        long width = config.Arch.FeatureWidth(config);
        foreach (var spec in Heads.Weights(config))
            weights[spec.Name] = Heads.UniformLinear(spec.Shape, width, generator).to(device);
        return new Model(config, weights);
    }

    /// <summary>A copy of this backbone with one freshly initialized head (for fine-tuning on a new task).</summary>
    public Model WithFreshHead(HeadInfo head, long seed)
    {
        var config = Config with { Heads = [head], Training = new() };
        var fresh = Create(config, seed, Weights.Values.First().device);
        foreach (var spec in config.Arch.BackboneWeights(config))
        {
            fresh.Weights[spec.Name].Dispose();
            fresh.Weights[spec.Name] = Weights[spec.Name].clone();
        }
        return fresh;
    }

    /// <summary>
    /// Head <paramref name="task"/> alone on this backbone, as a single-task model (head named "classifier",
    /// so Hugging Face's *ForImageClassification loads it). It shares this model's tensors: do not dispose it.
    /// </summary>
    public Model SingleTask(int task)
    {
        var config = Config with { Heads = [Config.Heads[task]] };
        var weights = config.Arch.BackboneWeights(config).ToDictionary(w => w.Name, w => Weights[w.Name]);
        var prefix = Heads.Prefix(task, HeadCount);
        foreach (var spec in Heads.Weights(config)) weights[spec.Name] = Weights[$"{prefix}.{Heads.Field(spec.Name)}"];
        return new Model(config, weights);
    }

    /// <summary>
    /// Reads a Hugging Face-style directory: config.json and model.safetensors, or shards listed in
    /// model.safetensors.index.json. Tensor names may carry the usual prefixes ("model.", and "vit."/"bert."
    /// present or absent, as ViTModel and ViTForImageClassification differ); ViTModel's pooler, which the
    /// classification head does not read, is skipped. Every weight is checked for shape, type and finite values.
    /// </summary>
    public static Model Load(string dir, Device device)
    {
        if (!Directory.Exists(dir)) throw new FsMergeException($"{dir}: model directory not found");
        var config = ModelConfig.Read(Path.Combine(dir, ConfigFile));
        var expected = ExpectedWeights(config).ToDictionary(w => w.Name);
        var files = WeightFiles(dir);
        var stored = new Dictionary<string, (Tensor Tensor, string File)>();
        var contents = new List<SafetensorsContent>();
        try
        {
            foreach (var file in files)
            {
                var content = Safetensors.Read(file.Path);
                contents.Add(content);
                foreach (var (name, tensor) in content.Tensors)
                {
                    if (file.Names != null && !file.Names.Contains(name)) continue;
                    var canonical = CanonicalName(name, expected.Keys, config, file.Path);
                    if (canonical == null) continue;
                    if (!stored.TryAdd(canonical, (tensor, file.Path)))
                        throw new FsMergeException($"{file.Path}: tensor '{name}' is stored twice (as '{canonical}' also in {stored[canonical].File})");
                }
            }
            var weights = new Dictionary<string, Tensor>();
            try
            {
                foreach (var spec in expected.Values)
                    weights[spec.Name] = CheckedWeight(spec, stored, dir, device);
            }
            catch
            {
                foreach (var w in weights.Values) w.Dispose();
                throw;
            }
            return new Model(config, weights);
        }
        finally
        {
            foreach (var c in contents) c.Dispose();
        }
    }

    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>The safetensors files of a model directory; for shards, the tensor names each must hold.</summary>
    static List<(string Path, HashSet<string>? Names)> WeightFiles(string dir)
    {
        var single = Path.Combine(dir, WeightsFile);
        var index = Path.Combine(dir, IndexFile);
        if (Path.Exists(single) || !Path.Exists(index)) return [(single, null)];
        const string what = "a shard index (a JSON object with a \"weight_map\" of tensor name -> shard file)";
        var map = JsonInput.Object(JsonInput.ReadObject(index, what, ModelConfig.MaxConfigBytes * 4L)["weight_map"], index, "weight_map")
                  ?? throw new FsMergeException($"{index}: field 'weight_map' missing, expected {what}");
        var files = new Dictionary<string, HashSet<string>>();
        foreach (var (name, value) in map)
        {
            var f = JsonInput.String(value, index, $"weight_map.{name}");
            var shard = f.Length > 0 && !f.Contains('\0') && Path.GetFileName(f) == f && f is not "." and not ".." ? f
                : throw new FsMergeException($"{index}: weight_map['{name}'] is '{f}', expected a shard file name in the same folder");
            if (!files.TryGetValue(shard, out var names)) files[shard] = names = [];
            names.Add(name);
        }
        foreach (var (shard, names) in files)
            if (!Path.Exists(Path.Combine(dir, shard)))
                throw new FsMergeException($"{index}: shard {shard} (holding '{names.First()}' and {names.Count - 1} other tensor(s)) is missing from {dir}");
        return files.Select(kv => (Path.Combine(dir, kv.Key), (HashSet<string>?)kv.Value)).ToList();
    }

    /// <summary>
    /// The name FsMerge uses for a stored tensor, tolerating the usual prefixes; null for a tensor the model
    /// does not read (ViTModel's pooler). Any other unknown tensor is an error.
    /// </summary>
    static string? CanonicalName(string name, IEnumerable<string> expected, ModelConfig config, string file)
    {
        var known = expected as ICollection<string> ?? expected.ToList();
        var bare = name.StartsWith("model.") ? name["model.".Length..] : name;
        foreach (var candidate in new[] { name, bare, "vit." + bare, "bert." + bare })
            if (known.Contains(candidate)) return candidate;
        if (config.Architecture == "vit" && (bare.StartsWith("pooler.") || bare.StartsWith("vit.pooler."))) return null;
        throw new FsMergeException($"{file}: unexpected tensor '{name}' (not part of the {config.Architecture} described by config.json)");
    }

    static Tensor CheckedWeight(WeightSpec spec, Dictionary<string, (Tensor Tensor, string File)> stored, string dir, Device device)
    {
        if (!stored.TryGetValue(spec.Name, out var entry) && spec.Name.StartsWith("classifier"))
            throw new FsMergeException($"{dir}: no classification head ('{spec.Name}' missing); a source must be a single-task classifier such as ViTForImageClassification");
        if (entry.Tensor is null)
            throw new FsMergeException($"{dir}: tensor '{spec.Name}' missing (config.json implies shape [{string.Join(", ", spec.Shape)}])");
        var (tensor, file) = entry;
        if (!tensor.shape.SequenceEqual(spec.Shape))
            throw new FsMergeException($"{file}: tensor '{spec.Name}' has shape [{string.Join(", ", tensor.shape)}], expected [{string.Join(", ", spec.Shape)}] (from config.json)");
        if (!tensor.is_floating_point())
            throw new FsMergeException($"{file}: tensor '{spec.Name}' has dtype {tensor.dtype}, expected a floating-point type");
        var weight = tensor.to(ScalarType.Float32).to(device).detach();
        if (!weight.isfinite().all().item<bool>())
        {
            weight.Dispose();
            throw new FsMergeException($"{file}: tensor '{spec.Name}' contains NaN or Inf values");
        }
        return weight;
    }

    /// <summary>Writes config.json and model.safetensors, each atomically.</summary>
    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        var cpu = Weights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().contiguous());
        Safetensors.Write(Path.Combine(dir, WeightsFile), cpu,
            new Dictionary<string, string> { ["format"] = "pt", ["producer"] = "fsmerge" });
        Config.Write(Path.Combine(dir, ConfigFile));
    }

    public void Dispose()
    {
        foreach (var w in Weights.Values) w.Dispose();
    }
}
