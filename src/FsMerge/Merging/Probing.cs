using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>Collects a model's intermediate values (named by site, see <see cref="Probe"/>) on a set of images.</summary>
internal static class Probing
{
    public const int BatchSize = 256;

    public static Dictionary<string, Tensor> Collect(Model model, Tensor images, IReadOnlyCollection<string> points)
    {
        var parts = points.ToDictionary(p => p, _ => new List<Tensor>());
        ForEachBatch(images, batch => model.Features(batch, (point, value) =>
        {
            if (parts.TryGetValue(point, out var list)) list.Add(value.detach().clone().MoveToOuterDisposeScope());
        }));
        foreach (var (point, list) in parts)
            if (list.Count == 0) throw new InvalidOperationException($"the {model.Config.Architecture} forward never reports '{point}'");
        return parts.ToDictionary(kv => kv.Key, kv => CatAndFree(kv.Value));
    }

    /// <summary>The model's features (its heads' input) on the images, in batches, without gradients.</summary>
    public static Tensor Features(Model model, Tensor images)
    {
        var parts = new List<Tensor>();
        ForEachBatch(images, batch => parts.Add(model.Features(batch).MoveToOuterDisposeScope()));
        return CatAndFree(parts);
    }

    /// <summary>
    /// Runs <paramref name="body"/> on each batch of <see cref="BatchSize"/> images without gradients, freeing the
    /// forward's intermediates with each batch rather than at some later GC: left to the GC they held about
    /// 80 MB per batch of 256 tiny-ViT images (bench perf's peak memory). What the body keeps it moves out.
    /// </summary>
    static void ForEachBatch(Tensor images, Action<Tensor> body)
    {
        using var _ = torch.no_grad();
        for (long start = 0; start < images.shape[0]; start += BatchSize)
        {
            using var batchScope = torch.NewDisposeScope();
            body(images.narrow(0, start, Math.Min(BatchSize, images.shape[0] - start)));
        }
    }

    static Tensor CatAndFree(List<Tensor> parts)
    {
        var all = torch.cat(parts, 0);
        foreach (var part in parts) part.Dispose();
        return all;
    }

    /// <summary>One probe point of every source on the union of all tasks' merge images.</summary>
    public static List<Tensor> OnAllData(MergeInputs inputs, string point) =>
        OnAllData(inputs, [point]).Select(byPoint => byPoint[point]).ToList();

    /// <summary>
    /// Several probe points of every source (one forward pass per source), on the union of all tasks' merge
    /// images, or on <paramref name="maxImages"/> of them evenly spaced (token rows of every layer of N
    /// transformers outgrow memory quickly).
    /// </summary>
    public static List<Dictionary<string, Tensor>> OnAllData(MergeInputs inputs, IReadOnlyCollection<string> points, int? maxImages = null)
    {
        var images = AllImages(inputs, maxImages);
        return inputs.Sources.Select(m => Collect(m, images, points)).ToList();
    }

    /// <summary>
    /// The merge images whose activations give the activation-matching methods' correlations (ZipIt, Re-Basin's
    /// activation matching and their use as starts): evenly spaced, as Opt and CCA take theirs. Every probe point of
    /// N transformers on every token is held at once: four ViTs on 4,400 images (17 tokens each) ran out of memory.
    /// Pairs of the benches (1,632 images at most) are unaffected.
    /// </summary>
    public const int MatchingImages = 2048;

    /// <summary>Every task's merge images in task order, or <paramref name="maxImages"/> of them evenly spaced.</summary>
    public static Tensor AllImages(MergeInputs inputs, int? maxImages = null)
    {
        var images = torch.cat(Enumerable.Range(0, inputs.Data.Count).Select(inputs.Images).ToArray(), 0);
        if (maxImages is { } most && images.shape[0] > most)
            images = images.index_select(0, torch.linspace(0, images.shape[0] - 1, most).to(ScalarType.Int64).to(images.device));
        return images;
    }

    /// <summary>Pearson correlation [p, q] (float64) between the columns of <paramref name="a"/> [n, p] and <paramref name="b"/> [n, q].</summary>
    public static Tensor Correlation(Tensor a, Tensor b)
    {
        static Tensor Standardize(Tensor x)
        {
            var x64 = x.to(ScalarType.Float64);
            var centered = x64 - x64.mean([0], keepdim: true);
            return centered / (centered.pow(2).mean([0], keepdim: true).sqrt() + 1e-8);
        }
        return Standardize(a).t().matmul(Standardize(b)) / a.shape[0];
    }
}
