using System.Text.Json.Nodes;
using FsMerge.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// Distillation (spec §9.5): a student model trains every backbone parameter so that, on task t's merge images
/// (and augmented ones, with --augment), it reproduces model t. The student starts as the fold of a special M/U
/// (--init): model 1 ("first", the paper's baseline), the weight average, or ZipIt. It reads each teacher through
/// the unmerge U of that initialization: at the head input, block t of U maps the student's feature to model t's
/// (the identity for "first" and "average"). --match final matches that feature only (the paper's); --match
/// layers also matches every other unmerge site, the student's inner features read through U against model t's
/// own features there. Feature targets are scaled to mean |·| = 0.5 per task and site; at the head input the scale
/// is undone in the heads (head t reads the student through U_t / s_t, folded by the common head fold), elsewhere
/// it only weighs the sites' errors alike. Heads are never trained. (Scaling as a weight only, with heads reading
/// U_t, gave a higher held-out logit error on an MNIST-halves MLP pair for every init: 0.146/0.008 vs 0.140/0.006.)
/// </summary>
internal sealed class DistillationMerge : ITrainedMergeMethod
{
    public string Name => "distill";
    public string Summary => "distillation into one student (a copy of model 1, the average, ZipIt or CCA Merge) on the same unlabeled data";

    public const double TargetMeanAbs = 0.5;

    /// <summary>The student's starting points, each a special M/U folded by the common fold (LayerNorms carried through M).</summary>
    static readonly Dictionary<string, Func<MergeInputs, Dictionary<string, Tensor>>> Inits = new()
    {
        ["first"] = inputs => FoldedMerge.RuleMatrices(inputs, MuInit.First),
        ["average"] = inputs => FoldedMerge.RuleMatrices(inputs, MuInit.Average),
        ["zipit"] = inputs => ZipItMerge.Matrices(inputs, HeadAlignmentOptions.Default),
        ["cca"] = inputs => CcaMerge.Initial(inputs).Matrices,
    };

    public IReadOnlyList<MethodOption> Options =>
    [
        // auto: the best start differs between settings: ZipIt's was ahead by 4-13 points per task on the BERT pairs of
        // bench bert and by 10-45 on an unseen BERT pair, model 1's (the paper's, spec §9.5) by 10 on the first ViT pair
        // of bench vit; the average never led. So both are swept (LearningRateSearch), at twice the sweep's cost.
        new("init", "auto", $"the student's start: {string.Join(", ", Inits.Keys)} (model 1 as in the paper, the weight average, ZipIt's or CCA Merge's merge), " +
            "or auto: each of --init-candidates is swept with the rates of --lr auto and the best (start, rate) on the held-out samples trains; its unmerge maps the student to each teacher", Example: "zipit"),
        new("init-candidates", "zipit,first", "the starts --init auto tries (each one costs a sweep; the first is taken when there is nothing to choose with: a given --lr and no held-out samples; a merge narrower than its models, --width, starts from zipit)"),
        new("match", "final", "final: the feature the heads read (the paper); layers: also every inner unmerge site, through the init's U"),
        .. OptimizerSettings.Options,
    ];

    /// <summary>Every backbone parameter of the student is trained.</summary>
    public long OptimizedParameterCount(MergeInputs inputs, MethodSettings settings) =>
        inputs.Target.Arch.BackboneWeights(inputs.Target).Sum(w => w.Shape.Aggregate(1L, (a, b) => a * b));

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        bool uneven = inputs.Sites.NarrowedSite() != null;
        settings = LearningRateSearch.UsableInits(Name, settings, Inits.Keys,
            init => uneven && init != "zipit" ? "a merge narrower than its models (--width) starts only from zipit" : null, inputs.Log);
        return LearningRateSearch.Merge(this, inputs, settings, Distill);
    }


    MergeOutcome Distill(MergeInputs inputs, MethodSettings settings)
    {
        var init = settings.String("init", [.. Inits.Keys]);
        var match = settings.String("match", "final", "layers");
        var optimizer = OptimizerSettings.From(settings, inputs.Data.Sum(d => (long)d.Count));
        var sites = inputs.Sites;
        var target = inputs.Target;
        if (init != "zipit" && sites.NarrowedSite() is { } uneven)
            throw new FsMergeException($"distill: --init {init} needs every model as wide as the merge (site {uneven.Name}: {string.Join(", ", uneven.ModelWidths)} into {uneven.MergedWidth}); use --init zipit or drop --width");

        var matrices = Inits[init](inputs);
        var student = FoldedMerge.CarryingMergedSpace(inputs, matrices);
        // Matched sites: the head input, and with --match layers every other unmerge site; their U reads the teachers.
        var matchedSites = sites.Sites.Where(s => s.Kind == SiteKind.Unmerge && (match == "layers" || s.Name == sites.HeadInput))
            .Select(s => s.Name).ToList();
        int n = inputs.Sources.Count;
        var scales = new double[n][];   // [task][site]: 0.5 / mean |model t's value at the site| on task t's data
        for (int t = 0; t < n; t++)
        {
            var probed = Probing.Collect(inputs.Sources[t], inputs.Images(t), matchedSites);
            scales[t] = matchedSites.Select(s => TargetMeanAbs / Math.Max(probed[s].abs().mean().item<float>(), 1e-12)).ToArray();
            foreach (var value in probed.Values) value.Dispose();
        }
        var readers = matchedSites.Select(s => Enumerable.Range(0, n).Select(t => matrices[s].narrow(1, sites[s].Offset(t), sites[s].ModelWidths[t])).ToArray()).ToList();

        var images = torch.cat(Enumerable.Range(0, n).Select(inputs.Images).ToArray(), 0);
        var taskOf = torch.cat(inputs.Data.Select((d, t) => torch.full(d.Count, t, ScalarType.Int64)).ToArray()).to(inputs.Device);
        var backbone = target.Arch.BackboneWeights(target)
            .ToDictionary(s => s.Name, s => (Tensor)new Parameter(student.Weights[s.Name].detach().clone(), requires_grad: true));
        var parameters = backbone.Values.Cast<Parameter>().ToList();

        Dictionary<string, Tensor> Probed(Model? model, Tensor batch)
        {
            var values = new Dictionary<string, Tensor>();
            Probe probe = (point, value) => { if (matchedSites.Contains(point)) values[point] = value; };
            if (model is null) target.Arch.Features(target, backbone, batch, probe);
            else using (torch.no_grad()) model.Features(batch, probe);
            return values;
        }
        // Each task's samples in the batch are compared with their own teacher (spec §9.5), sites weighed alike.
        Tensor LossOf(Tensor index)
        {
            Tensor? loss = null;
            var tasks = taskOf.index_select(0, index);
            for (int t = 0; t < n; t++)
            {
                var mine = index.masked_select(tasks.eq(t));
                if (mine.shape[0] == 0) continue;
                var batch = images.index_select(0, mine);
                var (studentValues, teacherValues) = (Probed(null, batch), Probed(inputs.Sources[t], batch));
                for (int s = 0; s < matchedSites.Count; s++)
                {
                    var site = matchedSites[s];
                    // At the head input the student learns the scaled target (undone in the heads); elsewhere its own scale.
                    double studentScale = site == sites.HeadInput ? 1 : scales[t][s];
                    var error = nn.functional.mse_loss(studentValues[site].matmul(readers[s][t]) * studentScale, teacherValues[site] * scales[t][s])
                        * ((double)mine.shape[0] / index.shape[0] / matchedSites.Count);
                    loss = loss is null ? error : loss + error;
                }
            }
            return loss!;
        }
        var curve = MergeTrainer.Train(parameters, images.shape[0], optimizer, LossOf, inputs.Seed, inputs.Progress, "distill", inputs.Checkpoints);

        // Head t reads the student through block t of the head-input U divided by s_t (spec §9.5), by the common head fold.
        int head = matchedSites.IndexOf(sites.HeadInput);
        var undo = torch.cat(Enumerable.Range(0, n).Select(t => readers[head][t] / scales[t][head]).ToArray(), 1);
        var heads = new Dictionary<string, Tensor>();
        using (torch.no_grad())
            Folding.FoldHeads(sites, inputs.SourceWeights, inputs.HeadCounts, undo, heads);
        var weights = backbone.Concat(heads).ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        student.Dispose();
        return FoldedMerge.Outcome(new Model(target, weights), new JsonObject
        {
            ["init"] = init,
            ["match"] = match,
            ["final_loss"] = double.IsNaN(curve.FinalLoss) ? null : curve.FinalLoss,
            ["optimized_parameters"] = parameters.Sum(p => p.numel()),
            ["target_scales"] = new JsonArray(scales.Select(s => (JsonNode)s[head]).ToArray()),
        }) with { LossCurves = [curve] };
    }
}
