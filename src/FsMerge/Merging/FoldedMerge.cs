using System.Text.Json.Nodes;
using FsMerge.Evaluation;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>Shared steps of every method that ends in one folded model.</summary>
internal static class FoldedMerge
{
    /// <summary>
    /// Merged-space parameters (LayerNorms) by an initialization rule (spec §2.2): "first" copies model 1's,
    /// "average" takes the mean, "random" leaves γ = 1, β = 0.
    /// </summary>
    public static Dictionary<string, Tensor> MergedSpace(MergeInputs inputs, MuInit rule)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var entry in inputs.Sites.Tensors.Where(t => t.Role == TensorRole.MergedSpace))
        {
            var values = inputs.Sources.Select(s => s.Weights[entry.Name]).ToArray();
            if (rule != MuInit.Random && values.Any(v => !v.shape.SequenceEqual(values[0].shape)))
                throw new FsMergeException($"{entry.Name}: sources differ in shape; merged-space parameters need --init random");
            result[entry.Name] = rule switch
            {
                MuInit.First => values[0].detach().clone(),
                MuInit.Average => torch.stack(values).mean([0]),
                _ => entry.Name.EndsWith(".bias") ? torch.zeros(Target(inputs, entry.Name), device: inputs.Device)
                                                 : torch.ones(Target(inputs, entry.Name), device: inputs.Device),
            };
        }
        return result;
    }

    /// <summary>
    /// Merged-space parameters (LayerNorms) carried through their space's merge like vectors, Σ_i v_i M_i: for
    /// methods whose M/U align neurons (permutations, transports, zips), each merged neuron gets the mean of the
    /// parameters of the neurons it takes, not of those that merely share its index.
    /// </summary>
    public static Dictionary<string, Tensor> Carried(MergeInputs inputs, IReadOnlyDictionary<string, Tensor> matrices)
    {
        var folded = FoldCarrying(inputs, matrices);
        return inputs.Sites.Tensors.Where(t => t.Role == TensorRole.MergedSpace).ToDictionary(t => t.Name, t => folded[t.Name].clone());
    }

    /// <summary>The fold with the merged-space tensors (LayerNorms) carried through M as vectors.</summary>
    static Dictionary<string, Tensor> FoldCarrying(MergeInputs inputs, IReadOnlyDictionary<string, Tensor> matrices)
    {
        using var _ = torch.no_grad();
        return Folding.Fold(inputs.Sites.WithMergedSpaceAsVectors(), inputs.SourceWeights, inputs.HeadCounts, matrices, new Dictionary<string, Tensor>());
    }

    static long[] Target(MergeInputs inputs, string name) =>
        Model.ExpectedWeights(inputs.Target).First(w => w.Name == name).Shape;

    /// <summary>Folds fixed M/U matrices into the merged model (no gradients).</summary>
    public static Model ToModel(MergeInputs inputs, IReadOnlyDictionary<string, Tensor> matrices, IReadOnlyDictionary<string, Tensor> mergedSpace)
    {
        using var _ = torch.no_grad();
        var weights = Folding.Fold(inputs.Sites, inputs.SourceWeights, inputs.HeadCounts, matrices, mergedSpace);
        return new Model(inputs.Target, weights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone()));
    }

    /// <summary>
    /// Folds fixed M/U into the merged model with the merged-space parameters (LayerNorms) carried through their
    /// space's M like vectors: model 1's under "first", the mean under averaging, matched units' mean under a matching.
    /// </summary>
    public static Model CarryingMergedSpace(MergeInputs inputs, IReadOnlyDictionary<string, Tensor> matrices) =>
        new(inputs.Target, FoldCarrying(inputs, matrices).ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone()));

    public static MergeOutcome Outcome(Model merged, JsonObject details) => new(merged, Evaluator.MultiTask(merged), details);

    /// <summary>M/U of one initialization rule at every site, as dense matrices.</summary>
    public static Dictionary<string, Tensor> RuleMatrices(MergeInputs inputs, MuInit rule) =>
        inputs.Sites.Sites.ToDictionary(s => s.Name,
            s => SiteMatrix.Initialize(s, MuType.Full, rule, 0, new Generator((ulong)inputs.Seed), inputs.Device).Materialize());
}
