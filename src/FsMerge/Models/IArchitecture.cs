using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>Name and shape of one weight tensor of an architecture.</summary>
public sealed record WeightSpec(string Name, long[] Shape);

/// <summary>
/// An architecture is data plus one functional forward (DEVELOPERS.md, "Architectures are data"):
/// the backbone's weight names and shapes, an initializer, and a forward over a weight dictionary
/// that returns the feature each task head reads. Heads are not part of the backbone; they are the
/// same for every architecture (see <see cref="Heads"/>).
/// </summary>
public interface IArchitecture
{
    /// <summary>Short name used on the command line and in config.json ("mlp", "vit").</summary>
    string Name { get; }

    /// <summary>Backbone weights in a stable order, with Hugging Face names where such exist.</summary>
    IReadOnlyList<WeightSpec> BackboneWeights(ModelConfig config);

    /// <summary>Width of the feature vector that the heads read.</summary>
    long FeatureWidth(ModelConfig config);

    /// <summary>Random backbone weights drawn from <paramref name="generator"/> (CPU), moved to <paramref name="device"/>.</summary>
    Dictionary<string, Tensor> InitBackbone(ModelConfig config, Generator generator, Device device);

    /// <summary>Backbone forward: images [B, C, H, W] in [0, 1] → features [B, FeatureWidth].</summary>
    Tensor Features(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor images);
}
