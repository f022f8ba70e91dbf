using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// How an alignment method (Re-Basin, ZipIt) treats attention heads: <see cref="HeadAware"/> matches whole heads
/// first, then the dimensions within each matched pair of heads (the two-level matching of TransFusion, Rinaldi et
/// al. 2025), queries with keys and values on their own; otherwise every space is matched on its own, as in an MLP,
/// which can pair a query dimension of one head with one of another and move queries and keys apart.
/// <see cref="Orthogonal"/> maps the dimensions of a matched pair of heads by an orthogonal matrix instead of a
/// permutation (one for queries and keys, which keeps their dot products, one for values, undone by the output
/// projection: the symmetries attention admits, Zhang et al. 2025), fitted by orthogonal Procrustes.
/// </summary>
internal sealed record HeadAlignmentOptions(bool HeadAware, bool Orthogonal)
{
    public static readonly HeadAlignmentOptions Default = new(true, false);

    public static IReadOnlyList<MethodOption> Options =>
    [
        new("heads", "aware", "attention heads: aware (match whole heads, then dimensions within matched heads, queries with keys) or ignore (every space on its own, as in an MLP)"),
        new("attention-align", "permute", "dimensions within matched heads: permute, or orthogonal (a Procrustes rotation of queries with keys and of values; needs --heads aware)"),
    ];

    public static HeadAlignmentOptions From(MethodSettings settings, string method)
    {
        bool aware = settings.String("heads", "aware", "ignore") == "aware";
        bool orthogonal = settings.String("attention-align", "permute", "orthogonal") == "orthogonal";
        if (orthogonal && !aware)
            throw new FsMergeException($"{method}: --attention-align orthogonal rotates within heads; it needs --heads aware");
        return new(aware, orthogonal);
    }
}

/// <summary>
/// One alignment problem: <see cref="Groups"/> of spaces, each group mapped by one shared transport. With
/// <see cref="Heads"/> &gt; 1 the groups are one attention layer's (queries with keys, values), whose heads move together.
/// </summary>
internal sealed record AlignmentUnit(IReadOnlyList<IReadOnlyList<string>> Groups, int Heads)
{
    public IEnumerable<string> Spaces => Groups.SelectMany(g => g);
}

/// <summary>
/// Alignment of model i's neurons to model 1's (Re-Basin, head-aware ZipIt, FS-Merge's Re-Basin init): per space a
/// map S_i [e', e_i] (model i's neuron b → merged index a) maximizing Σ ⟨S_i, C⟩ for a similarity C [a, b] (feature
/// correlation, or weight products). A map is a permutation, or within attention heads possibly orthogonal; either
/// way the aligned model computes the same function (a rotation is exact only within a head's queries and keys, or
/// its values: LayerNorm and GELU admit permutations only).
/// </summary>
internal static class HeadAlignment
{
    /// <summary>The table's alignment problems: each attention layer as one unit when head-aware, every other space alone.</summary>
    public static IReadOnlyList<AlignmentUnit> Units(SiteTable table, bool headAware)
    {
        var attention = headAware ? table.HeadAligned : [];
        var grouped = attention.SelectMany(g => g.Spaces).ToHashSet();
        return attention.GroupBy(g => g.Layer)
            .Select(layer => new AlignmentUnit(layer.Select(g => g.Spaces).ToList(), layer.First().Heads))
            .Concat(table.Spaces.Where(s => !grouped.Contains(s.Key)).Select(s => new AlignmentUnit([[s.Key]], 1)))
            .ToList();
    }

    /// <summary>Whether a unit's spaces are mapped by rotations: only attention heads admit them.</summary>
    public static bool Rotates(AlignmentUnit unit, HeadAlignmentOptions options) => options.Orthogonal && unit.Heads > 1;

    /// <summary>
    /// The maps S [e', e] (float64) of the unit's groups, given each group's similarity [e (model 1), e (model i)].
    /// A plain space: the permutation of largest total similarity (linear assignment). An attention layer: every pair
    /// of heads (g of model 1, h of model i) is scored by the best map between them summed over the groups, whole
    /// heads are assigned by those scores, and each matched pair keeps its best map (a permutation, or with
    /// <paramref name="orthogonal"/> the Procrustes rotation U Vᵀ of the block C = U Σ Vᵀ, whose score is Σ's sum).
    /// </summary>
    public static Tensor[] Align(AlignmentUnit unit, IReadOnlyList<Tensor> similarity, bool orthogonal)
    {
        if (unit.Heads == 1) return similarity.Select(c => Assignment(c.to(ScalarType.Float64).cpu()).Map).ToArray();
        int heads = unit.Heads, groups = similarity.Count;
        long headWidth = similarity[0].shape[0] / heads;
        var blockMaps = new Tensor[groups, heads, heads];
        var scores = new double[heads, heads];
        for (int k = 0; k < groups; k++)
        {
            var c = similarity[k].to(ScalarType.Float64).cpu();
            for (int g = 0; g < heads; g++)
                for (int h = 0; h < heads; h++)
                {
                    var block = c.narrow(0, g * headWidth, headWidth).narrow(1, h * headWidth, headWidth);
                    var (map, score) = orthogonal ? Procrustes(block) : Assignment(block);
                    blockMaps[k, g, h] = map;
                    scores[g, h] += score;
                }
        }
        var headOf = LinearAssignment.Solve(scores, maximize: true);   // model-1 head g takes model-i head headOf[g]
        return Enumerable.Range(0, groups).Select(k =>
        {
            var full = torch.zeros(heads * headWidth, heads * headWidth, ScalarType.Float64);
            for (int g = 0; g < heads; g++)
                full.narrow(0, g * headWidth, headWidth).narrow(1, headOf[g] * headWidth, headWidth).copy_(blockMaps[k, g, headOf[g]]);
            return full;
        }).ToArray();
    }

    static (Tensor Map, double Score) Assignment(Tensor c)
    {
        var assigned = LinearAssignment.Solve(c, maximize: true);
        var map = torch.zeros(c.shape[0], c.shape[1], ScalarType.Float64);
        double score = 0;
        for (int a = 0; a < assigned.Length; a++)
        {
            map[a, assigned[a]] = 1.0;
            score += c[a, assigned[a]].item<double>();
        }
        return (map, score);
    }

    static (Tensor Map, double Score) Procrustes(Tensor c)
    {
        var (u, s, vh) = torch.linalg.svd(c, fullMatrices: false);
        return (u.matmul(vh), s.sum().item<double>());
    }

    /// <summary>
    /// The similarity of model 1's neurons (rows) and model i's (columns) from their features [n, e]: the
    /// correlation for permutations; for rotations the uncentred cross product XᵀX_i, which is model 1's
    /// second-moment matrix times the rotation when model i is a rotated copy (so Procrustes recovers it exactly),
    /// scaled by both sides' total second moment so that queries and keys weigh alike.
    /// </summary>
    public static Tensor FeatureSimilarity(Tensor reference, Tensor other, bool rotation)
    {
        if (!rotation) return Probing.Correlation(reference, other);
        var a = reference.to(ScalarType.Float64);
        var b = other.to(ScalarType.Float64);
        return a.t().matmul(b) / (a.pow(2).sum().sqrt() * b.pow(2).sum().sqrt() + 1e-12);
    }

    /// <summary>
    /// Every model's maps to model 1 from features (<paramref name="probed"/>: per model, the table's probe points),
    /// by space; model 1's are identities.
    /// </summary>
    public static List<Dictionary<string, Tensor>> FromFeatures(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> probed,
        HeadAlignmentOptions options, IEnumerable<AlignmentUnit>? units = null)
    {
        using var _ = torch.no_grad();
        var maps = probed.Select(_ => new Dictionary<string, Tensor>()).ToList();
        foreach (var unit in units ?? Units(table, options.HeadAware))
        {
            bool rotates = Rotates(unit, options);
            for (int i = 0; i < probed.Count; i++)
            {
                Tensor[] groupMaps;
                if (i == 0)
                    groupMaps = unit.Groups.Select(g => torch.eye(table.Sites.First(s => s.Space == g[0]).MergedWidth, dtype: ScalarType.Float64)).ToArray();
                else
                {
                    using var scope = torch.NewDisposeScope();
                    var similarity = unit.Groups.Select(g => g.Select(space =>
                    {
                        var point = table.ProbePoint(space);
                        return FeatureSimilarity(probed[0][point], probed[i][point], rotates).cpu();
                    }).Aggregate((x, y) => x + y)).ToList();
                    groupMaps = Align(unit, similarity, rotates).Select(m => m.MoveToOuterDisposeScope()).ToArray();
                }
                for (int k = 0; k < unit.Groups.Count; k++)
                    foreach (var space in unit.Groups[k]) maps[i][space] = groupMaps[k];
            }
        }
        return maps;
    }

    /// <summary>Every model's maps to model 1 from its features on all merge data, at the table's probe points.</summary>
    public static List<Dictionary<string, Tensor>> FromMergeData(MergeInputs inputs, HeadAlignmentOptions options, IEnumerable<AlignmentUnit>? units = null)
    {
        var sites = inputs.Sites;
        var probed = Probing.OnAllData(inputs, sites.Spaces.Select(s => sites.ProbePoint(s.Key)).ToList(), Probing.MatchingImages);
        var maps = FromFeatures(sites, probed, options, units);
        foreach (var tensor in probed.SelectMany(byPoint => byPoint.Values)) tensor.Dispose();
        return maps;
    }

    /// <summary>
    /// The special M/U of aligning every model to model 1 and averaging: M_i = S_iᵀ/N and U_i = S_i per site
    /// (<paramref name="maps"/>: per model, by space), float32 on <paramref name="device"/>; sites of spaces without maps are left out.
    /// </summary>
    public static Dictionary<string, Tensor> AveragingMatrices(SiteTable table, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> maps, Device device)
    {
        int n = maps.Count;
        return table.Sites.Where(s => maps[0].ContainsKey(s.Space)).ToDictionary(s => s.Name, s =>
        {
            var blocks = maps.Select(m => m[s.Space].to(ScalarType.Float32).to(device)).ToArray();
            return s.Kind == SiteKind.Merge ? torch.cat(blocks.Select(b => b.t() / n).ToArray(), 0) : torch.cat(blocks, 1);
        });
    }

    /// <summary>
    /// Model i re-expressed in model 1's coordinates (<paramref name="maps"/> by space): folded alone through
    /// M = Sᵀ and U = S, LayerNorms carried like vectors and heads through the head-input map. It computes the same
    /// function as <paramref name="model"/>.
    /// </summary>
    public static Model Aligned(Model model, IReadOnlyDictionary<string, Tensor> maps)
    {
        using var _ = torch.no_grad();
        var table = model.Config.Arch.Sites([model.Config], model.Config);
        var device = model.Weights.Values.First().device;
        var matrices = AveragingMatrices(table, [maps], device);
        var folded = Folding.Fold(table.WithMergedSpaceAsVectors(), [model.Weights], [model.HeadCount], matrices, new Dictionary<string, Tensor>());
        return new Model(model.Config, folded.ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone()));
    }
}
