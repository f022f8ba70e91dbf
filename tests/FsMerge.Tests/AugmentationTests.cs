using FsMerge.Data;
using FsMerge.IO;
using FsMerge.Merging;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Augmented merge data (spec §11.3), merge-set composition and the target-feature cache (§11.4-11.5).</summary>
[Collection("torch")]
public class AugmentationTests
{
    static ImageSet Originals(int n, int c = 1, int h = 28, int w = 28, ulong seed = 1) =>
        new(torch.rand(new long[] { n, c, h, w }, generator: new Generator(seed)),
            Enumerable.Range(0, n).Select(i => (long)(i % 3)).ToArray(), ["a", "b", "c"]);

    /// <summary>[1, H, W] from rows of values.</summary>
    static Tensor Image(float[,] values) => torch.tensor(values).unsqueeze(0);

    static float[] Values(Tensor t) => t.contiguous().data<float>().ToArray();

    // ------------------------------------------------------------------ Augment

    [Fact]
    public void Same_seed_gives_bit_identical_output_and_different_seeds_differ()
    {
        var originals = Originals(10);
        var a = Augmentation.Augment(originals, 24, seed: 5);
        var b = Augmentation.Augment(originals, 24, seed: 5);
        var c = Augmentation.Augment(originals, 24, seed: 6);
        Assert.True(a.Images.Equals(b.Images));
        Assert.False(a.Images.Equals(c.Images));
        Assert.Equal(a.Labels, b.Labels);
    }

    [Theory]
    [InlineData(1, 28, 28)]
    [InlineData(3, 12, 16)]
    public void Shapes_dtype_and_the_unit_range_are_kept(int c, int h, int w)
    {
        var originals = Originals(7, c, h, w);
        var aug = Augmentation.Augment(originals, 9, seed: 2);
        Assert.Equal(new long[] { 9, c, h, w }, aug.Images.shape);
        Assert.Equal(ScalarType.Float32, aug.Images.dtype);
        Assert.True(aug.Images.ge(0).all().item<bool>());
        Assert.True(aug.Images.le(1).all().item<bool>());
        Assert.Equal(originals.LabelNames, aug.LabelNames);
        Assert.True(originals.Images.Equals(Originals(7, c, h, w).Images)); // the originals are untouched
    }

    [Fact]
    public void A_count_beyond_the_originals_cycles_passes_and_a_shorter_request_is_a_prefix()
    {
        var originals = Originals(3);
        var aug = Augmentation.Augment(originals, 8, seed: 11);
        Assert.Equal(new long[] { 8, 1, 28, 28 }, aug.Images.shape);
        Assert.Equal(Enumerable.Range(0, 8).Select(i => originals.Labels[i % 3]).ToArray(), aug.Labels);
        // Passes differ: the same original augmented twice is not the same image.
        Assert.False(aug.Images[0].Equals(aug.Images[3]));
        var shorter = Augmentation.Augment(originals, 5, seed: 11);
        Assert.True(shorter.Images.Equals(aug.Images.narrow(0, 0, 5)));
        Assert.Equal(0, Augmentation.Augment(originals, 0, seed: 11).Count);
        Assert.Throws<FsMergeException>(() => Augmentation.Augment(originals, -1, seed: 11));
    }

    // ------------------------------------------------------------------ per-image helpers

    [Fact]
    public void Per_image_choices_are_uniform_crops_fair_flips_one_of_three_transforms_and_sigma_in_range()
    {
        var rng = new Random(21);
        var plans = Enumerable.Range(0, 30_000).Select(_ => Augmentation.DrawPlan(rng, 2)).ToList();
        Assert.All(plans, p => Assert.InRange(p.Top, 0, 4));
        Assert.All(plans, p => Assert.InRange(p.Left, 0, 4));
        Assert.Equal(5, plans.Select(p => p.Top).Distinct().Count());
        Assert.InRange(plans.Count(p => p.Flip) / 30_000.0, 0.48, 0.52);
        foreach (var kind in Enum.GetValues<Augmentation.Kind>())
            Assert.InRange(plans.Count(p => p.Kind == kind) / 30_000.0, 0.31, 0.355);
        var sigmas = plans.Where(p => p.Kind == Augmentation.Kind.Blur).Select(p => p.Sigma).ToList();
        Assert.All(sigmas, s => Assert.InRange(s, 0.1, 2.0));
        Assert.InRange(sigmas.Average(), 1.03, 1.07);
        Assert.All(plans.Where(p => p.Kind != Augmentation.Kind.Blur), p => Assert.Equal(0, p.Sigma));
    }

    [Fact]
    public void Crop_padding_scales_with_the_image()
    {
        Assert.Equal(4, Augmentation.CropPadding(224, 224)); // the spec's value
        Assert.Equal(2, Augmentation.CropPadding(28, 28));
        Assert.Equal(2, Augmentation.CropPadding(32, 32));
        Assert.Equal(1, Augmentation.CropPadding(2, 5));     // reflect padding must stay below the size
    }

    [Fact]
    public void Random_crop_shifts_the_window_over_the_reflect_padded_image()
    {
        var x = Image(new float[,] { { 0, 1, 2, 3 }, { 4, 5, 6, 7 }, { 8, 9, 10, 11 }, { 12, 13, 14, 15 } });
        Assert.True(Augmentation.RandomCrop(x, 1, 1, 1).Equals(x)); // centred window: identity
        // Top-left window: row -1 reflects row 1, column -1 reflects column 1.
        var topLeft = Augmentation.RandomCrop(x, 1, 0, 0);
        Assert.Equal(new float[] { 5, 4, 5, 6, 1, 0, 1, 2, 5, 4, 5, 6, 9, 8, 9, 10 }, Values(topLeft));
        // Bottom-right window: row 4 reflects row 2, column 4 reflects column 2.
        var bottomRight = Augmentation.RandomCrop(x, 1, 2, 2);
        Assert.Equal(new float[] { 5, 6, 7, 6, 9, 10, 11, 10, 13, 14, 15, 14, 9, 10, 11, 10 }, Values(bottomRight));
        // Only a row shift.
        var down = Augmentation.RandomCrop(x, 1, 2, 1);
        Assert.Equal(new float[] { 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11 }, Values(down));
    }

    [Fact]
    public void Horizontal_flip_reverses_columns_only()
    {
        var x = Image(new float[,] { { 1, 2, 3 }, { 4, 5, 6 } });
        Assert.Equal(new float[] { 3, 2, 1, 6, 5, 4 }, Values(Augmentation.HorizontalFlip(x)));
    }

    [Fact]
    public void Solarize_inverts_values_at_or_above_one_half()
    {
        var x = Image(new float[,] { { 0f, 0.25f, 0.49f, 0.5f, 0.75f, 1f } });
        Assert.Equal(new float[] { 0f, 0.25f, 0.49f, 0.5f, 0.25f, 0f }, Values(Augmentation.Solarize(x)));
        // 8-bit data: exactly the pixels PIL's threshold 128 inverts.
        var bytes = torch.arange(0, 256, dtype: ScalarType.Float32).div(255).view(1, 1, 256);
        var inverted = Augmentation.Solarize(bytes).ne(bytes);
        var expected = torch.arange(0, 256).ge(128).view(1, 1, 256);
        Assert.True(inverted.Equals(expected));
    }

    [Fact]
    public void Grayscale_is_the_identity_for_one_channel_and_luma_for_rgb()
    {
        var gray = torch.rand(1, 5, 5, generator: new Generator(3));
        Assert.True(Augmentation.Grayscale(gray).Equals(gray));
        var rgb = torch.stack(new[] { torch.full(2, 2, 1f), torch.full(2, 2, 0.5f), torch.zeros(2, 2) });
        var g = Augmentation.Grayscale(rgb);
        Assert.Equal(new long[] { 3, 2, 2 }, g.shape);
        Assert.True(torch.allclose(g, torch.full(3, 2, 2, 0.299f + 0.5f * 0.587f), atol: 1e-6));
    }

    [Fact]
    public void Gaussian_blur_is_a_normalized_separable_gaussian_with_reflect_padding()
    {
        Assert.Equal(3, Augmentation.BlurRadius(1.0));
        Assert.Equal(6, Augmentation.BlurRadius(2.0));
        Assert.Equal(1, Augmentation.BlurRadius(0.1));
        var k = Augmentation.GaussianKernel(1.0, 3);
        Assert.Equal(7, k.Length);
        Assert.Equal(1.0, k.Sum(), 5);
        Assert.Equal(Math.Exp(-0.5), k[4] / k[3], 5);

        // A constant image stays constant (reflect padding brings in no zeros).
        var flat = torch.full(1, 9, 9, 0.3f);
        Assert.True(torch.allclose(Augmentation.GaussianBlur(flat, 1.5), flat, atol: 1e-6));

        // An impulse far from the border becomes the outer product of the kernel with itself.
        var impulse = torch.zeros(1, 11, 11);
        impulse[0, 5, 5] = torch.tensor(1f);
        var blurred = Augmentation.GaussianBlur(impulse, 1.0);
        var k1 = torch.tensor(k);
        var expected = torch.zeros(1, 11, 11);
        expected[0, 2..9, 2..9] = torch.outer(k1, k1);
        Assert.True(torch.allclose(blurred, expected, atol: 1e-7));

        // At the border, reflect padding (edge not repeated): column -1 mirrors column 1, so an impulse in
        // column 1 of the top row reaches column 0 from both sides.
        var edge = torch.zeros(1, 8, 8);
        edge[0, 0, 1] = torch.tensor(1f);
        var eb = Augmentation.GaussianBlur(edge, 1.0);
        Assert.Equal(k[3] * (k[2] + k[4]), eb[0, 0, 0].item<float>(), 6);
        Assert.Equal(k[3] * (k[3] + k[1]), eb[0, 0, 1].item<float>(), 6); // offsets 0 and -2 (column -1 = 1)
        Assert.Equal(k[3] * (k[2] + k[0]), eb[0, 0, 2].item<float>(), 6); // offsets -1 and -3
        Assert.Equal(k[3] * k[1], eb[0, 0, 3].item<float>(), 6);

        // The radius is capped for images smaller than the kernel.
        Assert.Equal(new long[] { 1, 3, 3 }, Augmentation.GaussianBlur(torch.rand(1, 3, 3), 2.0).shape);
    }

    // ------------------------------------------------------------------ batch mixing

    [Fact]
    public void MixUp_in_batch_mode_pairs_j_with_the_mirror_sample()
    {
        var a = torch.full(1, 1, 2, 2, 0.2f);
        var b = torch.full(1, 1, 2, 2, 0.8f);
        var mixed = Augmentation.MixUp(torch.cat(new[] { a, b }, 0), 0.25);
        Assert.True(torch.allclose(mixed[0], torch.full(1, 2, 2, 0.25f * 0.2f + 0.75f * 0.8f), atol: 1e-6));
        Assert.True(torch.allclose(mixed[1], torch.full(1, 2, 2, 0.25f * 0.8f + 0.75f * 0.2f), atol: 1e-6));

        // Odd batch: 0 <-> 2, the middle one is left exactly as it was.
        var odd = torch.rand(3, 1, 2, 2, generator: new Generator(8));
        var m = Augmentation.MixUp(odd, 0.6);
        Assert.True(m[1].Equals(odd[1]));
        Assert.True(torch.allclose(m[0], odd[0] * 0.6f + odd[2] * 0.4f, atol: 1e-6));
        Assert.True(torch.allclose(m[2], odd[2] * 0.6f + odd[0] * 0.4f, atol: 1e-6));
    }

    [Fact]
    public void CutMix_pastes_the_box_from_the_mirror_sample()
    {
        var batch = torch.stack(new[] { torch.zeros(1, 6, 6), torch.full(1, 6, 6, 0.5f), torch.ones(1, 6, 6) });
        var box = new Augmentation.Box(1, 4, 2, 6, 1 - 12.0 / 36);
        var mixed = Augmentation.CutMix(batch, box);
        var inside = torch.zeros(6, 6, dtype: ScalarType.Bool);
        inside[1..4, 2..6] = torch.tensor(true);
        Assert.True(mixed[0, 0].masked_select(inside).eq(1).all().item<bool>());
        Assert.True(mixed[0, 0].masked_select(inside.logical_not()).eq(0).all().item<bool>());
        Assert.True(mixed[2, 0].masked_select(inside).eq(0).all().item<bool>());
        Assert.True(mixed[2, 0].masked_select(inside.logical_not()).eq(1).all().item<bool>());
        Assert.True(mixed[1].Equals(batch[1]));
        Assert.True(batch[0].eq(0).all().item<bool>()); // the input is not modified

        var rng = new Random(4);
        for (int i = 0; i < 200; i++)
        {
            double lambda = rng.NextDouble();
            var bx = Augmentation.CutMixBox(28, 20, lambda, rng);
            Assert.InRange(bx.Top, 0, bx.Bottom);
            Assert.InRange(bx.Bottom, bx.Top, 28);
            Assert.InRange(bx.Left, 0, bx.Right);
            Assert.InRange(bx.Right, bx.Left, 20);
            Assert.Equal(1 - (bx.Bottom - bx.Top) * (bx.Right - bx.Left) / 560.0, bx.Lambda, 12);
            Assert.True(bx.Lambda >= lambda - 1e-12); // clipping only shrinks the box
        }
    }

    // ------------------------------------------------------------------ random numbers

    [Theory]
    [InlineData(0.8, 0.8)]
    [InlineData(1.0, 1.0)]
    [InlineData(2.0, 5.0)]
    public void Beta_sampler_has_the_right_mean_and_variance(double a, double b)
    {
        var rng = new Random(123);
        const int draws = 40_000;
        var x = new double[draws];
        for (int i = 0; i < draws; i++) x[i] = Augmentation.SampleBeta(rng, a, b);
        Assert.All(x, v => Assert.InRange(v, 0.0, 1.0));
        double mean = x.Average(), variance = x.Select(v => (v - mean) * (v - mean)).Average();
        double expectedMean = a / (a + b);
        double expectedVariance = a * b / ((a + b) * (a + b) * (a + b + 1));
        Assert.InRange(mean, expectedMean - 0.006, expectedMean + 0.006);
        Assert.InRange(variance, expectedVariance * 0.95, expectedVariance * 1.05);
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(3.0)]
    public void Gamma_sampler_has_mean_equal_to_its_shape(double shape)
    {
        var rng = new Random(9);
        double mean = Enumerable.Range(0, 40_000).Select(_ => Augmentation.SampleGamma(rng, shape)).Average();
        Assert.InRange(mean, shape * 0.97, shape * 1.03);
    }

    // ------------------------------------------------------------------ MergeDataSet

    [Fact]
    public void Compose_puts_the_originals_first_then_the_augmented_images()
    {
        var originals = Originals(4);
        var set = MergeDataSet.Compose(originals, 6, seed: 7);
        Assert.Equal(10, set.Count);
        Assert.True(set.Images.narrow(0, 0, 4).Equals(originals.Images));
        Assert.True(set.Images.narrow(0, 4, 6).Equals(Augmentation.Augment(originals, 6, seed: 7).Images));
        Assert.Equal(originals.Labels.Concat(Enumerable.Range(0, 6).Select(i => originals.Labels[i % 4])), set.Labels);
        set.Dispose();
        Assert.Equal(4, originals.Images.shape[0]); // the originals survive disposing the composed set
        Assert.True(originals.Images.ge(0).all().item<bool>());
        Assert.Equal(4, MergeDataSet.Compose(originals, 0, seed: 7).Count);
    }

    // ------------------------------------------------------------------ FeatureCache

    [Fact]
    public void Feature_cache_computes_then_reuses_and_recomputes_when_the_model_or_images_change()
    {
        using var tmp = new TempDir();
        using var model = Model.Create(ModelTests.TinyMlp(), seed: 3, CPU);
        var images = torch.rand(300, 1, 28, 28, generator: new Generator(5)); // two batches of 256
        var path = Path.Combine(tmp.Path, "t0.safetensors");

        var first = FeatureCache.TargetFeatures(model, images, tmp.Path, "t0");
        Assert.Equal(new long[] { 300, 8 }, first.shape);
        Assert.Equal(ScalarType.Float32, first.dtype);
        Assert.True(File.Exists(path));
        using (no_grad()) Assert.True(torch.allclose(first, model.Features(images), atol: 1e-6));
        using (var content = Safetensors.Read(path))
        {
            Assert.Equal("300", content.Metadata["count"]);
            Assert.Equal(64, content.Metadata["images_sha256"].Length);
            Assert.Equal(64, content.Metadata["model_sha256"].Length);
        }

        var second = FeatureCache.TargetFeatures(model, images, tmp.Path, "t0");
        Assert.True(second.Equals(first));

        // A hit really reads the file: plant different features under the same metadata.
        Dictionary<string, string> metadata;
        using (var content = Safetensors.Read(path)) metadata = new(content.Metadata);
        Safetensors.Write(path, new Dictionary<string, Tensor> { ["features"] = first * 2 }, metadata);
        Assert.True(FeatureCache.TargetFeatures(model, images, tmp.Path, "t0").Equals(first * 2));

        // Changed images: recomputed.
        var other = images.clone();
        other[0, 0, 0, 0] = torch.tensor(images[0, 0, 0, 0].item<float>() + 0.5f);
        var third = FeatureCache.TargetFeatures(model, other, tmp.Path, "t0");
        using (no_grad()) Assert.True(torch.allclose(third, model.Features(other), atol: 1e-6));

        // Changed model (one weight): recomputed.
        var name = model.Weights.Keys.First();
        model.Weights[name] = model.Weights[name] + 0.01f;
        var fourth = FeatureCache.TargetFeatures(model, other, tmp.Path, "t0");
        using (no_grad()) Assert.True(torch.allclose(fourth, model.Features(other), atol: 1e-6));
        Assert.False(fourth.Equals(third));

        // A damaged file is recomputed, not an error.
        File.WriteAllBytes(path, [1, 2, 3]);
        Assert.True(FeatureCache.TargetFeatures(model, other, tmp.Path, "t0").Equals(fourth));

        Assert.Throws<FsMergeException>(() => FeatureCache.TargetFeatures(model, images, tmp.Path, "../x"));
    }
}
