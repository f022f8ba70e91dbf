using SkiaSharp;

namespace FsMerge.Data;

/// <summary>
/// Image-folder datasets: <c>DIR/&lt;class&gt;/*.png|jpg|jpeg</c>, one subfolder per class. Classes are the
/// subfolder names sorted ordinally (folders starting with '.' are skipped), images within a class
/// are taken in ordinal file-name order, files with other extensions are ignored. Every image must
/// have the same size and channel count: grayscale images give C=1, colour images C=3 (an alpha
/// channel is dropped). Decoding uses SkiaSharp.
/// </summary>
internal static class ImageFolder
{
    private static readonly string[] Extensions = [".png", ".jpg", ".jpeg"];

    /// <summary>Loads a folder of class subfolders.</summary>
    /// <param name="dir">the folder holding one subfolder per class</param>
    /// <param name="classNames">if given, the subfolders must be exactly these classes and label k is
    /// classNames[k] (used to load a test folder with the train folder's classes)</param>
    /// <param name="shape">if given, every image must have this (channels, height, width)</param>
    /// <returns>the images with labels 0..K-1 and LabelNames = class names, and the file of each sample</returns>
    public static (ImageSet set, string[] files) Load(string dir, IReadOnlyList<string>? classNames = null,
        (int channels, int height, int width)? shape = null)
    {
        var (raw, names, files) = ReadRaw(dir, classNames, shape);
        return (raw.All(names), files);
    }

    internal static (RawImages raw, string[] classNames, string[] files) ReadRaw(string dir,
        IReadOnlyList<string>? classNames = null, (int channels, int height, int width)? shape = null)
    {
        if (!Directory.Exists(dir))
            throw new FsMergeException($"{dir}: image folder not found; expected one subfolder per class holding PNG/JPEG images");

        var found = Directory.GetDirectories(dir)
            .Select(Path.GetFileName)
            .Where(n => !string.IsNullOrEmpty(n) && !n!.StartsWith('.'))
            .Select(n => n!)
            .OrderBy(n => n, StringComparer.Ordinal)
            .ToArray();
        if (found.Length == 0)
            throw new FsMergeException($"{dir}: no class subfolders; expected one subfolder per class holding PNG/JPEG images");

        string[] names;
        if (classNames is null)
        {
            names = found;
        }
        else
        {
            names = classNames.ToArray();
            var missing = names.Except(found, StringComparer.Ordinal).ToArray();
            var extra = found.Except(names, StringComparer.Ordinal).ToArray();
            if (missing.Length > 0 || extra.Length > 0)
                throw new FsMergeException($"{dir}: class subfolders must be the same as the training classes"
                    + (missing.Length > 0 ? $"; missing: {string.Join(", ", missing)}" : "")
                    + (extra.Length > 0 ? $"; unexpected: {string.Join(", ", extra)}" : ""));
        }

        var files = new List<string>();
        var labels = new List<long>();
        for (int k = 0; k < names.Length; k++)
        {
            var classDir = Path.Combine(dir, names[k]);
            var images = Directory.GetFiles(classDir)
                .Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal)
                .ToArray();
            if (images.Length == 0)
                throw new FsMergeException($"{classDir}: class folder has no PNG/JPEG images (.png, .jpg, .jpeg)");
            files.AddRange(images);
            labels.AddRange(Enumerable.Repeat((long)k, images.Length));
        }

        return (ReadFiles(files, labels.ToArray(), shape), names, files.ToArray());
    }

    /// <summary>The most pixels one image may have (4096×4096): decoding takes 4 bytes a pixel.</summary>
    public const long MaxPixels = 1 << 24;

    /// <summary>
    /// Decodes images of one size and channel count (<paramref name="shape"/>, else the first file's). Every file's
    /// header is read and checked first, against the per-image and the total limits, before any pixel is decoded:
    /// a small compressed file can declare a huge image.
    /// </summary>
    internal static RawImages ReadFiles(IReadOnlyList<string> files, long[] labels, (int channels, int height, int width)? shape)
    {
        var sizes = files.Select(Probe).ToArray();
        var (c, h, w) = shape ?? sizes[0];
        for (int i = 0; i < files.Count; i++)
            if (sizes[i] != (c, h, w))
                throw new FsMergeException($"{files[i]}: image is {Describe(sizes[i].c, sizes[i].h, sizes[i].w)} but expected {Describe(c, h, w)}"
                    + (shape is null ? $" like {files[0]}" : "") + "; all images must have the same size and channel count");
        long size = (long)c * h * w, total = files.Count * size;
        if (total > Idx.MaxDataBytes)
            throw new FsMergeException($"{Path.GetDirectoryName(files[0])}: {files.Count} images of {Describe(c, h, w)} make {total} bytes, more than the {Idx.MaxDataBytes} bytes allowed");
        var pixels = new byte[total];
        for (int i = 0; i < files.Count; i++)
            Decode(files[i], sizes[i]).CopyTo(pixels, i * size);
        return new RawImages { Pixels = pixels, Labels = labels, Channels = c, Height = h, Width = w };
    }

    private static string Describe(int c, int h, int w)
        => $"{w}x{h} {(c == 1 ? "grayscale" : "colour")} (C={c})";

    /// <summary>Opens a PNG/JPEG file's decoder, which reads no more than the header.</summary>
    static SKCodec Open(string path)
    {
        var stream = InputFile.OpenRead(path, "a PNG or JPEG image");
        var codec = SKCodec.Create(stream, out var result);
        if (codec is null)
        {
            stream.Dispose();
            throw new FsMergeException($"{path}: cannot decode image ({result}); expected a PNG or JPEG file");
        }
        return codec;
    }

    /// <summary>An image's channels (1 for grayscale, else 3) and size from its header, checked against <see cref="MaxPixels"/>.</summary>
    static (int c, int h, int w) Probe(string path)
    {
        using var codec = Open(path);
        var info = codec.Info;
        if (info.Width <= 0 || info.Height <= 0 || (long)info.Width * info.Height > MaxPixels)
            throw new FsMergeException($"{path}: image size {info.Width}x{info.Height}; expected at most {MaxPixels} pixels");
        return (info.ColorType == SKColorType.Gray8 ? 1 : 3, info.Height, info.Width);
    }

    /// <summary>Decodes one PNG/JPEG file, probed as <paramref name="size"/>, into [C, H, W] bytes.</summary>
    static unsafe byte[] Decode(string path, (int c, int h, int w) size)
    {
        using var codec = Open(path);
        var (c, h, w) = size;
        if ((codec.Info.Width, codec.Info.Height) != (w, h))
            throw new FsMergeException($"{path}: the image changed while being read");
        bool gray = c == 1;
        var target = new SKImageInfo(w, h, gray ? SKColorType.Gray8 : SKColorType.Rgba8888, gray ? SKAlphaType.Opaque : SKAlphaType.Unpremul);
        var buffer = new byte[target.BytesSize];
        SKCodecResult result;
        fixed (byte* p = buffer)
            result = codec.GetPixels(target, (IntPtr)p);
        if (result != SKCodecResult.Success)
            throw new FsMergeException($"{path}: cannot decode image ({result}); the file may be truncated or corrupt");

        if (gray) return buffer;
        int plane = h * w;
        var chw = new byte[3 * plane];
        for (int i = 0; i < plane; i++)
        {
            chw[i] = buffer[4 * i];
            chw[plane + i] = buffer[4 * i + 1];
            chw[2 * plane + i] = buffer[4 * i + 2];
        }
        return chw;
    }
}
