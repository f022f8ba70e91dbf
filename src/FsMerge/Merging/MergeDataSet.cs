using FsMerge.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>One task's merge training set: its original merge images followed by its augmented ones
/// (spec §7.1 row order, §11.3). An epoch is one pass over every original and augmented item (§13.16).</summary>
internal static class MergeDataSet
{
    /// <summary>
    /// <paramref name="originals"/> followed by <see cref="Augmentation.Augment"/>(originals,
    /// <paramref name="augmented"/>, <paramref name="seed"/>); labels follow the images (augmented images
    /// carry their source's label). The result's tensor is new (even for 0 augmented images): disposing it
    /// leaves <paramref name="originals"/> intact.
    /// </summary>
    public static ImageSet Compose(ImageSet originals, int augmented, long seed)
    {
        ArgumentNullException.ThrowIfNull(originals);
        if (augmented == 0) // also the path of token ids, which are never augmented (spec §11.6)
            return new ImageSet(originals.Images.cpu().clone(), [.. originals.Labels], originals.LabelNames) { Texts = originals.Texts };
        Tensor images;
        long[] labels;
        using (var scope = torch.NewDisposeScope())
        {
            var extra = Augmentation.Augment(originals, augmented, seed);
            var source = originals.Images.to(ScalarType.Float32).cpu();
            images = torch.cat(new[] { source, extra.Images }, 0).MoveToOuterDisposeScope();
            labels = [.. originals.Labels, .. extra.Labels];
        }
        return new ImageSet(images, labels, originals.LabelNames);
    }
}
