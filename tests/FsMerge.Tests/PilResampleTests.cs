using FsMerge.Data;
using FsMerge.Models;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// Pillow's resize arithmetic (<see cref="PilResampler"/>) against values worked out by hand from its algorithm:
/// filters stretched by the downscale factor, weights normalized and made 22-bit fixed point, horizontal pass then
/// vertical, each rounded and clipped to bytes.
/// </summary>
public class PilResampleTests
{
    static byte[] Flat(int[][] rows) => rows.SelectMany(r => r.Select(v => (byte)v)).ToArray();

    [Fact]
    public void Bilinear_downscaling_widens_the_filter_and_rounds_after_each_pass()
    {
        // 4 → 2: scale 2, the triangle stretched to support 2. Output 0: center 1, taps at 0, 1, 2 with
        // triangle((j − 1 + 0.5) / 2) = 3/4, 3/4, 1/4 → 3/7, 3/7, 1/7. Output 1: center 3, taps 1, 2, 3 → 1/7, 3/7, 3/7
        // (the tap at 4 is outside the image). Horizontal, row by row, rounded to bytes:
        //   [10, 20, 30, 41]     → 120/7 = 17.14 → 17,   233/7 = 33.29 → 33
        //   [50, 60, 70, 80]     → 400/7 = 57.14 → 57,   510/7 = 72.86 → 73
        //   [90, 100, 110, 121]  → 680/7 = 97.14 → 97,   793/7 = 113.29 → 113
        //   [200, 210, 220, 255] → 1450/7 = 207.14 → 207, 1635/7 = 233.57 → 234
        // then vertical: [17, 57, 97, 207] → 319/7 = 45.57 → 46, 969/7 = 138.43 → 138;
        //                [33, 73, 113, 234] → 431/7 = 61.57 → 62, 1114/7 = 159.14 → 159.
        byte[] image = Flat([[10, 20, 30, 41], [50, 60, 70, 80], [90, 100, 110, 121], [200, 210, 220, 255]]);
        Assert.Equal(new byte[] { 46, 62, 138, 159 }, PilResampler.Resize(image, 1, 4, 4, 2, 2, PilResampler.Bilinear));
        var (first, count, weights, taps) = PilResampler.Coefficients(4, 2, PilResampler.Bilinear);
        Assert.Equal([0, 1], first);
        Assert.Equal([3, 3], count);
        // 3/7 and 1/7 of 2²² = 4194304, rounded: 1797558.86 → 1797559, 599186.29 → 599186.
        Assert.Equal(new[] { 1797559, 1797559, 599186 }, weights.Take(3));
        Assert.Equal(5, taps);
    }

    [Fact]
    public void Bilinear_upscaling_rounds_the_horizontal_pass_before_the_vertical_one()
    {
        // 2 → 3: scale 2/3, support 1. Output 0: center 1/3, taps from trunc(−1/6) = 0 to trunc(11/6) = 1: input 0 alone.
        // Output 1: center 1, taps 0 and 1 at distance 1/2: halves, (a + b + 1) / 2 rounded down. Output 2: input 1.
        // Rows: [10, 21] → 10, 16 (31/2 = 15.5 → 16), 21; [30, 40] → 30, 35, 40.
        // Columns: [10, 30] → 10, 20, 30; [16, 35] → 16, 26 (25.5 → 26), 35; [21, 40] → 21, 31 (30.5 → 31), 40.
        // The centre is 26, not round((10 + 21 + 30 + 40) / 4) = 25: the intermediate image is bytes.
        Assert.Equal(new byte[] { 10, 16, 21, 20, 26, 31, 30, 35, 40 },
            PilResampler.Resize([10, 21, 30, 40], 1, 2, 2, 3, 3, PilResampler.Bilinear));
    }

    [Fact]
    public void Bicubic_overshoot_is_clipped_to_bytes_in_each_pass()
    {
        // 2 → 4, Keys' cubic with a = −0.5 (support 2). Output 0: center 1/4, taps 0 and 1 at 0.25 and 1.25:
        // 0.8672 and −0.0703, normalized 1.0882 and −0.0882. Output 1: center 3/4: 0.7929 and 0.2071. Mirror for 2, 3.
        // Row [0, 255] → −22.5 → 0, 52.8 → 53, 202.2 → 202, 277.5 → 255 (clipped); row [255, 0] mirrored.
        // Column [53, 202] → 1.0882·53 − 0.0882·202 = 39.9 → 40, 0.7929·53 + 0.2071·202 = 83.9 → 84, …
        var resized = PilResampler.Resize([0, 255, 255, 0], 1, 2, 2, 4, 4, PilResampler.Bicubic);
        Assert.Equal(new byte[] { 0, 40, 215, 255, 53, 84, 171, 202, 202, 171, 84, 53, 255, 215, 40, 0 }, resized);
    }

    [Fact]
    public void Nearest_takes_the_pixel_under_each_output_centre_and_planes_are_independent()
    {
        // 3 → 2: scale 1.5, centres 0.75 and 2.25 → inputs 0 and 2, per axis; two planes (channels).
        byte[] planes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19];
        Assert.Equal(new byte[] { 1, 3, 7, 9, 11, 13, 17, 19 }, PilResampler.Resize(planes, 2, 3, 3, 2, 2, PilResampler.Nearest));
    }

    [Fact]
    public void A_model_prepares_images_by_resizing_bytes_then_rescaling_then_normalizing()
    {
        // ModelConfig.Prepare is the one entry train, eval and merge feed images through.
        var processor = ImageProcessor.Plain with
        {
            DoResize = true, Size = (2, 2), DoNormalize = true, ImageMean = [0.5], ImageStd = [0.25], Resample = PilResampler.Bilinear,
        };
        var config = ModelTests.TinyMlp() with { InputSize = 4, Preprocessor = processor };
        byte[] image = Flat([[10, 20, 30, 41], [50, 60, 70, 80], [90, 100, 110, 121], [200, 210, 220, 255]]);
        var set = new ImageSet(tensor(image, [1, 1, 4, 4]).to(ScalarType.Float32).div(255), [0], ["x"]);
        using var prepared = config.Prepare(set, "test");
        var expected = new byte[] { 46, 62, 138, 159 }.Select(b => (float)((float)(b / 255.0) - 0.5f) / 0.25f).ToArray();
        Assert.Equal(expected, prepared.Images.reshape(-1).data<float>().ToArray(), new FloatTolerance(1e-6f));
    }
}
