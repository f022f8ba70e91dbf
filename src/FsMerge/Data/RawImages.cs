using TorchSharp;

namespace FsMerge.Data;

/// <summary>Decoded images as bytes [n, C, H, W] with class ids 0..K-1, before any split or filtering.</summary>
internal sealed class RawImages : IRawSamples
{
    public required byte[] Pixels { get; init; }
    public required long[] Labels { get; init; }
    public required int Channels { get; init; }
    public required int Height { get; init; }
    public required int Width { get; init; }

    public int Count => Labels.Length;
    public int ImageSize => Channels * Height * Width;

    /// <summary>Selects samples (in the given order) and maps their labels through <paramref name="relabel"/>
    /// (null = keep), into a float32 [n, C, H, W] tensor scaled to [0, 1].</summary>
    public ImageSet Select(IReadOnlyList<int> indices, long[]? relabel, string[] labelNames)
    {
        int size = ImageSize;
        var pixels = new byte[(long)indices.Count * size];
        var labels = new long[indices.Count];
        for (int i = 0; i < indices.Count; i++)
        {
            int k = indices[i];
            Array.Copy(Pixels, (long)k * size, pixels, (long)i * size, size);
            labels[i] = relabel is null ? Labels[k] : relabel[Labels[k]];
        }
        return new ImageSet(ToTensor(pixels, indices.Count, Channels, Height, Width), labels, labelNames);
    }

    public ImageSet All(string[] labelNames)
        => new(ToTensor(Pixels, Count, Channels, Height, Width), (long[])Labels.Clone(), labelNames);

    internal static torch.Tensor ToTensor(byte[] pixels, int n, int c, int h, int w)
    {
        using var scope = torch.NewDisposeScope();
        var bytes = torch.tensor(pixels, new long[] { n, c, h, w }, dtype: torch.ScalarType.Byte);
        var images = bytes.to_type(torch.ScalarType.Float32).div_(255f);
        return images.MoveToOuterDisposeScope();
    }
}
