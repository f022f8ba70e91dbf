using System.Diagnostics;
using System.Text.RegularExpressions;
using Xunit;

namespace FsMerge.Tests;

/// <summary>
/// The guides' commands, run as written: every ```sh block of a page, in order, as one bash script from the repository
/// root (`./fsmerge ...`). Each page writes only under runs/PAGE/, which is removed first, so a page runs as on a fresh
/// checkout. `./run-tests` itself (the README's second command) is what runs this test, so it is skipped. Commands
/// that take hours (the benchmarks in docs/results.md) are in ```text blocks, which are not run.
/// </summary>
[Collection("torch")]
[Trait("Category", "docs")]
public class DocsTests
{
    /// <summary>The pages with commands, and the folder under runs/ each one writes to.</summary>
    public static TheoryData<string, string> Pages => new()
    {
        { "README.md", "readme" },
        { "docs/mlp.md", "mlp" },
        { "docs/vit.md", "vit" },
        { "docs/bert.md", "bert" },
        { "docs/huggingface.md", "hf" },
    };

    public static IReadOnlyList<string> ShellBlocks(string markdown) =>
        Regex.Matches(markdown, @"^```sh\n(.*?)^```", RegexOptions.Multiline | RegexOptions.Singleline).Select(m => m.Groups[1].Value).ToList();

    [Theory]
    [MemberData(nameof(Pages))]
    public void A_pages_commands_run_as_written(string page, string runs)
    {
        var root = CommandLineTests.RepositoryRoot();
        var blocks = ShellBlocks(File.ReadAllText(Path.Combine(root, page)));
        Assert.NotEmpty(blocks);
        var lines = blocks.SelectMany(b => b.Split('\n')).Where(l => !l.TrimStart().StartsWith("./run-tests")).ToList();
        // Every output a page makes is under its own folder, so pages cannot depend on one another.
        foreach (Match m in Regex.Matches(string.Join("\n", lines), @"(?:--out|-o)[ =](\S+)"))
            Assert.True(m.Groups[1].Value.StartsWith($"runs/{runs}/"), $"{page}: writes {m.Groups[1].Value}, outside runs/{runs}/");
        var folder = Path.Combine(root, "runs", runs);
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);

        var start = new ProcessStartInfo("bash", ["-euo", "pipefail", "-c", string.Join("\n", lines)])
        {
            WorkingDirectory = root, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        string Tail(string text) => text.Length > 3000 ? text[^3000..] : text;
        Assert.True(process.ExitCode == 0, $"{page}: exit {process.ExitCode}\n{Tail(stdout)}\n{Tail(stderr.Result)}");
        Assert.DoesNotContain("warning:", stderr.Result);   // the docs use the current names
    }
}
