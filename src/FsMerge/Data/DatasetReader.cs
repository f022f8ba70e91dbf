namespace FsMerge.Data;

/// <summary>A split's samples before filtering: images as bytes, or token ids, with class ids 0..K-1.</summary>
internal interface IRawSamples
{
    int Count { get; }
    long[] Labels { get; }
    /// <summary>Selects samples (in the given order), mapping labels through <paramref name="relabel"/> (null = keep).</summary>
    ImageSet Select(IReadOnlyList<int> indices, long[]? relabel, string[] labelNames);
}

/// <summary>A whole dataset: train and test samples with class ids 0..K-1 and the K class names.</summary>
internal sealed record RawDataset(string Folder, IRawSamples Train, IRawSamples Test, string[] ClassNames);

/// <summary>
/// Reads <c>dataDir/NAME/</c>: either the four standard IDX files (plain or .gz) or image folders
/// <c>train/&lt;class&gt;/</c> and <c>test/&lt;class&gt;/</c>. IDX datasets are cached in memory while
/// their files are unchanged, so loading several tasks of one dataset decodes it once.
/// </summary>
internal static class DatasetReader
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, (string signature, RawDataset dataset)> Cache = new();
    private const int CacheLimit = 4;

    public static RawDataset Read(string dataDir, string name)
    {
        var root = Path.GetFullPath(dataDir);
        var folder = Path.Combine(root, name);
        bool known = KnownDatasets.TryGet(name, out var knownDataset);
        if (!Directory.Exists(folder))
        {
            if (known || name is "fortunes" or "lang")
                throw new FsMergeException($"dataset '{name}' not found: {folder} does not exist; run `fsmerge data` to provision MNIST, Fashion-MNIST and the text datasets fortunes and lang (or point --data / {DataDirectory.EnvironmentVariable} at a data directory that has them)");
            throw new FsMergeException($"unknown dataset '{name}': {folder} does not exist; built-in datasets are mnist and fashion (run `fsmerge data` to provision them), a user dataset is a folder {Path.Combine(root, "NAME")} with IDX files ({string.Join(", ", KnownDatasets.IdxFileNames)}, plain or .gz) or image folders train/<class>/ and test/<class>/");
        }

        var idxFiles = FindIdxFiles(folder);
        if (idxFiles.Any(f => f is not null))
        {
            var labelsTxt = Path.Combine(folder, "labels.txt");
            var watched = idxFiles.Append(labelsTxt).Where(f => f is not null && File.Exists(f)).Select(f => f!);
            var signature = string.Join("|", watched.Select(f =>
            {
                var info = new FileInfo(f);
                return $"{f}:{info.Length}:{info.LastWriteTimeUtc.Ticks}";
            }));
            lock (Gate)
            {
                if (Cache.TryGetValue(folder, out var hit) && hit.signature == signature) return hit.dataset;
            }
            var dataset = ReadIdx(folder, idxFiles, known ? knownDataset.LabelNames : null);
            lock (Gate)
            {
                if (Cache.Count >= CacheLimit) Cache.Clear();
                Cache[folder] = (signature, dataset);
            }
            return dataset;
        }

        if (TextFolder.IsText(folder)) return TextFolder.Read(folder);
        var trainDir = Path.Combine(folder, "train");
        var testDir = Path.Combine(folder, "test");
        if (Directory.Exists(trainDir) || Directory.Exists(testDir))
        {
            if (!Directory.Exists(trainDir))
                throw new FsMergeException($"{trainDir}: folder not found; an image dataset needs train/<class>/ and test/<class>/ folders");
            if (!Directory.Exists(testDir))
                throw new FsMergeException($"{testDir}: folder not found; an image dataset needs train/<class>/ and test/<class>/ folders");
            var (train, names, _) = ImageFolder.ReadRaw(trainDir);
            var (test, _, _) = ImageFolder.ReadRaw(testDir, names, (train.Channels, train.Height, train.Width));
            return new RawDataset(folder, train, test, names);
        }

        throw new FsMergeException($"{folder}: dataset folder has neither IDX files ({string.Join(", ", KnownDatasets.IdxFileNames)}, plain or .gz) nor image folders train/<class>/ and test/<class>/ nor a text dataset (vocab.txt, train/CLASS.txt, test/CLASS.txt)"
            + (known ? "; run `fsmerge data` to provision it" : ""));
    }

    /// <summary>The four standard IDX files of a folder (plain or .gz), null where absent.</summary>
    public static string?[] FindIdxFiles(string folder)
    {
        var result = new string?[KnownDatasets.IdxFileNames.Length];
        for (int i = 0; i < result.Length; i++)
        {
            var plain = Path.Combine(folder, KnownDatasets.IdxFileNames[i]);
            var gz = plain + ".gz";
            bool hasPlain = File.Exists(plain), hasGz = File.Exists(gz);
            if (hasPlain && hasGz)
                throw new FsMergeException($"{folder}: both {KnownDatasets.IdxFileNames[i]} and {KnownDatasets.IdxFileNames[i]}.gz exist; keep only one");
            result[i] = hasGz ? gz : hasPlain ? plain : null;
        }
        return result;
    }

    /// <summary>Reads and checks an IDX dataset: images [n, H, W] unsigned bytes, labels [n], same H and W
    /// in train and test. Class names are <paramref name="labelNames"/> (built-in datasets), else
    /// labels.txt (one name per line), else the label numbers 0..max.</summary>
    public static RawDataset ReadIdx(string folder, string?[] files, string[]? labelNames)
    {
        var missing = KnownDatasets.IdxFileNames.Where((_, i) => files[i] is null).ToArray();
        if (missing.Length > 0)
            throw new FsMergeException($"{folder}: IDX dataset is missing {string.Join(", ", missing)} (plain or .gz)");

        var train = ReadPair(files[0]!, files[1]!, null);
        var test = ReadPair(files[2]!, files[3]!, (train.Height, train.Width));

        string[] names;
        if (labelNames is not null)
        {
            names = labelNames;
        }
        else
        {
            var labelsTxt = Path.Combine(folder, "labels.txt");
            if (Path.Exists(labelsTxt))
            {
                var lines = InputFile.ReadAllLines(labelsTxt, "class names, one per line", TextFolder.MaxFileBytes).Select(l => l.Trim()).ToList();
                while (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
                if (lines.Count == 0)
                    throw new FsMergeException($"{labelsTxt}: no class names; expected one name per line");
                int blank = lines.IndexOf("");
                if (blank >= 0)
                    throw new FsMergeException($"{labelsTxt}: line {blank + 1} is empty; expected one class name per line");
                names = lines.ToArray();
            }
            else
            {
                long max = Math.Max(train.Labels.DefaultIfEmpty(-1).Max(), test.Labels.DefaultIfEmpty(-1).Max());
                names = Enumerable.Range(0, (int)max + 1).Select(i => i.ToString()).ToArray();
            }
        }
        CheckLabels(files[1]!, train.Labels, names.Length, labelNames is null && File.Exists(Path.Combine(folder, "labels.txt")));
        CheckLabels(files[3]!, test.Labels, names.Length, labelNames is null && File.Exists(Path.Combine(folder, "labels.txt")));
        return new RawDataset(folder, train, test, names);
    }

    private static void CheckLabels(string path, long[] labels, int classes, bool fromLabelsTxt)
    {
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] >= classes)
                throw new FsMergeException($"{path}: label {labels[i]} at index {i} out of range; expected 0-{classes - 1}"
                    + (fromLabelsTxt ? " (the number of names in labels.txt)" : ""));
    }

    private static RawImages ReadPair(string imagesPath, string labelsPath, (int h, int w)? size)
    {
        var (pixels, dims) = Idx.Read(imagesPath);
        if (dims.Length != 3)
            throw new FsMergeException($"{imagesPath}: IDX images must have 3 dimensions [count, height, width], found [{string.Join(", ", dims)}]");
        if (dims[1] <= 0 || dims[2] <= 0 || (long)dims[1] * dims[2] > ImageFolder.MaxPixels)
            throw new FsMergeException($"{imagesPath}: image size {dims[1]}x{dims[2]}; expected 1 to {ImageFolder.MaxPixels} pixels");
        if (size is { } s && (dims[1], dims[2]) != s)
            throw new FsMergeException($"{imagesPath}: images are {dims[1]}x{dims[2]} but the train images are {s.h}x{s.w}");
        var (labelBytes, labelDims) = Idx.Read(labelsPath);
        if (labelDims.Length != 1)
            throw new FsMergeException($"{labelsPath}: IDX labels must have 1 dimension [count], found [{string.Join(", ", labelDims)}]");
        if (labelDims[0] != dims[0])
            throw new FsMergeException($"{labelsPath}: {labelDims[0]} labels but {Path.GetFileName(imagesPath)} has {dims[0]} images");
        var labels = new long[labelBytes.Length];
        for (int i = 0; i < labels.Length; i++) labels[i] = labelBytes[i];
        return new RawImages { Pixels = pixels, Labels = labels, Channels = 1, Height = dims[1], Width = dims[2] };
    }
}
