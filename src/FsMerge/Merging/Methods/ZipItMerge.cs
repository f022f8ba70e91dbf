using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// ZipIt (spec §4.4, §9.7): per merged space, correlate every model's features on the merge data and
/// greedily zip the most correlated pairs, across or within models, until the merged width is reached.
/// A zipped feature averages its members (M entries 1/k) and is copied back to each (U entries 1).
/// It is a special M/U, folded by the common fold. For two models this is ZipIt's greedy pairing; for
/// more, the same greedy pass joins groups of up to N features (single linkage), then, if that cannot reach
/// the merged width, larger ones. Zipping features of one head with another's, or queries apart from their keys,
/// breaks attention, so by default attention layers are aligned head-aware to model 1 instead and averaged
/// (<see cref="HeadAlignmentOptions"/>); every other space is zipped. LayerNorms are carried through their
/// space's M, so a merged neuron's γ and β average those of the features it zips.
/// </summary>
internal sealed class ZipItMerge : IMergeMethod
{
    public string Name => "zipit";
    public string Summary => "ZipIt: greedy matching of correlated features, within and across models (attention head-aware)";
    public IReadOnlyList<MethodOption> Options => HeadAlignmentOptions.Options;

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var heads = HeadAlignmentOptions.From(settings, Name);
        var matrices = Matrices(inputs, heads);
        var model = FoldedMerge.ToModel(inputs, matrices, FoldedMerge.Carried(inputs, matrices));
        return FoldedMerge.Outcome(model, new JsonObject
        {
            ["mu"] = "zipit", ["heads"] = heads.HeadAware ? "aware" : "ignore", ["attention_align"] = heads.Orthogonal ? "orthogonal" : "permute",
        });
    }

    /// <summary>ZipIt's M and U for every site (all sites of one space share them); attention per <paramref name="heads"/>.</summary>
    public static Dictionary<string, Tensor> Matrices(MergeInputs inputs, HeadAlignmentOptions heads)
    {
        var sites = inputs.Sites;
        var result = new Dictionary<string, Tensor>();
        var probed = Probing.OnAllData(inputs, sites.Spaces.Select(s => sites.ProbePoint(s.Key)).ToList(), Probing.MatchingImages);
        var attention = HeadAlignment.Units(sites, heads.HeadAware).Where(u => u.Heads > 1).ToList();
        var aligned = attention.SelectMany(u => u.Spaces).ToHashSet();
        if (attention.Count > 0)
        {
            sites.RequireEqualWidths("zipit with --heads aware", s => aligned.Contains(s.Space));
            var maps = HeadAlignment.FromFeatures(sites, probed, heads, attention);
            foreach (var (name, matrix) in HeadAlignment.AveragingMatrices(sites, maps, inputs.Device)) result[name] = matrix;
        }
        foreach (var space in sites.Spaces.Where(s => !aligned.Contains(s.Key)))
        {
            var features = probed.Select(byPoint => byPoint[sites.ProbePoint(space.Key)]).ToList();
            var (m, u) = Zip(features, space.First().MergedWidth, inputs.Device);
            foreach (var site in space) result[site.Name] = site.Kind == SiteKind.Merge ? m : u;
        }
        foreach (var tensor in probed.SelectMany(byPoint => byPoint.Values)) tensor.Dispose();
        return result;
    }

    /// <summary>Greedy zip of features [n, e_i] (one per model) into <paramref name="mergedWidth"/> groups.</summary>
    public static (Tensor M, Tensor U) Zip(IReadOnlyList<Tensor> features, long mergedWidth, Device device)
    {
        var all = torch.cat(features.ToArray(), 1).to(ScalarType.Float64).cpu();
        int total = (int)all.shape[1], models = features.Count;
        if (mergedWidth > total) throw new FsMergeException($"zipit: merged width {mergedWidth} exceeds the {total} features to zip");
        var correlation = Probing.Correlation(all, all)
            .masked_fill(torch.eye(total, dtype: ScalarType.Bool), double.NegativeInfinity).contiguous();   // no self-pairs
        var pairs = new List<(double Value, int A, int B)>(total * (total - 1) / 2);
        var c = correlation.data<double>().ToArray();
        for (int a = 0; a < total; a++)
            for (int b = a + 1; b < total; b++)
                pairs.Add((c[a * total + b], a, b));
        pairs.Sort((x, y) => y.Value.CompareTo(x.Value) is var cmp && cmp != 0 ? cmp : (x.A, x.B).CompareTo((y.A, y.B)));

        var parent = Enumerable.Range(0, total).ToArray();
        var size = Enumerable.Repeat(1, total).ToArray();
        int Find(int x) { while (parent[x] != x) x = parent[x] = parent[parent[x]]; return x; }
        int groups = total;
        void Join(int maxSize)
        {
            foreach (var (_, a, b) in pairs)
            {
                if (groups == mergedWidth) return;
                int ra = Find(a), rb = Find(b);
                if (ra == rb || size[ra] + size[rb] > maxSize) continue;
                parent[rb] = ra;
                size[ra] += size[rb];
                groups--;
            }
        }
        Join(models);
        // With three or more models the capped pass can get stuck (say, only pairs left, none of which fit
        // together under the cap of N); the rest is then joined without the cap, still most correlated first.
        Join(total);

        var roots = Enumerable.Range(0, total).Select(Find).Distinct().OrderBy(r => r).ToList();
        var column = roots.Select((r, q) => (r, q)).ToDictionary(x => x.r, x => x.q);
        var m = torch.zeros(total, mergedWidth, ScalarType.Float32);
        var u = torch.zeros(mergedWidth, total, ScalarType.Float32);
        for (int j = 0; j < total; j++)
        {
            int root = Find(j), q = column[root];
            m[j, q] = 1.0f / size[root];
            u[q, j] = 1.0f;
        }
        return (m.to(device), u.to(device));
    }
}
