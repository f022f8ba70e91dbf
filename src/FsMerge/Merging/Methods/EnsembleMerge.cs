using System.Text.Json.Nodes;
using FsMerge.Evaluation;

namespace FsMerge.Merging.Methods;

/// <summary>
/// The ensemble (spec §9.1): not a merge but the upper reference. It keeps all N source models and runs
/// them all; head t reads its own model's feature. The spec's feature averaging presumes heads in one
/// shared output space (CLIP); our sources' heads live in unrelated spaces, so no averaging is done.
/// N times the size and cost of one model.
/// </summary>
internal sealed class EnsembleMerge : IMergeMethod
{
    public string Name => "ensemble";
    public string Summary => "keep and run every source model (reference, N times the size; not a merge)";
    public IReadOnlyList<MethodOption> Options => [];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var sources = inputs.Sources;
        AllHeadLogits predict = images => sources.SelectMany(m =>
        {
            var features = m.Features(images);
            return Enumerable.Range(0, m.HeadCount).Select(h => m.Logits(features, h));
        }).ToArray();
        return new MergeOutcome(null, predict, new JsonObject { ["note"] = "no single model: every source model is kept" });
    }
}
