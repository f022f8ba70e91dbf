using FsMerge.Merging.Methods;

namespace FsMerge.Merging;

/// <summary>The registry of merge methods by name.</summary>
public static class MergeMethods
{
    public static readonly IReadOnlyList<IMergeMethod> All =
    [
        new FsMergeMethod(), new EnsembleMerge(), new AverageMerge(), new SlerpMerge(), new RegMeanMerge(),
        new ZipItMerge(), new ReBasinMerge(), new OptMerge(), new DistillationMerge(), new FsMergeSeqMethod(), new AutoMerge(),
        new CcaMerge(),
        new PLeaSMerge(),
    ];

    public static IMergeMethod Get(string name) =>
        All.FirstOrDefault(m => m.Name == name)
        ?? throw new FsMergeException($"unknown merge method '{name}' (expected one of: {string.Join(", ", All.Select(m => m.Name))})");
}
