using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// Git Re-Basin (Ainsworth et al.): permute every other model's neurons onto model 1's, space by space,
/// then average. Weight matching maximizes Σ ⟨W_1, P W_i Pᵀ⟩ by coordinate descent over the spaces, each
/// step a linear assignment; activation matching assigns neurons by the correlation of their features on
/// the merge data. Attention is matched head-aware by default (<see cref="HeadAlignmentOptions"/>): whole heads,
/// then dimensions within matched heads, by permutation or by an orthogonal Procrustes fit. LayerNorms are carried
/// through their space's permutation. The result is a special M/U: M_i = P_i/N, U_i = P_iᵀ (P_i orthogonal within
/// heads under --attention-align orthogonal), folded by the common fold.
/// </summary>
internal sealed class ReBasinMerge : IMergeMethod
{
    public string Name => "rebasin";
    public string Summary => "Git Re-Basin: permutation alignment to model 1 (weight or activation matching; attention head-aware), then averaging";

    public IReadOnlyList<MethodOption> Options =>
    [
        new("matching", "weights", "weights (coordinate descent on weight similarity) or activations (feature correlation)"),
        new("iterations", "100", "maximum sweeps of weight-matching coordinate descent"),
        .. HeadAlignmentOptions.Options,
    ];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var matching = settings.String("matching", "weights", "activations");
        int iterations = settings.Int("iterations", min: 1);
        var heads = HeadAlignmentOptions.From(settings, Name);
        var sites = inputs.Sites;
        sites.RequireEqualWidths("rebasin");

        var units = HeadAlignment.Units(sites, heads.HeadAware);
        int sweeps = 0;
        List<Dictionary<string, Tensor>> maps;   // per model, by space: S_i [e', e], model i's neuron b → merged (model-1) index a
        if (matching == "activations")
            maps = HeadAlignment.FromMergeData(inputs, heads, units);
        else
        {
            maps = [];
            for (int i = 0; i < inputs.Sources.Count; i++)
            {
                var identity = sites.Spaces.ToDictionary(g => g.Key, g => torch.eye(g.First().MergedWidth, dtype: ScalarType.Float64));
                if (i > 0) sweeps = Math.Max(sweeps, MatchWeights(inputs, i, identity, units, heads, iterations));
                maps.Add(identity);
            }
        }

        var matrices = HeadAlignment.AveragingMatrices(sites, maps, inputs.Device);
        var model = FoldedMerge.ToModel(inputs, matrices, FoldedMerge.Carried(inputs, matrices));
        var details = new JsonObject
        {
            ["matching"] = matching, ["mu"] = "permutation", ["heads"] = heads.HeadAware ? "aware" : "ignore",
            ["attention_align"] = heads.Orthogonal ? "orthogonal" : "permute",
        };
        if (matching == "weights") details["sweeps"] = sweeps;
        return FoldedMerge.Outcome(model, details);
    }

    /// <summary>
    /// Coordinate descent over the alignment units (in a seeded random order each sweep) until no map changes. A
    /// space's similarity sums, over the tensors that read or write it (LayerNorms as vectors), W_1 against W_i
    /// with model i's current maps applied on the other axis.
    /// </summary>
    static int MatchWeights(MergeInputs inputs, int model, Dictionary<string, Tensor> maps, IReadOnlyList<AlignmentUnit> units,
        HeadAlignmentOptions heads, int iterations)
    {
        var sites = inputs.Sites;
        var tensors = sites.WithMergedSpaceAsVectors().Tensors;
        var reference = inputs.Sources[0].Weights;
        var other = inputs.Sources[model].Weights;
        var random = new Random((int)inputs.Seed + model);
        var spaceOf = sites.Sites.ToDictionary(s => s.Name, s => s.Space);
        using var _ = torch.no_grad();

        Tensor Similarity(string space)
        {
            Tensor? similarity = null;
            void Add(Tensor term) => similarity = similarity is null ? term : similarity + term;
            foreach (var entry in tensors)
            {
                bool isOut = spaceOf[entry.Out!] == space;
                bool isIn = entry.In != null && spaceOf[entry.In] == space;
                if (!isOut && !isIn) continue;
                var w1 = reference[entry.Name].to(ScalarType.Float64).cpu();
                var wi = other[entry.Name].to(ScalarType.Float64).cpu();
                if (entry.Role == TensorRole.Vector)
                {
                    Add(w1.reshape(-1, w1.shape[^1]).t().matmul(wi.reshape(-1, wi.shape[^1])));
                    continue;
                }
                // Apply model i's current map on the other axis, then compare along this space's axis.
                wi = wi.reshape(wi.shape[0], -1);
                w1 = w1.reshape(w1.shape[0], -1);
                if (isOut) Add(w1.matmul((entry.In != null ? wi.matmul(maps[spaceOf[entry.In]].t()) : wi).t()));   // [a, b] over output neurons
                if (isIn) Add(w1.t().matmul(maps[spaceOf[entry.Out!]].matmul(wi)));                                  // [a, b] over input neurons
            }
            return similarity!;
        }

        for (int sweep = 1; sweep <= iterations; sweep++)
        {
            bool changed = false;
            foreach (var unit in units.OrderBy(_ => random.Next()).ToList())
            {
                if (!unit.Spaces.Any(space => tensors.Any(t => spaceOf[t.Out!] == space || (t.In != null && spaceOf[t.In] == space)))) continue;
                var similarity = unit.Groups.Select(g => g.Select(Similarity).Aggregate((x, y) => x + y)).ToList();
                var next = HeadAlignment.Align(unit, similarity, HeadAlignment.Rotates(unit, heads));
                for (int k = 0; k < unit.Groups.Count; k++)
                {
                    if ((next[k] - maps[unit.Groups[k][0]]).abs().max().item<double>() > 1e-9) changed = true;
                    foreach (var space in unit.Groups[k]) maps[space] = next[k];
                }
            }
            if (!changed) return sweep;
        }
        return iterations;
    }
}
