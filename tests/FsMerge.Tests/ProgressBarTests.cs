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
        Assert.Contains("/s eta ", lines[^1]);
        Assert.Equal(22, logged.Count);
    }
}
