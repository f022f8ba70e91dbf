using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using TorchSharp;

namespace FsMerge.Fuzzing;

/// <summary>A reader that misbehaved on one input: an exception other than <see cref="FsMergeException"/>, or too much time or
/// memory. <see cref="Cause"/> (the exception type and the FsMerge method it left) tells distinct findings apart.</summary>
internal sealed record FuzzFinding(string Target, string Kind, string Cause, string Detail, string? File);

/// <summary>What a fuzz run did: executions per target, the time it took, and the distinct findings.</summary>
internal sealed record FuzzReport(IReadOnlyDictionary<string, long> Executions, TimeSpan Elapsed, IReadOnlyList<FuzzFinding> Findings)
{
    public long Total => Executions.Values.Sum();
}

/// <summary>
/// A deterministic mutation fuzzer over FsMerge's readers (<see cref="FuzzTargets"/>): it takes a seed file that FsMerge
/// wrote, applies one to four random mutations (bit flips, interesting bytes and integers, deleted, inserted and
/// duplicated ranges, truncation, splices of another seed, and for text formats JSON/YAML values replaced by values of
/// another kind), writes it where the reader looks, and reads it in this process. Refusing the input with an
/// <see cref="FsMergeException"/> is correct; any other exception, more than <see cref="MaxTime"/> or more than
/// <see cref="MaxAllocatedBytes"/> of managed allocation is a finding, saved once per distinct cause as
/// <c>CORPUS/TARGET/KIND-HASH</c> to be replayed as a regression test.
/// </summary>
internal static class Fuzzer
{
    public static readonly TimeSpan MaxTime = TimeSpan.FromSeconds(2);
    public const long MaxAllocatedBytes = 256L << 20;
    const int MaxInputBytes = 1 << 20;

    /// <summary>
    /// Fuzzes until <paramref name="duration"/> has passed or every target ran <paramref name="executionsPerTarget"/> times
    /// (whichever is given; with a count, the run is the same on every machine). Targets take turns, one input each.
    /// </summary>
    public static FuzzReport Run(string work, string corpus, int seed, TimeSpan? duration, long? executionsPerTarget,
        IReadOnlyCollection<string>? only = null, Action<string>? log = null)
    {
        var targets = FuzzTargets.Create(work, only);
        var rng = new Random(seed);
        var executions = targets.ToDictionary(t => t.Name, _ => 0L);
        var findings = new Dictionary<string, FuzzFinding>();
        var clock = Stopwatch.StartNew();
        var nextLog = TimeSpan.FromSeconds(10);
        while ((duration is not { } d || clock.Elapsed < d) && (executionsPerTarget is not { } n || executions.Values.Any(e => e < n)))
        {
            foreach (var target in targets)
            {
                if (executionsPerTarget is { } limit && executions[target.Name] >= limit) continue;
                var input = Mutate(target.Seeds[rng.Next(target.Seeds.Count)], target, rng);
                executions[target.Name]++;
                if (Check(target, input) is not { } finding) continue;
                var key = $"{target.Name}|{finding.Kind}|{finding.Cause}";
                if (findings.ContainsKey(key)) continue;
                findings[key] = finding with { File = Save(corpus, target.Name, finding.Kind, input) };
                log?.Invoke($"{target.Name}: {finding.Kind}: {finding.Cause}: {finding.Detail} (saved {findings[key].File})");
            }
            if (log != null && clock.Elapsed > nextLog)
            {
                log($"{clock.Elapsed.TotalSeconds:F0} s: {executions.Values.Sum()} executions, {findings.Count} finding(s)");
                nextLog += TimeSpan.FromSeconds(10);
            }
        }
        return new FuzzReport(executions, clock.Elapsed, findings.Values.ToList());
    }

    /// <summary>Writes <paramref name="input"/> where <paramref name="target"/> reads and reads it; null when the reader
    /// either read it or refused it with an <see cref="FsMergeException"/> within the time and memory bounds.</summary>
    public static FuzzFinding? Check(FuzzTarget target, byte[] input)
    {
        File.WriteAllBytes(target.Path, input);
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        var clock = Stopwatch.StartNew();
        FuzzFinding? finding = null;
        try
        {
            using var scope = torch.NewDisposeScope();
            target.Read();
        }
        catch (FsMergeException)
        {
        }
        catch (Exception e)
        {
            var frame = new StackTrace(e).GetFrames().FirstOrDefault(f => f.GetMethod()?.DeclaringType?.Namespace?.StartsWith("FsMerge") == true)?.GetMethod();
            finding = new FuzzFinding(target.Name, "crash", $"{e.GetType().Name} in {frame?.DeclaringType?.Name}.{frame?.Name}", Terminal.Escape(Terminal.OneLine(e.Message)), null);
        }
        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
        if (finding == null && clock.Elapsed > MaxTime)
            finding = new FuzzFinding(target.Name, "slow", "time", $"{clock.Elapsed.TotalSeconds:F1} s for {input.Length} bytes", null);
        if (finding == null && allocated > MaxAllocatedBytes)
            finding = new FuzzFinding(target.Name, "memory", "allocation", $"{allocated >> 20} MB allocated for {input.Length} bytes", null);
        return finding;
    }

    static string Save(string corpus, string target, string kind, byte[] input)
    {
        var dir = Path.Combine(corpus, target);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, $"{kind}-{Convert.ToHexString(SHA256.HashData(input))[..12].ToLowerInvariant()}");
        AtomicFile.Write(path, temporary => File.WriteAllBytes(temporary, input));
        return path;
    }

    // ------------------------------------------------------------------ mutations

    static readonly byte[] InterestingBytes = [0, 1, 0x7f, 0x80, 0xff, (byte)'"', (byte)'\\', (byte)'{', (byte)'[', (byte)':', (byte)'\n', (byte)'-', (byte)'&', (byte)'*'];

    static readonly long[] InterestingIntegers = [0, 1, -1, 255, 256, 65535, int.MaxValue, int.MinValue, 1L << 32, (1L << 32) + 1, long.MaxValue, 1L << 62];

    /// <summary>JSON and YAML values of every kind, and the classic troublemakers.</summary>
    static readonly string[] Tokens =
    [
        "\"\\ud800\"", "\"\\udfff\\ud800\"", "-1", "0", "99999999999", "4294967296", "1e309", "0.5", "null", "true", "[]", "{}", "[[[[[[[[",
        "\"\"", "\"x\"", "\"\\u001b[31m\"", "[0, 4294967296, 4294967296]", "*a", "&a x", "? ", "- ", ": ", "\t", "\r\n", "\"F32\"", "\"BOOL\"",
        "\"__metadata__\"", "[1, 2, 3]", "{\"a\": 1, \"a\": 2}", "!!binary", "~", "300000",
    ];

    static byte[] Mutate(byte[] seed, FuzzTarget target, Random rng)
    {
        var data = new List<byte>(seed);
        int count = 1 + rng.Next(4);
        for (int m = 0; m < count; m++)
        {
            int op = rng.Next(target.Text ? 10 : 8);
            int at = data.Count == 0 ? 0 : rng.Next(data.Count);
            switch (op)
            {
                case 0 when data.Count > 0:
                    data[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1 when data.Count > 0:
                    data[at] = (byte)rng.Next(256);
                    break;
                case 2 when data.Count > 0:
                    data[at] = InterestingBytes[rng.Next(InterestingBytes.Length)];
                    break;
                case 3 when data.Count > 0:
                    data.RemoveRange(at, Math.Min(data.Count - at, 1 + rng.Next(16)));
                    break;
                case 4:
                    data.InsertRange(at, Enumerable.Range(0, 1 + rng.Next(16)).Select(_ => (byte)rng.Next(256)));
                    break;
                case 5 when data.Count > 0:
                    data.InsertRange(at, Slice(data, rng));
                    break;
                case 6:
                    Overwrite(data, at, Integer(rng), rng);
                    break;
                case 7:
                    var other = target.Seeds[rng.Next(target.Seeds.Count)];
                    data.RemoveRange(at, data.Count - at);
                    if (rng.Next(2) == 0 && other.Length > 0) data.AddRange(other.Skip(rng.Next(other.Length)));
                    break;
                default:
                    ReplaceValue(data, Encoding.UTF8.GetBytes(Tokens[rng.Next(Tokens.Length)]), rng);
                    break;
            }
        }
        if (data.Count > MaxInputBytes) data.RemoveRange(MaxInputBytes, data.Count - MaxInputBytes);
        return data.ToArray();
    }

    static List<byte> Slice(List<byte> data, Random rng)
    {
        int start = rng.Next(data.Count);
        return data.GetRange(start, Math.Min(data.Count - start, 1 + rng.Next(64)));
    }

    static byte[] Integer(Random rng)
    {
        long value = InterestingIntegers[rng.Next(InterestingIntegers.Length)];
        return rng.Next(3) switch
        {
            0 => BitConverter.GetBytes(value),                                                      // little-endian int64 (safetensors)
            1 => BitConverter.GetBytes(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((int)value)),  // big-endian int32 (IDX)
            _ => Encoding.ASCII.GetBytes(value.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        };
    }

    static void Overwrite(List<byte> data, int at, byte[] bytes, Random rng)
    {
        // Header fields sit near the start: aim there half the time.
        if (rng.Next(2) == 0) at = Math.Min(at, rng.Next(Math.Max(1, Math.Min(data.Count, 64))));
        for (int i = 0; i < bytes.Length; i++)
        {
            if (at + i < data.Count) data[at + i] = bytes[i];
            else data.Add(bytes[i]);
        }
    }

    /// <summary>Replaces the value after a random ':' ',' '[' or '-' (a JSON or YAML value) with <paramref name="token"/>.</summary>
    static void ReplaceValue(List<byte> data, byte[] token, Random rng)
    {
        var starts = new List<int>();
        for (int i = 0; i < data.Count; i++)
            if (data[i] is (byte)':' or (byte)',' or (byte)'[' or (byte)'-') starts.Add(i + 1);
        if (starts.Count == 0)
        {
            data.InsertRange(data.Count == 0 ? 0 : rng.Next(data.Count), token);
            return;
        }
        int start = starts[rng.Next(starts.Count)];
        while (start < data.Count && data[start] == (byte)' ') start++;
        int end = start;
        if (end < data.Count && data[end] == (byte)'"')
        {
            end++;
            while (end < data.Count && data[end] != (byte)'"') end += data[end] == (byte)'\\' ? 2 : 1;
            end = Math.Min(data.Count, end + 1);
        }
        else
            while (end < data.Count && data[end] is not ((byte)',' or (byte)'}' or (byte)']' or (byte)'\n')) end++;
        data.RemoveRange(start, end - start);
        data.InsertRange(start, token);
    }
}
