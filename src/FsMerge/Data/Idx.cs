using System.Buffers.Binary;
using System.IO.Compression;

namespace FsMerge.Data;

/// <summary>
/// The IDX format of the MNIST files: two zero bytes, a type byte (only 0x08, unsigned byte, is
/// accepted here), a dimension count, then one big-endian int32 per dimension, then the data in
/// row-major order. Files may be gzip-compressed; that is detected from the magic bytes 1f 8b,
/// never from the file name. Reading is strict: the data must be exactly as long as the dimensions say.
/// Files of other kinds (a FIFO, /dev/zero) are refused before they are opened.
/// </summary>
internal static class Idx
{
    public const byte UnsignedByteType = 0x08;
    private const int MaxDims = 8;

    /// <summary>The most data bytes an IDX file may declare: byte arrays end at 2 GiB, and a dataset becomes float32 tensors 4× its size.</summary>
    public const long MaxDataBytes = 1L << 30;

    /// <summary>Deflate's largest compression ratio: a gzip file cannot inflate to more than this many times its size.</summary>
    const long MaxGzipRatio = 1032;

    /// <summary>Reads the header first, gzip or not, and checks the size it declares against the file (and the
    /// limit) before allocating; a gzip stream is inflated no further than the header declares.</summary>
    public static (byte[] data, int[] dims) Read(string path)
    {
        using var file = InputFile.OpenRead(path, "an IDX file");
        try
        {
            Span<byte> magic = stackalloc byte[2];
            bool gzip = file.ReadAtLeast(magic, 2, throwOnEndOfStream: false) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
            file.Position = 0;
            using var input = gzip ? new GZipStream(file, CompressionMode.Decompress, leaveOpen: true) : (Stream)file;
            var dims = ReadHeader(path, input, gzip);
            long count = dims.Aggregate(1L, (product, d) => product * d);
            long headerLength = 4 + 4 * dims.Length;
            long possible = gzip ? file.Length * MaxGzipRatio : file.Length - headerLength;
            if (count > possible)
                throw new FsMergeException(gzip
                    ? $"{path}: IDX dimensions [{string.Join(", ", dims)}] declare {count} bytes, more than {file.Length} bytes of gzip data can hold"
                    : $"{path}: truncated IDX data (dimensions [{string.Join(", ", dims)}] need {count} bytes, file has {possible})");
            if (!gzip && possible > count)
                throw new FsMergeException($"{path}: IDX file has {possible - count} bytes after the data (dimensions [{string.Join(", ", dims)}] need {count})");

            var data = new byte[count];
            int got = input.ReadAtLeast(data, data.Length, throwOnEndOfStream: false);
            if (got < count)
                throw new FsMergeException(gzip && !TrailerSays(file, headerLength + got)
                    ? $"{path}: corrupt or truncated gzip data ({file.Length} compressed bytes gave {headerLength + got} bytes; dimensions [{string.Join(", ", dims)}] need {headerLength + count})"
                    : $"{path}: truncated IDX data (dimensions [{string.Join(", ", dims)}] need {count} bytes, file has {got})");
            if (gzip && input.ReadByte() >= 0)
                throw new FsMergeException($"{path}: IDX file has bytes after the data (dimensions [{string.Join(", ", dims)}] need {count})");
            return (data, dims);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            throw new FsMergeException($"{path}: corrupt or truncated gzip data ({Terminal.OneLine(e.Message)})", e);
        }
    }

    /// <summary>Whether the gzip trailer's size field (ISIZE, the inflated size mod 2^32) equals <paramref name="inflated"/>:
    /// .NET's GZipStream ends quietly on a truncated stream, and the trailer tells a short IDX from a cut gzip file.</summary>
    static bool TrailerSays(FileStream file, long inflated)
    {
        Span<byte> size = stackalloc byte[4];
        return file.Length >= 18 && RandomAccess.Read(file.SafeFileHandle, size, file.Length - 4) == 4
            && BinaryPrimitives.ReadUInt32LittleEndian(size) == (uint)inflated;
    }

    static int[] ReadHeader(string path, Stream input, bool gzip)
    {
        var head = new byte[4 + 4 * MaxDims];
        int got = input.ReadAtLeast(head.AsSpan(0, 4), 4, throwOnEndOfStream: false);
        if (got < 4)
            throw new FsMergeException(gzip
                ? $"{path}: corrupt or truncated gzip data (it holds {got} bytes; expected an IDX header)"
                : $"{path}: not an IDX file (only {got} bytes; expected a 4-byte magic number 00 00 08 <dims>)");
        if (head[0] != 0 || head[1] != 0)
            throw new FsMergeException($"{path}: not an IDX file (magic {Hex(head, 4)}; expected 00 00 08 <dims>)");
        if (head[2] != UnsignedByteType)
            throw new FsMergeException($"{path}: IDX data type 0x{head[2]:x2} is not supported; expected 0x08 (unsigned byte)");
        int nd = head[3];
        if (nd is < 1 or > MaxDims)
            throw new FsMergeException($"{path}: IDX dimension count {nd} out of range; expected 1 to {MaxDims}");
        int headerLength = 4 + 4 * nd;
        got = 4 + input.ReadAtLeast(head.AsSpan(4, 4 * nd), 4 * nd, throwOnEndOfStream: false);
        if (got < headerLength)
            throw new FsMergeException($"{path}: truncated IDX header ({got} bytes; {nd} dimensions need {headerLength})");

        var dims = new int[nd];
        long count = 1;
        for (int i = 0; i < nd; i++)
        {
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(head.AsSpan(4 + 4 * i));
            if (dims[i] < 0)
                throw new FsMergeException($"{path}: IDX dimension {i} is negative ({dims[i]})");
            count *= dims[i];
            if (count > MaxDataBytes)
                throw new FsMergeException($"{path}: IDX dimensions [{string.Join(", ", dims.Take(i + 1))}...] declare more than the {MaxDataBytes} bytes allowed");
        }
        return dims;
    }

    /// <summary>Writes an unsigned-byte IDX file, gzip-compressed when the name ends in ".gz", atomically.</summary>
    public static void Write(string path, byte[] data, int[] dims)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(dims);
        if (dims.Length is < 1 or > MaxDims)
            throw new ArgumentException($"IDX needs 1 to {MaxDims} dimensions, got {dims.Length}", nameof(dims));
        long count = 1;
        foreach (var d in dims)
        {
            if (d < 0) throw new ArgumentException($"negative IDX dimension {d}", nameof(dims));
            count *= d;
        }
        if (count != data.Length)
            throw new ArgumentException($"IDX dimensions [{string.Join(", ", dims)}] hold {count} bytes but data has {data.Length}", nameof(data));

        var header = new byte[4 + 4 * dims.Length];
        header[2] = UnsignedByteType;
        header[3] = (byte)dims.Length;
        for (int i = 0; i < dims.Length; i++)
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4 + 4 * i), dims[i]);

        bool gzip = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase);
        AtomicFile.Write(path, temporary =>
        {
            using var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None);
            using Stream output = gzip ? new GZipStream(file, CompressionLevel.Optimal) : file;
            output.Write(header);
            output.Write(data);
        });
    }

    private static string Hex(byte[] bytes, int n) => string.Join(" ", bytes.Take(n).Select(b => b.ToString("x2")));
}
