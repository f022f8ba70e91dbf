using FsMerge.Fuzzing;
using Xunit;

namespace FsMerge.Tests;

/// <summary>
/// The reader fuzzer (issue 18) in the suite: a fixed-seed run of a fixed number of inputs per reader (the same run on
/// every machine, about half a minute here), and every input ever saved in FuzzCorpus/TARGET/ replayed. An input the
/// fuzzer finds is saved in a temporary folder named in the failure; copy it into FuzzCorpus/TARGET/ with the fix.
/// For long runs: ./fsmerge fuzz --seconds 3600 --out runs/fuzz
/// </summary>
[Collection("torch")]
public class FuzzTests
{
    static string Corpus => Path.Combine(AppContext.BaseDirectory, "FuzzCorpus");

    [Fact]
    public void A_bounded_fuzz_run_over_every_reader_finds_nothing()
    {
        var work = Path.Combine(Path.GetTempPath(), $"fsmerge-fuzz-test-{Guid.NewGuid():N}");
        var found = work + "-found";
        try
        {
            var report = Fuzzer.Run(work, found, seed: 1, duration: null, executionsPerTarget: 3000);
            Assert.Equal(FuzzTargets.Names.Length, report.Executions.Count);
            Assert.All(report.Executions.Values, n => Assert.Equal(3000, n));
            Assert.True(report.Findings.Count == 0,
                string.Join("\n", report.Findings.Select(f => $"{f.Target}: {f.Kind}: {f.Cause}: {f.Detail} (input saved as {f.File})")));
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    public static TheoryData<string, string> SavedInputs()
    {
        var data = new TheoryData<string, string>();
        foreach (var dir in Directory.GetDirectories(Corpus).Order(StringComparer.Ordinal))
            foreach (var file in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
                data.Add(Path.GetFileName(dir), Path.GetFileName(file));
        return data;
    }

    [Theory]
    [MemberData(nameof(SavedInputs))]
    public void A_saved_input_is_read_or_refused_with_one_line(string target, string file) =>
        Replay(target, File.ReadAllBytes(Path.Combine(Corpus, target, file)));

    [Fact]
    public void A_checkpoint_one_byte_short_or_with_a_flipped_bit_is_refused_before_libtorch_reads_it() =>
        WithTarget("checkpoint", t =>
        {
            var seed = t.Seeds[0];
            Assert.Null(Fuzzer.Check(t, seed));
            foreach (var damaged in new[] { seed[..^1], Flipped(seed, seed.Length / 2), Flipped(seed, seed.Length - 1), seed.Concat(new byte[1]).ToArray() })
            {
                File.WriteAllBytes(t.Path, damaged);
                var e = Assert.Throws<FsMergeException>(t.Read);
                Assert.Matches("SHA-256|cut or padded", e.Message);
            }
        });

    static byte[] Flipped(byte[] bytes, int at)
    {
        var copy = (byte[])bytes.Clone();
        copy[at] ^= 0x10;
        return copy;
    }

    static void Replay(string target, byte[] input) => WithTarget(target, t =>
    {
        var finding = Fuzzer.Check(t, input);
        Assert.True(finding == null, $"{finding?.Kind}: {finding?.Cause}: {finding?.Detail}");
    });

    static void WithTarget(string name, Action<FuzzTarget> test)
    {
        var work = Path.Combine(Path.GetTempPath(), $"fsmerge-replay-{Guid.NewGuid():N}");
        try
        {
            test(FuzzTargets.Create(work, [name]).Single());
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
