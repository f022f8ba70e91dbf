namespace FsMerge.Models;

/// <summary>
/// Resizes 8-bit image planes exactly as Pillow's <c>Image.resize</c> does, which Hugging Face's image processors call
/// before rescaling and normalizing: a model's pixels then match its Hugging Face preprocessing byte for byte.
/// <para>
/// Hand-written because no served package reproduces Pillow's arithmetic (SkiaSharp and ImageSharp filter otherwise).
/// Written from Pillow's documented algorithm (libImaging Resample.c and Geometry.c), not copied:
/// </para>
/// <list type="bullet">
/// <item>Filters (resample codes): 0 nearest, 1 Lanczos (a = 3), 2 bilinear (triangle), 3 bicubic (Keys, a = −0.5), 4 box,
/// 5 Hamming; supports 0.5, 3, 1, 2, 0.5, 1 input pixels.</item>
/// <item>Per axis, output pixel i samples input positions around center = (i + 0.5)·scale (scale = in/out); when
/// shrinking, the filter is stretched by scale (antialiasing): support·max(scale, 1) pixels each side, from
/// trunc(center − support + 0.5) to trunc(center + support + 0.5), clipped to the image. Tap j weighs
/// filter((j − center + 0.5) / max(scale, 1)); the weights are normalized to sum 1, then made 22-bit fixed point
/// (rounded half away from zero).</item>
/// <item>Horizontal pass first, then vertical; each pass sums bytes × weights plus half a unit, shifts by 22 bits and
/// clips to 0-255, so the intermediate image is bytes too. A pass whose size does not change is skipped.</item>
/// <item>Nearest: source index trunc(x·scale), with x stepping from 0.5 by scale as Pillow accumulates it.</item>
/// </list>
/// </summary>
internal static class PilResampler
{
    const int PrecisionBits = 32 - 8 - 2;

    public const int Nearest = 0, Lanczos = 1, Bilinear = 2, Bicubic = 3, Box = 4, Hamming = 5;

    static (Func<double, double> Filter, double Support) FilterOf(int resample) => resample switch
    {
        Lanczos => (x => -3.0 <= x && x < 3.0 ? Sinc(x) * Sinc(x / 3) : 0.0, 3.0),
        Bilinear => (x => Math.Abs(x) < 1.0 ? 1.0 - Math.Abs(x) : 0.0, 1.0),
        Bicubic => (BicubicWeight, 2.0),
        Box => (x => x > -0.5 && x <= 0.5 ? 1.0 : 0.0, 0.5),
        Hamming => (HammingWeight, 1.0),
        _ => throw new FsMergeException($"resample {resample} is not a Pillow filter (0 nearest, 1 Lanczos, 2 bilinear, 3 bicubic, 4 box, 5 Hamming)"),
    };

    static double Sinc(double x) => x == 0.0 ? 1.0 : Math.Sin(x * Math.PI) / (x * Math.PI);

    static double BicubicWeight(double x)
    {
        const double a = -0.5;
        x = Math.Abs(x);
        return x < 1.0 ? ((a + 2.0) * x - (a + 3.0)) * x * x + 1 : x < 2.0 ? (((x - 5) * x + 8) * x - 4) * a : 0.0;
    }

    static double HammingWeight(double x)
    {
        x = Math.Abs(x);
        if (x == 0.0) return 1.0;
        if (x >= 1.0) return 0.0;
        x *= Math.PI;
        return Math.Sin(x) / x * (0.54 + 0.46 * Math.Cos(x));
    }

    /// <summary>Per output pixel of one axis: the first input pixel, the number of taps, and their fixed-point weights.</summary>
    internal static (int[] First, int[] Count, int[] Weights, int Taps) Coefficients(int inSize, int outSize, int resample)
    {
        var (filter, baseSupport) = FilterOf(resample);
        double scale = (double)inSize / outSize, filterScale = Math.Max(scale, 1.0);
        double support = baseSupport * filterScale;
        int taps = (int)Math.Ceiling(support) * 2 + 1;
        var first = new int[outSize];
        var count = new int[outSize];
        var weights = new int[outSize * taps];
        var raw = new double[taps];
        for (int i = 0; i < outSize; i++)
        {
            double center = (i + 0.5) * scale;
            int lo = Math.Max((int)(center - support + 0.5), 0);
            int n = Math.Min((int)(center + support + 0.5), inSize) - lo;
            double sum = 0;
            for (int j = 0; j < n; j++) sum += raw[j] = filter((j + lo - center + 0.5) / filterScale);
            for (int j = 0; j < n; j++)
            {
                double w = sum != 0.0 ? raw[j] / sum : raw[j];
                weights[i * taps + j] = (int)(w < 0 ? -0.5 + w * (1 << PrecisionBits) : 0.5 + w * (1 << PrecisionBits));
            }
            first[i] = lo;
            count[i] = n;
        }
        return (first, count, weights, taps);
    }

    static byte Clip(int sum) => (byte)Math.Clamp(sum >> PrecisionBits, 0, 255);

    /// <summary>Resizes <paramref name="planes"/> planes of <paramref name="height"/>×<paramref name="width"/> bytes (row-major, one after another).</summary>
    public static byte[] Resize(byte[] source, int planes, int height, int width, int outHeight, int outWidth, int resample)
    {
        var result = new byte[(long)planes * outHeight * outWidth];
        if (resample == Nearest)
        {
            var columns = NearestIndices(width, outWidth);
            var rows = NearestIndices(height, outHeight);
            for (long p = 0; p < planes; p++)
                for (int y = 0; y < outHeight; y++)
                    for (int x = 0; x < outWidth; x++)
                        result[(p * outHeight + y) * outWidth + x] = source[(p * height + rows[y]) * width + columns[x]];
            return result;
        }
        var horizontal = width != outWidth ? Coefficients(width, outWidth, resample) : default;
        var vertical = height != outHeight ? Coefficients(height, outHeight, resample) : default;
        var plane = new byte[height * outWidth];
        for (long p = 0; p < planes; p++)
        {
            long input = p * height * width;
            if (horizontal.Weights is { } kx)
            {
                for (int y = 0; y < height; y++)
                    for (int x = 0; x < outWidth; x++)
                    {
                        int sum = 1 << (PrecisionBits - 1), at = x * horizontal.Taps;
                        long row = input + (long)y * width + horizontal.First[x];
                        for (int j = 0; j < horizontal.Count[x]; j++) sum += source[row + j] * kx[at + j];
                        plane[y * outWidth + x] = Clip(sum);
                    }
            }
            else Array.Copy(source, input, plane, 0, height * width);
            long output = p * outHeight * outWidth;
            if (vertical.Weights is not { } ky)
            {
                Array.Copy(plane, 0, result, output, height * outWidth);
                continue;
            }
            for (int y = 0; y < outHeight; y++)
                for (int x = 0; x < outWidth; x++)
                {
                    int sum = 1 << (PrecisionBits - 1), at = y * vertical.Taps;
                    for (int j = 0; j < vertical.Count[y]; j++) sum += plane[(vertical.First[y] + j) * outWidth + x] * ky[at + j];
                    result[output + (long)y * outWidth + x] = Clip(sum);
                }
        }
        return result;
    }

    /// <summary>Pillow's nearest source index per output index: trunc of a coordinate that starts at scale/2 and grows by scale.</summary>
    static int[] NearestIndices(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize, at = scale * 0.5;
        var indices = new int[outSize];
        for (int i = 0; i < outSize; i++, at += scale) indices[i] = Math.Min((int)at, inSize - 1);
        return indices;
    }
}
