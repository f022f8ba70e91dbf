using FsMerge.Merging;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// Receives intermediate values of a forward pass, named by the site they meet: at an M site the
/// output of the layer(s) about to be merged, at a U site the vector the following layers read, and
/// "input" for the input of layers that read the shared input (flattened pixels or patches).
/// Token dimensions are flattened into rows: values are [rows, width] (BERT reports only non-padding tokens).
/// </summary>
public delegate void Probe(string point, Tensor value);

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
    /// <summary>Short name used on the command line and in config.json ("mlp", "vit", "bert").</summary>
    string Name { get; }

    /// <summary>Backbone weights in a stable order, with Hugging Face names where such exist.</summary>
    IReadOnlyList<WeightSpec> BackboneWeights(ModelConfig config);

    /// <summary>Width of the feature vector that the heads read.</summary>
    long FeatureWidth(ModelConfig config);

    /// <summary>Random backbone weights drawn from <paramref name="generator"/> (CPU), moved to <paramref name="device"/>.</summary>
    Dictionary<string, Tensor> InitBackbone(ModelConfig config, Generator generator, Device device);

    /// <summary>
    /// Backbone forward: the model input → features [B, FeatureWidth]. The input is images [B, C, H, W] in
    /// [0, 1] for image architectures, int64 token ids [B, L] for text ones (BERT derives its attention
    /// mask from the ids, see <see cref="Bert"/>).
    /// </summary>
    Tensor Features(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor images, Probe? probe = null);

    /// <summary>
    /// The site table for merging <paramref name="sources"/> (in order) into a model shaped like
    /// <paramref name="merged"/>: every backbone tensor with the M site after it and the U site before it.
    /// </summary>
    SiteTable Sites(IReadOnlyList<ModelConfig> sources, ModelConfig merged);

    /// <summary>
    /// Rows per input in the token-level probe values when every input has the same tokens in the same order
    /// (ViT: the CLS token, then the patches), so that a method can pick token positions (Opt's token filter,
    /// spec §9.6); null when the count varies (BERT reports only non-padding tokens) or there are no tokens (MLP).
    /// </summary>
    int? TokensPerInput(ModelConfig config);

    /// <summary>What one input is, for reports and cards: "images", or "sequences" for a text model.</summary>
    string Samples => "images";

    /// <summary>The input the backbone takes, as a shape with its meaning (model cards).</summary>
    string InputShape(ModelConfig config);

    /// <summary>
    /// This architecture's defaults for the trained merge methods' options, by option name (the paper's settings:
    /// spec §4.6 for MLPs, §7.4-7.7 for transformers), or "method:option" for one method only. A method takes those
    /// it has; the user's values override them.
    /// </summary>
    IReadOnlyDictionary<string, string> MergeDefaults { get; }

    /// <summary>
    /// Whether a Hugging Face task model initializes this backbone weight itself when a pre-trained checkpoint
    /// lacks it (BERT's pooler, absent from BertForMaskedLM), so fine-tuning may start without it.
    /// </summary>
    bool InitializedByTaskModel(string weight) => false;

    /// <summary>
    /// The layer that reads the pixels (weight [out, C, ...] or [out, C·H·W], channel-major, and bias), into which a
    /// per-channel affine change of the input folds exactly; null for an architecture that reads no images.
    /// </summary>
    string? PixelLayer(ModelConfig config) => null;
}
