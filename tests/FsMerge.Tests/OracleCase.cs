using FsMerge.Merging;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// One merge for the SuperNet oracles (<see cref="VitOracleTests"/>, <see cref="BertOracleTests"/>): rough
/// source models, M/U moved off their initial values, merged-space LayerNorms and one input batch.
/// </summary>
sealed class OracleCase
{
    public required IArchitecture Arch { get; init; }
    public required ModelConfig Merged { get; init; }
    public required List<Model> Models { get; init; }
    public required SiteTable Table { get; init; }
    public required Dictionary<string, SiteMatrix> Mu { get; init; }
    public required Dictionary<string, Tensor> Ln { get; set; }
    public required Tensor Input { get; init; }
    public List<IReadOnlyDictionary<string, Tensor>> Weights => Models.Select(m => (IReadOnlyDictionary<string, Tensor>)m.Weights).ToList();
    public Dictionary<string, Dictionary<string, Tensor>> Factors => Mu.ToDictionary(kv => kv.Key, kv => kv.Value.Factors);

    /// <summary>
    /// Source model <paramref name="i"/> off the architecture's near-trivial init: O(1/√fan_in) weights and
    /// tables, and the tensors <paramref name="shifted"/> names (biases, LayerNorms, ...) moved by O(0.3), γ by O(0.4).
    /// </summary>
    public static Model Rough(ModelConfig config, int i, long seed, ScalarType dtype, Func<string, bool> shifted)
    {
        var created = Model.Create(config, 50 + seed * 10 + i, CPU);
        var g = new Generator((ulong)(500 + seed * 10 + i));
        var weights = new Dictionary<string, Tensor>();
        foreach (var (name, weight) in created.Weights.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var noise = torch.randn(weight.shape, generator: g);
            bool isGamma = name.Contains("layernorm", StringComparison.OrdinalIgnoreCase) && name.EndsWith(".weight");
            var t = shifted(name)
                ? weight + noise * (isGamma ? 0.4 : 0.3)
                : noise * (1.5 / Math.Sqrt(weight[0].numel()));   // weights [out, in, ...], tables, heads
            weights[name] = t.to(dtype).detach();
        }
        return new Model(created.Config, weights);
    }

    /// <summary>
    /// The case for <paramref name="models"/>: with random init every factor and LayerNorm is moved off its
    /// initial distribution; otherwise the LayerNorms follow the library's rule (model 1's, or their mean).
    /// </summary>
    public static OracleCase Make(IArchitecture arch, List<Model> models, MuType type, MuInit init, ScalarType dtype, int rank, long seed, Tensor input)
    {
        var merged = models[0].Config with { Heads = models.SelectMany(m => m.Config.Heads).ToList() };
        var table = arch.Sites(models.Select(m => m.Config).ToList(), merged);
        var g = new Generator((ulong)(900 + seed));
        var mu = new Dictionary<string, SiteMatrix>();
        foreach (var site in table.Sites)
        {
            var matrix = SiteMatrix.Initialize(site, type, init, rank, g, CPU);
            foreach (var key in matrix.Factors.Keys.ToList())
            {
                var f = matrix.Factors[key];
                if (init == MuInit.Random) f = f + torch.randn(f.shape, generator: g) * (key == "diag" ? 0.8 : 0.15);
                matrix.Factors[key] = f.to(dtype).detach();
            }
            mu[site.Name] = matrix;
        }

        Dictionary<string, Tensor> ln;
        if (init == MuInit.Random)
        {
            ln = [];
            foreach (var entry in table.Tensors.Where(t => t.Role == TensorRole.MergedSpace))
            {
                var noise = torch.randn(models[0].Weights[entry.Name].shape, generator: g);
                ln[entry.Name] = (entry.Name.EndsWith(".weight") ? 1 + 0.4 * noise : 0.3 * noise).to(dtype);
            }
        }
        else ln = FoldedMerge.MergedSpace(new MergeInputs { Sources = models, Data = [], Target = merged, Device = CPU }, init);
        return new OracleCase { Arch = arch, Merged = merged, Models = models, Table = table, Mu = mu, Ln = ln, Input = input };
    }

    /// <summary>The library's training path: the batched fold through the M/U factors, one forward, x̄·U_headinput.</summary>
    public (Tensor Output, Dictionary<string, Tensor> Folded) FoldPath()
    {
        var folded = Folding.Fold(Table, Weights, Models.Select(_ => 1).ToList(), Mu, Ln, new StackedFold(Table, Weights, Mu));
        return (Arch.Features(Merged, folded, Input).matmul(Mu[Table.HeadInput].Materialize()), folded);
    }

    /// <summary>The largest of max|a_j − b_j| / max|b_j| over the leaves' gradients, and whose; every b_j must be non-zero.</summary>
    public static (double Worst, string Name) WorstDifference(List<Tensor> a, List<Tensor> b, List<(string Name, Tensor Leaf)> leaves)
    {
        double worst = 0;
        string name = "";
        for (int j = 0; j < leaves.Count; j++)
        {
            double scale = VitOracleTests.MaxAbs(b[j]);
            Assert.True(scale > 1e-8, $"{leaves[j].Name}: no gradient");
            double rel = VitOracleTests.MaxAbs(a[j] - b[j]) / scale;
            if (rel > worst) (worst, name) = (rel, leaves[j].Name);
        }
        return (worst, name);
    }
}
