using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Data;

/// <summary>
/// The augmented merge images of spec §11.3, made from a task's original merge images.
/// <para>
/// Passes: pass k runs every original once, in order; the stream of passes is cut after the first
/// <c>count</c> images. Within a pass the originals go in batches of <see cref="MixBatchSize"/> (the last
/// batch of a pass may be smaller; a batch never mixes two passes, as a loader over the originals that is
/// re-run for every pass would give). Each image of a batch goes through:
/// </para>
/// <list type="number">
/// <item>RandomCrop to its own size with reflect padding <see cref="CropPadding"/> on every side.</item>
/// <item>RandomHorizontalFlip, p = 0.5.</item>
/// <item>Exactly one of, uniformly: grayscale kept with C channels, solarize (v ≥ 0.5 → 1 − v), Gaussian
/// blur with σ ~ U[0.1, 2.0].</item>
/// </list>
/// <para>
/// then the whole batch goes through MixUp/CutMix in timm's 'batch' mode: one λ per batch; sample j is mixed
/// with sample B−1−j. With probability 0.5 MixUp, λ ~ Beta(0.8, 0.8), x = λx + (1−λ)x_flipped; otherwise
/// CutMix, λ ~ Beta(1, 1), a box of area fraction ≈ 1−λ (centre uniform, clipped to the image) pasted from
/// the flipped batch.
/// </para>
/// <para>Choices where the spec describes 224×224 RGB images:</para>
/// <list type="bullet">
/// <item>Crop padding: the spec's 4 pixels at 224 scaled to the image, but at least 2 (the usual ±2-pixel
/// shift for 28×28 digits): max(2, round(4·min(H, W)/224)), at most min(H, W) − 1 (reflect padding needs it).
/// 224 → 4 (the spec), 28 → 2.</item>
/// <item>Grayscale for C = 1 is the identity, kept as such (not replaced by another transform): this is what
/// the reference does on grayscale datasets such as MNIST, whose images it converts to three equal channels.
/// C = 3 uses the ITU-R 601-2 luma weights (PIL's "L" conversion); any other C uses the channel mean. The
/// result is repeated over the C channels.</item>
/// <item>No 8-bit round trip: images stay float32 in [0, 1]. Solarize's PIL threshold 128 becomes 0.5,
/// which selects exactly the same pixels for images that came from 8-bit data (127/255 &lt; 0.5 &lt; 128/255).
/// PIL's GaussianBlur radius is the standard deviation σ; the blur here is an exact separable Gaussian,
/// kernel radius ceil(3σ) (at most min(H, W) − 1), reflect padding.</item>
/// <item>timm refuses odd batches in batch mode. Here the last batch of a pass may be odd; its middle element
/// pairs with itself and is left exactly unmixed.</item>
/// <item>CutMix's λ is corrected to the box actually pasted (timm's correct_lam); it only matters for labels,
/// which are not mixed: every augmented image keeps its source image's label (merging never reads labels).</item>
/// </list>
/// <para>
/// All randomness comes from one <see cref="Random"/> seeded from <c>seed</c>, drawn in a fixed order (per
/// batch: every image's crop, flip, choice and σ, then the batch's mix); the tensor work is deterministic, so
/// the same seed gives bit-identical images, and a shorter request gives a prefix of a longer one.
/// </para>
/// </summary>
internal static class Augmentation
{
    public const int MixBatchSize = 128;
    public const double FlipProbability = 0.5;
    public const double SolarizeThreshold = 0.5;
    public const double BlurSigmaMin = 0.1, BlurSigmaMax = 2.0;
    public const double MixUpAlpha = 0.8, CutMixAlpha = 1.0, CutMixProbability = 0.5;

    /// <summary>The per-image colour/blur transform (step 3).</summary>
    internal enum Kind { Grayscale, Solarize, Blur }

    /// <summary><paramref name="count"/> augmented images made from <paramref name="originals"/> (see the class
    /// summary). The result's tensor is new and belongs to the caller's dispose scope, like any op result.</summary>
    public static ImageSet Augment(ImageSet originals, int count, long seed)
    {
        ArgumentNullException.ThrowIfNull(originals);
        if (count < 0) throw new FsMergeException($"augmented image count {count} is negative, expected 0 or more");
        var images = originals.Images;
        if (images.dim() != 4)
            throw new FsMergeException($"augmentation expects images [n, C, H, W], got [{string.Join(", ", images.shape)}]");
        long n = images.shape[0], c = images.shape[1], h = images.shape[2], w = images.shape[3];
        if (n != originals.Count)
            throw new FsMergeException($"augmentation: {n} images but {originals.Count} labels");
        if (count > 0 && n == 0) throw new FsMergeException("augmentation: no original images to augment");
        if (count > 0 && (h < 2 || w < 2))
            throw new FsMergeException($"augmentation: images of {h}x{w} are too small (reflect padding needs at least 2x2)");

        var labels = new long[count];
        for (int i = 0; i < count; i++) labels[i] = originals.Labels[i % n];
        if (count == 0)
            return new ImageSet(torch.empty(new[] { 0L, c, h, w }, ScalarType.Float32), labels, originals.LabelNames);

        var rng = new Random(SeedOf(seed));
        int padding = CropPadding((int)h, (int)w);
        Tensor result;
        using (var scope = torch.NewDisposeScope())
        {
            var source = images.to(ScalarType.Float32).cpu();
            var batches = new List<Tensor>();
            long made = 0;
            while (made < count)
            {
                for (long start = 0; start < n && made < count; start += MixBatchSize)
                {
                    long size = Math.Min(MixBatchSize, n - start);
                    using (var batchScope = torch.NewDisposeScope()) // frees each batch's intermediates
                        batches.Add(AugmentBatch(source.narrow(0, start, size), padding, rng).MoveToOuterDisposeScope());
                    made += size;
                }
            }
            var all = batches.Count == 1 ? batches[0] : torch.cat(batches, 0);
            result = all.narrow(0, 0, count).contiguous().MoveToOuterDisposeScope();
        }
        return new ImageSet(result, labels, originals.LabelNames);
    }

    /// <summary>One batch of originals [B, C, H, W]: per-image transforms, then the batch's MixUp/CutMix.</summary>
    static Tensor AugmentBatch(Tensor originals, int padding, Random rng)
    {
        long b = originals.shape[0];
        var padded = ReflectPad(originals, padding, padding);
        var outputs = new Tensor[b];
        for (long j = 0; j < b; j++)
        {
            var plan = DrawPlan(rng, padding);
            var x = CropPadded(padded[j], originals.shape[2], originals.shape[3], plan.Top, plan.Left);
            if (plan.Flip) x = HorizontalFlip(x);
            x = plan.Kind switch
            {
                Kind.Grayscale => Grayscale(x),
                Kind.Solarize => Solarize(x),
                _ => GaussianBlur(x, plan.Sigma),
            };
            outputs[j] = x;
        }
        var batch = torch.stack(outputs, 0);

        bool cutmix = rng.NextDouble() < CutMixProbability;
        if (cutmix)
        {
            double lambda = SampleBeta(rng, CutMixAlpha, CutMixAlpha);
            var box = CutMixBox((int)batch.shape[2], (int)batch.shape[3], lambda, rng);
            return CutMix(batch, box);
        }
        else
        {
            double lambda = SampleBeta(rng, MixUpAlpha, MixUpAlpha);
            return MixUp(batch, lambda);
        }
    }

    // ------------------------------------------------------------------ per-image transforms (image [C, H, W])

    /// <summary>One image's random choices: crop offsets in [0, 2·padding], flip, transform, σ (Blur only, else 0).</summary>
    internal readonly record struct ImagePlan(int Top, int Left, bool Flip, Kind Kind, double Sigma);

    /// <summary>Draws one image's choices, in this order: top, left, flip, kind, then σ if the kind is Blur.</summary>
    internal static ImagePlan DrawPlan(Random rng, int padding)
    {
        int top = rng.Next(0, 2 * padding + 1), left = rng.Next(0, 2 * padding + 1);
        bool flip = rng.NextDouble() < FlipProbability;
        var kind = (Kind)rng.Next(3);
        double sigma = kind == Kind.Blur ? BlurSigmaMin + (BlurSigmaMax - BlurSigmaMin) * rng.NextDouble() : 0;
        return new ImagePlan(top, left, flip, kind, sigma);
    }

    /// <summary>Reflect padding for RandomCrop: the spec's 4 px at 224 scaled, at least 2, below min(H, W).</summary>
    internal static int CropPadding(int height, int width)
    {
        int side = Math.Min(height, width);
        int scaled = (int)Math.Round(4.0 * side / 224.0, MidpointRounding.AwayFromZero);
        return Math.Max(1, Math.Min(Math.Max(2, scaled), side - 1));
    }

    /// <summary>Reflect-pads the last two dims of [C, H, W] or [B, C, H, W] (rows by <paramref name="rows"/>,
    /// columns by <paramref name="columns"/> on each side).</summary>
    internal static Tensor ReflectPad(Tensor x, int rows, int columns)
    {
        if (rows == 0 && columns == 0) return x;
        bool single = x.dim() == 3;
        var x4 = single ? x.unsqueeze(0) : x;
        var padded = torch.nn.functional.pad(x4, new long[] { columns, columns, rows, rows }, PaddingModes.Reflect);
        return single ? padded.squeeze(0) : padded;
    }

    /// <summary>RandomCrop with given offsets: reflect-pad by <paramref name="padding"/> and take the H×W window
    /// whose top-left corner is (<paramref name="top"/>, <paramref name="left"/>) in the padded image, each in
    /// [0, 2·padding]. (padding, padding) is the identity.</summary>
    internal static Tensor RandomCrop(Tensor image, int padding, int top, int left) =>
        CropPadded(ReflectPad(image, padding, padding), image.shape[1], image.shape[2], top, left);

    static Tensor CropPadded(Tensor padded, long height, long width, int top, int left) =>
        padded.narrow(1, top, height).narrow(2, left, width);

    internal static Tensor HorizontalFlip(Tensor image) => image.flip(-1);

    /// <summary>Grayscale kept with C channels: identity for C = 1, ITU-R 601-2 luma for C = 3, channel mean otherwise.</summary>
    internal static Tensor Grayscale(Tensor image)
    {
        long c = image.shape[0];
        if (c == 1) return image;
        Tensor luma = c == 3
            ? (image[0] * 0.299f + image[1] * 0.587f + image[2] * 0.114f).unsqueeze(0)
            : image.mean(new long[] { 0 }, keepdim: true);
        return luma.clamp(0, 1).expand(image.shape).contiguous();
    }

    /// <summary>Inverts every value at or above <paramref name="threshold"/>: v → 1 − v.</summary>
    internal static Tensor Solarize(Tensor image, double threshold = SolarizeThreshold) =>
        torch.where(image.ge(threshold), 1 - image, image);

    /// <summary>Kernel radius for σ: ceil(3σ), at least 1.</summary>
    internal static int BlurRadius(double sigma) => Math.Max(1, (int)Math.Ceiling(3 * sigma));

    /// <summary>The normalized 1-D Gaussian kernel exp(−k²/2σ²), k = −radius..radius.</summary>
    internal static float[] GaussianKernel(double sigma, int radius)
    {
        var weights = new double[2 * radius + 1];
        double total = 0;
        for (int k = -radius; k <= radius; k++) total += weights[k + radius] = Math.Exp(-k * k / (2 * sigma * sigma));
        return weights.Select(v => (float)(v / total)).ToArray();
    }

    /// <summary>Separable Gaussian blur of [C, H, W] with reflect padding; the radius is ceil(3σ), capped at
    /// min(H, W) − 1 (reflect padding cannot reach further).</summary>
    internal static Tensor GaussianBlur(Tensor image, double sigma)
    {
        if (!(sigma > 0)) throw new ArgumentOutOfRangeException(nameof(sigma), sigma, "expected σ > 0");
        long h = image.shape[1], w = image.shape[2];
        int radius = (int)Math.Min(BlurRadius(sigma), Math.Min(h, w) - 1);
        if (radius < 1) return image;
        var kernel = GaussianKernel(sigma, radius);
        var x = image.unsqueeze(0);
        // Rows, then columns: a weighted sum of shifted slices of the reflect-padded image (no convolution
        // kernel: LibTorch's CPU conv2d tries NNPACK on every call and warns where the CPU lacks it).
        Tensor Blur1d(Tensor padded, int dim, long size)
        {
            Tensor? sum = null;
            for (int j = 0; j < kernel.Length; j++)
            {
                var term = padded.narrow(dim, j, size) * kernel[j];
                sum = sum is null ? term : sum.add_(term);
            }
            return sum!;
        }
        x = Blur1d(ReflectPad(x, 0, radius), 3, w);
        x = Blur1d(ReflectPad(x, radius, 0), 2, h);
        return x.squeeze(0).clamp(0, 1);
    }

    // ------------------------------------------------------------------ batch mixing ('batch' mode)

    /// <summary>x_j = λ·x_j + (1−λ)·x_{B−1−j}; for odd B the middle element is kept exactly.</summary>
    internal static Tensor MixUp(Tensor batch, double lambda)
    {
        var mixed = (batch * (float)lambda).add_(batch.flip(0) * (float)(1 - lambda)).clamp_(0, 1);
        long b = batch.shape[0];
        if (b % 2 == 1) mixed[b / 2] = batch[b / 2];
        return mixed;
    }

    /// <summary>A CutMix box [Top, Bottom) × [Left, Right) for λ: sides H·√(1−λ) and W·√(1−λ), centre
    /// uniform over the image, clipped to it; Lambda is corrected to 1 − (box area)/(H·W).</summary>
    internal readonly record struct Box(int Top, int Bottom, int Left, int Right, double Lambda);

    internal static Box CutMixBox(int height, int width, double lambda, Random rng)
    {
        double ratio = Math.Sqrt(Math.Clamp(1 - lambda, 0, 1));
        int cutH = (int)(height * ratio), cutW = (int)(width * ratio);
        int cy = rng.Next(height), cx = rng.Next(width);
        int top = Math.Clamp(cy - cutH / 2, 0, height), bottom = Math.Clamp(cy - cutH / 2 + cutH, 0, height);
        int left = Math.Clamp(cx - cutW / 2, 0, width), right = Math.Clamp(cx - cutW / 2 + cutW, 0, width);
        double corrected = 1 - (double)(bottom - top) * (right - left) / ((double)height * width);
        return new Box(top, bottom, left, right, corrected);
    }

    /// <summary>Pastes the box of sample B−1−j into sample j (the middle of an odd batch pastes from itself).</summary>
    internal static Tensor CutMix(Tensor batch, Box box)
    {
        var mixed = batch.clone();
        long boxH = box.Bottom - box.Top, boxW = box.Right - box.Left;
        if (boxH > 0 && boxW > 0)
        {
            var patch = batch.flip(0).narrow(2, box.Top, boxH).narrow(3, box.Left, boxW);
            mixed.narrow(2, box.Top, boxH).narrow(3, box.Left, boxW).copy_(patch);
        }
        return mixed;
    }

    // ------------------------------------------------------------------ random numbers

    /// <summary>The 32-bit seed of <see cref="Random"/> for a 64-bit seed (both halves count).</summary>
    internal static int SeedOf(long seed) => unchecked((int)(seed ^ (seed >>> 32)));

    /// <summary>Beta(a, b) as X/(X+Y) with X ~ Gamma(a), Y ~ Gamma(b).</summary>
    internal static double SampleBeta(Random rng, double a, double b)
    {
        double x = SampleGamma(rng, a), y = SampleGamma(rng, b);
        double total = x + y;
        // Both gammas can underflow to 0 for tiny shapes; split evenly then (not reachable for 0.8 and 1).
        return total > 0 ? x / total : 0.5;
    }

    /// <summary>Gamma(shape, 1) by Marsaglia–Tsang (2000); shape &lt; 1 via Gamma(shape + 1)·U^(1/shape).</summary>
    internal static double SampleGamma(Random rng, double shape)
    {
        if (!(shape > 0)) throw new ArgumentOutOfRangeException(nameof(shape), shape, "expected a positive shape");
        if (shape < 1)
        {
            double u = 1 - rng.NextDouble(); // (0, 1]
            return SampleGamma(rng, shape + 1) * Math.Pow(u, 1 / shape);
        }
        double d = shape - 1.0 / 3, c = 1 / Math.Sqrt(9 * d);
        while (true)
        {
            double x, v;
            do
            {
                x = StandardNormal(rng);
                v = 1 + c * x;
            } while (v <= 0);
            v = v * v * v;
            double u = 1 - rng.NextDouble(); // (0, 1], so the log is finite
            if (u < 1 - 0.0331 * x * x * x * x) return d * v;
            if (Math.Log(u) < 0.5 * x * x + d * (1 - v + Math.Log(v))) return d * v;
        }
    }

    /// <summary>A standard normal draw (Box–Muller, one value per call).</summary>
    internal static double StandardNormal(Random rng)
    {
        double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}
