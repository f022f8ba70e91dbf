using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// Linear classification heads, one per task, shared by every architecture. A single-head model
/// names its head "classifier" (as Hugging Face's *ForImageClassification does); a multi-task model
/// names head t "classifier.{t}".
/// </summary>
public static class Heads
{
    public static string Prefix(int task, int headCount) => headCount == 1 ? "classifier" : $"classifier.{task}";

    public static IEnumerable<WeightSpec> Weights(ModelConfig config)
    {
        long width = config.Arch.FeatureWidth(config);
        for (int t = 0; t < config.Heads.Count; t++)
        {
            var prefix = Prefix(t, config.Heads.Count);
            yield return new WeightSpec($"{prefix}.weight", [config.Heads[t].Labels.Length, width]);
            yield return new WeightSpec($"{prefix}.bias", [config.Heads[t].Labels.Length]);
        }
    }

    /// <summary>Logits of head <paramref name="task"/> on features [B, width].</summary>
    public static Tensor Logits(IReadOnlyDictionary<string, Tensor> weights, Tensor features, int task, int headCount)
    {
        var prefix = Prefix(task, headCount);
        return nn.functional.linear(features, weights[$"{prefix}.weight"], weights[$"{prefix}.bias"]);
    }

    /// <summary>PyTorch's nn.Linear default: U(-1/√fan_in, 1/√fan_in) for weight and bias.</summary>
    public static Tensor UniformLinear(long[] shape, long fanIn, Generator generator)
    {
        double bound = 1.0 / Math.Sqrt(fanIn);
        return torch.rand(shape, generator: generator).mul_(2 * bound).sub_(bound);
    }
}
