using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// RegMean (spec §9.4): every linear weight is the minimizer of Σ_i ‖X_i W − X_i W_i‖² with the
/// off-diagonal of each Gram matrix scaled by α, where X_i are model i's own inputs to that layer on its
/// own task's merge data: W̄ = (Σ_i G̃_i)⁻¹ Σ_i G̃_i W_i ([in, out] layout). Everything else (biases,
/// embeddings, LayerNorms) is the plain average. Reads the site table for each weight's input point.
/// </summary>
internal sealed class RegMeanMerge : IMergeMethod
{
    public string Name => "regmean";
    public string Summary => "RegMean: per-layer closed-form regression on each model's own inputs";

    public IReadOnlyList<MethodOption> Options =>
    [
        // Not auto by default: on the MNIST halves the held-out score of RegMean's models (logit error about 1) hardly
        // separated the values, and auto chose one 0.8 points below 0.9 (README, "Merging without labels").
        new("alpha", "0.9", "scale of the Gram matrices' off-diagonal entries (0.9 MNIST, 0.8 Fashion-MNIST in the paper), or auto: " +
            "the value of --alpha-grid whose merged model has the lowest held-out divergence (the paper's 0.9 without held-out samples)", Example: "0.9"),
        new("alpha-grid", "0.5,0.7,0.8,0.9,0.95", "the values --alpha auto tries (each one closed-form solve)"),
    ];

    /// <summary>The paper's MNIST value, taken by --alpha auto when there are no held-out samples to choose with.</summary>
    const double PaperAlpha = 0.9;

    /// <summary>Relative ridge added to the Gram diagonal so inputs that are always zero (e.g. MNIST's border pixels) keep it invertible.</summary>
    public const double Ridge = 1e-6;

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var sites = inputs.Sites;
        sites.RequireEqualWidths("regmean");
        // Each model's inputs at every point a linear weight reads, on its own task's data.
        var points = sites.Tensors.Where(t => t.Role == TensorRole.Linear).Select(t => t.In ?? "input").Distinct().ToList();
        var inputsPerModel = inputs.Sources.Select((m, i) => Probing.Collect(m, inputs.Images(i), points)).ToList();
        if (settings.String("alpha") != MethodOption.Auto)
        {
            double alpha = settings.Double("alpha", 0, 1);
            return FoldedMerge.Outcome(Solved(inputs, inputsPerModel, alpha), new JsonObject { ["alpha"] = alpha, ["ridge"] = Ridge });
        }
        var grid = settings.Doubles("alpha-grid", 0, 1);
        if (inputs.HeldOut is null)
            return FoldedMerge.Outcome(Solved(inputs, inputsPerModel, PaperAlpha), new JsonObject
            {
                ["alpha"] = PaperAlpha, ["ridge"] = Ridge, ["alpha_search"] = "no held-out samples: the paper's value",
            });
        // --alpha auto: one closed-form solve per value, each scored without labels on the held-out samples.
        using var heldOut = Evaluation.HeldOutReference.For(inputs, Name, "alpha (--alpha auto)");
        var (chosen, chosenAlpha, search) = heldOut.Choose(Name, "alpha", grid, alpha => Solved(inputs, inputsPerModel, alpha), inputs.Log);
        return FoldedMerge.Outcome(chosen, new JsonObject { ["alpha"] = chosenAlpha, ["ridge"] = Ridge, ["alpha_search"] = search });
    }

    /// <summary>The averaged model with every linear weight replaced by its RegMean solution at <paramref name="alpha"/>.</summary>
    static Models.Model Solved(MergeInputs inputs, IReadOnlyList<Dictionary<string, Tensor>> inputsPerModel, double alpha)
    {
        var sites = inputs.Sites;
        var average = FoldedMerge.ToModel(inputs, FoldedMerge.RuleMatrices(inputs, MuInit.Average), FoldedMerge.MergedSpace(inputs, MuInit.Average));
        using (torch.no_grad())
        {
            foreach (var entry in sites.Tensors.Where(t => t.Role == TensorRole.Linear))
            {
                var point = entry.In ?? "input";
                var grams = inputsPerModel.Select(x => Gram(x[point], alpha)).ToList();
                var shape = inputs.Sources[0].Weights[entry.Name].shape;
                var weightsT = inputs.Sources.Select(m => m.Weights[entry.Name].reshape(shape[0], -1).t().to(ScalarType.Float64)).ToList();
                average.Weights[entry.Name] = Solve(grams, weightsT).t().reshape(shape).to(ScalarType.Float32).contiguous();
            }
        }
        return average;
    }

    /// <summary>G̃ = α·XᵀX + (1 − α)·diag(XᵀX), in float64.</summary>
    public static Tensor Gram(Tensor x, double alpha)
    {
        var x64 = x.to(ScalarType.Float64);
        var gram = x64.t().matmul(x64);
        var diagonal = torch.diag(torch.diagonal(gram));
        return gram * alpha + diagonal * (1 - alpha);
    }

    /// <summary>(Σ G̃_i + εI)⁻¹ Σ G̃_i W_i with W_i in [in, out] layout.</summary>
    public static Tensor Solve(IReadOnlyList<Tensor> grams, IReadOnlyList<Tensor> weightsInOut)
    {
        var sum = grams.Aggregate((a, b) => a + b);
        var rhs = grams.Zip(weightsInOut, (g, w) => g.matmul(w)).Aggregate((a, b) => a + b);
        double ridge = Ridge * Math.Max(torch.diagonal(sum).mean().item<double>(), 1e-12);
        return torch.linalg.solve(sum + torch.eye(sum.shape[0], dtype: ScalarType.Float64, device: sum.device) * ridge, rhs);
    }
}
