using System.Diagnostics;
using Xunit;

namespace FsMerge.Tests;

/// <summary>
/// The command-line conventions: one name per concept (old names still work, with a warning), short aliases, --version,
/// bash completion through the parser, and docs/cli.md being exactly what `fsmerge reference` prints.
/// </summary>
[Collection("torch")]
public class CommandLineTests : IClassFixture<BadInputTests.Models>
{
    readonly BadInputTests.Models models;
    public CommandLineTests(BadInputTests.Models models) => this.models = models;

    string Yaml(string name, string text)
    {
        var path = Path.Combine(models.Root, name + ".yaml");
        File.WriteAllText(path, text.Replace("MODEL_A", models.A).Replace("MODEL_B", models.B));
        return path;
    }

    /// <summary>A dry run's plan without its measured times, which differ from run to run.</summary>
    static string Untimed(string plan) => string.Join("\n", plan.Split('\n').Where(l => !l.Contains("time:") && !l.Contains("estimate:")));

    [Fact]
    public void Short_aliases_and_long_names_give_the_same_plan()
    {
        var (code, longPlan, err) = CliTests.Run("merge", "--method", "average", "--model", models.A, "--model", models.B, "--samples", "8", "--seed", "3", "--dry-run", "--threads", "1");
        Assert.True(code == 0, err);
        var (shortCode, shortPlan, shortErr) = CliTests.Run("merge", "--method", "average", "-m", models.A, "-m", models.B, "-n", "8", "-s", "3", "--dry-run", "-j", "1");
        Assert.True(shortCode == 0, shortErr);
        Assert.Equal(Untimed(longPlan), Untimed(shortPlan));
        Assert.Contains("8 images", longPlan);
    }

    [Fact]
    public void Old_flag_and_config_key_names_still_work_with_one_warning_each()
    {
        var (code, plan, err) = CliTests.Run("merge", "--method", "average", "--model", models.A, "--model", models.B, "--data-per-task", "8", "--dry-run", "--threads", "1");
        Assert.True(code == 0, err);
        Assert.Equal("warning: --data-per-task is now --samples; the old name will be removed in the next release", err.Trim());
        var (newCode, newPlan, _) = CliTests.Run("merge", "--method", "average", "--model", models.A, "--model", models.B, "--samples", "8", "--dry-run", "--threads", "1");
        Assert.Equal(0, newCode);
        Assert.Equal(Untimed(newPlan), Untimed(plan));

        var config = Yaml("old-keys", "sources:\n  - model: MODEL_A\n  - model: MODEL_B\nmethod: average\nheld_out: 4\noutput: merged\n");
        (code, plan, err) = CliTests.Run("merge", config, "--dry-run", "--threads", "1");
        Assert.True(code == 0, err);
        var warnings = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, warnings.Length);
        Assert.Contains($"warning: {config}:5: 'held_out' is now 'held-out'", warnings[0]);
        Assert.Contains($"warning: {config}:6: 'output' is now 'out'", warnings[1]);
        Assert.Contains(Path.Combine(models.Root, "merged"), plan);
    }

    [Fact]
    public void An_option_given_by_its_old_and_new_name_or_a_key_twice_is_refused()
    {
        var (code, _, err) = CliTests.Run("merge", "--method", "average", "--model", models.A, "--model", models.B, "--data-per-task", "8", "--samples", "9", "--dry-run");
        Assert.Equal(2, code);
        Assert.Contains("error: fsmerge merge: option '--samples' given twice (once by its old name)", err);
        var config = Yaml("both-keys", "sources:\n  - model: MODEL_A\n  - model: MODEL_B\nmethod: average\noutput: a\nout: b\n");
        (code, _, err) = CliTests.Run("merge", config, "--dry-run");
        Assert.Equal(2, code);
        Assert.Contains($"{config}:6: 'out' is given twice in the file", err);
    }

    [Fact]
    public void Version_prints_the_version_and_help_shows_the_default_once()
    {
        var (code, output, _) = CliTests.Run("--version");
        Assert.Equal(0, code);
        Assert.Matches(@"^\d+\.\d+\.\d+", output.Trim());
        (code, output, _) = CliTests.Run("merge", "-h");
        Assert.Equal(0, code);
        Assert.DoesNotMatch(@"\(default: [^)]*\) \(default:", output);
        Assert.Contains("-n, --samples N", output);
        Assert.Contains("fs-merge-seq", output);   // the methods' options follow the options
    }

    [Fact]
    public void Bash_completion_offers_the_current_names_and_the_allowed_values()
    {
        var dir = Path.Combine(models.Root, "completion");
        Directory.CreateDirectory(dir);
        // The completion script calls the program named first on the line: here the repository's launcher, as a user would.
        var program = Path.Combine(RepositoryRoot(), "fsmerge");
        var (_, script, _) = CliTests.Run("completion", "bash");
        File.WriteAllText(Path.Combine(dir, "completion.bash"), script);

        string Complete(string line)
        {
            var words = line.Split(' ');
            var start = new ProcessStartInfo("bash", ["-c",
                "source completion.bash; COMP_LINE=\"$1\"; COMP_POINT=${#1}; read -ra COMP_WORDS <<< \"$1\"; [ \"${1: -1}\" = ' ' ] && COMP_WORDS+=(''); " +
                "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _fsmerge_complete; printf '%s\\n' \"${COMPREPLY[@]}\"", "complete", line])
            { WorkingDirectory = dir, RedirectStandardOutput = true };
            using var process = Process.Start(start)!;
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return string.Join(" ", output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));
        }
        Assert.Equal("--samples --seed --shard-size", Complete($"{program} merge --s"));
        Assert.Equal("--data-dir", Complete($"{program} merge --dat"));   // not the old --data, --data-per-task
        Assert.EndsWith(" bert load mlp perf vit", Complete($"{program} bench "));   // after the options the library also offers
        Assert.Equal("vit", Complete($"{program} train --arch v"));
    }

    /// <summary>The folder holding FsMerge.slnx, above the test's build.</summary>
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "FsMerge.slnx"))) return dir.FullName;
        throw new InvalidOperationException("no FsMerge.slnx above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void The_committed_reference_is_what_the_program_prints()
    {
        var (code, reference, err) = CliTests.Run("reference");
        Assert.True(code == 0, err);
        var committed = File.ReadAllText(Path.Combine(RepositoryRoot(), "docs", "cli.md"));
        Assert.True(committed == reference, "docs/cli.md is stale: regenerate it with `./fsmerge reference --out docs/cli.md`");
        Assert.Contains("| `held-out` |", reference);
        Assert.Contains("`--samples N`", reference);
    }
}
