using System.Text.Json.Nodes;
using FsMerge.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// Distillation (spec §9.5): a student starting as a copy of model 1 ("first" init) trains every backbone
/// parameter so that, on task t's merge images, its feature matches model t's feature scaled to mean
/// |·| = 0.5. Heads are not trained; head t is divided by task t's scale so it reads the student directly.
/// </summary>
internal sealed class DistillationMerge : ITrainedMergeMethod
{
    public string Name => "distill";
    public string Summary => "distillation into a copy of model 1 on the same unlabeled data";

    public const double TargetMeanAbs = 0.5;

    public IReadOnlyList<MethodOption> Options => OptimizerSettings.Options;

    /// <summary>Every backbone parameter of the student (a copy of model 1) is trained.</summary>
    public long OptimizedParameterCount(MergeInputs inputs, MethodSettings settings) =>
        inputs.Target.Arch.BackboneWeights(inputs.Target).Sum(w => w.Shape.Aggregate(1L, (a, b) => a * b));

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings) => LearningRateSearch.Merge(this, inputs, settings, Distill);

    MergeOutcome Distill(MergeInputs inputs, MethodSettings settings)
    {
        var optimizer = OptimizerSettings.From(settings, inputs.Data.Sum(d => (long)d.Count));
        var target = inputs.Target;
        var first = inputs.Sources[0];
        if (first.Config with { Heads = target.Heads, Training = target.Training } != target)
            throw new FsMergeException("distill: the student is a copy of model 1, so the merged shape must be model 1's (drop --width)");
        long width = target.Arch.FeatureWidth(target);
        var mismatch = inputs.Sources.FirstOrDefault(s => s.Config.Arch.FeatureWidth(s.Config) != width);
        if (mismatch != null)
            throw new FsMergeException($"distill: every source's feature width must be model 1's ({width}) for its head to read the student");

        var images = torch.cat(Enumerable.Range(0, inputs.Data.Count).Select(inputs.Images).ToArray(), 0);
        var scales = new double[inputs.Sources.Count];
        var targetParts = new List<Tensor>();
        for (int t = 0; t < inputs.Sources.Count; t++)
        {
            var features = Probing.Features(inputs.Sources[t], inputs.Images(t));
            scales[t] = TargetMeanAbs / Math.Max(features.abs().mean().item<float>(), 1e-12);
            targetParts.Add(features * scales[t]);
        }
        var targets = torch.cat(targetParts.ToArray(), 0);

        var backbone = target.Arch.BackboneWeights(target)
            .ToDictionary(s => s.Name, s => (Tensor)new Parameter(first.Weights[s.Name].detach().clone(), requires_grad: true));
        var parameters = backbone.Values.Cast<Parameter>().ToList();
        var curve = MergeTrainer.Train(parameters, images.shape[0], optimizer, index =>
            nn.functional.mse_loss(target.Arch.Features(target, backbone, images.index_select(0, index)), targets.index_select(0, index)),
            inputs.Seed, inputs.Progress, "distill", inputs.Checkpoints);

        // Head t reads the student through the U-like matrix [I/s_1 | … | I/s_N] that undoes the target scales,
        // folded into the heads by the common head fold (spec §9.5).
        var undo = torch.cat(scales.Select(s => torch.eye(width, device: inputs.Device) / s).ToArray(), 1);
        var heads = new Dictionary<string, Tensor>();
        using (torch.no_grad())
            Folding.FoldHeads(inputs.Sites, inputs.SourceWeights, inputs.HeadCounts, undo, heads);
        var weights = backbone.Concat(heads).ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        var model = new Model(target, weights);
        return FoldedMerge.Outcome(model, new JsonObject
        {
            ["final_loss"] = double.IsNaN(curve.FinalLoss) ? null : curve.FinalLoss,
            ["optimized_parameters"] = parameters.Sum(p => p.numel()),
            ["target_scales"] = new JsonArray(scales.Select(s => (JsonNode)s).ToArray()),
        }) with { LossCurves = [curve] };
    }
}
