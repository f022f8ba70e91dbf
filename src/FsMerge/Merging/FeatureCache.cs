using System.Security.Cryptography;
using System.Text;
using FsMerge.IO;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// Cached target features (spec §11.4-11.5): model t's <see cref="Model.Features"/> on task t's merge images,
/// stored as float32 in <c>cacheDir/key.safetensors</c> (tensor "features" [n, FeatureWidth]). The file's
/// metadata records the image count and shape, the feature width, a SHA-256 of the images (shape and float32
/// bytes) and a SHA-256 of the model (the architecture-relevant config and every weight's name, shape and
/// float32 bytes). A file whose metadata does not match, or that cannot be read, is recomputed and
/// overwritten: a stale cache is never reused.
/// </summary>
internal static class FeatureCache
{
    public const string TensorName = "features";
    const string FormatVersion = "1";

    /// <summary>The target features of <paramref name="images"/> [n, C, H, W]: a CPU float32 tensor
    /// [n, FeatureWidth], read from the cache when it is current, otherwise computed (no_grad, batches of
    /// <see cref="Probing.BatchSize"/>) and written. The tensor belongs to no dispose scope: the caller disposes it.</summary>
    public static Tensor TargetFeatures(Model model, Tensor images, string cacheDir, string key)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(images);
        CheckKey(key);
        if (images.dim() != 4)
            throw new FsMergeException($"feature cache '{key}': images must be [n, C, H, W], got [{string.Join(", ", images.shape)}]");
        model.Config.CheckImages(images.shape, $"feature cache '{key}'");

        long width = model.Config.Arch.FeatureWidth(model.Config);
        var expected = new Dictionary<string, string>
        {
            ["format"] = "fsmerge-features",
            ["version"] = FormatVersion,
            ["count"] = images.shape[0].ToString(),
            ["image_shape"] = string.Join(",", images.shape),
            ["feature_width"] = width.ToString(),
            ["images_sha256"] = ImagesHash(images),
            ["model_sha256"] = ModelHash(model),
        };

        string path = Path.Combine(cacheDir, key + ".safetensors");
        var cached = TryRead(path, expected, images.shape[0], width);
        if (cached is not null) return cached;

        var features = Compute(model, images);
        Directory.CreateDirectory(cacheDir);
        Safetensors.Write(path, new Dictionary<string, Tensor> { [TensorName] = features }, expected);
        return features;
    }

    /// <summary>The cached tensor if the file exists, reads cleanly and matches <paramref name="expected"/>; else null.</summary>
    static Tensor? TryRead(string path, Dictionary<string, string> expected, long count, long width)
    {
        if (!File.Exists(path)) return null;
        SafetensorsContent content;
        try
        {
            content = Safetensors.Read(path);
        }
        catch (FsMergeException)
        {
            return null; // damaged: recompute and overwrite
        }
        using (content)
        {
            foreach (var (name, value) in expected)
            {
                if (!content.Metadata.TryGetValue(name, out var stored) || stored != value) return null;
            }
            if (content.Tensors.Count != 1 || !content.Tensors.TryGetValue(TensorName, out var t)) return null;
            if (t.dtype != ScalarType.Float32 || !t.shape.SequenceEqual(new[] { count, width })) return null;
            content.Tensors.Remove(TensorName); // keep it past content.Dispose()
            return t;
        }
    }

    static Tensor Compute(Model model, Tensor images)
    {
        var device = model.Weights.Values.FirstOrDefault()?.device ?? CPU;
        if (images.shape[0] == 0) return torch.empty(new[] { 0L, model.Config.Arch.FeatureWidth(model.Config) }, ScalarType.Float32);
        using var scope = torch.NewDisposeScope();
        var features = Probing.Features(model, images.to(ScalarType.Float32).to(device));
        return features.to(ScalarType.Float32).cpu().contiguous().clone().DetachFromDisposeScope();
    }

    /// <summary>SHA-256 (hex) over the shape and the float32 bytes of <paramref name="images"/>.</summary>
    internal static string ImagesHash(Tensor images)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        AppendTensor(hash, images);
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>SHA-256 (hex) over the model's architecture-relevant config and every weight (sorted by
    /// name: name, shape, float32 bytes). Head names and training provenance do not enter it.</summary>
    internal static string ModelHash(Model model)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var config = model.Config.ToJson();
        foreach (var provenance in new[] { "fsmerge", "id2label", "label2id", "architectures" }) config.Remove(provenance);
        AppendString(hash, config.ToJsonString());
        foreach (var name in model.Weights.Keys.OrderBy(k => k, StringComparer.Ordinal))
        {
            AppendString(hash, name);
            AppendTensor(hash, model.Weights[name]);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    static void AppendString(IncrementalHash hash, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        hash.AppendData(BitConverter.GetBytes((long)bytes.Length));
        hash.AppendData(bytes);
    }

    static void AppendTensor(IncrementalHash hash, Tensor tensor)
    {
        hash.AppendData(BitConverter.GetBytes((long)tensor.dim()));
        foreach (long d in tensor.shape) hash.AppendData(BitConverter.GetBytes(d));
        using var scope = torch.NewDisposeScope();
        var flat = tensor.detach().to(ScalarType.Float32).cpu().contiguous().view(-1);
        const long chunk = 1 << 20; // elements per span
        for (long start = 0; start < flat.NumberOfElements; start += chunk)
        {
            var part = flat.narrow(0, start, Math.Min(chunk, flat.NumberOfElements - start));
            hash.AppendData(part.bytes);
        }
    }

    static void CheckKey(string key)
    {
        if (string.IsNullOrEmpty(key) || key is "." or ".." ||
            key.Any(ch => !(char.IsAsciiLetterOrDigit(ch) || ch is '-' or '_' or '.' or '+' or '=' or ',')))
        {
            throw new FsMergeException(
                $"feature cache key '{key}' is not a plain file name (expected letters, digits and - _ . + = ,)");
        }
    }
}
