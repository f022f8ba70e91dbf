using FsMerge.Cli;
using Xunit;

namespace FsMerge.Tests;

/// <summary>Progress bars off a terminal: a plain line at every tenth, to the screen unless --quiet and always to the log.</summary>
[Collection("torch")]   // ProgressBar.Quiet and .Log are process-wide, as the CLI tests set them
public class ProgressBarTests
{
    [Fact]
    public void Off_a_terminal_every_tenth_is_one_plain_line_on_stderr_and_in_the_log_even_when_quiet()
    {
        var (oldError, oldQuiet) = (Console.Error, ProgressBar.Quiet);
        var logged = new List<string>();
        var screen = new StringWriter();
        try
        {
            Console.SetError(screen);
            ProgressBar.Log = logged.Add;
            foreach (bool quiet in new[] { false, true })
            {
                ProgressBar.Quiet = quiet;
                var bar = new ProgressBar("train", 200);
                for (int done = 1; done <= 200; done++) bar.Report(done, $"loss {1.0 / done:G3}");
            }
        }
        finally
        {
            Console.SetError(oldError);
            ProgressBar.Quiet = oldQuiet;
            ProgressBar.Log = null;
        }
        var lines = screen.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(11, lines.Length);   // 0% (the first step) to 100%, only from the run that was not quiet
        Assert.StartsWith("100% train 200/200 loss 0.005 ", lines[^1]);
        Assert.Matches(@" steps/s eta 0:00$| s/step eta 0:00$", lines[^1]);
        Assert.EndsWith("- steps/s eta -", lines[0]);   // nothing measured at the first report: no rate, no ETA
        Assert.Equal(22, logged.Count);
    }

    [Fact]
    public void Rates_carry_their_unit_and_ETAs_keep_their_hours()
    {
        Assert.Equal("250 samples/s", ProgressBar.Rate(250.4, "samples"));
        Assert.Equal("12.5 steps/s", ProgressBar.Rate(12.5, "steps"));
        Assert.Equal("4.0 s/step", ProgressBar.Rate(0.25, "steps"));
        Assert.Equal("- steps/s", ProgressBar.Rate(null, "steps"));
        Assert.Equal("1:05:00", ProgressBar.Eta(1.0, 3900));   // 65 minutes, not "05:00"
        Assert.Equal("2:30", ProgressBar.Eta(2.0, 300));
        Assert.Equal("-", ProgressBar.Eta(null, 300));
    }

    [Fact]
    public void A_resumed_run_measures_its_rate_from_where_it_resumed()
    {
        var (oldError, oldQuiet) = (Console.Error, ProgressBar.Quiet);
        var screen = new StringWriter();
        try
        {
            Console.SetError(screen);
            ProgressBar.Quiet = false;
            var bar = new ProgressBar("train", 1000);
            bar.Report(900);   // the checkpoint's step: no work measured yet
            Thread.Sleep(50);
            bar.Report(1000);
        }
        finally
        {
            Console.SetError(oldError);
            ProgressBar.Quiet = oldQuiet;
        }
        var lines = screen.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.EndsWith("- steps/s eta -", lines[0]);
        // 100 steps in at least 50 ms: at most 2,000 steps/s, never the 900 steps the checkpoint brought.
        var rate = double.Parse(System.Text.RegularExpressions.Regex.Match(lines[^1], @"([0-9.]+) steps/s").Groups[1].Value,
            System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(rate, 1, 2000);
    }
}
