using TorchSharp;

namespace FsMerge.Data;

/// <summary>
/// Images [n, C, H, W] float32 in [0, 1] on the CPU (for a text dataset: int64 token ids [n, L], padded
/// with the vocabulary's [PAD] id); Labels re-indexed 0..K-1; LabelNames[k] is the
/// original name of class k. The tensor follows TorchSharp's dispose-scope rules; Dispose frees it.
/// </summary>
public sealed record ImageSet(torch.Tensor Images, long[] Labels, string[] LabelNames) : IDisposable
{
    public int Count => Labels.Length;

    /// <summary>A text dataset's examples behind the token ids, row for row: a model tokenizes them its own way.</summary>
    internal TextSamples? Texts { get; init; }
    public void Dispose() => Images.Dispose();
}

/// <summary>The three splits of one task; see <see cref="TaskData.Load"/> for how they are chosen.</summary>
internal sealed record TaskSplits(TaskSpec Task, ImageSet Train, ImageSet Validation, ImageSet Test) : IDisposable
{
    public void Dispose()
    {
        Train.Dispose();
        Validation.Dispose();
        Test.Dispose();
    }
}
