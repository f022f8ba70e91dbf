using System.Buffers.Binary;
using System.IO.Compression;
using FsMerge.Data;
using SkiaSharp;
using TorchSharp;
using Xunit;

namespace FsMerge.Tests;

/// <summary>A temporary folder removed at the end of the test.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("fsmerge-test-").FullName;
    public string Sub(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

public class IdxTests
{
    private static byte[] Header(byte type, params int[] dims)
    {
        var h = new byte[4 + 4 * dims.Length];
        h[2] = type;
        h[3] = (byte)dims.Length;
        for (int i = 0; i < dims.Length; i++) BinaryPrimitives.WriteInt32BigEndian(h.AsSpan(4 + 4 * i), dims[i]);
        return h;
    }

    private static byte[] Gzip(byte[] bytes)
    {
        using var output = new MemoryStream();
        using (var gz = new GZipStream(output, CompressionLevel.Fastest)) gz.Write(bytes);
        return output.ToArray();
    }

    [Fact]
    public void Reads_hand_built_plain_and_gzip_files()
    {
        using var tmp = new TempDir();
        var data = Enumerable.Range(0, 2 * 3 * 4).Select(i => (byte)(i * 7)).ToArray();
        var bytes = Header(0x08, 2, 3, 4).Concat(data).ToArray();
        var plain = tmp.Sub("images");          // no extension: gzip is found from the magic bytes
        var gz = tmp.Sub("images.bin");
        File.WriteAllBytes(plain, bytes);
        File.WriteAllBytes(gz, Gzip(bytes));
        foreach (var path in new[] { plain, gz })
        {
            var (read, dims) = Idx.Read(path);
            Assert.Equal(new[] { 2, 3, 4 }, dims);
            Assert.Equal(data, read);
        }
    }

    [Fact]
    public void Write_then_read_round_trips_plain_and_gzip()
    {
        using var tmp = new TempDir();
        var data = new byte[] { 0, 1, 2, 255, 254 };
        foreach (var name in new[] { "labels-idx1-ubyte", "labels-idx1-ubyte.gz" })
        {
            var path = tmp.Sub(name);
            Idx.Write(path, data, [5]);
            var raw = File.ReadAllBytes(path);
            Assert.Equal(name.EndsWith(".gz"), raw[0] == 0x1f && raw[1] == 0x8b);
            var (read, dims) = Idx.Read(path);
            Assert.Equal(new[] { 5 }, dims);
            Assert.Equal(data, read);
        }
        Assert.Equal(2, Directory.GetFiles(tmp.Path).Length); // no temporaries left behind
    }

    [Fact]
    public void Rejects_bad_files_naming_the_path()
    {
        using var tmp = new TempDir();
        void Expect(string name, byte[] bytes, string fragment)
        {
            var path = tmp.Sub(name);
            File.WriteAllBytes(path, bytes);
            var e = Assert.Throws<FsMergeException>(() => Idx.Read(path));
            Assert.Contains(path, e.Message);
            Assert.Contains(fragment, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        var good = Header(0x08, 2, 2).Concat(new byte[4]).ToArray();
        Expect("magic", [0x12, 0x34, 0x08, 0x01, 0, 0, 0, 0], "magic");
        Expect("type", Header(0x0D, 1).Concat(new byte[4]).ToArray(), "0x0d");
        Expect("long", good.Concat(new byte[3]).ToArray(), "after the data");
        Expect("short", good[..^1], "truncated IDX data");
        Expect("header", good[..6], "truncated IDX header");
        Expect("tiny", [0, 0], "not an IDX file");
        Expect("gz-tiny", Gzip(good)[..12], "gzip");
        var noisy = Header(0x08, 4000).Concat(Enumerable.Range(0, 4000).Select(i => (byte)(i * 7919 % 251))).ToArray();
        var noisyGz = Gzip(noisy);
        Expect("gz-truncated", noisyGz[..(noisyGz.Length / 2)], "truncated gzip");
        Expect("gz-short", Gzip(good[..^2]), "truncated IDX data");
        var missing = tmp.Sub("nope");
        Assert.Contains(missing, Assert.Throws<FsMergeException>(() => Idx.Read(missing)).Message);
    }
}

public class TaskSpecTests
{
    [Theory]
    [InlineData("mnist", "mnist", null)]
    [InlineData(" fashion ", "fashion", null)]
    [InlineData("mnist:0-4", "mnist:0-4", new[] { 0, 1, 2, 3, 4 })]
    [InlineData("fashion:5-9", "fashion:5-9", new[] { 5, 6, 7, 8, 9 })]
    [InlineData("mnist:0,3,7", "mnist:0,3,7", new[] { 0, 3, 7 })]
    [InlineData("mydata:1-2,5", "mydata:1-2,5", new[] { 1, 2, 5 })]
    [InlineData("mnist:0,1,2,3, 4", "mnist:0-4", new[] { 0, 1, 2, 3, 4 })]
    [InlineData("mnist:4,3", "mnist:4,3", new[] { 4, 3 })]
    [InlineData("mnist:7-7", "mnist:7", new[] { 7 })]
    [InlineData("my_data-2.v1:12", "my_data-2.v1:12", new[] { 12 })]
    public void Parses_valid_forms_to_canonical_text(string text, string canonical, int[]? classes)
    {
        var spec = TaskSpec.Parse(text);
        Assert.Equal(canonical, spec.ToString());
        Assert.Equal(classes, spec.Classes);
        Assert.Equal(spec, TaskSpec.Parse(spec.ToString()));
    }

    [Theory]
    [InlineData("")]
    [InlineData("mnist:")]
    [InlineData("mnist:5-2")]
    [InlineData("mnist:a")]
    [InlineData(":1")]
    [InlineData("mnist:1,,2")]
    [InlineData("mnist:1-")]
    [InlineData("mnist:-1")]
    [InlineData("mnist:0-3-4")]
    [InlineData("mnist:1,1")]
    [InlineData("mnist:10")]
    [InlineData("fashion:3-12")]
    [InlineData("../etc:1")]
    [InlineData("a/b")]
    [InlineData("mnist:+1")]
    [InlineData("mnist:99999999")]
    public void Rejects_malformed_task_strings(string text)
    {
        var e = Assert.Throws<FsMergeException>(() => TaskSpec.Parse(text));
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Equality_compares_class_lists_by_value()
    {
        Assert.Equal(TaskSpec.Parse("mnist:0-4"), new TaskSpec("mnist", [0, 1, 2, 3, 4]));
        Assert.NotEqual(TaskSpec.Parse("mnist:0-4"), TaskSpec.Parse("mnist"));
        Assert.NotEqual(TaskSpec.Parse("mnist:3,4"), TaskSpec.Parse("mnist:4,3"));
        Assert.Throws<FsMergeException>(() => new TaskSpec("mnist", []));
    }
}

[Collection("torch")]
public class DataDirectoryTests
{
    [Fact]
    public void Option_then_environment_then_repository()
    {
        var saved = Environment.GetEnvironmentVariable(DataDirectory.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(DataDirectory.EnvironmentVariable, "/tmp/from-env");
            Assert.Equal("/tmp/opt", DataDirectory.Resolve("/tmp/opt"));
            Assert.Equal("/tmp/from-env", DataDirectory.Resolve(null));
            Environment.SetEnvironmentVariable(DataDirectory.EnvironmentVariable, null);
            var resolved = DataDirectory.Resolve(null);
            Assert.Equal("data", Path.GetFileName(resolved));
            Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(resolved)!, "FsMerge.slnx")));
        }
        finally
        {
            Environment.SetEnvironmentVariable(DataDirectory.EnvironmentVariable, saved);
        }
    }
}

[Collection("torch")]
public class ImageFolderTests
{
    /// <summary>Writes a PNG: gray when <paramref name="colour"/> is false, else RGB, pixel (x, y) from <paramref name="value"/>.</summary>
    internal static void WritePng(string path, int width, int height, bool colour, Func<int, int, int, byte> value)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var info = colour
            ? new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Opaque)
            : new SKImageInfo(width, height, SKColorType.Gray8, SKAlphaType.Opaque);
        using var bitmap = new SKBitmap(info);
        int bpp = colour ? 4 : 1;
        var pixels = new byte[width * height * bpp];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                for (int c = 0; c < bpp; c++)
                    pixels[(y * width + x) * bpp + c] = c == 3 ? (byte)255 : value(c, y, x);
        System.Runtime.InteropServices.Marshal.Copy(pixels, 0, bitmap.GetPixels(), pixels.Length);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, data.ToArray());
    }

    private static byte Pattern(int seed, int c, int y, int x) => (byte)((seed * 37 + c * 80 + y * 11 + x * 3) % 256);

    [Fact]
    public void Loads_two_class_grayscale_png_folder()
    {
        using var tmp = new TempDir();
        WritePng(tmp.Sub("dog", "b.png"), 5, 4, false, (c, y, x) => Pattern(2, c, y, x));
        WritePng(tmp.Sub("cat", "z.png"), 5, 4, false, (c, y, x) => Pattern(1, c, y, x));
        WritePng(tmp.Sub("cat", "a.png"), 5, 4, false, (c, y, x) => Pattern(0, c, y, x));
        File.WriteAllText(tmp.Sub("cat", "notes.txt"), "ignored");

        var (set, files) = ImageFolder.Load(tmp.Path);
        using (set)
        {
            Assert.Equal(new long[] { 3, 1, 4, 5 }, set.Images.shape);
            Assert.Equal(TorchSharp.torch.ScalarType.Float32, set.Images.dtype);
            Assert.Equal(new long[] { 0, 0, 1 }, set.Labels);
            Assert.Equal(new[] { "cat", "dog" }, set.LabelNames);
            Assert.Equal(new[] { "a.png", "z.png", "b.png" }, files.Select(Path.GetFileName));
            for (int i = 0; i < 3; i++)
                for (int y = 0; y < 4; y++)
                    for (int x = 0; x < 5; x++)
                        Assert.Equal(Pattern(i, 0, y, x) / 255f, set.Images[i, 0, y, x].ToSingle(), 6);
        }
    }

    [Fact]
    public void Colour_png_gives_three_channels_in_rgb_order()
    {
        using var tmp = new TempDir();
        WritePng(tmp.Sub("only", "x.png"), 3, 2, true, (c, y, x) => Pattern(5, c, y, x));
        var (set, _) = ImageFolder.Load(tmp.Path);
        using (set)
        {
            Assert.Equal(new long[] { 1, 3, 2, 3 }, set.Images.shape);
            for (int c = 0; c < 3; c++)
                Assert.Equal(Pattern(5, c, 1, 2) / 255f, set.Images[0, c, 1, 2].ToSingle(), 6);
        }
    }

    [Fact]
    public void Decodes_jpeg_files()
    {
        using var tmp = new TempDir();
        var png = tmp.Sub("x", "a.png");
        WritePng(png, 8, 8, true, (c, _, _) => (byte)(60 + 60 * c));
        using (var bitmap = SKBitmap.Decode(png))
        using (var jpeg = bitmap.Encode(SKEncodedImageFormat.Jpeg, 95))
            File.WriteAllBytes(tmp.Sub("x", "b.JPG"), jpeg.ToArray());
        var (set, files) = ImageFolder.Load(tmp.Path);
        using (set)
        {
            Assert.Equal(new long[] { 2, 3, 8, 8 }, set.Images.shape);
            Assert.EndsWith("b.JPG", files[1]);
            for (int c = 0; c < 3; c++)
                Assert.InRange(set.Images[1, c, 4, 4].ToSingle(), (60 + 60 * c - 6) / 255f, (60 + 60 * c + 6) / 255f);
        }
    }

    [Fact]
    public void Rejects_mismatched_size_naming_the_file()
    {
        using var tmp = new TempDir();
        WritePng(tmp.Sub("a", "1.png"), 4, 4, false, (_, _, _) => 1);
        var odd = tmp.Sub("b", "2.png");
        WritePng(odd, 4, 5, false, (_, _, _) => 1);
        var e = Assert.Throws<FsMergeException>(() => ImageFolder.Load(tmp.Path));
        Assert.Contains(odd, e.Message);

        var colour = tmp.Sub("a", "3.png");
        File.Delete(odd);
        WritePng(odd, 4, 4, false, (_, _, _) => 1);
        WritePng(colour, 4, 4, true, (_, _, _) => 1);
        Assert.Contains(colour, Assert.Throws<FsMergeException>(() => ImageFolder.Load(tmp.Path)).Message);
    }

    [Fact]
    public void Rejects_empty_and_undecodable_folders()
    {
        using var tmp = new TempDir();
        Assert.Contains(tmp.Path, Assert.Throws<FsMergeException>(() => ImageFolder.Load(tmp.Path)).Message);
        Directory.CreateDirectory(tmp.Sub("empty"));
        Assert.Contains(tmp.Sub("empty"), Assert.Throws<FsMergeException>(() => ImageFolder.Load(tmp.Path)).Message);
        File.WriteAllText(tmp.Sub("empty", "fake.png"), "not a png");
        Assert.Contains(tmp.Sub("empty", "fake.png"), Assert.Throws<FsMergeException>(() => ImageFolder.Load(tmp.Path)).Message);
        Assert.Throws<FsMergeException>(() => ImageFolder.Load(tmp.Sub("missing")));
    }

    [Fact]
    public void Image_folder_dataset_loads_as_a_task()
    {
        using var tmp = new TempDir();
        foreach (var split in new[] { "train", "test" })
            foreach (var cls in new[] { "ant", "bee", "cow" })
                for (int i = 0; i < (split == "train" ? 10 : 2); i++)
                    WritePng(tmp.Sub("pics", split, cls, $"{i}.png"), 3, 3, false, (_, _, _) => (byte)i);
        using var splits = TaskData.Load(TaskSpec.Parse("pics:2,0"), tmp.Path);
        Assert.Equal(new[] { "cow", "ant" }, splits.Test.LabelNames);
        Assert.Equal(20, splits.Train.Count + splits.Validation.Count);
        Assert.Equal(new long[] { splits.Train.Count, 1, 3, 3 }, splits.Train.Images.shape);
        using (var all = TaskData.Load(TaskSpec.Parse("pics"), tmp.Path))
        {
            Assert.Equal(3, all.Validation.Count);
            Assert.Equal(27, all.Train.Count);
            Assert.Equal(new[] { "ant", "bee", "cow" }, all.Train.LabelNames);
        }
        Assert.Equal(new long[] { 1, 1, 0, 0 }, splits.Test.Labels);

        Directory.Delete(tmp.Sub("pics", "test", "bee"), recursive: true);
        var e = Assert.Throws<FsMergeException>(() => TaskData.Load(TaskSpec.Parse("pics"), tmp.Path));
        Assert.Contains("bee", e.Message);
    }
}

[Collection("torch")]
public class SplitTests
{
    /// <summary>A toy IDX dataset: image i of a split has pixel 0 = i % 256, pixel 1 = i / 256, pixel 2 = split
    /// (0 train, 1 test); label = i % 5.</summary>
    private static void WriteToy(string folder, int train, int test, bool gzip)
    {
        foreach (var (prefix, n, tag) in new[] { ("train", train, 0), ("t10k", test, 1) })
        {
            var images = new byte[n * 16];
            var labels = new byte[n];
            for (int i = 0; i < n; i++)
            {
                images[i * 16] = (byte)(i % 256);
                images[i * 16 + 1] = (byte)(i / 256);
                images[i * 16 + 2] = (byte)tag;
                labels[i] = (byte)(i % 5);
            }
            var ext = gzip ? ".gz" : "";
            Idx.Write(Path.Combine(folder, $"{prefix}-images-idx3-ubyte{ext}"), images, [n, 4, 4]);
            Idx.Write(Path.Combine(folder, $"{prefix}-labels-idx1-ubyte{ext}"), labels, [n]);
        }
    }

    private static int[] Ids(ImageSet set)
    {
        var px = (set.Images * 255f).round().to_type(TorchSharp.torch.ScalarType.Int32);
        var ids = new int[set.Count];
        for (int i = 0; i < set.Count; i++) ids[i] = px[i, 0, 0, 0].ToInt32() + 256 * px[i, 0, 0, 1].ToInt32();
        return ids;
    }

    [Fact]
    public void Splits_are_deterministic_disjoint_and_independent_of_the_task()
    {
        using var tmp = new TempDir();
        WriteToy(tmp.Sub("toy"), 300, 50, gzip: false);

        using var all = TaskData.Load(TaskSpec.Parse("toy"), tmp.Path);
        Assert.Equal(270, all.Train.Count);
        Assert.Equal(30, all.Validation.Count);
        Assert.Equal(50, all.Test.Count);
        Assert.Equal(new long[] { 270, 1, 4, 4 }, all.Train.Images.shape);
        Assert.Equal(new[] { "0", "1", "2", "3", "4" }, all.Train.LabelNames);
        var trainIds = Ids(all.Train);
        var validationIds = Ids(all.Validation);
        Assert.Empty(trainIds.Intersect(validationIds));
        Assert.Equal(Enumerable.Range(0, 300), trainIds.Concat(validationIds).Order());
        Assert.Equal(Enumerable.Range(0, 50), Ids(all.Test));
        Assert.Equal(0f, all.Train.Images[.., 0, 0, 2].sum().ToSingle());
        Assert.Equal(50 / 255f, all.Test.Images[.., 0, 0, 2].sum().ToSingle(), 4);
        for (int i = 0; i < trainIds.Length; i++) Assert.Equal(trainIds[i] % 5, all.Train.Labels[i]);

        using (var again = TaskData.Load(TaskSpec.Parse("toy"), tmp.Path))
            Assert.Equal(validationIds, Ids(again.Validation));
        Assert.Equal(TaskData.ValidationMask(300), TaskData.ValidationMask(300));
        Assert.Equal(6000, TaskData.ValidationMask(60000).Count(v => v));

        // Class filtering: labels re-indexed in the order of the class list, splits unchanged.
        using var sub = TaskData.Load(TaskSpec.Parse("toy:3,1"), tmp.Path);
        Assert.Equal(new[] { "3", "1" }, sub.Train.LabelNames);
        var subValidation = Ids(sub.Validation);
        Assert.Equal(validationIds.Where(id => id % 5 is 1 or 3), subValidation);
        Assert.Equal(trainIds.Where(id => id % 5 is 1 or 3), Ids(sub.Train));
        foreach (var (set, ids) in new[] { (sub.Train, Ids(sub.Train)), (sub.Validation, subValidation), (sub.Test, Ids(sub.Test)) })
            for (int i = 0; i < ids.Length; i++)
                Assert.Equal(ids[i] % 5 == 3 ? 0L : 1L, set.Labels[i]);
        Assert.Equal(20, sub.Test.Count);
    }

    [Fact]
    public void Gzip_dataset_labels_txt_and_errors()
    {
        using var tmp = new TempDir();
        WriteToy(tmp.Sub("toy"), 40, 10, gzip: true);
        File.WriteAllText(tmp.Sub("toy", "labels.txt"), "a\nb\nc\nd\ne\n");
        using (var splits = TaskData.Load(TaskSpec.Parse("toy:4"), tmp.Path))
        {
            Assert.Equal(new[] { "e" }, splits.Test.LabelNames);
            Assert.All(splits.Test.Labels, l => Assert.Equal(0L, l));
            Assert.Equal(2, splits.Test.Count);
        }

        var outOfRange = Assert.Throws<FsMergeException>(() => TaskData.Load(TaskSpec.Parse("toy:5"), tmp.Path));
        Assert.Contains("0-4", outOfRange.Message);
        var unknown = Assert.Throws<FsMergeException>(() => TaskData.Load(TaskSpec.Parse("nosuch"), tmp.Path));
        Assert.Contains("unknown dataset", unknown.Message);
        Assert.Contains("mnist", unknown.Message);
        var missing = Assert.Throws<FsMergeException>(() => TaskData.Load(TaskSpec.Parse("mnist"), tmp.Path));
        Assert.Contains("fsmerge data", missing.Message);

        WriteToy(tmp.Sub("tiny"), 5, 1, gzip: false);
        using (var tiny = TaskData.Load(TaskSpec.Parse("tiny"), tmp.Path))
        {
            Assert.Equal(0, tiny.Validation.Count);
            Assert.Equal(new long[] { 0, 1, 4, 4 }, tiny.Validation.Images.shape);
            Assert.Equal(5, tiny.Train.Count);
        }

        File.WriteAllText(tmp.Sub("toy", "labels.txt"), "a\nb\n");
        Assert.Contains("labels.txt", Assert.Throws<FsMergeException>(() => TaskData.Load(TaskSpec.Parse("toy"), tmp.Path)).Message);
        File.Delete(tmp.Sub("toy", "labels.txt"));
        File.Delete(tmp.Sub("toy", "t10k-labels-idx1-ubyte.gz"));
        Assert.Contains("t10k-labels-idx1-ubyte", Assert.Throws<FsMergeException>(() => TaskData.Load(TaskSpec.Parse("toy"), tmp.Path)).Message);
    }

    [Fact]
    public void Mnist_split_writer_interleaves_digits_and_sends_every_fifth_to_test()
    {
        using var tmp = new TempDir();
        // Digit d has 5 + d images; image j of digit d has every pixel = 10 * d + j.
        var digits = Enumerable.Range(0, 10).Select(d =>
            Enumerable.Range(0, 5 + d).SelectMany(j => Enumerable.Repeat((byte)(10 * d + j), 784)).ToArray()).ToArray();
        DataProvisioner.WriteMnist(tmp.Path, digits);
        var (trainLabels, _) = Idx.Read(tmp.Sub("train-labels-idx1-ubyte.gz"));
        var (testImages, dims) = Idx.Read(tmp.Sub("t10k-images-idx3-ubyte.gz"));
        var (testLabels, _) = Idx.Read(tmp.Sub("t10k-labels-idx1-ubyte.gz"));
        int total = Enumerable.Range(0, 10).Sum(d => 5 + d);
        int testCount = Enumerable.Range(0, 10).Sum(d => (5 + d) / 5);
        Assert.Equal(new[] { testCount, 28, 28 }, dims);
        Assert.Equal(total - testCount, trainLabels.Length);
        Assert.Equal(Enumerable.Range(0, 10).Select(d => (byte)d), trainLabels.Take(10)); // j = 0 of every digit first
        for (int i = 0; i < testCount; i++)
            Assert.Equal(4, (testImages[i * 784] - 10 * testLabels[i]) % 5);
        Assert.Equal(new byte[] { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9 }, testLabels);
    }

    [Fact]
    public void Mnist_json_values_become_rounded_bytes()
    {
        static byte[] Json(string value, int count) =>
            System.Text.Encoding.UTF8.GetBytes("{\"data\":[" + string.Join(",", Enumerable.Repeat(value, count)) + "]}");
        Assert.All(DataProvisioner.ParseDigitJson("x", Json("0.002", 784)), b => Assert.Equal(1, b));
        Assert.All(DataProvisioner.ParseDigitJson("x", Json("1", 1568)), b => Assert.Equal(255, b));
        Assert.Contains("784", Assert.Throws<FsMergeException>(() => DataProvisioner.ParseDigitJson("x", Json("0", 783))).Message);
        Assert.Contains("[0, 1]", Assert.Throws<FsMergeException>(() => DataProvisioner.ParseDigitJson("x", Json("1.5", 784))).Message);
        Assert.Throws<FsMergeException>(() => DataProvisioner.ParseDigitJson("x", "[1,2]"u8.ToArray()));
    }
}

[Collection("torch")]
public class RealDataTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public void Provision_then_load_real_mnist_and_fashion()
    {
        var dir = DataDirectory.Resolve(null);
        var log = new List<string>();
        DataProvisioner.Provision(dir, line => { log.Add(line); output.WriteLine(line); });
        Assert.Contains(log, l => l.StartsWith("mnist: "));
        Assert.Contains(log, l => l.StartsWith("fashion: "));

        // Idempotent: a second run only reports and writes nothing.
        var stamps = Directory.GetFiles(dir, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.GetLastWriteTimeUtc);
        var second = new List<string>();
        DataProvisioner.Provision(dir, second.Add);
        Assert.Equal(new[] { "mnist: already present (8004 train, 1996 test)", "fashion: already present (60000 train, 10000 test)", "fortunes, lang: already present" }, second);
        Assert.Equal(stamps, Directory.GetFiles(dir, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.GetLastWriteTimeUtc));

        using (var mnist = TaskData.Load(TaskSpec.Parse("mnist"), dir))
        {
            Assert.Equal(10_000, mnist.Train.Count + mnist.Validation.Count + mnist.Test.Count);
            Assert.Equal(800, mnist.Validation.Count);
            Assert.Equal(new long[] { mnist.Train.Count, 1, 28, 28 }, mnist.Train.Images.shape);
            Assert.InRange(mnist.Train.Images.max().ToSingle(), 0.99f, 1f);
            Assert.Equal(0f, mnist.Train.Images.min().ToSingle());
            Assert.Equal("0", mnist.Test.LabelNames[0]);
        }
        using (var fashion = TaskData.Load(TaskSpec.Parse("fashion"), dir))
        {
            Assert.Equal(70_000, fashion.Train.Count + fashion.Validation.Count + fashion.Test.Count);
            Assert.Equal(6000, fashion.Validation.Count);
            Assert.Equal(10_000, fashion.Test.Count);
            Assert.Equal("Ankle boot", fashion.Test.LabelNames[9]);
        }
        using (var half = TaskData.Load(TaskSpec.Parse("mnist:0-4"), dir))
        {
            output.WriteLine($"mnist:0-4: {half.Train.Count} train, {half.Validation.Count} validation, {half.Test.Count} test");
            foreach (var set in new[] { half.Train, half.Validation, half.Test })
            {
                Assert.All(set.Labels, l => Assert.InRange(l, 0L, 4L));
                Assert.Equal(5, set.Labels.Distinct().Count());
            }
            Assert.InRange(half.Train.Count, 3500, 4500);
            Assert.InRange(half.Validation.Count, 300, 500);
            Assert.InRange(half.Test.Count, 900, 1100);
        }
    }
}
