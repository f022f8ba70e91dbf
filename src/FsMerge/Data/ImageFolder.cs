using SkiaSharp;

namespace FsMerge.Data;

/// <summary>
/// Image-folder datasets: <c>DIR/&lt;class&gt;/*.png|jpg|jpeg</c>, one subfolder per class. Classes are the
/// subfolder names sorted ordinally (folders starting with '.' are skipped), images within a class
/// are taken in ordinal file-name order, files with other extensions are ignored. Every image must
/// have the same size and channel count: grayscale images give C=1, colour images C=3 (an alpha
/// channel is dropped). Decoding uses SkiaSharp.
/// </summary>
public static class ImageFolder
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

        int c = 0, h = 0, w = 0;
        if (shape is { } s) (c, h, w) = s;
        byte[]? pixels = null;
        int size = 0;
        for (int i = 0; i < files.Count; i++)
        {
            var (data, ic, ih, iw) = Decode(files[i]);
            if (pixels is null)
            {
                if (shape is null) (c, h, w) = (ic, ih, iw);
                size = c * h * w;
                pixels = new byte[(long)files.Count * size];
            }
            if ((ic, ih, iw) != (c, h, w))
                throw new FsMergeException($"{files[i]}: image is {Describe(ic, ih, iw)} but expected {Describe(c, h, w)}"
                    + (shape is null ? $" like {files[0]}" : "") + "; all images must have the same size and channel count");
            Array.Copy(data, 0, pixels, (long)i * size, size);
        }

        var raw = new RawImages { Pixels = pixels!, Labels = labels.ToArray(), Channels = c, Height = h, Width = w };
        return (raw, names, files.ToArray());
    }

    private static string Describe(int c, int h, int w)
        => $"{w}x{h} {(c == 1 ? "grayscale" : "colour")} (C={c})";

    /// <summary>Decodes one PNG/JPEG file into [C, H, W] bytes.</summary>
    internal static unsafe (byte[] chw, int c, int h, int w) Decode(string path)
    {
        SKCodec? codec;
        SKCodecResult result;
        try
        {
            codec = SKCodec.Create(path, out result);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{path}: cannot read image ({e.Message})", e);
        }
        if (codec is null)
            throw new FsMergeException($"{path}: cannot decode image ({result}); expected a PNG or JPEG file");
        using (codec)
        {
            var info = codec.Info;
            int w = info.Width, h = info.Height;
            if (w <= 0 || h <= 0 || (long)w * h > 1 << 26)
                throw new FsMergeException($"{path}: unsupported image size {w}x{h}");
            bool gray = info.ColorType == SKColorType.Gray8;
            var target = new SKImageInfo(w, h, gray ? SKColorType.Gray8 : SKColorType.Rgba8888,
                gray ? SKAlphaType.Opaque : SKAlphaType.Unpremul);
            var buffer = new byte[target.BytesSize];
            fixed (byte* p = buffer)
                result = codec.GetPixels(target, (IntPtr)p);
            if (result != SKCodecResult.Success)
                throw new FsMergeException($"{path}: cannot decode image ({result}); the file may be truncated or corrupt");

            if (gray) return (buffer, 1, h, w);
            int plane = h * w;
            var chw = new byte[3 * plane];
            for (int i = 0; i < plane; i++)
            {
                chw[i] = buffer[4 * i];
                chw[plane + i] = buffer[4 * i + 1];
                chw[2 * plane + i] = buffer[4 * i + 2];
            }
            return (chw, 3, h, w);
        }
    }
}
