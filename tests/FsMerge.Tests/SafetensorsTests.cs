using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using FsMerge.IO;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

[Collection("torch")]
public sealed class SafetensorsTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), "fsmerge-safetensors-" + Guid.NewGuid().ToString("N"));

    public SafetensorsTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>Deterministic, varied float values: sin(0.37 i) * 3.</summary>
    static Tensor Wave(params long[] shape)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        return torch.arange(n, ScalarType.Float32).mul(0.37).sin().mul(3.0).reshape(shape);
    }

    static byte[] BytesOf(Tensor t)
    {
        using var c = t.contiguous();
        return c.NumberOfElements == 0 ? [] : c.bytes.ToArray();
    }

    static Dictionary<string, Tensor> SampleOfEveryDtype()
    {
        var floats = torch.tensor(new float[] { 0f, -0f, 1.5f, -2.25f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1e-40f, 3.4e38f });
        var t = new Dictionary<string, Tensor>
        {
            ["f32"] = Wave(2, 3),
            ["f32.special"] = floats,
            ["f64"] = torch.tensor(new double[] { Math.PI, -0.0, double.Epsilon, double.MaxValue, double.NaN, 1.0 / 3 }).reshape(3, 2),
            ["f16"] = Wave(4, 2).to_type(ScalarType.Float16),
            ["bf16"] = Wave(3, 1, 2).to_type(ScalarType.BFloat16),
            ["i64"] = torch.tensor(new long[] { long.MinValue, -1, 0, 1, long.MaxValue, 1L << 40 }),
            ["i32"] = torch.tensor(new int[] { int.MinValue, -7, 0, 7, int.MaxValue, 123456 }).reshape(2, 3),
            ["u8"] = torch.arange(256, ScalarType.Int32).to_type(ScalarType.Byte).reshape(16, 16),
            ["bool"] = torch.tensor(new bool[] { true, false, false, true, true }),
            ["scalar.f32"] = torch.tensor(42.5f),
            ["scalar.i64"] = torch.tensor(-9L),
            ["empty.f32"] = torch.empty(new long[] { 0, 3 }, ScalarType.Float32),
            ["empty.bool"] = torch.empty(new long[] { 0, 3 }, ScalarType.Bool),
        };
        return t;
    }

    [Fact]
    public void RoundTripPreservesEveryDtypeBitExactly()
    {
        var path = PathOf("all.safetensors");
        var source = SampleOfEveryDtype();
        try
        {
            Safetensors.Write(path, source);
            using var read = Safetensors.Read(path);
            Assert.Equal(source.Keys.OrderBy(k => k, StringComparer.Ordinal), read.Tensors.Keys.OrderBy(k => k, StringComparer.Ordinal));
            Assert.Empty(read.Metadata);
            foreach (var (name, expected) in source)
            {
                var actual = read.Tensors[name];
                Assert.Equal(expected.dtype, actual.dtype);
                Assert.Equal(expected.shape, actual.shape);
                Assert.Equal(DeviceType.CPU, actual.device_type);
                Assert.True(BytesOf(expected).AsSpan().SequenceEqual(BytesOf(actual)), $"bytes of {name} differ");
            }
            Assert.Equal(0, read.Tensors["scalar.f32"].dim());
            Assert.Equal(42.5f, read.Tensors["scalar.f32"].item<float>());
            Assert.Equal(new long[] { 0, 3 }, read.Tensors["empty.f32"].shape);
        }
        finally
        {
            foreach (var t in source.Values) t.Dispose();
        }
    }

    [Fact]
    public void MetadataRoundTrips()
    {
        var path = PathOf("meta.safetensors");
        using var w = Wave(3);
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["fsmerge.note"] = "quotes \" and \\ backslash, newline\n, unicode é ✓, plus +",
            ["empty"] = "",
        };
        Safetensors.Write(path, new Dictionary<string, Tensor> { ["w"] = w }, metadata);
        using var read = Safetensors.Read(path);
        Assert.Equal(metadata.OrderBy(p => p.Key), read.Metadata.OrderBy(p => p.Key));
        Assert.Single(read.Tensors);
    }

    [Fact]
    public void IndependentReaderParsesViTStyleFile()
    {
        var path = PathOf("vit.safetensors");
        var source = new Dictionary<string, Tensor>
        {
            ["vit.embeddings.patch_embeddings.projection.weight"] = Wave(64, 1, 7, 7),
            ["vit.embeddings.patch_embeddings.projection.bias"] = Wave(64).neg(),
            ["vit.embeddings.cls_token"] = Wave(1, 1, 64).mul(0.5),
            ["vit.embeddings.position_embeddings"] = Wave(1, 17, 64).add(1),
            ["vit.encoder.layer.0.attention.attention.query.weight"] = Wave(64, 64).mul(0.1),
            ["vit.encoder.layer.0.attention.attention.query.bias"] = Wave(64).mul(0.2),
            ["vit.layernorm.weight"] = torch.ones(64),
            ["classifier.weight"] = Wave(10, 64).sub(0.5),
            ["classifier.bias"] = torch.zeros(10),
        };
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        try
        {
            Safetensors.Write(path, source, metadata);

            using var file = File.OpenRead(path);
            using var reader = new BinaryReader(file);
            ulong headerLength = reader.ReadUInt64(); // BinaryReader is little-endian
            byte[] headerBytes = reader.ReadBytes(checked((int)headerLength));
            long dataStart = 8 + (long)headerLength;
            Assert.Equal(0, dataStart % 8);
            string headerText = Encoding.UTF8.GetString(headerBytes);
            Assert.StartsWith("{", headerText);
            Assert.True(headerText[(headerText.LastIndexOf('}') + 1)..].All(c => c == ' '), "the header is padded with spaces only");

            using var doc = JsonDocument.Parse(headerBytes);
            var root = doc.RootElement;
            Assert.Equal("pt", root.GetProperty("__metadata__").GetProperty("format").GetString());
            var names = root.EnumerateObject().Select(p => p.Name).Where(n => n != "__metadata__").ToList();
            Assert.Equal(source.Keys.OrderBy(n => n, StringComparer.Ordinal), names.OrderBy(n => n, StringComparer.Ordinal));

            long expectedBegin = 0;
            foreach (var name in source.Keys.OrderBy(n => n, StringComparer.Ordinal))
            {
                var entry = root.GetProperty(name);
                Assert.Equal("F32", entry.GetProperty("dtype").GetString());
                var shape = entry.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                Assert.Equal(source[name].shape, shape);
                var offsets = entry.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                Assert.Equal(2, offsets.Length);
                Assert.Equal(expectedBegin, offsets[0]); // sorted-name order, contiguous
                long count = shape.Aggregate(1L, (a, b) => a * b);
                Assert.Equal(offsets[0] + count * 4, offsets[1]);
                expectedBegin = offsets[1];

                file.Position = dataStart + offsets[0];
                var values = new float[count];
                for (long i = 0; i < count; i++) values[i] = reader.ReadSingle();
                var expected = source[name].contiguous().data<float>().ToArray();
                Assert.Equal(expected, values);
            }
            Assert.Equal(file.Length, dataStart + expectedBegin);
        }
        finally
        {
            foreach (var t in source.Values) t.Dispose();
        }
    }

    [Fact]
    public void ViTShapesReadBackThroughTheReader()
    {
        var path = PathOf("vit2.safetensors");
        using var w = Wave(64, 1, 7, 7);
        Safetensors.Write(path, new Dictionary<string, Tensor> { ["vit.embeddings.patch_embeddings.projection.weight"] = w });
        using var read = Safetensors.Read(path);
        var r = read.Tensors["vit.embeddings.patch_embeddings.projection.weight"];
        Assert.Equal(new long[] { 64, 1, 7, 7 }, r.shape);
        Assert.True(r.Equals(w));
    }

    // ---------------------------------------------------------------- damaged files

    /// <summary>A file from a header length (or the real one), header text and data bytes.</summary>
    static byte[] Build(string header, byte[]? data = null, ulong? headerLength = null, byte[]? rawHeader = null)
    {
        byte[] h = rawHeader ?? Encoding.UTF8.GetBytes(header);
        data ??= [];
        var bytes = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)h.Length);
        h.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + h.Length);
        return bytes;
    }

    static byte[] Zeros(int n) => new byte[n];

    public static IEnumerable<object[]> DamagedCases() =>
        new (string Case, string Word)[]
        {
            ("truncated", "truncated"),
            ("huge-header-length", "exceeds the file size"),
            ("zero-header-length", "header length is 0"),
            ("header-over-limit", "exceeds the limit"),
            ("bad-json", "not valid JSON"),
            ("bad-utf8", "UTF-8"),
            ("not-object", "expected a JSON object"),
            ("entry-not-object", "expected an object"),
            ("missing-offsets", "lacks \"data_offsets\""),
            ("missing-dtype", "lacks \"dtype\""),
            ("unknown-dtype", "unknown dtype \"C64\""),
            ("negative-dim", "negative"),
            ("fractional-dim", "non-negative integer"),
            ("offsets-one-number", "two integers"),
            ("offsets-fraction", "non-negative integer"),
            ("offsets-negative", "non-negative integer"),
            ("begin-after-end", "begin > end"),
            ("offsets-out-of-range", "out of range"),
            ("size-mismatch", "size mismatch"),
            ("overlap", "overlaps"),
            ("gap", "gap"),
            ("trailing-bytes", "trailing bytes"),
            ("duplicate-name", "duplicate key"),
            ("metadata-not-string", "expected a string"),
            ("metadata-not-object", "expected an object of strings"),
            ("bool-not-0-or-1", "expected 0 or 1"),
            ("missing-file", "not found"),
        }.Select(c => new object[] { c.Case, c.Word });

    [Theory]
    [MemberData(nameof(DamagedCases))]
    public void DamagedFileIsRejectedWithAClearMessage(string damage, string word)
    {
        var path = PathOf(damage + ".safetensors");
        const string ok = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
        byte[]? bytes = damage switch
        {
            "truncated" => [1, 0, 0, 0, 0],
            "huge-header-length" => Build("{}", headerLength: 9_999_999_999),
            "zero-header-length" => Build("{}", headerLength: 0),
            "header-over-limit" => null, // a sparse file, made below
            "bad-json" => Build("{\"a\": {\"dtype\": \"F32\", "),
            "bad-utf8" => Build("", rawHeader: [(byte)'{', (byte)'"', 0xC3, 0x28, (byte)'"', (byte)':', (byte)'1', (byte)'}']),
            "not-object" => Build("[1, 2]"),
            "entry-not-object" => Build("{\"a\": [1, 2]}"),
            "missing-offsets" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", Zeros(8)),
            "missing-dtype" => Build("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", Zeros(8)),
            "unknown-dtype" => Build("{\"a\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", Zeros(8)),
            "negative-dim" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", Zeros(8)),
            "fractional-dim" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", Zeros(8)),
            "offsets-one-number" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", Zeros(8)),
            "offsets-fraction" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", Zeros(8)),
            "offsets-negative" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[-4,-4]}}", Zeros(8)),
            "begin-after-end" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", Zeros(8)),
            "offsets-out-of-range" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", Zeros(4)),
            "size-mismatch" => Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", Zeros(8)),
            "overlap" => Build("{" + ok + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", Zeros(12)),
            "gap" => Build("{" + ok + ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", Zeros(16)),
            "trailing-bytes" => Build("{" + ok + "}", Zeros(12)),
            "duplicate-name" => Build("{" + ok + "," + ok + "}", Zeros(8)),
            "metadata-not-string" => Build("{\"__metadata__\":{\"epochs\":3}," + ok + "}", Zeros(8)),
            "metadata-not-object" => Build("{\"__metadata__\":[\"x\"]," + ok + "}", Zeros(8)),
            "bool-not-0-or-1" => Build("{\"a\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}", [1, 0, 2]),
            "missing-file" => null,
            _ => throw new ArgumentException(damage),
        };
        if (bytes is not null) File.WriteAllBytes(path, bytes);
        if (damage == "header-over-limit")
        {
            // 150 MB header length inside a 200 MB sparse file: only the limit is wrong.
            using var f = File.Create(path);
            var length = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, 150_000_000);
            f.Write(length);
            f.SetLength(200_000_000);
        }

        var e = Assert.Throws<FsMergeException>(() => Safetensors.Read(path));
        Assert.StartsWith(path + ":", e.Message);
        Assert.Contains(word, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void HugeHeaderLengthMessageNamesTheNumbers()
    {
        var path = PathOf("model.safetensors");
        File.WriteAllBytes(path, Build("{}", headerLength: 9_999_999_999));
        var e = Assert.Throws<FsMergeException>(() => Safetensors.Read(path));
        Assert.Equal($"{path}: header length 9999999999 exceeds the file size (10 bytes); the file is truncated or not safetensors", e.Message);
    }

    [Fact]
    public void ZeroSizedTensorsMayShareAnOffsetAndAnEmptyFileReads()
    {
        var path = PathOf("zeros.safetensors");
        File.WriteAllBytes(path, Build(
            "{\"e1\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]}," +
            "\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}," +
            "\"e2\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}}   ", [7, 0, 0, 0]));
        using (var read = Safetensors.Read(path))
        {
            Assert.Equal(3, read.Tensors.Count);
            Assert.Equal(7, read.Tensors["a"].item<int>());
        }

        var none = PathOf("none.safetensors");
        Safetensors.Write(none, new Dictionary<string, Tensor>());
        using var empty = Safetensors.Read(none);
        Assert.Empty(empty.Tensors);
        Assert.Equal(0, new FileInfo(none).Length % 8);
    }

    // ---------------------------------------------------------------- writer

    [Fact]
    public void WriterLeavesNoTemporaryFileAndReplacesAnExistingFile()
    {
        var path = PathOf("out.safetensors");
        File.WriteAllText(path, new string('x', 100_000));
        using (var big = Wave(50, 50))
            Safetensors.Write(path, new Dictionary<string, Tensor> { ["big"] = big });
        using (var small = Wave(2))
            Safetensors.Write(path, new Dictionary<string, Tensor> { ["small"] = small });

        Assert.Equal(new[] { "out.safetensors" }, Directory.GetFiles(_dir).Select(Path.GetFileName));
        using var read = Safetensors.Read(path);
        Assert.Equal(new[] { "small" }, read.Tensors.Keys);
    }

    [Fact]
    public void FailedWriteLeavesTheOldFileAndNoTemporary()
    {
        var path = PathOf("keep.safetensors");
        using var good = Wave(3);
        Safetensors.Write(path, new Dictionary<string, Tensor> { ["good"] = good });
        byte[] before = File.ReadAllBytes(path);

        using var complex = torch.zeros(2, ScalarType.ComplexFloat32);
        var e = Assert.Throws<FsMergeException>(() =>
            Safetensors.Write(path, new Dictionary<string, Tensor> { ["good"] = good, ["c"] = complex }));
        Assert.StartsWith(path + ":", e.Message);
        Assert.Contains("ComplexFloat32", e.Message);

        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(new[] { "keep.safetensors" }, Directory.GetFiles(_dir).Select(Path.GetFileName));
        Assert.False(File.Exists(PathOf("never.safetensors")));
    }

    [Fact]
    public void WriterAcceptsViewsTransposesAndSparseTensors()
    {
        var path = PathOf("views.safetensors");
        using var baseT = Wave(4, 6);
        using var transposed = baseT.T;                      // non-contiguous
        using var sliced = baseT.narrow(1, 2, 3);            // offset view
        using var strided = baseT[TensorIndex.Colon, TensorIndex.Slice(0, null, 2)];
        using var sparse = baseT.relu().to_sparse();
        Safetensors.Write(path, new Dictionary<string, Tensor>
        {
            ["t"] = transposed, ["s"] = sliced, ["st"] = strided, ["sp"] = sparse,
        });
        using var read = Safetensors.Read(path);
        Assert.True(read.Tensors["t"].Equals(transposed.contiguous()));
        Assert.True(read.Tensors["s"].Equals(sliced.contiguous()));
        Assert.True(read.Tensors["st"].Equals(strided.contiguous()));
        Assert.True(read.Tensors["sp"].Equals(baseT.relu()));
        Assert.True(baseT.Equals(Wave(4, 6)));                // the sources are untouched
        Assert.False(transposed.is_contiguous());
    }

    [Fact]
    public void WriterRejectsTheReservedMetadataName()
    {
        var path = PathOf("reserved.safetensors");
        using var t = Wave(1);
        var e = Assert.Throws<FsMergeException>(() =>
            Safetensors.Write(path, new Dictionary<string, Tensor> { ["__metadata__"] = t }));
        Assert.Contains("reserved", e.Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void UnwritableTargetIsAnFsMergeException()
    {
        var blocker = PathOf("blocker");
        File.WriteAllText(blocker, "a file where a directory should be");
        var path = Path.Combine(blocker, "out.safetensors");
        using var t = Wave(2);
        var e = Assert.Throws<FsMergeException>(() =>
            Safetensors.Write(path, new Dictionary<string, Tensor> { ["t"] = t }));
        Assert.StartsWith(path + ":", e.Message);
    }

    // ---------------------------------------------------------------- ownership and memory

    [Fact]
    public void ReadTensorsOutliveTheCallersDisposeScope()
    {
        var path = PathOf("scope.safetensors");
        using (var w = Wave(5)) Safetensors.Write(path, new Dictionary<string, Tensor> { ["w"] = w });
        SafetensorsContent content;
        using (torch.NewDisposeScope()) content = Safetensors.Read(path);
        using (content)
        {
            using var expected = Wave(5);
            Assert.True(content.Tensors["w"].Equals(expected));
        }
        Assert.Empty(content.Tensors);
    }

    /// <summary>A tensor larger than one 8 MiB chunk round-trips, and reading it allocates almost nothing
    /// on the managed heap: the bytes go from the file straight into the tensor's native storage.</summary>
    [Fact]
    public void LargeTensorIsStreamedInChunksWithoutManagedCopies()
    {
        var path = PathOf("large.safetensors");
        using var big = torch.arange(3_000_001, ScalarType.Int32).reshape(3_000_001, 1); // 12 MB, 2 chunks
        Safetensors.Write(path, new Dictionary<string, Tensor> { ["big"] = big });

        long before = GC.GetAllocatedBytesForCurrentThread();
        using var read = Safetensors.Read(path);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.True(allocated < 1_000_000, $"Read allocated {allocated} managed bytes for a 12 MB tensor");
        Assert.True(read.Tensors["big"].Equals(big));
    }

    /// <summary>The reader fills tensors through <c>Tensor.bytes</c> on narrowed views; that is only
    /// right (and copy-free) if the span aliases the tensor's native storage at the view's offset.</summary>
    [Fact]
    public void TensorBytesOfANarrowedViewAliasTheStorage()
    {
        using var t = torch.zeros(4, ScalarType.Int32);
        using (var part = t.narrow(0, 2, 2))
        {
            var span = part.bytes;
            Assert.Equal(8, span.Length);
            span[0] = 5;
            span[4] = 6;
        }
        Assert.Equal(new[] { 0, 0, 5, 6 }, t.data<int>().ToArray());
    }
}
