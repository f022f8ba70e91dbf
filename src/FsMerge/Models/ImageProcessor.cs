using System.Text.Json;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// How images become a model's input, as Hugging Face's ViTImageProcessor does it (preprocessor_config.json):
/// grayscale to RGB when the processor converts and the model reads 3 channels, resize to size (height, width)
/// or to a shortest edge with the PIL filter code `resample`, multiply by rescale_factor, then (x − mean) / std per
/// channel. Images arrive as bytes / 255 ([0, 1]); resizing works on the bytes and gives bytes, with Pillow's arithmetic
/// (<see cref="PilResampler"/>), before rescaling, as transformers does it through PIL.
/// A model without the file reads [0, 1] pixels unresized: <see cref="Plain"/>, which is written out as such.
/// </summary>
public sealed record ImageProcessor
{
    public const string FileName = "preprocessor_config.json";

    public bool DoResize { get; init; }
    /// <summary>Target (height, width); null with <see cref="ShortestEdge"/> or without resizing.</summary>
    public (int Height, int Width)? Size { get; init; }
    public int? ShortestEdge { get; init; }
    /// <summary>PIL's filter code: 0 nearest, 1 Lanczos, 2 bilinear, 3 bicubic, 4 box, 5 Hamming.</summary>
    public int Resample { get; init; } = 2;
    public bool DoRescale { get; init; } = true;
    public double RescaleFactor { get; init; } = 1 / 255.0;
    public bool DoNormalize { get; init; }
    public double[] ImageMean { get; init; } = [0.5, 0.5, 0.5];
    public double[] ImageStd { get; init; } = [0.5, 0.5, 0.5];
    public bool DoConvertRgb { get; init; }

    /// <summary>What FsMerge did before this file existed: [0, 1] pixels, no resize, no normalization.</summary>
    public static readonly ImageProcessor Plain = new();

    public static ImageProcessor Read(string path)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new FsMergeException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new FsMergeException($"{path}: invalid JSON ({e.Message.Split('\n')[0]})");
        }
        var p = Plain with
        {
            // ViTImageProcessor's defaults where a field is absent.
            DoResize = Bool(root, "do_resize", true, path),
            Resample = root["resample"] is null ? PilResampler.Bilinear : Number(root, "resample", path) is var r && r is >= 0 and <= 5 && r == Math.Floor(r) ? (int)r
                : throw new FsMergeException($"{path}: resample {root["resample"]} is not a PIL filter (0 nearest, 1 Lanczos, 2 bilinear, 3 bicubic, 4 box, 5 Hamming)"),
            DoRescale = Bool(root, "do_rescale", true, path),
            RescaleFactor = root["rescale_factor"] is null ? 1 / 255.0 : Number(root, "rescale_factor", path),
            DoNormalize = Bool(root, "do_normalize", true, path),
            ImageMean = Channels(root, "image_mean", path),
            ImageStd = Channels(root, "image_std", path),
            DoConvertRgb = Bool(root, "do_convert_rgb", false, path),
        };
        if (p.ImageStd.Any(s => s == 0)) throw new FsMergeException($"{path}: image_std has a zero");
        if (Bool(root, "do_center_crop", false, path)) throw new FsMergeException($"{path}: do_center_crop true is not supported");
        // Other processors crop, pad or resize with other arithmetic (the "Fast" ones through torchvision, not PIL).
        foreach (var field in new[] { "image_processor_type", "feature_extractor_type" })
            if (root[field] is JsonValue t && t.GetValueKind() == JsonValueKind.String && t.GetValue<string>() is var type && type is not ("ViTImageProcessor" or "ViTFeatureExtractor"))
                throw new FsMergeException($"{path}: {field} '{type}' is not supported (expected ViTImageProcessor)");
        if (!p.DoResize) return p;
        return root["size"] switch
        {
            null => p with { Size = (224, 224) },
            JsonValue v when v.TryGetValue<int>(out int side) && side > 0 => p with { Size = (side, side) },
            JsonObject o when o["shortest_edge"] is not null => p with { ShortestEdge = Positive(o, "shortest_edge", path) },
            JsonObject o => p with { Size = (Positive(o, "height", path), Positive(o, "width", path)) },
            _ => throw new FsMergeException($"{path}: size must be an integer or {{height, width}} or {{shortest_edge}}"),
        };
    }

    /// <summary>The processor of a model folder: its preprocessor_config.json, else <see cref="Plain"/>.</summary>
    public static ImageProcessor ForModel(string dir)
    {
        var path = Path.Combine(dir, FileName);
        return File.Exists(path) ? Read(path) : Plain;
    }

    /// <summary>preprocessor_config.json as Hugging Face's ViTImageProcessor reads it; <paramref name="imageSize"/> stands in for an absent size.</summary>
    public void Write(string path, int? imageSize)
    {
        var size = ShortestEdge is { } edge ? new JsonObject { ["shortest_edge"] = edge }
            : (Size ?? (imageSize is { } side ? (side, side) : null)) is { } s ? new JsonObject { ["height"] = s.Height, ["width"] = s.Width } : null;
        var root = new JsonObject
        {
            ["image_processor_type"] = "ViTImageProcessor",
            ["do_resize"] = DoResize,
            ["size"] = size,
            ["resample"] = Resample,
            ["do_rescale"] = DoRescale,
            ["rescale_factor"] = RescaleFactor,
            ["do_normalize"] = DoNormalize,
            ["image_mean"] = new JsonArray(ImageMean.Select(m => (JsonNode)m).ToArray()),
            ["image_std"] = new JsonArray(ImageStd.Select(s => (JsonNode)s).ToArray()),
            ["do_convert_rgb"] = DoConvertRgb,
        };
        AtomicFile.WriteAllText(path, root.ToJsonString(JsonFormat.Indented));
    }

    /// <summary>
    /// The model's input for <paramref name="set"/> (images [n, C, H, W] in [0, 1], bytes / 255), for a model reading
    /// <paramref name="channels"/> channels. It takes over the set: the result is the set itself when nothing
    /// changes (<see cref="Plain"/>), else a new set, and the old one is disposed.
    /// </summary>
    public ImageSet Apply(ImageSet set, int channels, string what)
    {
        bool identity = !DoResize && !DoNormalize && DoRescale && RescaleFactor == Plain.RescaleFactor
                        && !(DoConvertRgb && set.Images.shape[1] == 1 && channels == 3);
        if (identity || set.Images.dim() != 4) return set;
        var prepared = set with { Images = Apply(set.Images, channels, what) };
        set.Dispose();
        return prepared;
    }

    Tensor Apply(Tensor images, int channels, string what)
    {
        using var scope = torch.NewDisposeScope();
        var x = images;
        if (DoConvertRgb && x.shape[1] == 1 && channels == 3) x = x.expand(-1, 3, -1, -1);
        var bytes = x.mul(255).round_().clamp_(0, 255).to(ScalarType.Byte).contiguous();
        if (DoResize && Target(x.shape[2], x.shape[3]) is var (h, w) && (h, w) != (x.shape[2], x.shape[3])) bytes = Resize(bytes, h, w);
        // As Hugging Face: rescale in float64, then float32; normalize in float32.
        var values = (DoRescale ? bytes.to(ScalarType.Float64).mul(RescaleFactor) : bytes).to(ScalarType.Float32);
        if (DoNormalize)
        {
            long c = values.shape[1];
            double[] Per(double[] v, string field) => v.Length == 1 ? Enumerable.Repeat(v[0], (int)c).ToArray()
                : v.Length == c ? v : throw new FsMergeException($"{what}: {FileName} {field} has {v.Length} values for images of {c} channel(s)");
            var mean = torch.tensor(Per(ImageMean, "image_mean"), ScalarType.Float32).view(1, c, 1, 1);
            var std = torch.tensor(Per(ImageStd, "image_std"), ScalarType.Float32).view(1, c, 1, 1);
            values = values.sub(mean).div(std);
        }
        return values.MoveToOuterDisposeScope();
    }

    /// <summary>The resized (height, width) as Hugging Face computes it (shortest edge: the long side scaled and truncated).</summary>
    (long, long) Target(long h, long w)
    {
        if (Size is { } s) return (s.Height, s.Width);
        long edge = ShortestEdge!.Value;
        return h <= w ? (edge, (long)(edge * w / (double)h)) : ((long)(edge * h / (double)w), edge);
    }

    /// <summary>Resizes byte images [n, C, H, W] plane by plane as Pillow does (<see cref="PilResampler"/>).</summary>
    Tensor Resize(Tensor bytes, long height, long width)
    {
        long n = bytes.shape[0], c = bytes.shape[1], h = bytes.shape[2], w = bytes.shape[3];
        var resized = PilResampler.Resize(bytes.contiguous().data<byte>().ToArray(), checked((int)(n * c)), (int)h, (int)w, (int)height, (int)width, Resample);
        return torch.tensor(resized, new long[] { n, c, height, width });
    }

    /// <summary>
    /// Per-channel (scale, shift) with this processor's output = scale · <paramref name="other"/>'s output + shift on the
    /// same image, when the two differ only in rescaling and normalization (affine per channel); null when they
    /// resize or convert differently.
    /// </summary>
    public (double[] Scale, double[] Shift)? AffineFrom(ImageProcessor other, int channels)
    {
        if (DoResize != other.DoResize || Size != other.Size || ShortestEdge != other.ShortestEdge || Resample != other.Resample
            || DoConvertRgb != other.DoConvertRgb) return null;
        // x = (p·r − m) / s per channel, so p·r₁ = s₁·x₁ + m₁ and x = (r/r₁)(s₁·x₁ + m₁)/s − m/s.
        var (r, m, s) = Terms(channels);
        var (r1, m1, s1) = other.Terms(channels);
        var scale = Enumerable.Range(0, channels).Select(c => r / r1 * s1[c] / s[c]).ToArray();
        var shift = Enumerable.Range(0, channels).Select(c => (r / r1 * m1[c] - m[c]) / s[c]).ToArray();
        return (scale, shift);
    }

    (double Rescale, double[] Mean, double[] Std) Terms(int channels)
    {
        double[] Per(double[] v, double plain) => !DoNormalize ? Enumerable.Repeat(plain, channels).ToArray()
            : v.Length == 1 ? Enumerable.Repeat(v[0], channels).ToArray() : v.Length == channels ? v
            : throw new FsMergeException($"{FileName}: image_mean/image_std have {v.Length} values for {channels} channel(s)");
        return (DoRescale ? RescaleFactor : 1, Per(ImageMean, 0), Per(ImageStd, 1));
    }

    public bool Equals(ImageProcessor? other) => other is not null && DoResize == other.DoResize && Size == other.Size
        && ShortestEdge == other.ShortestEdge && Resample == other.Resample && DoRescale == other.DoRescale
        && RescaleFactor == other.RescaleFactor && DoNormalize == other.DoNormalize && ImageMean.SequenceEqual(other.ImageMean)
        && ImageStd.SequenceEqual(other.ImageStd) && DoConvertRgb == other.DoConvertRgb;

    public override int GetHashCode() => HashCode.Combine(DoResize, Size, ShortestEdge, Resample, DoRescale, RescaleFactor, DoNormalize);

    static bool Bool(JsonObject o, string key, bool fallback, string path) => o[key] switch
    {
        null => fallback,
        JsonValue v when v.TryGetValue<bool>(out bool b) => b,
        _ => throw new FsMergeException($"{path}: field '{key}' must be true or false"),
    };

    static double Number(JsonObject o, string key, string path) =>
        o[key] is JsonValue v && v.TryGetValue<double>(out double d) && double.IsFinite(d) ? d
            : throw new FsMergeException($"{path}: field '{key}' must be a number");

    static int Positive(JsonObject o, string key, string path) =>
        o[key] is JsonValue v && v.TryGetValue<int>(out int i) && i > 0 ? i
            : throw new FsMergeException($"{path}: field 'size.{key}' must be a positive integer");

    /// <summary>image_mean / image_std: a number or one per channel; ViTImageProcessor's 0.5 when absent.</summary>
    static double[] Channels(JsonObject o, string key, string path) => o[key] switch
    {
        null => [0.5, 0.5, 0.5],
        JsonArray a when a.Count > 0 && a.All(v => v is JsonValue x && x.TryGetValue<double>(out double d) && double.IsFinite(d))
            => a.Select(v => v!.GetValue<double>()).ToArray(),
        JsonValue => [Number(o, key, path)],
        _ => throw new FsMergeException($"{path}: field '{key}' must be a number or a list of numbers"),
    };
}
