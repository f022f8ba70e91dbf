using System.Diagnostics;
using System.Text.Json.Nodes;
using FsMerge.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// FS-Merge (Foldable SuperNets). Global (spec §4.2, §7, §14): θ = every site's M/U factors plus the
/// merged-space parameters; every step folds θ into one model with autograd on, runs the one forward of
/// the architecture, unmerges its feature with the head-input U and regresses the source models' features.
/// Local (spec §4.1): one problem per activation space, σ(z_cat·M)·U ≈ [σ(z_1) | … | σ(z_N)], on the
/// original models' pre-activations. The result is folded by the common fold.
/// </summary>
internal sealed class FsMergeMethod : ITrainedMergeMethod
{
    public string Name => "fs-merge";
    public string Summary => "FS-Merge: learn M/U by feature reconstruction, fold into one model";

    public IReadOnlyList<MethodOption> Options =>
    [
        new("scope", "global", "global (one SuperNet, fold every step) or local (one problem per hidden layer; MLPs)"),
        new("init", "first", "first, average, random, zipit (ZipIt's M/U; attention head-aware), cca (CCA Merge's M/U; zipit and cca are dense) or rebasin (every model permuted onto model 1 by head-aware activation matching, then average); " +
            "or auto: each of --init-candidates is swept with the rates of --lr auto and the best (start, rate) on the held-out samples trains", Example: "first"),
        new("init-candidates", "zipit,first", "the starts --init auto tries (each one costs a sweep; zipit and cca are skipped unless --type full, rebasin for a merge narrower than its models; the first is taken when there is nothing to choose with)"),
        new("type", "full", "M/U parameterization: full, diagonal, low-rank or diagonal-low-rank"),
        new("rank", "16", "rank r of the low-rank part (sites wider than the head-input width get proportionally more)"),
        new("targets", "all", "all: every model's feature for every sample (MLP, spec §4.2); own: only the sample's own model (transformers, spec §7.2)"),
        new("normalize", "true", "rescale each model's targets to model 1's mean |feature| and undo it in U (spec §4.5)"),
        .. OptimizerSettings.Options,
        new("early-stop", "0", "global: check the loss on the held-out samples every N epochs and keep the best θ (0 = off; needs held-out data, spec §6; such a run is not checkpointed)"),
        new("patience", "5", "global: checks without improvement before early stopping"),
    ];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var type = settings.String("type");
        bool uneven = inputs.Sites.NarrowedSite() != null;
        settings = LearningRateSearch.UsableInits(Name, settings, Inits, init =>
            init is "zipit" or "cca" && type != "full" ? $"it needs --type full; this merge's is {type}"
            : init == "rebasin" && uneven ? "it needs every model as wide as the merge" : null, inputs.Log);
        return LearningRateSearch.Merge(this, inputs, settings, (i, s) => Train(i, s).Outcome);
    }

    /// <summary>Trains and folds; also returns the final dense M/U per site (FS-Merge seq. carries the head-input U on).</summary>
    internal static (MergeOutcome Outcome, Dictionary<string, Tensor> Dense) Train(MergeInputs inputs, MethodSettings settings)
    {
        if (settings.String("init", Inits) != "rebasin") return TrainFrom(inputs, settings);
        // Re-Basin init: the sources re-expressed in model 1's coordinates compute the same functions, so the
        // "average" start on them is Re-Basin's merge, with any M/U parameterization (a permutation is no diagonal).
        inputs.Sites.RequireEqualWidths("fs-merge --init rebasin");
        var maps = HeadAlignment.FromMergeData(inputs, HeadAlignmentOptions.Default);
        var aligned = inputs.Sources.Select((m, i) => i == 0 ? m : HeadAlignment.Aligned(m, maps[i])).ToList();
        try { return TrainFrom(inputs.With(inputs.Checkpoints, inputs.Progress, aligned), settings); }
        finally { foreach (var m in aligned.Skip(1)) m.Dispose(); }
    }

    static readonly string[] Inits = ["first", "average", "random", "zipit", "cca", "rebasin"];

    /// <summary>ZipIt's M/U (attention head-aware) and the merged-space parameters carried through them.</summary>
    static (Dictionary<string, Tensor>?, Dictionary<string, Tensor>?) ZipItInit(MergeInputs inputs)
    {
        var matrices = ZipItMerge.Matrices(inputs, HeadAlignmentOptions.Default);
        return (matrices, FoldedMerge.Carried(inputs, matrices));
    }

    static (MergeOutcome Outcome, Dictionary<string, Tensor> Dense) TrainFrom(MergeInputs inputs, MethodSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var scope = settings.String("scope", "global", "local");
        var init = settings.String("init", Inits);
        var type = ParseType(settings.String("type", "full", "diagonal", "low-rank", "diagonal-low-rank"));
        int rank = settings.Int("rank", min: 1);
        var targetsMode = settings.String("targets", "all", "own");
        bool normalize = settings.String("normalize", "true", "false") == "true";
        var optimizer = OptimizerSettings.From(settings, inputs.Data.Sum(d => (long)d.Count));
        int checkEvery = settings.Int("early-stop", min: 0), patience = settings.Int("patience", min: 1);
        if (checkEvery > 0 && (inputs.HeldOut is null || scope != "global"))
            throw new FsMergeException("fs-merge: --early-stop needs --scope global and held-out samples (fsmerge merge --held-out N)");
        if (init is "zipit" or "cca" && type != MuType.Full)
            throw new FsMergeException($"fs-merge: --init {init} needs --type full ({(init == "zipit" ? "ZipIt" : "CCA")} gives dense matrices)");

        var rule = init switch { "average" or "rebasin" => MuInit.Average, "random" => MuInit.Random, _ => MuInit.First };
        var (aligned, alignedSpace) = init switch
        {
            "zipit" => ZipItInit(inputs),
            "cca" => CcaMerge.Initial(inputs),
            _ => (null, null),
        };
        var generator = new Generator((ulong)inputs.Seed);
        long baseWidth = inputs.Sites[inputs.Sites.HeadInput].MergedWidth;
        CheckRank(type, rank, baseWidth);
        var matrices = inputs.Sites.Sites.ToDictionary(s => s.Name, s => aligned != null
            ? SiteMatrix.Dense(s, aligned[s.Name].clone())
            : s.Name == inputs.Sites.HeadInput && inputs.HeadInputInit is { } carried
                ? SiteMatrix.Dense(s, carried.clone())
                : SiteMatrix.Initialize(s, type, rule, RankFor(s, rank, baseWidth), generator, inputs.Device));
        var mergedSpace = alignedSpace ?? FoldedMerge.MergedSpace(inputs, rule);

        var details = new JsonObject { ["scope"] = scope };
        List<LossCurve> curves;
        Dictionary<string, double[]> scales;
        if (scope == "global")
        {
            (curves, scales, var stop) = TrainGlobal(inputs, matrices, mergedSpace, targetsMode, normalize, optimizer, checkEvery, patience);
            if (stop != null)
                details["early_stopping"] = new JsonObject
                {
                    ["check_every"] = checkEvery, ["patience"] = patience, ["best_epoch"] = stop.BestEpoch,
                    ["stopped_epoch"] = stop.StoppedEpoch, ["held_out_loss"] = stop.BestLoss,
                };
        }
        else
            (curves, scales) = TrainLocal(inputs, matrices, normalize, optimizer);
        // Local: the mean of the problems' final losses.
        double finalLoss = optimizer.Epochs == 0 ? double.NaN : curves.Average(c => double.IsNaN(c.FinalLoss) ? 0 : c.FinalLoss);

        using var _ = torch.no_grad();
        var dense = matrices.ToDictionary(kv => kv.Key, kv => UndoScale(kv.Value, scales));
        var model = FoldedMerge.ToModel(inputs, dense, mergedSpace.ToDictionary(kv => kv.Key, kv => kv.Value.detach()));
        details["final_loss"] = double.IsNaN(finalLoss) ? null : finalLoss;
        details["optimized_parameters"] = matrices.Values.Sum(m => m.ParameterCount) + mergedSpace.Values.Sum(p => p.numel());
        details["target_scales"] = new JsonObject(scales.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)new JsonArray(kv.Value.Select(v => (JsonNode)v).ToArray()))));
        details["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 2);
        return (FoldedMerge.Outcome(model, details) with { LossCurves = curves }, dense);
    }

    /// <summary>Size of θ for these settings: every site's M/U factors plus the merged-space parameters.</summary>
    public long OptimizedParameterCount(MergeInputs inputs, MethodSettings settings)
    {
        var type = settings.String("init") is "zipit" or "cca"   // (auto: the type decides; zipit and cca need full)
            ? MuType.Full : ParseType(settings.String("type", "full", "diagonal", "low-rank", "diagonal-low-rank"));
        int rank = settings.Int("rank", min: 1);
        long baseWidth = inputs.Sites[inputs.Sites.HeadInput].MergedWidth;
        CheckRank(type, rank, baseWidth);
        using var scope = torch.NewDisposeScope();
        var generator = new Generator((ulong)inputs.Seed);
        long sites = inputs.Sites.Sites.Sum(s => SiteMatrix.Initialize(s, type, MuInit.Random, RankFor(s, rank, baseWidth), generator, CPU).ParameterCount);
        return sites + FoldedMerge.MergedSpace(inputs, MuInit.Random).Values.Sum(p => p.numel());
    }


    static void CheckRank(MuType type, int rank, long baseWidth)
    {
        if (type is MuType.LowRank or MuType.DiagonalLowRank && rank > baseWidth)
            throw new FsMergeException($"fs-merge: --rank {rank} exceeds the merged feature width {baseWidth} (spec §2.5: 1 <= r <= d)");
    }

    internal static MuType ParseType(string text) => text switch
    {
        "diagonal" => MuType.Diagonal,
        "low-rank" => MuType.LowRank,
        "diagonal-low-rank" => MuType.DiagonalLowRank,
        _ => MuType.Full,
    };

    /// <summary>Rank r at sites as wide as the head input, proportionally more at wider ones (4r at ViT MLP sites, spec §2.8).</summary>
    static int RankFor(Site site, int rank, long baseWidth) =>
        (int)Math.Min(site.MergedWidth, Math.Max(1, rank * site.MergedWidth / baseWidth));

    /// <summary>A U site whose targets were scaled by s_i reconstructs s_i·t_i: divide its block i by s_i (spec §4.5).</summary>
    static Tensor UndoScale(SiteMatrix matrix, Dictionary<string, double[]> scales)
    {
        var dense = matrix.Materialize().detach();
        if (!scales.TryGetValue(matrix.Site.Name, out var factors)) return dense;
        var blocks = dense.split(matrix.Site.ModelWidths, 1).Select((b, i) => b / factors[i]).ToArray();
        return torch.cat(blocks, 1);
    }

    /// <summary>
    /// θ as one flat trainable vector. Every map entry becomes a view of its slice; the returned action re-cuts
    /// the views and must run at the start of each step, inside its dispose scope, and once after training.
    /// One parameter instead of one per factor: the optimizer's update runs once instead of once per tensor,
    /// which was a large share of an every-step FS-Merge step at small widths (bench perf). AdamW and SGD are
    /// element-wise, so the updates are the same. Entries of equal shape (a factor of the same site in every
    /// layer) lie side by side and are re-cut with one view and one unbind, not one view each: per-op overhead.
    /// </summary>
    static (Parameter[] Parameters, Action Refresh) MakeTrainable(IEnumerable<Dictionary<string, Tensor>> tensorMaps)
    {
        var blocks = tensorMaps.SelectMany(map => map.Keys.ToList().Select(key => (Map: map, Key: key, Shape: map[key].shape)))
            .GroupBy(e => string.Join(",", e.Shape)).Select(g => g.ToList()).ToList();
        var theta = new Parameter(torch.cat(blocks.SelectMany(b => b).Select(e => e.Map[e.Key].detach().reshape(-1)).ToArray()), requires_grad: true);
        var sizes = blocks.Select(b => b.Count * b[0].Shape.Aggregate(1L, (a, c) => a * c)).ToArray();
        void Refresh()
        {
            var slices = theta.split(sizes);
            for (int i = 0; i < blocks.Count; i++)
            {
                var block = blocks[i];
                var views = block.Count == 1 ? [slices[i].view(block[0].Shape)] : slices[i].view([block.Count, .. block[0].Shape]).unbind(0);
                for (int j = 0; j < block.Count; j++) block[j].Map[block[j].Key] = views[j];
            }
        }
        Refresh();
        return ([theta], Refresh);
    }

    /// <summary>Scale factors s_i = mean|t_1| / mean|t_i| (all ones without normalization).</summary>
    static double[] ScaleFactors(IReadOnlyList<Tensor> targets, bool normalize)
    {
        if (!normalize) return targets.Select(_ => 1.0).ToArray();
        var means = targets.Select(t => t.abs().mean().item<float>()).ToArray();
        return means.Select(m => m > 0 ? means[0] / m : 1.0).ToArray();
    }

    /// <summary>
    /// The global SuperNet's output on a batch: the per-model features [B, Σe] after the head-input unmerge,
    /// from the M/U of every site and the merged-space parameters.
    /// </summary>
    public delegate Tensor SuperNetForward(IReadOnlyDictionary<string, SiteMatrix> matrices, IReadOnlyDictionary<string, Tensor> mergedSpace, Tensor images);

    /// <summary>Fold every step (spec §14): fold θ into one model with autograd on, run the one forward, unmerge.</summary>
    public static SuperNetForward FoldEveryStep(MergeInputs inputs)
    {
        var sites = inputs.Sites;
        var sourceWeights = inputs.SourceWeights;
        StackedFold? stacked = null;
        var target = inputs.Target;
        return (matrices, mergedSpace, images) =>
        {
            stacked ??= new StackedFold(sites, sourceWeights, matrices);   // groups sites by their M/U shapes, known at the first step
            var weights = Folding.Fold(sites, sourceWeights, inputs.HeadCounts, matrices, mergedSpace, stacked, foldHeads: false);
            return target.Arch.Features(target, weights, images).matmul(matrices[sites.HeadInput].Materialize());
        };
    }

    /// <summary>The global objective: trainable θ, the sample count, and the loss of a batch of sample indices.</summary>
    /// <remarks>With <see cref="MergeInputs.HeldOut"/>, its samples are appended after the merge samples (never
    /// trained on: Samples counts the merge samples only) and HeldOutLoss measures the same loss on them.</remarks>
    /// <remarks>The matrices' factors become views of θ, re-cut by every call of LossOf; call <c>Refresh</c> after training before reading them.</remarks>
    public static (Parameter[] Parameters, long Samples, Func<Tensor, Tensor> LossOf, double[] Scale, Func<double>? HeldOutLoss, Action Refresh) GlobalObjective(
        MergeInputs inputs, Dictionary<string, SiteMatrix> matrices, Dictionary<string, Tensor> mergedSpace,
        string targetsMode, bool normalize, SuperNetForward forward)
    {
        var sites = inputs.Sites;
        var headSite = sites[sites.HeadInput];
        var sets = inputs.Data.Concat(inputs.Targets is null ? inputs.HeldOut ?? [] : []).ToList();
        long samples = inputs.Data.Sum(d => (long)d.Count);
        var images = torch.cat(sets.Select(d => d.Images.to(inputs.Device)).ToArray(), 0);
        var taskOf = torch.cat(sets.Select((d, t) => torch.full(d.Count, t % inputs.Data.Count, ScalarType.Int64)).ToArray()).to(inputs.Device);
        Tensor targetCat, mask;
        double[] scale;
        if (inputs.Targets is { } given)
        {
            // Given own-model targets per task (FS-Merge seq.): task t's rows fill block t only.
            scale = ScaleFactors(given, normalize);
            targetCat = torch.zeros(images.shape[0], headSite.StackedWidth, device: inputs.Device);
            long row = 0;
            for (int t = 0; t < given.Count; t++)
            {
                targetCat.narrow(0, row, given[t].shape[0]).narrow(1, headSite.Offset(t), headSite.ModelWidths[t])
                    .copy_(given[t].to(inputs.Device) * scale[t]);
                row += given[t].shape[0];
            }
            mask = OwnBlocks(taskOf, headSite);
        }
        else
        {
            List<Tensor> targets;
            using (torch.no_grad())
                targets = inputs.Sources.Select(m => Probing.Collect(m, images, [sites.HeadInput])[sites.HeadInput]).ToList();
            scale = ScaleFactors(targets.Select(t => t.narrow(0, 0, samples)).ToList(), normalize);
            targetCat = torch.cat(targets.Select((t, i) => t * scale[i]).ToArray(), 1);
            // Which target coordinates count for each sample: all of them, or only its own model's block (spec §7.2).
            mask = targetsMode == "all" ? torch.ones_like(targetCat) : OwnBlocks(taskOf, headSite);
        }

        var (parameters, refresh) = MakeTrainable(matrices.Values.Select(m => m.Factors).Append(mergedSpace));
        Tensor LossOf(Tensor index)
        {
            refresh();
            var reconstruction = forward(matrices, mergedSpace, images.index_select(0, index));
            var m = mask.index_select(0, index);
            var error = (reconstruction - targetCat.index_select(0, index)).pow(2) * m;
            return error.sum() / m.sum();
        }
        Func<double>? heldOutLoss = images.shape[0] > samples
            ? () => LossOf(torch.arange(samples, images.shape[0], device: inputs.Device)).item<float>()
            : null;
        return (parameters, samples, LossOf, scale, heldOutLoss, refresh);
    }

    /// <summary>With early stopping the phase is not checkpointed (its best θ lives in memory only).</summary>
    static (List<LossCurve>, Dictionary<string, double[]>, EarlyStopping?) TrainGlobal(MergeInputs inputs, Dictionary<string, SiteMatrix> matrices,
        Dictionary<string, Tensor> mergedSpace, string targetsMode, bool normalize, OptimizerSettings optimizer, int checkEvery, int patience)
    {
        var (parameters, samples, lossOf, scale, heldOutLoss, refresh) = GlobalObjective(inputs, matrices, mergedSpace, targetsMode, normalize, FoldEveryStep(inputs));
        var stop = checkEvery > 0 && heldOutLoss != null ? new EarlyStopping(checkEvery, patience, heldOutLoss) : null;
        var curve = MergeTrainer.Train(parameters, samples, optimizer, lossOf, inputs.Seed, inputs.Progress, "fs-merge global",
            stop == null ? inputs.Checkpoints : null, stop);
        refresh();   // the steps' views died with their dispose scopes
        return ([curve], new Dictionary<string, double[]> { [inputs.Sites.HeadInput] = scale }, stop);
    }

    /// <summary>1 on the columns of each sample's own block of the head-input site, 0 elsewhere.</summary>
    static Tensor OwnBlocks(Tensor taskOf, Site headSite) =>
        torch.cat(Enumerable.Range(0, headSite.Models).Select(i =>
            taskOf.eq(i).to(ScalarType.Float32).unsqueeze(1).expand(-1, headSite.ModelWidths[i])).ToArray(), 1);

    static (List<LossCurve>, Dictionary<string, double[]>) TrainLocal(MergeInputs inputs, Dictionary<string, SiteMatrix> matrices,
        bool normalize, OptimizerSettings optimizer)
    {
        var sites = inputs.Sites;
        var scales = new Dictionary<string, double[]>();
        var curves = new List<LossCurve>();
        foreach (var space in sites.Spaces)
        {
            if (!sites.Activations.TryGetValue(space.Key, out var activation)) continue;
            var merge = space.Single(s => s.Kind == SiteKind.Merge);
            var unmerge = space.Single(s => s.Kind == SiteKind.Unmerge);
            var preActivation = Probing.OnAllData(inputs, merge.Name);
            var features = Probing.OnAllData(inputs, unmerge.Name);
            var scale = ScaleFactors(features, normalize);
            var input = torch.cat(preActivation.ToArray(), 1);
            var targetCat = torch.cat(features.Select((h, i) => h * scale[i]).ToArray(), 1);
            var (parameters, refresh) = MakeTrainable([matrices[merge.Name].Factors, matrices[unmerge.Name].Factors]);
            curves.Add(MergeTrainer.Train(parameters, input.shape[0], optimizer, index =>
            {
                refresh();
                var merged = activation(input.index_select(0, index).matmul(matrices[merge.Name].Materialize()));
                var reconstruction = merged.matmul(matrices[unmerge.Name].Materialize());
                return nn.functional.mse_loss(reconstruction, targetCat.index_select(0, index));
            }, inputs.Seed + curves.Count, inputs.Progress, $"fs-merge local {space.Key}", inputs.Checkpoints));
            refresh();
            scales[unmerge.Name] = scale;
        }
        if (curves.Count == 0) throw new FsMergeException("fs-merge --scope local: this architecture has no activation spaces to solve locally");
        return (curves, scales);
    }
}
