using System.Text.Json.Nodes;
using FsMerge.IO;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// How a model's weights are saved: their dtype (float32, float16, bfloat16; Hugging Face's torch_dtype names) and the
/// largest safetensors file, above which the weights are split into Hugging Face shards (model-0000K-of-0000N.safetensors
/// and model.safetensors.index.json, which <see cref="Model.Load"/> and transformers' from_pretrained both read).
/// </summary>
public sealed record WeightFormat(ScalarType DType = ScalarType.Float32, long? ShardSize = null)
{
    public static readonly IReadOnlyList<string> Names = ["float32", "float16", "bfloat16"];

    /// <summary>The smallest shard size accepted: 64 KiB (a smaller one would only make thousands of files).</summary>
    public const long MinShardSize = 1 << 16;

    public static ScalarType Parse(string name) => name switch
    {
        "float32" => ScalarType.Float32,
        "float16" => ScalarType.Float16,
        "bfloat16" => ScalarType.BFloat16,
        _ => throw new FsMergeException($"dtype '{name}': expected one of: {string.Join(", ", Names)}"),
    };

    public static string Name(ScalarType type) => type switch
    {
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        _ => "float32",
    };

    /// <summary>Writes <paramref name="weights"/> (any device) into <paramref name="dir"/> in this format; returns the files written.</summary>
    public IReadOnlyList<string> Write(string dir, IReadOnlyDictionary<string, Tensor> weights)
    {
        var converted = Converted(weights);
        try
        {
            long bytes = converted.Values.Sum(t => t.NumberOfElements * t.ElementSize);
            if (ShardSize is not { } limit || bytes <= limit)
            {
                Safetensors.Write(Path.Combine(dir, Model.WeightsFile), converted, Metadata);
                return [Model.WeightsFile];
            }
            // Greedy in name order: a shard closes when the next tensor would pass the limit (a bigger tensor gets its own).
            var shards = new List<List<string>> { new() };
            long current = 0;
            foreach (var name in converted.Keys.OrderBy(n => n, StringComparer.Ordinal))
            {
                long size = converted[name].NumberOfElements * converted[name].ElementSize;
                if (current > 0 && current + size > limit) { shards.Add([]); current = 0; }
                shards[^1].Add(name);
                current += size;
            }
            var files = shards.Select((_, k) => $"model-{k + 1:D5}-of-{shards.Count:D5}.safetensors").ToList();
            var map = new JsonObject();
            for (int k = 0; k < shards.Count; k++)
            {
                Safetensors.Write(Path.Combine(dir, files[k]), shards[k].ToDictionary(n => n, n => converted[n]), Metadata);
                foreach (var name in shards[k]) map[name] = files[k];
            }
            var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = bytes }, ["weight_map"] = map };
            AtomicFile.WriteAllText(Path.Combine(dir, Model.IndexFile), index.ToJsonString(JsonFormat.Indented));
            return [.. files, Model.IndexFile];
        }
        finally
        {
            foreach (var t in converted.Values) t.Dispose();
        }
    }

    /// <summary>Writes <paramref name="weights"/> into the one safetensors file <paramref name="path"/> in this dtype (no sharding).</summary>
    public void WriteFile(string path, IReadOnlyDictionary<string, Tensor> weights)
    {
        var converted = Converted(weights);
        try { Safetensors.Write(path, converted, Metadata); }
        finally { foreach (var t in converted.Values) t.Dispose(); }
    }

    static readonly Dictionary<string, string> Metadata = new() { ["format"] = "pt", ["producer"] = "fsmerge" };

    /// <summary>Contiguous CPU copies in <see cref="DType"/> (new tensors: the caller's are left alone).</summary>
    Dictionary<string, Tensor> Converted(IReadOnlyDictionary<string, Tensor> weights) =>
        weights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().to(DType).cpu().contiguous());
}
