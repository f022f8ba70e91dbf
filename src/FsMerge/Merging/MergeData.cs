using FsMerge.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>The unlabeled merge data: the first n images of a seeded shuffle of each task's train split (spec §11.2).</summary>
internal static class MergeData
{
    public static ImageSet Sample(ImageSet train, int count, long seed)
    {
        if (train.Count == 0) throw new FsMergeException("the train split is empty: no merge images to draw");
        int n = Math.Min(count, train.Count);
        var order = torch.randperm(train.Count, generator: new Generator((ulong)seed)).narrow(0, 0, n);
        var labels = order.data<long>().Select(i => train.Labels[i]).ToArray();
        return new ImageSet(train.Images.index_select(0, order), labels, train.LabelNames) { Texts = train.Texts?.Select(order.data<long>()) };
    }

    /// <summary>
    /// Held-out samples for the label-free choices (--lr auto, the estimate): the <paramref name="count"/> images that
    /// follow the <paramref name="drawn"/> merge images in the same seeded shuffle, so never one of them.
    /// </summary>
    public static ImageSet HeldOut(ImageSet train, int drawn, int count, long seed)
    {
        using var both = Sample(train, drawn + count, seed);
        int start = Math.Min(drawn, both.Count - 1);
        if (both.Count <= drawn) throw new FsMergeException($"no images left for held-out samples after {drawn} merge images of {both.Count}");
        return new ImageSet(both.Images.narrow(0, start, both.Count - start).clone(), both.Labels[start..], both.LabelNames)
            { Texts = both.Texts?.Slice(start, both.Count - start) };
    }
}
