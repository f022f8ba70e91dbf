using System.Diagnostics;
using FsMerge.Data;
using FsMerge.Models;
using FsMerge.Training;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// `fsmerge merge` as a child process, killed with SIGKILL at a random step after a checkpoint exists and resumed
/// with --resume, writes the same bytes as an uninterrupted run (one thread both times); stopped with SIGTERM, it
/// saves a checkpoint and says so, like Ctrl-C, and resumes to the same bytes too.
/// </summary>
[Collection("torch")]
public class ResumeCliTests
{
    static readonly string Cli = Path.Combine(AppContext.BaseDirectory, "FsMerge.Cli.dll");

    static Process Start(params string[] args) => Start(args, null);

    /// <summary>Starts the CLI; its stderr lines go to <paramref name="errors"/> when given.</summary>
    static Process Start(string[] args, List<string>? errors)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(Cli);
        foreach (var a in args) info.ArgumentList.Add(a);
        var process = Process.Start(info)!;
        // Drain the pipes so the child never blocks on a full one.
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, line) => { if (line.Data != null) lock (process) errors?.Add(line.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    static void Finish(Process process, string what)
    {
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(3)), $"{what} did not finish");
        Assert.True(process.ExitCode == 0, $"{what} exited with {process.ExitCode}");
    }

    static string TrainSource(string root, string task, long seed)
    {
        var dir = Path.Combine(root, task.Replace(':', '-'));
        var splits = TaskData.Load(TaskSpec.Parse(task), DataDirectory.Resolve(null));
        var config = new ModelConfig { Architecture = "mlp", InputSize = 784, HiddenSizes = [32, 32], Heads = [new HeadInfo(task, splits.Train.LabelNames)] };
        var (model, _) = SourceTrainer.Train(Model.Create(config, seed, CPU), splits, new TrainOptions { Epochs = 1, BatchSize = 64, Seed = seed }, CPU);
        model.Save(dir);
        model.Dispose();
        return dir;
    }

    [Fact]
    public void A_merge_killed_with_SIGKILL_or_stopped_with_SIGTERM_resumes_to_the_same_bytes_as_an_uninterrupted_one()
    {
        DataProvisioner.Provision(DataDirectory.Resolve(null), _ => { });
        var root = Directory.CreateTempSubdirectory("fsmerge-resume-cli").FullName;
        try
        {
            var a = TrainSource(root, "mnist:0-4", 1);
            var b = TrainSource(root, "mnist:5-9", 2);
            string[] Args(string outDir) =>
            [
                "merge", "--method", "fs-merge", "--model", a, "--model", b, "--out", outDir, "--init", "zipit",
                "--optimizer", "adamw", "--schedule", "onecycle", "--lr", "0.01", "--epochs", "300", "--batch", "48",
                "--checkpoint-every", "7", "--threads", "1", "--quiet",
            ];
            var reference = Path.Combine(root, "reference");
            Finish(Start(Args(reference)), "the uninterrupted merge");

            var resumed = Path.Combine(root, "resumed");
            var checkpoint = Path.Combine(resumed + ".partial", "train-0.ckpt");
            var killed = Start(Args(resumed));
            var clock = Stopwatch.StartNew();
            while (!File.Exists(checkpoint) && !killed.HasExited && clock.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(5);
            Thread.Sleep(Random.Shared.Next(0, 400));
            Assert.False(killed.HasExited, "the merge ended before it could be killed; give it more steps");
            killed.Kill();   // SIGKILL: no handler runs
            killed.WaitForExit();
            Assert.False(Directory.Exists(resumed), "the killed run must not leave an output");
            Assert.True(File.Exists(checkpoint));

            Assert.Contains("holds checkpoints of an interrupted run", RunToEnd(Args(resumed)));
            Finish(Start([.. Args(resumed), "--resume"]), "the resumed merge");
            Assert.True(File.ReadAllBytes(Path.Combine(reference, Model.WeightsFile)).AsSpan()
                .SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, Model.WeightsFile))), "the resumed merge's weights differ");
            Assert.False(Directory.Exists(resumed + ".partial"));
            foreach (var file in new[] { "report.md", "metrics.json", "metrics.csv", "loss.png", "README.md", "merge.json", "config.json" })
                Assert.True(File.Exists(Path.Combine(resumed, file)), file);
            var log = File.ReadAllLines(Path.Combine(resumed, "merge.log"));
            Assert.Equal(2, log.Count(l => l.Contains(" fsmerge merge ")));   // the killed run and the resumed one
            var resumedAt = log.Single(l => l.Contains("resumed at step")).Split(' ');
            long step = long.Parse(resumedAt[^5]), total = long.Parse(resumedAt[^3]);
            Assert.InRange(step, 7, total - 1);
            Assert.Equal(0, step % 7);

            var terminated = Path.Combine(root, "terminated");
            var errors = new List<string>();
            var stopped = Start(Args(terminated), errors);
            clock.Restart();
            while (!File.Exists(Path.Combine(terminated + ".partial", "train-0.ckpt")) && !stopped.HasExited && clock.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(5);
            Assert.False(stopped.HasExited, "the merge ended before it could be stopped; give it more steps");
            Assert.Equal(0, Tmds.Linux.LibC.kill(stopped.Id, Tmds.Linux.LibC.SIGTERM));
            Assert.True(stopped.WaitForExit(TimeSpan.FromMinutes(1)));
            stopped.WaitForExit();   // the stderr lines
            Assert.Equal(2, stopped.ExitCode);
            Assert.Contains(errors, l => l.StartsWith("stopping (SIGTERM): saving a checkpoint"));
            Assert.Contains(errors, l => l.StartsWith("error: interrupted: ") && l.Contains("run the same command with --resume"));
            Assert.False(Directory.Exists(terminated));
            Finish(Start([.. Args(terminated), "--resume"]), "the merge resumed after SIGTERM");
            Assert.True(File.ReadAllBytes(Path.Combine(reference, Model.WeightsFile)).AsSpan()
                .SequenceEqual(File.ReadAllBytes(Path.Combine(terminated, Model.WeightsFile))), "the merge resumed after SIGTERM differs");
        }
        finally
        {
            Directory.Delete(root, true);
        }
    }

    /// <summary>Runs the CLI to its end and returns its stderr.</summary>
    static string RunToEnd(string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(Cli);
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var error = process.StandardError.ReadToEndAsync();
        process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.NotEqual(0, process.ExitCode);
        return error.Result;
    }
}
