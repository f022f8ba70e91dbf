using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// Classification heads, one per task, shared by every architecture (<see cref="HeadKind"/>). A single-head
/// model names its head "classifier" (as Hugging Face's *ForImageClassification does); a multi-task model
/// names head t "classifier.{t}". A linear head has weight and bias; a cosine head a projection and a weight.
/// </summary>
internal static class Heads
{
    public static string Prefix(int task, int headCount) => headCount == 1 ? "classifier" : $"classifier.{task}";

    public static IEnumerable<WeightSpec> Weights(ModelConfig config)
    {
        long width = config.Arch.FeatureWidth(config);
        for (int t = 0; t < config.Heads.Count; t++)
        {
            var prefix = Prefix(t, config.Heads.Count);
            var head = config.Heads[t];
            if (head.Kind == HeadKind.Cosine)
            {
                yield return new WeightSpec($"{prefix}.projection", [head.EmbedWidth, width]);
                yield return new WeightSpec($"{prefix}.weight", [head.Labels.Length, head.EmbedWidth]);
                continue;
            }
            yield return new WeightSpec($"{prefix}.weight", [head.Labels.Length, width]);
            yield return new WeightSpec($"{prefix}.bias", [head.Labels.Length]);
        }
    }

    /// <summary>The part of a weight's name after its head's prefix ("weight", "bias", "projection").</summary>
    public static string Field(string name) => name[(name.LastIndexOf('.') + 1)..];

    /// <summary>Logits of head <paramref name="task"/> on features [B, width].</summary>
    public static Tensor Logits(IReadOnlyDictionary<string, Tensor> weights, Tensor features, HeadInfo head, int task, int headCount)
    {
        var prefix = Prefix(task, headCount);
        if (head.Kind == HeadKind.Linear) return nn.functional.linear(features, weights[$"{prefix}.weight"], weights[$"{prefix}.bias"]);
        var embedded = nn.functional.normalize(nn.functional.linear(features, weights[$"{prefix}.projection"]), dim: 1);
        return embedded.matmul(nn.functional.normalize(weights[$"{prefix}.weight"], dim: 1).t()) * head.LogitScale;
    }

    /// <summary>PyTorch's nn.Linear default: U(-1/√fan_in, 1/√fan_in) for weight and bias.</summary>
    public static Tensor UniformLinear(long[] shape, long fanIn, Generator generator)
    {
        double bound = 1.0 / Math.Sqrt(fanIn);
        return torch.rand(shape, generator: generator).mul_(2 * bound).sub_(bound);
    }
}
