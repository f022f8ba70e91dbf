using System.Text.Json.Nodes;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// PLeaS (Nasery et al., CVPR 2025, arXiv 2407.02447): partial permutation matching, then per-layer least squares.
/// <para>
/// Step 1, space by space: every other model's units are matched to model 1's by a linear assignment on the
/// correlation of their activations on the merge data (Re-Basin's activation matching; attention spaces per head,
/// queries with keys). The width budget is the merged width e' from the site table (the merged model's shape,
/// `--width` for MLPs), not a separate option: the paper's budget trades size for accuracy between one model's
/// width (everything merged) and the sum of the widths (nothing merged, the ensemble). With N models of width e,
/// k matched units (each one unit of every model, averaged) and e − k units of each model kept apart need
/// e' = k + N·(e − k); the e − k groups with the lowest mean correlation are the ones kept apart (the paper's
/// "merge the best-aligned fraction"). At the default e' = e everything is matched. This is a special M/U
/// (M_i: 1/N on a matched unit, 1 on a unit kept apart; U_i: the copy back) and its fold, the "partially merged
/// model", is the starting point.
/// </para>
/// <para>
/// Step 2, layer by layer in forward order: each linear weight is refitted in closed form so that, on the merged
/// model's own inputs at that layer (propagated through the layers already refitted), its output matches the
/// matched, averaged outputs of the source layers, Σ_i (X_i W_iᵀ) M_i, with X_i model i's own inputs on the same
/// images. The fit is ridge regression towards the step-1 weight W₀ (the paper's optimization starts there; with a
/// few hundred merge images and wide first layers the plain least-squares problem is underdetermined):
/// W = argmin ‖X̄Wᵀ − Y‖² + λ‖W − W₀‖², λ = --ridge · mean diag(X̄ᵀX̄). Biases, embeddings and LayerNorms keep
/// their step-1 values (averaged over matched units): the source biases are part of the targets' average already.
/// The paper's reference code regresses on the averaged source inputs instead of the merged model's own; fitting
/// the merged model's inputs corrects the error the earlier layers leave behind. Only unlabeled merge images are read.
/// </para>
/// <para>
/// --matching zipit replaces step 1 by ZipIt's M/U (features zipped within models too); step 2 is the same. Not the
/// paper's method, so not the default, but on an MNIST-halves MLP pair its held-out logit error was 0.005 against 0.17.
/// </para>
/// </summary>
internal sealed class PLeaSMerge : IMergeMethod
{
    public string Name => "pleas";
    public string Summary => "PLeaS: partial permutation matching within the merged width, then per-layer least squares to the matched features";

    public IReadOnlyList<MethodOption> Options =>
    [
        // 0.01: on an MNIST-halves MLP pair (width 128) the held-out logit error was lowest at 0.001-0.01 for both
        // matchings and rose from 0.1 on (0.169 at 0.01, 0.177 at 0.1, 0.213 at 10 with permutations).
        new("ridge", "0.01", "least-squares ridge towards the matched weights, relative to the mean input energy (0 = plain least squares)"),
        new("matching", "permutation", "step 1: permutation (the paper: units matched across models within the width budget) or zipit (ZipIt's greedy zip, within models too)"),
        // Every model's inputs to every linear layer are held at once: four ViTs on 4,400 merge images (17 tokens each)
        // took the process past 13 GB and out of memory.
        new("max-images", "1024", "merge images (all tasks together, evenly spaced) whose activations give the matching and the fits"),
    ];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        double ridge = settings.Double("ridge", min: 0);
        var matching = settings.String("matching", "permutation", "zipit");
        int maxImages = settings.Int("max-images", min: 1);
        var (matrices, matched) = matching == "zipit" ? (ZipItMerge.Matrices(inputs, HeadAlignmentOptions.Default), []) : PartialMatching(inputs, maxImages);
        var model = FoldedMerge.CarryingMergedSpace(inputs, matrices);
        var residuals = FitLayers(inputs, model, matrices, ridge, maxImages);
        return FoldedMerge.Outcome(model, new JsonObject
        {
            ["ridge"] = ridge,
            ["matching"] = matching,
            ["max_images"] = maxImages,
            ["matched_units"] = new JsonObject(matched.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["relative_fit_error"] = new JsonObject(residuals.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)Math.Round(kv.Value, 6)))),
        });
    }

    /// <summary>Step 1: M and U of every site, and how many units of each space were matched (the rest kept apart).</summary>
    public static (Dictionary<string, Tensor> Matrices, Dictionary<string, long> Matched) PartialMatching(MergeInputs inputs, int? maxImages = null)
    {
        var sites = inputs.Sites;
        int n = inputs.Sources.Count;
        var grouped = sites.HeadAligned.SelectMany(g => g.Spaces).ToHashSet();
        var units = sites.HeadAligned.Concat(sites.Spaces.Where(s => !grouped.Contains(s.Key)).Select(s => new HeadAlignedSpaces([s.Key], 1, s.Key))).ToList();
        var probed = Probing.OnAllData(inputs, sites.Spaces.Select(s => sites.ProbePoint(s.Key)).Distinct().ToList(), maxImages);
        var matrices = new Dictionary<string, Tensor>();
        var matched = new Dictionary<string, long>();
        using (torch.no_grad())
            foreach (var unit in units)
            {
                var spaceSites = sites.Sites.Where(s => unit.Spaces.Contains(s.Space)).ToList();
                long width = spaceSites[0].ModelWidths[0], merged = spaceSites[0].MergedWidth;
                var bad = spaceSites.FirstOrDefault(s => s.ModelWidths.Any(w => w != width) || s.MergedWidth != merged);
                if (bad != null)
                    throw new FsMergeException($"pleas: site {bad.Name} has widths {string.Join(", ", bad.ModelWidths)} into {bad.MergedWidth}; pleas needs every model equally wide in a space");
                if (merged < width || merged > n * width)
                    throw new FsMergeException($"pleas: space {unit.Spaces[0]} is {width} wide in each model but {merged} wide merged; the merged width must be between {width} (all matched) and {n * width} (none matched)");
                if (unit.Heads > 1 && merged != width)
                    throw new FsMergeException($"pleas: attention space {unit.Spaces[0]} must keep its width {width} (heads are matched unit for unit), got {merged}");
                // k matched groups and e − k units of each model apart need k + N(e − k) ≤ e' columns; with N > 2 a
                // remainder of fewer than N − 1 columns may stay unused (zero in M and U).
                long keep = n == 1 ? width : Math.Min(width, (n * width - merged + n - 2) / (n - 1));
                var points = unit.Spaces.Select(sites.ProbePoint).Distinct().ToList();
                var perms = new long[n][];
                var quality = torch.zeros(width, dtype: ScalarType.Float64);
                for (int i = 0; i < n; i++)
                {
                    var similarity = (points.Select(p => Probing.Correlation(probed[0][p], probed[i][p])).Aggregate((a, b) => a + b) / points.Count).cpu();
                    perms[i] = i == 0 ? Enumerable.Range(0, (int)width).Select(a => (long)a).ToArray() : Assign(similarity, unit.Heads);
                    quality += similarity.gather(1, torch.tensor(perms[i]).unsqueeze(1)).squeeze(1).cpu() / n;
                }
                // The best-aligned groups are merged, kept in model 1's order (so a model merged with itself is itself).
                var order = quality.argsort(descending: true).data<long>().ToArray();
                var isMatched = new bool[width];
                foreach (var a in order.Take((int)keep)) isMatched[a] = true;
                var (m, u) = Layout(perms, isMatched, width, merged, inputs.Device);
                foreach (var site in spaceSites) matrices[site.Name] = site.Kind == SiteKind.Merge ? m : u;
                foreach (var space in unit.Spaces) matched[space] = keep;
            }
        foreach (var tensor in probed.SelectMany(byPoint => byPoint.Values)) tensor.Dispose();
        return (matrices, matched);
    }

    /// <summary>perm[a] = model i's unit matched to model 1's unit a; with heads, only within the same head.</summary>
    static long[] Assign(Tensor similarity, int heads)
    {
        long width = similarity.shape[0], block = width / heads;
        var perm = new long[width];
        for (int h = 0; h < heads; h++)
        {
            var part = LinearAssignment.Solve(similarity.narrow(0, h * block, block).narrow(1, h * block, block), maximize: true);
            for (int a = 0; a < block; a++) perm[h * block + a] = h * block + part[a];
        }
        return perm;
    }

    /// <summary>
    /// M [N·e, e'] and U [e', N·e]: the matched groups first (model 1's order), then each model's units kept apart.
    /// </summary>
    static (Tensor M, Tensor U) Layout(long[][] perms, bool[] isMatched, long width, long merged, Device device)
    {
        int n = perms.Length;
        var m = torch.zeros(n * width, merged);
        var u = torch.zeros(merged, n * width);
        long column = 0;
        for (int a = 0; a < width; a++)
        {
            if (!isMatched[a]) continue;
            for (int i = 0; i < n; i++) (m[i * width + perms[i][a], column], u[column, i * width + perms[i][a]]) = (1f / n, 1f);
            column++;
        }
        for (int i = 0; i < n; i++)
            for (int a = 0; a < width; a++)
            {
                if (isMatched[a]) continue;
                (m[i * width + perms[i][a], column], u[column, i * width + perms[i][a]]) = (1f, 1f);
                column++;
            }
        return (m.to(device), u.to(device));
    }

    /// <summary>
    /// Step 2: refits every linear weight of <paramref name="model"/> in forward order (weights that read the same
    /// point together, from one forward of the merged model as it is by then). Returns each weight's relative fit
    /// error ‖X̄Wᵀ − Y‖² / ‖Y‖² on the merge data.
    /// </summary>
    static Dictionary<string, double> FitLayers(MergeInputs inputs, Model model, IReadOnlyDictionary<string, Tensor> matrices, double ridge, int maxImages)
    {
        var sites = inputs.Sites;
        int n = inputs.Sources.Count;
        var layers = sites.Tensors.Where(t => t.Role == TensorRole.Linear).GroupBy(t => t.In ?? "input").ToList();
        var images = Probing.AllImages(inputs, maxImages);
        var sourceInputs = inputs.Sources.Select(s => Probing.Collect(s, images, layers.Select(g => g.Key).ToList())).ToList();
        var errors = new Dictionary<string, double>();
        using var _ = torch.no_grad();
        foreach (var group in layers)
        {
            using var scope = torch.NewDisposeScope();
            var x = Probing.Collect(model, images, [group.Key])[group.Key].to(ScalarType.Float64);
            var gram = x.t().matmul(x);
            // At least RegMean's tiny ridge, so inputs that are always zero (MNIST's border pixels) keep W₀ there.
            double lambda = Math.Max(ridge, RegMeanMerge.Ridge) * Math.Max(torch.diagonal(gram).mean().item<double>(), 1e-12);
            var system = gram + torch.eye(gram.shape[0], dtype: ScalarType.Float64, device: gram.device) * lambda;
            foreach (var entry in group)
            {
                var outSite = sites[entry.Out!];
                var merge = matrices[outSite.Name].to(ScalarType.Float64);
                Tensor? target = null;
                for (int i = 0; i < n; i++)
                {
                    var w = inputs.Sources[i].Weights[entry.Name];
                    var own = sourceInputs[i][group.Key].to(ScalarType.Float64).matmul(w.reshape(w.shape[0], -1).t().to(ScalarType.Float64));
                    var term = own.matmul(merge.narrow(0, outSite.Offset(i), outSite.ModelWidths[i]));
                    target = target is null ? term : target + term;
                }
                var shape = model.Weights[entry.Name].shape;
                var start = model.Weights[entry.Name].reshape(shape[0], -1).t().to(ScalarType.Float64);
                var fitted = torch.linalg.solve(system, x.t().matmul(target!) + start * lambda);
                errors[entry.Name] = (x.matmul(fitted) - target!).pow(2).sum().item<double>() / Math.Max(target!.pow(2).sum().item<double>(), 1e-30);
                model.Weights[entry.Name] = fitted.t().reshape(shape).to(ScalarType.Float32).contiguous().MoveToOuterDisposeScope();
            }
        }
        foreach (var tensor in sourceInputs.SelectMany(byPoint => byPoint.Values)) tensor.Dispose();
        return errors;
    }
}
