using FsMerge.Merging;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// Multi-layer perceptron on flattened images (spec §4): hidden layers "layers.{l}" with ReLU.
/// The feature read by the heads is the last hidden layer's activation.
/// </summary>
internal sealed class Mlp : IArchitecture
{
    public string Name => "mlp";

    public IReadOnlyList<WeightSpec> BackboneWeights(ModelConfig config)
    {
        var specs = new List<WeightSpec>();
        long fanIn = config.InputSize;
        for (int l = 0; l < config.HiddenSizes.Length; l++)
        {
            specs.Add(new WeightSpec($"layers.{l}.weight", [config.HiddenSizes[l], fanIn]));
            specs.Add(new WeightSpec($"layers.{l}.bias", [config.HiddenSizes[l]]));
            fanIn = config.HiddenSizes[l];
        }
        return specs;
    }

    public long FeatureWidth(ModelConfig config) => config.HiddenSizes[^1];

    /// <summary>The paper's MLP setting (spec §4.6): full-batch SGD with momentum, cosine with warm-up, full M/U
    /// reconstructing every model's feature with normalized targets, its rate grid; 1,000 steps (its global epochs).
    /// The start is chosen with the rate (--init auto: ZipIt's or model 1's): FS-Merge from ZipIt's led by 1.0-4.0 points
    /// per task on the MNIST halves by depth of bench mlp (as in the paper's Table 2) and by 0.7-3.2 on three unseen MLP merges.</summary>
    public IReadOnlyDictionary<string, string> MergeDefaults { get; } = new Dictionary<string, string>
    {
        ["optimizer"] = "sgd", ["schedule"] = "cosine", ["batch"] = "0", ["momentum"] = "0.9", ["weight-decay"] = "0.001",
        ["steps"] = "1000", ["lr-grid"] = "0.3,0.1,0.03,0.01,0.003",
        ["type"] = "full", ["targets"] = "all", ["normalize"] = "true", ["init"] = "auto",
    };

    public string? PixelLayer(ModelConfig config) => "layers.0";

    public int? TokensPerInput(ModelConfig config) => null;

    public string InputShape(ModelConfig config) => $"[B, {config.InputSize}] or [B, C, H, W] flattening to {config.InputSize}";

    public Dictionary<string, Tensor> InitBackbone(ModelConfig config, Generator generator, Device device) =>
        BackboneWeights(config).ToDictionary(
            s => s.Name,
            s => Heads.UniformLinear(s.Shape, FanIn(config, s.Name), generator).to(device));

    public Tensor Features(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor images, Probe? probe = null)
    {
        var h = images.reshape(images.shape[0], -1);
        probe?.Invoke("input", h);
        for (int l = 0; l < config.HiddenSizes.Length; l++)
        {
            var z = nn.functional.linear(h, weights[$"layers.{l}.weight"], weights[$"layers.{l}.bias"]);
            probe?.Invoke(MergeSite(l), z);
            h = nn.functional.relu(z);
            probe?.Invoke(UnmergeSite(l), h);
        }
        return h;
    }

    public static string MergeSite(int layer) => $"layer{layer}.merge";
    public static string UnmergeSite(int layer) => $"layer{layer}.unmerge";

    /// <summary>
    /// Layer l's output is merged by M^l, ReLU acts in merged space, U^l unmerges for layer l+1 (spec §4.2).
    /// The first layer reads the shared image, so it has no U. Models may differ in width (not in depth).
    /// </summary>
    public SiteTable Sites(IReadOnlyList<ModelConfig> sources, ModelConfig merged)
    {
        int depth = merged.HiddenSizes.Length;
        var mismatch = sources.FirstOrDefault(s => s.HiddenSizes.Length != depth || s.InputSize != merged.InputSize);
        if (mismatch != null)
            throw new FsMergeException($"MLP sources must share depth and input size: got {mismatch.HiddenSizes.Length} hidden layers on {mismatch.InputSize} inputs, expected {depth} on {merged.InputSize}");
        var t = new SiteTableBuilder();
        for (int l = 0; l < depth; l++)
        {
            var widths = sources.Select(s => (long)s.HiddenSizes[l]).ToArray();
            t.Site(MergeSite(l), SiteKind.Merge, $"hidden{l}", widths, merged.HiddenSizes[l]);
            t.Site(UnmergeSite(l), SiteKind.Unmerge, $"hidden{l}", widths, merged.HiddenSizes[l]);
            t.Linear($"layers.{l}", MergeSite(l), l == 0 ? null : UnmergeSite(l - 1));
            t.Activation($"hidden{l}", x => nn.functional.relu(x));
        }
        return t.Build(UnmergeSite(depth - 1));
    }

    static long FanIn(ModelConfig config, string name)
    {
        int layer = int.Parse(name.Split('.')[1]);
        return layer == 0 ? config.InputSize : config.HiddenSizes[layer - 1];
    }
}
