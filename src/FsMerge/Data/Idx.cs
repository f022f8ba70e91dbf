using System.Buffers.Binary;
using System.IO.Compression;

namespace FsMerge.Data;

/// <summary>
/// The IDX format of the MNIST files: two zero bytes, a type byte (only 0x08, unsigned byte, is
/// accepted here), a dimension count, then one big-endian int32 per dimension, then the data in
/// row-major order. Files may be gzip-compressed; that is detected from the magic bytes 1f 8b,
/// never from the file name. Reading is strict: the data must be exactly as long as the dimensions say.
/// </summary>
public static class Idx
{
    public const byte UnsignedByteType = 0x08;
    private const int MaxDims = 8;

    public static (byte[] data, int[] dims) Read(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            throw new FsMergeException($"{path}: IDX file not found");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{path}: cannot read IDX file ({e.Message})", e);
        }

        if (bytes.Length < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b)
            return ParseWithDims(path, bytes);

        var compressed = bytes;
        bytes = Gunzip(path, compressed);
        try
        {
            return ParseWithDims(path, bytes);
        }
        catch (FsMergeException) when (compressed.Length < 18
            || BinaryPrimitives.ReadUInt32LittleEndian(compressed.AsSpan(compressed.Length - 4)) != (uint)bytes.Length)
        {
            // .NET's GZipStream ends quietly on a truncated stream; the gzip trailer's size (ISIZE) tells.
            // Only consulted when the content is wrong, so valid multi-member files are never rejected.
            throw new FsMergeException($"{path}: corrupt or truncated gzip data ({compressed.Length} compressed bytes gave {bytes.Length} bytes that do not form a complete IDX file)");
        }
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

    private static byte[] Gunzip(string path, byte[] compressed)
    {
        try
        {
            using var input = new GZipStream(new MemoryStream(compressed), CompressionMode.Decompress);
            using var output = new MemoryStream(compressed.Length * 4);
            input.CopyTo(output);
            return output.ToArray();
        }
        catch (Exception e) when (e is InvalidDataException or IOException or EndOfStreamException)
        {
            throw new FsMergeException($"{path}: corrupt or truncated gzip data ({e.Message})", e);
        }
    }

    private static (byte[] data, int[] dims) ParseWithDims(string path, byte[] bytes)
    {
        if (bytes.Length < 4)
            throw new FsMergeException($"{path}: not an IDX file (only {bytes.Length} bytes; expected a 4-byte magic number 00 00 08 <dims>)");
        if (bytes[0] != 0 || bytes[1] != 0)
            throw new FsMergeException($"{path}: not an IDX file (magic {Hex(bytes, 4)}; expected 00 00 08 <dims>)");
        if (bytes[2] != UnsignedByteType)
            throw new FsMergeException($"{path}: IDX data type 0x{bytes[2]:x2} is not supported; expected 0x08 (unsigned byte)");
        int nd = bytes[3];
        if (nd is < 1 or > MaxDims)
            throw new FsMergeException($"{path}: IDX dimension count {nd} out of range; expected 1 to {MaxDims}");
        int headerLength = 4 + 4 * nd;
        if (bytes.Length < headerLength)
            throw new FsMergeException($"{path}: truncated IDX header ({bytes.Length} bytes; {nd} dimensions need {headerLength})");

        var dims = new int[nd];
        long count = 1;
        for (int i = 0; i < nd; i++)
        {
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(4 + 4 * i));
            if (dims[i] < 0)
                throw new FsMergeException($"{path}: IDX dimension {i} is negative ({dims[i]})");
            count *= dims[i];
            if (count > Array.MaxLength)
                throw new FsMergeException($"{path}: IDX dimensions [{string.Join(", ", dims.Take(i + 1))}...] are too large");
        }

        long available = bytes.Length - headerLength;
        if (available < count)
            throw new FsMergeException($"{path}: truncated IDX data (dimensions [{string.Join(", ", dims)}] need {count} bytes, file has {available})");
        if (available > count)
            throw new FsMergeException($"{path}: IDX file has {available - count} bytes after the data (dimensions [{string.Join(", ", dims)}] need {count})");

        return (bytes.AsSpan(headerLength).ToArray(), dims);
    }

    private static string Hex(byte[] bytes, int n) => string.Join(" ", bytes.Take(n).Select(b => b.ToString("x2")));
}
