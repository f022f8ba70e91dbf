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

    public Tensor Logits(Tensor features, int task) => Heads.Logits(Weights, features, task, HeadCount);

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

    public static Model Load(string dir, Device device)
    {
        if (!Directory.Exists(dir)) throw new FsMergeException($"{dir}: model directory not found");
        var config = ModelConfig.Read(Path.Combine(dir, ConfigFile));
        var path = Path.Combine(dir, WeightsFile);
        using var content = Safetensors.Read(path);
        var weights = new Dictionary<string, Tensor>();
        foreach (var spec in ExpectedWeights(config))
        {
            if (!content.Tensors.TryGetValue(spec.Name, out var stored))
                throw new FsMergeException($"{path}: tensor '{spec.Name}' missing (config.json implies shape [{string.Join(", ", spec.Shape)}])");
            if (!stored.shape.SequenceEqual(spec.Shape))
                throw new FsMergeException($"{path}: tensor '{spec.Name}' has shape [{string.Join(", ", stored.shape)}], expected [{string.Join(", ", spec.Shape)}]");
            if (!stored.is_floating_point())
                throw new FsMergeException($"{path}: tensor '{spec.Name}' has dtype {stored.dtype}, expected a floating-point type");
            var weight = stored.to(ScalarType.Float32).to(device).detach();
            if (!weight.isfinite().all().item<bool>())
                throw new FsMergeException($"{path}: tensor '{spec.Name}' contains NaN or Inf values");
            weights[spec.Name] = weight;
        }
        var unexpected = content.Tensors.Keys.Except(weights.Keys).ToList();
        if (unexpected.Count > 0)
            throw new FsMergeException($"{path}: unexpected tensor '{unexpected[0]}' (not part of the {config.Architecture} described by config.json)");
        return new Model(config, weights);
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
