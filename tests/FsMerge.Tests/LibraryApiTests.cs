using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Runs;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>The library as a program uses it: typed options, one Merger.Merge call, data in memory, a small public surface.</summary>
[Collection("torch")]
public class LibraryApiTests : IClassFixture<BadInputTests.Models>
{
    readonly BadInputTests.Models models;
    public LibraryApiTests(BadInputTests.Models models) => this.models = models;

    /// <summary>Images [n, 1, 28, 28] in [0, 1], drawn with a fixed seed.</summary>
    static Tensor Images(int n, long seed) => rand([n, 1, 28, 28], generator: new Generator((ulong)seed));

    [Fact]
    public void Typed_options_and_in_memory_data_merge_into_a_model_with_metrics_and_a_report()
    {
        using var a = Images(40, 1);
        using var b = Images(40, 2);
        using var testA = new ImageSet(Images(20, 3), Enumerable.Range(0, 20).Select(i => (long)(i % 5)).ToArray(), BadInputTests.Models.Digits);
        using var testB = new ImageSet(Images(20, 4), Enumerable.Range(0, 20).Select(i => (long)(i % 5)).ToArray(), ["5", "6", "7", "8", "9"]);
        var request = new MergeRequest
        {
            Sources =
            [
                new SourceRequest { Model = models.A, Images = a, Samples = 24, TestImages = testA },
                new SourceRequest { Model = models.B, Images = b, Samples = 24, TestImages = testB },
            ],
            Options = new FsMergeOptions { Lr = 0.01, Epochs = 3, Init = "zipit" },
            HeldOut = 8,
            Eval = true,
        };
        Assert.Equal("fs-merge", request.Method);   // from the typed options
        var log = new List<string>();
        int threads = get_num_threads();
        using var result = Merger.Merge(request, new MergeCallbacks { Log = log.Add });
        Assert.Equal(threads, get_num_threads());   // no process-wide setting changed unasked

        Assert.NotNull(result.Model);
        Assert.Equal(2, result.Model!.HeadCount);
        Assert.Equal("0.01", result.Metrics.Options["lr"]);
        Assert.Equal("given", result.Metrics.OptionOrigins["lr"]);
        Assert.Equal("default for mlp", result.Metrics.OptionOrigins["optimizer"]);   // the architecture's default, not a copy in the record
        Assert.Equal(2, result.Test!.Tasks.Count);
        Assert.Equal(20, result.Test.Tasks[1].Count);
        Assert.Equal(8, result.LabelFree!.Tasks[0].Count);
        Assert.Contains("# Merge report: 2 models, fs-merge", result.Report);
        Assert.Null(result.Output);
        Assert.Empty(result.Files);
        Assert.Equal("memory: [40, 1, 28, 28]", (string?)result.Record["sources"]![0]!["data"]);
        Assert.Equal("[40, 1, 28, 28]", (string?)result.Record["config"]!["sources"]![0]!["data"]!["memory"]);   // no config file can hold it: named, not dropped
        Assert.Contains(log, l => l.StartsWith("merging 2 models with fs-merge"));
        Assert.False(a.IsInvalid);   // the caller's tensors are left alone
        Assert.Equal(40, a.shape[0]);

        // The same merge from the same data gives the same weights: nothing else changed between the calls.
        using var again = Merger.Merge(request);
        Assert.True(again.Model!.Weights["layers.0.weight"].equal(result.Model.Weights["layers.0.weight"]).all().item<bool>());
    }

    [Fact]
    public void A_cancelled_merge_keeps_a_checkpoint_that_a_resumed_one_finishes_from()
    {
        using var tmp = new TempDir();
        var request = new MergeRequest
        {
            Sources = [new SourceRequest { Model = models.A, Samples = 16 }, new SourceRequest { Model = models.B, Samples = 16 }],
            // A given start and rate: no sweep, so the cancel lands in the checkpointed training phase.
            Options = new FsMergeOptions { Lr = 0.01, Epochs = 40, Init = "first" },
            HeldOut = 4,
            Threads = 1,
            Output = tmp.Sub("out"),
        };
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var e = Assert.Throws<FsMergeException>(() => Merger.Merge(request, new MergeCallbacks { Cancellation = cancelled.Token }));
        Assert.Contains("interrupted", e.Message);
        Assert.False(Directory.Exists(tmp.Sub("out")));
        Assert.NotEmpty(Directory.GetFiles(tmp.Sub("out.partial"), "train-*.ckpt"));

        var log = new List<string>();
        using var resumed = Merger.Merge(request with { Resume = true }, new MergeCallbacks { Log = log.Add });
        Assert.Contains(log, l => l.Contains("resumed at step"));
        Assert.Contains("merge.log", resumed.Files);
        Assert.False(Directory.Exists(tmp.Sub("out.partial")));
    }

    [Fact]
    public void Options_of_another_method_are_refused_by_name()
    {
        var request = new MergeRequest
        {
            Sources = [new SourceRequest { Model = models.A }, new SourceRequest { Model = models.B }],
            Method = "average",
            Options = new RegMeanOptions { Alpha = 0.5 },
        };
        Assert.Contains("method 'average' was asked for with the options of 'regmean'", Assert.Throws<FsMergeException>(() => Merger.Merge(request)).Message);
    }

    [Fact]
    public void Typed_values_read_as_the_command_line_writes_them()
    {
        var options = new FsMergeOptions { Lr = AutoOr<double>.Auto, LrGrid = [0.1, 0.003], Normalize = false, WeightDecay = 1e-4, Epochs = 300 };
        Assert.Equal("auto", options["lr"]);
        Assert.Equal("0.1,0.003", options["lr-grid"]);
        Assert.Equal("false", options["normalize"]);
        Assert.Equal("0.0001", options["weight-decay"]);
        Assert.Equal("300", options["epochs"]);
        Assert.Equal(5, options.Count);   // unset options are absent: they take the method's defaults
        Assert.False(options.ContainsKey("steps"));
        Assert.Equal("activations", new ReBasinOptions { Matching = "activations" }["matching"]);
        Assert.Equal("average,zipit", new AutoOptions { Candidates = ["average", "zipit"] }["candidates"]);

        var settings = new MethodSettings(MergeMethods.Get("fs-merge"), options, Architectures.Get("vit"));
        Assert.Equal("auto", settings.String("lr"));
        Assert.Equal("800", settings.String("steps"));          // the ViT default
        Assert.Equal("default for vit", settings.Origins["steps"]);
    }

    /// <summary>Each typed record names exactly its method's options, with a type the option's default has; every
    /// registered method with options has one. A method's new option fails this until its record has it.</summary>
    [Fact]
    public void Every_typed_record_matches_its_method_s_options_and_types()
    {
        var records = typeof(MethodOptions).Assembly.GetTypes()
            .Where(t => t.IsSubclassOf(typeof(MethodOptions)) && !t.IsAbstract && t != typeof(DefaultOptions))
            .Select(t => (MethodOptions)Activator.CreateInstance(t)!).ToList();
        foreach (var record in records)
        {
            var method = MergeMethods.Get(record.Method);
            var properties = record.OptionProperties().ToDictionary(p => p.Name, p => p.Property.PropertyType);
            Assert.Equal(method.Options.Select(o => o.Name).Order(), properties.Keys.Order());
            foreach (var option in method.Options)
            {
                var type = Nullable.GetUnderlyingType(properties[option.Name]) ?? properties[option.Name];
                bool fits = type == typeof(int) ? OptionValues.IsInt(option.TypeExample)
                    : type == typeof(double) ? OptionValues.IsNumber(option.TypeExample) && !OptionValues.IsInt(option.TypeExample)
                    : type == typeof(bool) ? OptionValues.IsBool(option.TypeExample)
                    : type == typeof(AutoOr<double>) || type == typeof(AutoOr<int>) ? option.Example != null
                    : type == typeof(double[]) ? option.TypeExample.Split(',').All(OptionValues.IsNumber)
                    : type == typeof(int[]) ? option.Default.Length == 0 || option.Default.Split(',').All(OptionValues.IsInt)
                    : type == typeof(string) || type == typeof(string[]);
                Assert.True(fits, $"{record.GetType().Name}.{option.Name}: {type.Name} does not fit the default '{option.TypeExample}'");
            }
        }
        var typed = records.Select(r => r.Method).ToHashSet();
        Assert.All(MergeMethods.All.Where(m => m.Options.Count > 0), m => Assert.Contains(m.Name, typed));
    }

    /// <summary>The public surface is this list: what a caller of Merger.Merge reads and writes (requests, typed options,
    /// results, models, evaluations) and what a merge method implements (IMergeMethod and its inputs). A type made public
    /// by accident (bench, fuzzing, run internals, file formats) fails here; changing the surface means changing the list.</summary>
    [Fact]
    public void The_public_surface_is_what_users_need()
    {
        var actual = typeof(Merger).Assembly.GetExportedTypes().Select(t => t.FullName!).Order(StringComparer.Ordinal);
        Assert.Equal(PublicSurface.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Order(StringComparer.Ordinal), actual);
    }

    const string PublicSurface = """
        FsMerge.Data.ImageSet
        FsMerge.Data.TaskSpec
        FsMerge.Data.TokenizerSettings
        FsMerge.Evaluation.AllHeadLogits
        FsMerge.Evaluation.EvaluationResult
        FsMerge.Evaluation.Evaluator
        FsMerge.Evaluation.LabelFreeEstimate
        FsMerge.Evaluation.TaskAccuracy
        FsMerge.Evaluation.TaskAgreement
        FsMerge.FsMergeException
        FsMerge.Merging.HeadAlignedSpaces
        FsMerge.Merging.IMergeMethod
        FsMerge.Merging.ITrainedMergeMethod
        FsMerge.Merging.LossCurve
        FsMerge.Merging.LossPoint
        FsMerge.Merging.MergeInputs
        FsMerge.Merging.MergeMethods
        FsMerge.Merging.MergeOutcome
        FsMerge.Merging.MergeProgress
        FsMerge.Merging.MethodOption
        FsMerge.Merging.MethodSettings
        FsMerge.Merging.RateTrial
        FsMerge.Merging.Recovery
        FsMerge.Merging.Site
        FsMerge.Merging.SiteKind
        FsMerge.Merging.SiteTable
        FsMerge.Merging.TensorFold
        FsMerge.Merging.TensorRole
        FsMerge.Merging.TrainingCheckpoints
        FsMerge.Models.Architectures
        FsMerge.Models.HeadInfo
        FsMerge.Models.HeadKind
        FsMerge.Models.IArchitecture
        FsMerge.Models.ImageProcessor
        FsMerge.Models.Model
        FsMerge.Models.ModelConfig
        FsMerge.Models.Probe
        FsMerge.Models.WeightFormat
        FsMerge.Models.WeightSpec
        FsMerge.Reporting.MethodResult
        FsMerge.Runs.AutoOptions
        FsMerge.Runs.AutoOr`1
        FsMerge.Runs.CcaOptions
        FsMerge.Runs.DataSource
        FsMerge.Runs.DefaultOptions
        FsMerge.Runs.DistillOptions
        FsMerge.Runs.FsMergeOptions
        FsMerge.Runs.FsMergeSeqOptions
        FsMerge.Runs.HeadAlignedOptions
        FsMerge.Runs.MergeCallbacks
        FsMerge.Runs.Merger
        FsMerge.Runs.MergeRequest
        FsMerge.Runs.MergeRequestFile
        FsMerge.Runs.MergeResult
        FsMerge.Runs.MethodOptions
        FsMerge.Runs.OptOptions
        FsMerge.Runs.PLeaSOptions
        FsMerge.Runs.ReBasinOptions
        FsMerge.Runs.RegMeanOptions
        FsMerge.Runs.SourceRequest
        FsMerge.Runs.TrainingOptions
        FsMerge.Runs.ZipItOptions
        FsMerge.TorchRuntime
        """;
}
