using System.Buffers.Binary;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.IO;

/// <summary>The tensors and the "__metadata__" map of one safetensors file. The tensors belong to this
/// object (not to any dispose scope): <see cref="Dispose"/> frees every tensor still in
/// <see cref="Tensors"/>, so remove a tensor from the dictionary first to keep it.</summary>
internal sealed class SafetensorsContent : IDisposable
{
    internal SafetensorsContent(Dictionary<string, Tensor> tensors, Dictionary<string, string> metadata)
    {
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>CPU tensors, dtype as stored, by name.</summary>
    public Dictionary<string, Tensor> Tensors { get; }

    /// <summary>The "__metadata__" map; empty if the file has none.</summary>
    public Dictionary<string, string> Metadata { get; }

    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
        Tensors.Clear();
    }
}

/// <summary>
/// Reads and writes the safetensors format: an 8-byte little-endian header length N, N bytes of UTF-8
/// JSON (name → {dtype, shape, data_offsets}, plus an optional "__metadata__" string map), then the
/// raw little-endian row-major bytes of every tensor. The reader is strict: every defect is an
/// <see cref="FsMergeException"/> whose message starts with the path. Tensor bytes are streamed
/// between the file and the tensors' native storage in chunks; a file is never loaded whole into
/// managed memory.
/// </summary>
internal static class Safetensors
{
    /// <summary>Headers above this size are refused (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>Tensors of more dimensions are refused (LibTorch's kernels handle at most 25).</summary>
    public const int MaxRank = 16;

    const string MetadataKey = "__metadata__";

    /// <summary>Bytes moved per read or write call; a multiple of every element size.</summary>
    const int ChunkBytes = 8 << 20;

    sealed record DType(string Name, ScalarType Type, int Size);

    static readonly DType[] DTypes =
    [
        new("F32", ScalarType.Float32, 4),
        new("F64", ScalarType.Float64, 8),
        new("F16", ScalarType.Float16, 2),
        new("BF16", ScalarType.BFloat16, 2),
        new("I64", ScalarType.Int64, 8),
        new("I32", ScalarType.Int32, 4),
        new("U8", ScalarType.Byte, 1),
        new("BOOL", ScalarType.Bool, 1),
    ];

    static readonly string SupportedList = string.Join(", ", DTypes.Select(d => d.Name));

    static DType? ByName(string name) => DTypes.FirstOrDefault(d => d.Name == name);
    static DType? ByType(ScalarType type) => DTypes.FirstOrDefault(d => d.Type == type);

    sealed record Entry(string Name, DType DType, long[] Shape, long Begin, long End);

    // ------------------------------------------------------------------ reading

    public static SafetensorsContent Read(string path)
    {
        using var stream = InputFile.OpenRead(path, "a .safetensors file");
        try
        {
            return ReadFrom(stream, path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{path}: cannot read the file ({Terminal.OneLine(e.Message)})", e);
        }
    }

    static SafetensorsContent ReadFrom(FileStream stream, string path)
    {
        long fileSize = stream.Length;
        if (fileSize < 8)
        {
            throw new FsMergeException(
                $"{path}: file is truncated: {fileSize} bytes, expected at least 8 (the header length)");
        }
        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength == 0)
            throw new FsMergeException($"{path}: header length is 0, expected a JSON header of at least 2 bytes");
        if (headerLength > (ulong)(fileSize - 8))
        {
            throw new FsMergeException(
                $"{path}: header length {headerLength} exceeds the file size ({fileSize} bytes); the file is truncated or not safetensors");
        }
        if (headerLength > MaxHeaderBytes)
        {
            throw new FsMergeException(
                $"{path}: header length {headerLength} exceeds the limit of {MaxHeaderBytes} bytes");
        }

        var header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileSize - dataStart;

        var (entries, metadata) = ParseHeader(header, path, dataLength);
        CheckTiling(entries, dataLength, path);

        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var e in entries.OrderBy(e => e.Begin).ThenBy(e => e.End))
            {
                var t = torch.empty(e.Shape, e.DType.Type, device: CPU);
                t.DetachFromDisposeScope();
                tensors.Add(e.Name, t);
                stream.Position = dataStart + e.Begin;
                ReadInto(stream, t, e, path);
            }
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
        return new SafetensorsContent(tensors, metadata);
    }

    static (List<Entry>, Dictionary<string, string>) ParseHeader(byte[] header, string path, long dataLength)
    {
        if (!System.Text.Unicode.Utf8.IsValid(header))
            throw new FsMergeException($"{path}: header is not valid UTF-8, expected UTF-8 JSON");
        if (header[0] != (byte)'{')
        {
            throw new FsMergeException(
                $"{path}: header does not start with '{{' (first byte 0x{header[0]:X2}), expected a JSON object");
        }

        using var doc = JsonInput.Parse(header, $"{path}: header");
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new FsMergeException($"{path}: header is a JSON {Kind(root)}, expected a JSON object");

        var entries = new List<Entry>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var property in root.EnumerateObject())
        {
            if (property.Name == MetadataKey)
                ParseMetadata(property.Value, metadata, path);
            else
                entries.Add(ParseEntry(property.Name, property.Value, path, dataLength));
        }
        return (entries, metadata);
    }

    static void ParseMetadata(JsonElement value, Dictionary<string, string> metadata, string path)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new FsMergeException($"{path}: \"{MetadataKey}\" is a JSON {Kind(value)}, expected an object of strings");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
            {
                throw new FsMergeException(
                    $"{path}: metadata value of {Terminal.Quote(item.Name)} is a JSON {Kind(item.Value)}, expected a string");
            }
            metadata.Add(item.Name, item.Value.GetString()!);
        }
    }

    static Entry ParseEntry(string name, JsonElement value, string path, long dataLength)
    {
        string where = $"{path}: tensor {Terminal.Quote(name)}";
        if (value.ValueKind != JsonValueKind.Object)
            throw new FsMergeException($"{where} is a JSON {Kind(value)}, expected an object with dtype, shape and data_offsets");

        JsonElement? dtypeEl = null, shapeEl = null, offsetsEl = null;
        foreach (var field in value.EnumerateObject())
        {
            switch (field.Name)
            {
                case "dtype": dtypeEl = field.Value; break;
                case "shape": shapeEl = field.Value; break;
                case "data_offsets": offsetsEl = field.Value; break;
            }
        }
        foreach (var (field, el) in new[] { ("dtype", dtypeEl), ("shape", shapeEl), ("data_offsets", offsetsEl) })
        {
            if (el is null) throw new FsMergeException($"{where} lacks \"{field}\", expected dtype, shape and data_offsets");
        }

        // dtype
        if (dtypeEl!.Value.ValueKind != JsonValueKind.String)
            throw new FsMergeException($"{where}: dtype is a JSON {Kind(dtypeEl.Value)}, expected a string");
        string dtypeName = dtypeEl.Value.GetString()!;
        var dtype = ByName(dtypeName)
                    ?? throw new FsMergeException($"{where}: unknown dtype {Terminal.Quote(dtypeName)}, expected one of {SupportedList}");

        // shape
        if (shapeEl!.Value.ValueKind != JsonValueKind.Array)
            throw new FsMergeException($"{where}: shape is a JSON {Kind(shapeEl.Value)}, expected an array of integers");
        if (shapeEl.Value.GetArrayLength() > MaxRank)
            throw new FsMergeException($"{where}: shape has {shapeEl.Value.GetArrayLength()} dimensions, expected at most {MaxRank}");
        var shape = new long[shapeEl.Value.GetArrayLength()];
        long elements = 1;
        bool overflow = false, zero = false;
        int i = 0;
        foreach (var dim in shapeEl.Value.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long d))
                throw new FsMergeException($"{where}: shape[{i}] is {Short(dim)}, expected a non-negative integer");
            if (d < 0)
                throw new FsMergeException($"{where}: shape[{i}] is negative ({d}), expected a non-negative integer");
            shape[i++] = d;
            if (d == 0) zero = true;
            else if (!overflow && elements > long.MaxValue / d / dtype.Size) overflow = true;
            else if (!overflow) elements *= d;
        }
        // LibTorch multiplies the non-zero dimensions (strides) even when a zero one makes the tensor empty:
        // [0, 2^32, 2^32] must be refused like [2^32, 2^32].
        if (overflow)
        {
            throw new FsMergeException(
                $"{where}: shape [{string.Join(", ", shape)}] is too large: its dimensions multiply beyond what a {dtype.Name} tensor can address");
        }
        if (zero) elements = 0;

        // data_offsets
        var off = offsetsEl!.Value;
        if (off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new FsMergeException($"{where}: data_offsets is {Short(off)}, expected two integers [begin, end]");
        var bounds = new long[2];
        for (int k = 0; k < 2; k++)
        {
            var el = off[k];
            if (el.ValueKind != JsonValueKind.Number || !el.TryGetUInt64(out ulong u) || u > long.MaxValue)
                throw new FsMergeException($"{where}: data_offsets[{k}] is {Short(el)}, expected a non-negative integer");
            bounds[k] = (long)u;
        }
        long begin = bounds[0], end = bounds[1];
        if (begin > end)
            throw new FsMergeException($"{where}: data_offsets [{begin}, {end}] have begin > end, expected begin <= end");
        if (end > dataLength)
        {
            throw new FsMergeException(
                $"{where}: data_offsets [{begin}, {end}] are out of range: end exceeds the data section ({dataLength} bytes)");
        }

        long bytes = end - begin;
        if (elements * dtype.Size != bytes)
        {
            throw new FsMergeException(
                $"{where}: size mismatch: data_offsets span {bytes} bytes, expected {elements * dtype.Size} bytes for {dtype.Name} [{string.Join(", ", shape)}]");
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    /// <summary>The byte ranges must tile the data section exactly: no overlap, no gap, nothing after.</summary>
    static void CheckTiling(List<Entry> entries, long dataLength, string path)
    {
        var sorted = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
        long position = 0;
        Entry? previous = null;
        foreach (var e in sorted)
        {
            if (e.Begin < position)
            {
                throw new FsMergeException(
                    $"{path}: tensor {Terminal.Quote(e.Name)} [{e.Begin}, {e.End}] overlaps tensor {Terminal.Quote(previous!.Name)} [{previous.Begin}, {previous.End}], expected disjoint byte ranges");
            }
            if (e.Begin > position)
            {
                throw new FsMergeException(
                    $"{path}: gap of {e.Begin - position} bytes before tensor {Terminal.Quote(e.Name)} (data_offsets begin {e.Begin}, expected {position}); the tensors must tile the data section");
            }
            position = e.End;
            previous = e;
        }
        if (position != dataLength)
        {
            throw new FsMergeException(
                $"{path}: {dataLength - position} trailing bytes after the last tensor (the data section is {dataLength} bytes, the tensors cover {position})");
        }
    }

    static void ReadInto(FileStream stream, Tensor tensor, Entry e, string path)
    {
        long total = e.End - e.Begin;
        if (total == 0) return;
        using var flat = tensor.view(-1);
        long chunkElements = ChunkBytes / e.DType.Size;
        long elements = total / e.DType.Size;
        for (long start = 0; start < elements; start += chunkElements)
        {
            long n = Math.Min(chunkElements, elements - start);
            using var part = flat.narrow(0, start, n);
            // For a contiguous CPU tensor, `bytes` is a span over its native storage, so the file's
            // bytes land in the tensor without an intermediate managed buffer.
            Span<byte> span = part.bytes;
            try
            {
                stream.ReadExactly(span);
            }
            catch (EndOfStreamException)
            {
                throw new FsMergeException($"{path}: file ended while reading tensor {Terminal.Quote(e.Name)}; it changed while being read?");
            }
            if (e.DType.Type == ScalarType.Bool)
            {
                int bad = span.IndexOfAnyExcept((byte)0, (byte)1);
                if (bad >= 0)
                {
                    throw new FsMergeException(
                        $"{path}: tensor {Terminal.Quote(e.Name)} (BOOL) holds byte value {span[bad]} at element {start + bad}, expected 0 or 1");
                }
            }
        }
    }

    // ------------------------------------------------------------------ writing

    /// <summary>Writes the tensors (any device, any layout; they are copied to contiguous CPU one at a time)
    /// in sorted-name order, with the header padded by spaces so the data starts at a multiple of 8.
    /// The file appears atomically: a failure leaves no partial file behind.</summary>
    public static void Write(string path, IReadOnlyDictionary<string, Tensor> tensors,
                             IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        var dtypes = new DType[names.Count];
        for (int i = 0; i < names.Count; i++)
        {
            string name = names[i];
            if (name == MetadataKey)
                throw new FsMergeException($"{path}: a tensor may not be named \"{MetadataKey}\" (the name is reserved for metadata)");
            var t = tensors[name] ?? throw new FsMergeException($"{path}: tensor {Terminal.Quote(name)} is null, expected a tensor");
            dtypes[i] = ByType(t.dtype) ?? throw new FsMergeException(
                $"{path}: tensor {Terminal.Quote(name)} has dtype {t.dtype}, which safetensors here does not support; expected one of {SupportedList}");
        }
        if (metadata is not null)
        {
            foreach (var (key, value) in metadata)
            {
                if (value is null)
                    throw new FsMergeException($"{path}: metadata value of {Terminal.Quote(key)} is null, expected a string");
            }
        }

        byte[] header = BuildHeader(names, dtypes, tensors, metadata);
        try
        {
            AtomicFile.Write(path, temporary => WriteFile(temporary, header, names, dtypes, tensors));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{path}: cannot write the file ({Terminal.OneLine(e.Message)})", e);
        }
    }

    static void WriteFile(string temporary, byte[] header, List<string> names, DType[] dtypes,
                          IReadOnlyDictionary<string, Tensor> tensors)
    {
        using var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None,
                                          bufferSize: 1, FileOptions.SequentialScan);
        Span<byte> lengthBytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(lengthBytes, (ulong)header.Length);
        stream.Write(lengthBytes);
        stream.Write(header);
        for (int i = 0; i < names.Count; i++)
            WriteTensor(stream, tensors[names[i]], dtypes[i]);
        stream.Flush(flushToDisk: true);
    }

    static byte[] BuildHeader(List<string> names, DType[] dtypes, IReadOnlyDictionary<string, Tensor> tensors,
                              IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions
               {
                   Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
                   Indented = false,
               }))
        {
            json.WriteStartObject();
            if (metadata is not null && metadata.Count > 0)
            {
                json.WriteStartObject(MetadataKey);
                foreach (var key in metadata.Keys.OrderBy(k => k, StringComparer.Ordinal))
                    json.WriteString(key, metadata[key]);
                json.WriteEndObject();
            }
            long offset = 0;
            for (int i = 0; i < names.Count; i++)
            {
                var t = tensors[names[i]];
                long bytes = checked(t.NumberOfElements * dtypes[i].Size);
                json.WriteStartObject(names[i]);
                json.WriteString("dtype", dtypes[i].Name);
                json.WriteStartArray("shape");
                foreach (long d in t.shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        // Pad with spaces so that 8 + header length is a multiple of 8: the data starts aligned.
        int padding = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    static void WriteTensor(FileStream stream, Tensor tensor, DType dtype)
    {
        if (tensor.NumberOfElements == 0) return;
        // Each step returns a new tensor object only when it has work to do; free only those.
        var owned = new List<Tensor>();
        try
        {
            var t = tensor;
            if (t.is_sparse) owned.Add(t = t.to_dense());
            if (t.device_type != DeviceType.CPU) owned.Add(t = t.cpu());
            if (!t.is_contiguous()) owned.Add(t = t.contiguous());
            var flat = t.view(-1);
            owned.Add(flat);
            long elements = flat.NumberOfElements;
            long chunkElements = ChunkBytes / dtype.Size;
            for (long start = 0; start < elements; start += chunkElements)
            {
                long n = Math.Min(chunkElements, elements - start);
                using var part = flat.narrow(0, start, n);
                stream.Write(part.bytes);
            }
        }
        finally
        {
            foreach (var o in owned)
            {
                if (!ReferenceEquals(o, tensor)) o.Dispose();
            }
        }
    }

    // ------------------------------------------------------------------ helpers


    static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValueKind.Null => "null",
        _ => "value",
    };

    static string Short(JsonElement e)
    {
        string raw = Terminal.Escape(e.GetRawText());
        return raw.Length <= 60 ? raw : raw[..57] + "...";
    }
}
