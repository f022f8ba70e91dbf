using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// SLERP (spec §9.3) on the whole flattened backbone vector, centre at zero, t = 0.5: θ = α_1·θ_1 + α_2·θ_2
/// with α from the angle between the two vectors. A weighted sum is the special M/U M = [α_1 I; α_2 I],
/// U = [I, I] (merged-space parameters take the same weights), folded by the common fold. For N > 2 models
/// the spec gives no procedure; we fold them in one at a time with t = 1/k for the k-th model (a running
/// spherical mean) and say so in merge.json.
/// </summary>
internal sealed class SlerpMerge : IMergeMethod
{
    public string Name => "slerp";
    public string Summary => "spherical interpolation of the flattened weight vectors (t = 0.5)";
    public IReadOnlyList<MethodOption> Options => [];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var sites = inputs.Sites;
        sites.RequireEqualWidths("slerp");
        var names = sites.Tensors.Select(t => t.Name).ToList();
        Tensor Flatten(int i) => torch.cat(names.Select(n => inputs.Sources[i].Weights[n].flatten().to(ScalarType.Float64)).ToArray());

        // Running spherical mean: weights[i] is model i's coefficient in the result.
        var weights = new double[inputs.Sources.Count];
        weights[0] = 1;
        var current = Flatten(0);
        for (int k = 1; k < inputs.Sources.Count; k++)
        {
            var (keep, add) = Coefficients(current, Flatten(k), 1.0 / (k + 1));
            for (int i = 0; i < k; i++) weights[i] *= keep;
            weights[k] = add;
            current = current * keep + Flatten(k) * add;
        }

        var matrices = sites.Sites.ToDictionary(s => s.Name, s => s.Kind == SiteKind.Merge
            ? torch.cat(Enumerable.Range(0, s.Models).Select(i => torch.eye(s.MergedWidth, device: inputs.Device) * weights[i]).ToArray(), 0)
            : torch.cat(Enumerable.Range(0, s.Models).Select(_ => torch.eye(s.MergedWidth, device: inputs.Device)).ToArray(), 1));
        var mergedSpace = sites.Tensors.Where(t => t.Role == TensorRole.MergedSpace).ToDictionary(t => t.Name,
            t => Enumerable.Range(0, inputs.Sources.Count).Select(i => inputs.Sources[i].Weights[t.Name] * weights[i]).Aggregate((a, b) => a + b));
        var model = FoldedMerge.ToModel(inputs, matrices, mergedSpace);
        return FoldedMerge.Outcome(model, new JsonObject
        {
            ["coefficients"] = new JsonArray(weights.Select(w => (JsonNode)w).ToArray()),
            ["note"] = inputs.Sources.Count > 2 ? "more than two models: folded in one at a time, t = 1/k for the k-th" : "t = 0.5, centre 0",
        });
    }

    /// <summary>(α_a, α_b) for slerp(a, b, t) with t the weight toward b; thresholds as the reference (spec §13.19).</summary>
    public static (double A, double B) Coefficients(Tensor a, Tensor b, double t)
    {
        double cos = (a.dot(b) / (a.norm() * b.norm())).item<double>();
        double omega = Math.Acos(Math.Clamp(cos, -1, 1));
        if (Math.Abs(omega) < 1e-5 || Math.Abs(omega - Math.PI) < 1e-5) return (1 - t, t);
        double sin = Math.Sin(omega) + 1e-6;
        return (Math.Sin((1 - t) * omega) / sin, Math.Sin(t * omega) / sin);
    }
}
