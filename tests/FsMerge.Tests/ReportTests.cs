using System.Text.Json.Nodes;
using FsMerge.Bench;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using FsMerge.Reporting;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Merge reports: loss curves recorded by training, and the files a report folder gets.</summary>
[Collection("torch")]
public class ReportTests
{
    static MethodResult Run(IMergeMethod method, MergeInputs inputs, EvaluationResult test, params (string, string)[] options)
    {
        var settings = new MethodSettings(method, options.ToDictionary(o => o.Item1, o => o.Item2));
        var outcome = method.Merge(inputs, settings);
        return MethodResult.From(method.Name, settings, outcome, 1.5, PeakMemory.Megabytes(), test);
    }

    static EvaluationResult Accuracies(double a, double b) =>
        new([new TaskAccuracy("t0", a, 100), new TaskAccuracy("t1", b, 100)], (a + b) / 2, Math.Min(a, b) - 0.1, Math.Min(a, b));

    [Fact]
    public void Training_records_a_loss_curve_of_bounded_length_that_ends_at_the_last_step()
    {
        var sources = Enumerable.Range(0, 2).Select(i => Model.Create(MergeTests.Mlp([12], $"t{i}"), 10 + i, CPU)).ToList();
        var outcome = new FsMergeMethod().Merge(MergeTests.Inputs(sources), new MethodSettings(new FsMergeMethod(),
            new Dictionary<string, string> { ["epochs"] = "450", ["batch"] = "0", ["lr"] = "0.1" }));
        var curve = Assert.Single(outcome.LossCurves);
        Assert.InRange(curve.Points.Count, MergeTrainer.CurvePoints / 2, MergeTrainer.CurvePoints + 1);
        Assert.Equal(450, curve.Points[^1].Step);
        Assert.Equal(curve.FinalLoss, (double)outcome.Details["final_loss"]!);
        Assert.True(curve.Points[^1].Loss < curve.Points[0].Loss);
    }

    [Fact]
    public void A_report_of_two_methods_writes_markdown_metrics_plots_and_a_model_card()
    {
        var sources = Enumerable.Range(0, 2).Select(i => Model.Create(MergeTests.Mlp([12], $"t{i}"), 10 + i, CPU)).ToList();
        var inputs = MergeTests.Inputs(sources);
        var fs = Run(new FsMergeMethod(), inputs, Accuracies(0.9, 0.8), ("epochs", "300"), ("lr", "0.5"));
        var average = Run(new AverageMerge(), inputs, Accuracies(0.5, 0.4));
        var dir = Directory.CreateTempSubdirectory("fsmerge-report").FullName;
        try
        {
            var run = new MergeRunSummary
            {
                Sources = sources.Select((s, i) => new ReportSource($"models/{i}", $"t{i}", s.Config, 16)).ToList(),
                Methods = [fs, average],
                SavedModel = "fs-merge",
                SavedConfig = inputs.Target,
                Seed = 3,
                DataSeries = [new DataPoint("fs-merge", 16, Accuracies(0.8, 0.7)), new DataPoint("fs-merge", 64, Accuracies(0.9, 0.8))],
            };
            var files = MergeReport.Write(dir, run);
            Assert.Equal(new[] { "README.md", "accuracy-vs-data.png", "accuracy.png", "loss.png", "metrics.csv", "metrics.json", "report.md" },
                Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
            Assert.Equal(files.Order(StringComparer.Ordinal), Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            foreach (var png in files.Where(f => f.EndsWith(".png")))
                Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(Path.Combine(dir, png))[..4]);

            var report = File.ReadAllText(Path.Combine(dir, "report.md"));
            Assert.Contains("| fs-merge | 90.00 | 80.00 | 85.00 | 70.00 |", report);
            Assert.Contains("![Training loss", report);
            var metrics = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "metrics.json")))!;
            Assert.Equal(2, metrics["methods"]!.AsArray().Count);
            Assert.Null(metrics["methods"]![1]!["optimized_parameters"]);
            Assert.Equal(fs.LossCurves[0].Points.Count, metrics["methods"]![0]!["loss_curves"]![0]!["loss"]!.AsArray().Count);
            var csv = File.ReadAllLines(Path.Combine(dir, "metrics.csv"));
            Assert.Contains("average,16,accuracy,t1,0.4", csv);            // the run's merge images per task
            Assert.Contains("average,16,task_identified,,0.4", csv);
            Assert.Contains("fs-merge,64,accuracy,t0,0.9", csv);           // the data series' own
            Assert.Contains("fs-merge,64,task_identified,,0.8", csv);
            Assert.DoesNotContain(csv.Skip(1), line => line.Split(',')[1].Length == 0);
            var card = File.ReadAllText(Path.Combine(dir, "README.md"));
            Assert.Contains("| 1 | t1 | `classifier.1.weight`, `.bias` | `tasks/1-t1` | 3 | a, b, c |", card);
            Assert.Contains("| task identified (joint argmax in the task's own head) | | 80.00 |", card);
            Assert.Contains("not calibrated against each other", card);
            Assert.Contains("## Limitations", card);

            var cosine = inputs.Target with { Heads = inputs.Target.Heads.Select(h => HeadInfo.Create(HeadKind.Cosine, h.Task, h.Labels, 12, 20)).ToList() };
            var cosineCard = ModelCard.Markdown(run, fs, cosine);
            Assert.Contains("| 1 | t1 | `classifier.1.projection`, `.weight` (cosine, logit scale 20) | `tasks/1-t1` | 3 | a, b, c |", cosineCard);
            Assert.Contains("share one logit scale", cosineCard);
        }
        finally
        {
            Directory.Delete(dir, true);
            foreach (var s in sources) s.Dispose();
        }
    }
}
