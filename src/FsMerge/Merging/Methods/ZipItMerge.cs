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
/// the merged width, larger ones.
/// </summary>
internal sealed class ZipItMerge : IMergeMethod
{
    public string Name => "zipit";
    public string Summary => "ZipIt: greedy matching of correlated features, within and across models";
    public IReadOnlyList<MethodOption> Options => [];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var model = FoldedMerge.ToModel(inputs, Matrices(inputs), FoldedMerge.MergedSpace(inputs, MuInit.Average));
        return FoldedMerge.Outcome(model, new JsonObject { ["mu"] = "zipit" });
    }

    /// <summary>ZipIt's M and U for every site (all sites of one space share them).</summary>
    public static Dictionary<string, Tensor> Matrices(MergeInputs inputs)
    {
        var result = new Dictionary<string, Tensor>();
        var probed = Probing.OnAllData(inputs, inputs.Sites.Spaces.Select(s => inputs.Sites.ProbePoint(s.Key)).ToList());
        foreach (var space in inputs.Sites.Spaces)
        {
            var features = probed.Select(byPoint => byPoint[inputs.Sites.ProbePoint(space.Key)]).ToList();
            var (m, u) = Zip(features, space.First().MergedWidth, inputs.Device);
            foreach (var site in space) result[site.Name] = site.Kind == SiteKind.Merge ? m : u;
        }
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
