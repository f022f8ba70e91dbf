using FsMerge.Data;
using FsMerge.Merging;

namespace FsMerge.Runs;

/// <summary>A reader of one kind of data source: unlabeled merge images, and labelled test images where the kind has labels.</summary>
internal sealed record DataSourceReader(string Kind, string Help, Func<string, string, ImageSet> Unlabeled, Func<string, string, ImageSet>? Labelled);

/// <summary>
/// The kinds of data a merge source can draw from, by name. A new kind (text files for BERT) is one more
/// entry here: the YAML file, the dry run and the merge find it by its kind.
/// Readers take (value, data folder) and return images [n, C, H, W] in [0, 1] on the CPU.
/// </summary>
internal static class DataSources
{
    static readonly string[] ImageExtensions = [".png", ".jpg", ".jpeg"];

    public static readonly IReadOnlyList<DataSourceReader> All =
    [
        new("task", "a dataset task in the data folder, e.g. mnist:0-4 (merge data: its train split; test: its test split)",
            (value, dataDir) => LoadTask(value, dataDir, s => s.Train), (value, dataDir) => LoadTask(value, dataDir, s => s.Test)),
        new("images", "a folder of PNG/JPEG images, flat or in class subfolders (test data: class subfolders, sorted names = labels 0..K-1)",
            (value, _) => ReadImages(value), (value, _) => ImageFolder.Load(value).set),
        new("idx", "an IDX image file ([n, H, W] unsigned bytes, plain or gzip), e.g. train-images-idx3-ubyte",
            (value, _) => ReadIdxImages(value), null),
    ];

    public static string Kinds => string.Join(", ", All.Select(r => r.Kind));

    public static DataSourceReader Get(string kind) =>
        All.FirstOrDefault(r => r.Kind == kind)
        ?? throw new FsMergeException($"unknown data source '{kind}' (expected one of: {Kinds})");

    /// <summary>The first <paramref name="count"/> images of a seeded shuffle of the source (spec §11.2).</summary>
    public static ImageSet Sample(DataSource source, string dataDir, int count, long seed)
    {
        using var all = Get(source.Kind).Unlabeled(source.Value, dataDir);
        if (all.Count == 0) throw new FsMergeException($"{source}: no images");
        return MergeData.Sample(all, count, seed);
    }

    /// <summary>How merge.json and the report name data a library caller passed in memory (<see cref="SourceRequest.Images"/>).</summary>
    public static DataSource InMemory(TorchSharp.torch.Tensor images) => new("memory", $"[{string.Join(", ", images.shape)}]");

    /// <summary>
    /// <paramref name="count"/> merge images and <paramref name="heldOut"/> held-out ones, disjoint, from one seeded
    /// shuffle of the source: the merge images are the same as <see cref="Sample"/>'s. A source with fewer images
    /// than both gives the held-out samples what is left; one with no more than <paramref name="count"/> lends a
    /// quarter of them (at least one) to held-out, so that the label-free choices can always be made. Null held-out
    /// when <paramref name="heldOut"/> is 0 or the source has a single image.
    /// </summary>
    public static (ImageSet Merge, ImageSet? HeldOut) SampleWithHeldOut(DataSource source, string dataDir, int count, int heldOut, long seed)
    {
        if (heldOut == 0) return (Sample(source, dataDir, count, seed), null);
        using var all = Sample(source, dataDir, checked(count + heldOut), seed);
        return Split(all, count, heldOut);
    }

    /// <summary>The same draw from items held in memory ([n, ...] on the CPU; left as they are: the sets returned are copies).</summary>
    public static (ImageSet Merge, ImageSet? HeldOut) SampleWithHeldOut(TorchSharp.torch.Tensor items, int count, int heldOut, long seed)
    {
        if (items.dim() < 2 || items.shape[0] == 0)
            throw new FsMergeException($"in-memory merge data: shape [{string.Join(", ", items.shape)}]; expected [n, C, H, W] images or [n, L] token ids with n >= 1");
        var pool = new ImageSet(items.device_type == TorchSharp.DeviceType.CPU ? items.alias() : items.cpu(), new long[items.shape[0]], ["unlabeled"]);
        using (pool)
        {
            if (heldOut == 0) return (MergeData.Sample(pool, count, seed), null);
            using var all = MergeData.Sample(pool, checked(count + heldOut), seed);
            return Split(all, count, heldOut);
        }
    }

    static (ImageSet Merge, ImageSet? HeldOut) Split(ImageSet all, int count, int heldOut)
    {
        int n = all.Count;
        int held = n >= count + heldOut ? heldOut : n > count ? n - count : Math.Min(heldOut, Math.Max(1, n / 4));
        if (n < 2) return (Slice(all, 0, n), null);
        return (Slice(all, 0, n - held > count ? count : n - held), Slice(all, n - held, held));
    }

    static ImageSet Slice(ImageSet set, int start, int count) =>
        new(set.Images.narrow(0, start, count).clone(), set.Labels.AsSpan(start, count).ToArray(), set.LabelNames) { Texts = set.Texts?.Slice(start, count) };

    public static ImageSet Labelled(DataSource source, string dataDir) =>
        (Get(source.Kind).Labelled ?? throw new FsMergeException($"{source}: a '{source.Kind}' source has no labels; test data must be one of: "
            + string.Join(", ", All.Where(r => r.Labelled != null).Select(r => r.Kind))))(source.Value, dataDir);

    static ImageSet LoadTask(string value, string dataDir, Func<TaskSplits, ImageSet> pick)
    {
        var splits = TaskData.Load(TaskSpec.Parse(value), dataDir);
        var kept = pick(splits);
        foreach (var split in new[] { splits.Train, splits.Validation, splits.Test }.Where(s => !ReferenceEquals(s, kept))) split.Dispose();
        return kept;
    }

    /// <summary>Every image of a folder (class subfolders, if any, are read as one unlabeled pool).</summary>
    static ImageSet ReadImages(string dir)
    {
        if (File.Exists(dir)) throw new FsMergeException($"{dir}: is a file; expected a folder of PNG/JPEG images");
        if (!Directory.Exists(dir)) throw new FsMergeException($"{dir}: image folder not found");
        string[] files;
        try
        {
            if (Directory.GetDirectories(dir).Any(d => !Path.GetFileName(d).StartsWith('.')))
                return ImageFolder.Load(dir).set;
            files = Directory.GetFiles(dir).Where(f => ImageExtensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .OrderBy(f => f, StringComparer.Ordinal).ToArray();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{dir}: cannot read the image folder ({e.Message})");
        }
        if (files.Length == 0) throw new FsMergeException($"{dir}: no PNG/JPEG images (.png, .jpg, .jpeg) in the folder");
        var raw = ImageFolder.ReadFiles(files, new long[files.Length], shape: null);
        return raw.All(["unlabeled"]);
    }

    static ImageSet ReadIdxImages(string path)
    {
        if (!File.Exists(path)) throw new FsMergeException($"{path}: IDX image file not found");
        var (data, dims) = Idx.Read(path);
        if (dims.Length != 3)
            throw new FsMergeException($"{path}: IDX file has {dims.Length} dimension(s); expected images [n, height, width]");
        if (dims[1] <= 0 || dims[2] <= 0 || (long)dims[1] * dims[2] > ImageFolder.MaxPixels)
            throw new FsMergeException($"{path}: image size {dims[1]}x{dims[2]}; expected 1 to {ImageFolder.MaxPixels} pixels");
        var raw = new RawImages { Pixels = data, Labels = new long[dims[0]], Channels = 1, Height = dims[1], Width = dims[2] };
        return raw.All(["unlabeled"]);
    }
}
