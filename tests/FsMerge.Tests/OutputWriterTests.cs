using FsMerge.Runs;
using Xunit;

namespace FsMerge.Tests;

/// <summary>How outputs are written (issue 18): whole or not at all, never over another run's output or a source.</summary>
public class OutputWriterTests
{
    [Fact]
    public void A_run_that_loses_the_race_for_its_output_leaves_the_winners_alone()
    {
        using var tmp = new TempDir();
        var output = tmp.Sub("out");
        var e = Assert.Throws<FsMergeException>(() => OutputWriter.Write(output, overwrite: false, staging =>
        {
            File.WriteAllText(Path.Combine(staging, "mine.txt"), "loser");
            Directory.CreateDirectory(output);   // another run finishes first
            File.WriteAllText(Path.Combine(output, "theirs.txt"), "winner");
        }));
        Assert.Contains("output directory exists", e.Message);
        Assert.Equal(["theirs.txt"], Directory.GetFiles(output).Select(Path.GetFileName));
        Assert.Equal([output], Directory.GetDirectories(tmp.Path));
    }

    [Fact]
    public void Real_paths_resolve_every_link_and_refuse_loops()
    {
        using var tmp = new TempDir();
        var model = Directory.CreateDirectory(tmp.Sub("models", "a")).FullName;
        File.CreateSymbolicLink(tmp.Sub("shelf"), tmp.Sub("models"));
        File.CreateSymbolicLink(tmp.Sub("link"), Path.Combine(tmp.Sub("shelf"), "a"));
        Assert.Equal(model, OutputWriter.RealPath(tmp.Sub("link")));
        Assert.Equal(Path.Combine(model, "not-yet"), OutputWriter.RealPath(Path.Combine(tmp.Sub("link"), "not-yet")));
        File.CreateSymbolicLink(tmp.Sub("loop1"), tmp.Sub("loop2"));
        File.CreateSymbolicLink(tmp.Sub("loop2"), tmp.Sub("loop1"));
        Assert.Contains("cannot resolve the path", Assert.Throws<FsMergeException>(() => OutputWriter.RealPath(Path.Combine(tmp.Sub("loop1"), "x"))).Message);
        Assert.Contains("would be written inside the source model",
            Assert.Throws<FsMergeException>(() => OutputWriter.CheckOutput(Path.Combine(tmp.Sub("link"), "merged"), false, [model])).Message);
    }
}
