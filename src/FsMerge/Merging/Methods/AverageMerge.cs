using System.Text.Json.Nodes;

namespace FsMerge.Merging.Methods;

/// <summary>
/// Weight averaging (spec §9.2), expressed as the special M/U "average": M = [I; …; I]/N, U = [I, …, I],
/// LayerNorms averaged. Folding it gives the element-wise mean of every tensor; heads keep their own weights.
/// </summary>
internal sealed class AverageMerge : IMergeMethod
{
    public string Name => "average";
    public string Summary => "element-wise mean of the weights (M = [I;I]/N, U = [I,I])";
    public IReadOnlyList<MethodOption> Options => [];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var model = FoldedMerge.ToModel(inputs, FoldedMerge.RuleMatrices(inputs, MuInit.Average), FoldedMerge.MergedSpace(inputs, MuInit.Average));
        return FoldedMerge.Outcome(model, new JsonObject { ["mu"] = "average" });
    }
}
