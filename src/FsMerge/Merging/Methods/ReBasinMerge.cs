using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// Git Re-Basin (Ainsworth et al.): permute every other model's neurons onto model 1's, space by space,
/// then average. Weight matching maximizes Σ ⟨W_1, P W_i Pᵀ⟩ by coordinate descent over the spaces, each
/// step a linear assignment; activation matching assigns neurons by the correlation of their features on
/// the merge data. The result is a special M/U: M_i = P_i/N, U_i = P_iᵀ, folded by the common fold.
/// </summary>
internal sealed class ReBasinMerge : IMergeMethod
{
    public string Name => "rebasin";
    public string Summary => "Git Re-Basin: permutation alignment to model 1 (weight or activation matching), then averaging";

    public IReadOnlyList<MethodOption> Options =>
    [
        new("matching", "weights", "weights (coordinate descent on weight similarity) or activations (feature correlation)"),
        new("iterations", "100", "maximum sweeps of weight-matching coordinate descent"),
    ];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var matching = settings.String("matching", "weights", "activations");
        int iterations = settings.Int("iterations", min: 1);
        var sites = inputs.Sites;
        if (sites.Tensors.Any(t => t.Role == TensorRole.MergedSpace))
            throw new FsMergeException("rebasin: this architecture has merged-space parameters (LayerNorms), which permutation matching does not cover; use it on MLPs");
        sites.RequireEqualWidths("rebasin");

        var spaces = sites.Spaces.Select(g => g.Key).ToList();
        // perm[i][space][a] = the neuron of model i placed at merged (model-1) index a.
        var perms = new List<Dictionary<string, long[]>>();
        int sweeps = 0;
        for (int i = 0; i < inputs.Sources.Count; i++)
        {
            var identity = spaces.ToDictionary(s => s, s => Identity(sites.Spaces.First(g => g.Key == s).First().MergedWidth));
            if (i > 0)
            {
                if (matching == "activations") MatchActivations(inputs, i, identity);
                else sweeps = Math.Max(sweeps, MatchWeights(inputs, i, identity, iterations));
            }
            perms.Add(identity);
        }

        int n = inputs.Sources.Count;
        var matrices = new Dictionary<string, Tensor>();
        foreach (var site in sites.Sites)
        {
            var blocks = perms.Select(p => Permutation(p[site.Space], inputs.Device)).ToArray();   // P_i [e, e']: P[b, a] = 1 if neuron b → a
            matrices[site.Name] = site.Kind == SiteKind.Merge
                ? torch.cat(blocks.Select(b => b / n).ToArray(), 0)
                : torch.cat(blocks.Select(b => b.t()).ToArray(), 1);
        }
        var model = FoldedMerge.ToModel(inputs, matrices, FoldedMerge.MergedSpace(inputs, MuInit.Average));
        var details = new JsonObject { ["matching"] = matching, ["mu"] = "permutation" };
        if (matching == "weights") details["sweeps"] = sweeps;
        return FoldedMerge.Outcome(model, details);
    }

    static long[] Identity(long width) => Enumerable.Range(0, (int)width).Select(i => (long)i).ToArray();

    static Tensor Permutation(long[] perm, Device device)
    {
        var p = torch.zeros(perm.Length, perm.Length);
        for (int a = 0; a < perm.Length; a++) p[perm[a], a] = 1f;
        return p.to(device);
    }

    static void MatchActivations(MergeInputs inputs, int model, Dictionary<string, long[]> perm)
    {
        foreach (var space in inputs.Sites.Spaces)
        {
            var features = Probing.OnAllData(inputs, inputs.Sites.ProbePoint(space.Key));
            var similarity = Probing.Correlation(features[0], features[model]);   // [a (model 1), b (model i)]
            perm[space.Key] = Assign(similarity);
        }
    }

    /// <summary>Coordinate descent over spaces (in a seeded random order each sweep) until no permutation changes.</summary>
    static int MatchWeights(MergeInputs inputs, int model, Dictionary<string, long[]> perm, int iterations)
    {
        var sites = inputs.Sites;
        var reference = inputs.Sources[0].Weights;
        var other = inputs.Sources[model].Weights;
        var random = new Random((int)inputs.Seed + model);
        var spaceOf = sites.Sites.ToDictionary(s => s.Name, s => s.Space);
        using var _ = torch.no_grad();
        for (int sweep = 1; sweep <= iterations; sweep++)
        {
            bool changed = false;
            foreach (var space in perm.Keys.OrderBy(_ => random.Next()).ToList())
            {
                Tensor? similarity = null;
                foreach (var entry in sites.Tensors.Where(t => t.Role != TensorRole.MergedSpace))
                {
                    bool isOut = spaceOf[entry.Out!] == space;
                    bool isIn = entry.In != null && spaceOf[entry.In] == space;
                    if (!isOut && !isIn) continue;
                    var w1 = reference[entry.Name].to(ScalarType.Float64);
                    var wi = other[entry.Name].to(ScalarType.Float64);
                    if (entry.Role == TensorRole.Vector)
                    {
                        var term = w1.reshape(-1, w1.shape[^1]).t().matmul(wi.reshape(-1, wi.shape[^1]));
                        similarity = similarity is null ? term : similarity + term;
                        continue;
                    }
                    // Apply model i's current permutation on the other axis, then compare along this space's axis.
                    wi = wi.reshape(wi.shape[0], -1);
                    w1 = w1.reshape(w1.shape[0], -1);
                    if (isOut)
                    {
                        var wiIn = entry.In != null ? wi.index_select(1, torch.tensor(perm[spaceOf[entry.In]], device: wi.device)) : wi;
                        var t = w1.matmul(wiIn.t());                           // [a, b] over output neurons
                        similarity = similarity is null ? t : similarity + t;
                    }
                    if (isIn)
                    {
                        var wiOut = wi.index_select(0, torch.tensor(perm[spaceOf[entry.Out!]], device: wi.device));
                        var t = w1.t().matmul(wiOut);                          // [a, b] over input neurons
                        similarity = similarity is null ? t : similarity + t;
                    }
                }
                if (similarity is null) continue;
                var next = Assign(similarity);
                if (!next.SequenceEqual(perm[space])) { perm[space] = next; changed = true; }
            }
            if (!changed) return sweep;
        }
        return iterations;
    }

    /// <summary>perm[a] = b maximizing Σ_a S[a, b] (model-1 neuron a takes model-i neuron b).</summary>
    static long[] Assign(Tensor similarity) => LinearAssignment.Solve(similarity, maximize: true).Select(b => (long)b).ToArray();
}
