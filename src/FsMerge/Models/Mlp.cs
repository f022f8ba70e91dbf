using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// Multi-layer perceptron on flattened images (spec §4): hidden layers "layers.{l}" with ReLU.
/// The feature read by the heads is the last hidden layer's activation.
/// </summary>
public sealed class Mlp : IArchitecture
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

    public Dictionary<string, Tensor> InitBackbone(ModelConfig config, Generator generator, Device device) =>
        BackboneWeights(config).ToDictionary(
            s => s.Name,
            s => Heads.UniformLinear(s.Shape, FanIn(config, s.Name), generator).to(device));

    public Tensor Features(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor images)
    {
        var h = images.reshape(images.shape[0], -1);
        for (int l = 0; l < config.HiddenSizes.Length; l++)
            h = nn.functional.relu(nn.functional.linear(h, weights[$"layers.{l}.weight"], weights[$"layers.{l}.bias"]));
        return h;
    }

    static long FanIn(ModelConfig config, string name)
    {
        int layer = int.Parse(name.Split('.')[1]);
        return layer == 0 ? config.InputSize : config.HiddenSizes[layer - 1];
    }
}
