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
    /// This model re-expressed for images prepared by <paramref name="processor"/>: when the two preprocessings differ
    /// only per channel affinely (rescale, mean, std), the change folds exactly into the layer that reads the pixels,
    /// so the result computes on <paramref name="processor"/>'s input what this model computes on its own. It takes
    /// over this model's tensors. Null when the preprocessings resize or convert differently.
    /// </summary>
    public Model? ReadingInputOf(ImageProcessor processor)
    {
        var layer = Config.Arch.PixelLayer(Config);
        var weight = layer == null ? null : Weights[$"{layer}.weight"];
        int channels = Config.Architecture == "vit" ? Config.NumChannels : processor.DoNormalize && processor.ImageMean.Length > 1 ? processor.ImageMean.Length : 1;
        if (weight is null || Config.Preprocessor.AffineFrom(processor, channels) is not var (scale, shift)) return null;
        using (torch.NewDisposeScope())
        {
            var grouped = weight.reshape(weight.shape[0], channels, -1);
            var a = torch.tensor(scale, ScalarType.Float32, weight.device).view(1, channels, 1);
            var b = torch.tensor(shift, ScalarType.Float32, weight.device).view(1, channels, 1);
            var bias = Weights[$"{layer}.bias"];
            Weights[$"{layer}.bias"] = bias.add(grouped.mul(b).sum([1, 2])).MoveToOuterDisposeScope();
            Weights[$"{layer}.weight"] = grouped.mul(a).reshape(weight.shape).MoveToOuterDisposeScope();
            bias.Dispose();
            weight.Dispose();
        }
        return new Model(Config with { Preprocessor = processor }, Weights);
    }

    /// <summary>This model (its tensors taken over) tokenizing to <paramref name="length"/> tokens, when given (see <see cref="ModelConfig.WithMaxLength"/>).</summary>
    public Model WithMaxLength(int? length, string what) =>
        length is { } n && Config.Architecture == "bert" ? new Model(Config.WithMaxLength(n, what), Weights) : this;

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
    /// present or absent, as ViTModel and ViTForImageClassification differ) and TF-era LayerNorm names
    /// (gamma/beta); tensors no head reads (ViTModel's pooler, BERT's cls.* pre-training heads and its
    /// position_ids buffer) are skipped. A config without labels gets Hugging Face's default labels from the
    /// stored classifier, or no head (a backbone). Every weight is checked for shape, type and finite values.
    /// <paramref name="freshSeed"/> (fine-tuning from a backbone): weights the architecture lets a task model
    /// initialize (BertForMaskedLM has no pooler) are drawn fresh with this seed when missing, as Hugging Face does.
    /// </summary>
    public static Model Load(string dir, Device device, long? freshSeed = null)
    {
        if (!Directory.Exists(dir)) throw new FsMergeException($"{dir}: model directory not found");
        var config = ModelConfig.Read(Path.Combine(dir, ConfigFile));
        config = config.Architecture != "bert" ? config with { Preprocessor = ImageProcessor.ForModel(dir) }
            : config with { Vocabulary = Data.TokenizerFiles.Vocabulary(dir), Tokenizer = Data.TokenizerFiles.Read(dir) };
        if (config.Vocabulary?.Count > config.VocabSize)
            throw new FsMergeException($"{dir}: its vocabulary has {config.Vocabulary.Count} tokens, but config.json's vocab_size is {config.VocabSize}: some token ids would have no embedding");
        var contents = new List<SafetensorsContent>();
        try
        {
            var tensors = new List<(string Name, string Bare, Tensor Tensor, string File)>();
            foreach (var file in WeightFiles(dir))
            {
                var content = Safetensors.Read(file.Path);
                contents.Add(content);
                foreach (var (name, tensor) in content.Tensors)
                    if (file.Names == null || file.Names.Contains(name)) tensors.Add((name, BareName(name), tensor, file.Path));
            }
            if (config.LabelsFromWeights && tensors.FirstOrDefault(t => t.Bare == "classifier.weight") is { Tensor: not null } classifier)
                config = config with { Heads = [new HeadInfo(HeadInfo.Unrecorded, ModelConfig.DefaultLabels(classifier.Tensor.shape[0]))] };
            var expected = ExpectedWeights(config).ToDictionary(w => w.Name);
            var stored = new Dictionary<string, (Tensor Tensor, string File)>();
            foreach (var (name, bare, tensor, file) in tensors)
            {
                var canonical = CanonicalName(name, bare, expected, config, file);
                if (canonical == null) continue;
                if (!stored.TryAdd(canonical, (tensor, file)))
                    throw new FsMergeException($"{file}: tensor '{name}' is stored twice (as '{canonical}' also in {stored[canonical].File})");
            }
            var fresh = freshSeed is { } seed && expected.Keys.Any(n => !stored.ContainsKey(n) && config.Arch.InitializedByTaskModel(n))
                ? config.Arch.InitBackbone(config, new Generator((ulong)seed), CPU) : null;
            var weights = new Dictionary<string, Tensor>();
            try
            {
                foreach (var spec in expected.Values)
                    weights[spec.Name] = fresh != null && !stored.ContainsKey(spec.Name) && config.Arch.InitializedByTaskModel(spec.Name)
                        ? fresh[spec.Name].to(device)
                        : CheckedWeight(spec, stored, dir, device);
            }
            catch
            {
                foreach (var w in weights.Values) w.Dispose();
                throw;
            }
            finally
            {
                if (fresh != null) foreach (var t in fresh.Values) t.Dispose();
            }
            var dtypes = stored.Values.Where(t => t.Tensor is not null).Select(t => t.Tensor.dtype).Distinct().ToList();
            return new Model(config, weights)
            {
                FreshWeights = expected.Keys.Where(n => !stored.ContainsKey(n)).ToList(),
                StoredDType = dtypes.Count == 1 ? dtypes[0] : ScalarType.Float32,
            };
        }
        finally
        {
            foreach (var c in contents) c.Dispose();
        }
    }

    /// <summary>Weights that <see cref="Load"/> initialized because the checkpoint lacks them (empty for a complete model).</summary>
    public IReadOnlyList<string> FreshWeights { get; private init; } = [];

    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>The safetensors files of a model directory; for shards, the tensor names each must hold.</summary>
    static List<(string Path, HashSet<string>? Names)> WeightFiles(string dir)
    {
        var single = Path.Combine(dir, WeightsFile);
        var index = Path.Combine(dir, IndexFile);
        if (!Path.Exists(single) && !Path.Exists(index) && Directory.EnumerateFiles(dir, "pytorch_model*.bin").Any())
            throw new FsMergeException($"{dir}: PyTorch .bin checkpoints are not read (convert to safetensors)");
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

    /// <summary>A stored name without the "model." prefix, with TF-era LayerNorm names (gamma, beta) as PyTorch's (weight, bias).</summary>
    static string BareName(string name)
    {
        var bare = name.StartsWith("model.") ? name["model.".Length..] : name;
        if (bare.EndsWith("LayerNorm.gamma")) return bare[..^"gamma".Length] + "weight";
        if (bare.EndsWith("LayerNorm.beta")) return bare[..^"beta".Length] + "bias";
        return bare;
    }

    /// <summary>
    /// The name FsMerge uses for a stored tensor, tolerating the "vit."/"bert." prefix; null for a tensor the model
    /// does not read (ViTModel's pooler; BERT's pre-training heads cls.* and position_ids buffer). Any other unknown tensor is an error.
    /// </summary>
    static string? CanonicalName(string name, string bare, IReadOnlyDictionary<string, WeightSpec> expected, ModelConfig config, string file)
    {
        foreach (var candidate in new[] { bare, "vit." + bare, "bert." + bare })
            if (expected.ContainsKey(candidate)) return candidate;
        bool skipped = config.Architecture switch
        {
            "vit" => bare.StartsWith("pooler.") || bare.StartsWith("vit.pooler."),
            "bert" => bare.StartsWith("cls.") || bare.EndsWith("embeddings.position_ids"),
            _ => false,
        };
        if (skipped) return null;
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

    /// <summary>Writes config.json (with torch_dtype), the weights in <paramref name="format"/> (default: float32, one
    /// model.safetensors) and preprocessor_config.json (image models) or the tokenizer files (BERT with a vocabulary), each atomically.</summary>
    public void Save(string dir, WeightFormat? format = null)
    {
        format ??= new WeightFormat();
        Directory.CreateDirectory(dir);
        format.Write(dir, Weights);
        SaveConfig(dir, format.DType);
    }

    /// <summary>Save without the weights: config.json (torch_dtype <paramref name="dtype"/>) and the preprocessor or tokenizer files.</summary>
    public void SaveConfig(string dir, ScalarType dtype)
    {
        Directory.CreateDirectory(dir);
        var config = Config.ToJson();
        config["torch_dtype"] = WeightFormat.Name(dtype);
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJsonString(JsonFormat.Indented));
        if (Config.Architecture != "bert")
            Config.Preprocessor.Write(Path.Combine(dir, ImageProcessor.FileName), Config.Architecture == "vit" ? Config.ImageSize : null);
        else if (Config.Vocabulary is { } vocabulary)
            Data.TokenizerFiles.Write(dir, vocabulary, Config.Tokenizer, Config.SequenceLength);
    }

    /// <summary>The dtype the weights were stored in (<see cref="Load"/>; float32 when they mixed types or were made here).</summary>
    public ScalarType StoredDType { get; private init; } = ScalarType.Float32;

    public void Dispose()
    {
        foreach (var w in Weights.Values) w.Dispose();
    }
}
