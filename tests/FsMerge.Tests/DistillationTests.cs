using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Distillation's student starts (--init) and matched sites (--match) on tiny random MLPs.</summary>
[Collection("torch")]
public class DistillationTests
{
    static List<Model> Sources(int n) =>
        Enumerable.Range(0, n).Select(i => Model.Create(MergeTests.Mlp([12, 10], $"t{i}"), 70 + i, CPU)).ToList();

    static MergeOutcome Distill(MergeInputs inputs, params (string, string)[] options) =>
        new DistillationMerge().Merge(inputs, MergeTests.Settings(new DistillationMerge(), options));

    /// <summary>
    /// Untrained, the student is its initialization's merge: the same backbone, and head t reading it through that
    /// merge's unmerge divided by the target scale s_t (spec §9.5).
    /// </summary>
    [Theory]
    [InlineData("average", "average")]
    [InlineData("zipit", "zipit")]
    public void An_untrained_student_is_the_merge_it_starts_from(string init, string method)
    {
        using var scope = torch.NewDisposeScope();
        var inputs = MergeTests.Inputs(Sources(3), perTask: 32);
        var outcome = Distill(inputs, ("init", init), ("epochs", "0"));
        var student = outcome.Merged!;
        var reference = MergeMethods.Get(method).Merge(inputs, MergeTests.Settings(MergeMethods.Get(method))).Merged!;
        var x = torch.rand(8, 1, 28, 28, generator: new Generator(5));
        Assert.True(torch.allclose(student.Features(x), reference.Features(x), atol: 1e-5));
        for (int t = 0; t < 3; t++)
        {
            double scale = (double)outcome.Details["target_scales"]![t]!;
            Assert.True(torch.allclose(student.Weights[$"classifier.{t}.weight"] * scale, reference.Weights[$"classifier.{t}.weight"], atol: 1e-5), $"head {t}");
        }
    }

    /// <summary>The error of the student's inner features, read through ZipIt's first unmerge, against each task's own model.</summary>
    static double InnerError(Model student, MergeInputs inputs)
    {
        var site = inputs.Sites[Models.Mlp.UnmergeSite(0)];
        var u = ZipItMerge.Matrices(inputs, HeadAlignmentOptions.Default)[site.Name];
        double error = 0;
        for (int t = 0; t < inputs.Sources.Count; t++)
        {
            var mine = Probing.Collect(student, inputs.Images(t), [site.Name])[site.Name].matmul(u.narrow(1, site.Offset(t), site.ModelWidths[t]));
            var own = Probing.Collect(inputs.Sources[t], inputs.Images(t), [site.Name])[site.Name];
            error += (mine - own).pow(2).mean().item<float>();
        }
        return error;
    }

    [Fact]
    public void Layer_targets_pull_the_inner_features_towards_each_teachers_and_final_targets_do_not_ask_for_that()
    {
        using var scope = torch.NewDisposeScope();
        var inputs = MergeTests.Inputs(Sources(2), perTask: 32);
        var start = Distill(inputs, ("epochs", "0"));
        var final = Distill(inputs, ("epochs", "100"), ("lr", "0.01"));
        var layers = Distill(inputs, ("epochs", "100"), ("lr", "0.01"), ("match", "layers"));
        Assert.Equal("zipit", (string)layers.Details["init"]!);
        Assert.True((double)final.Details["final_loss"]! < (double)final.LossCurves[0].Points[0].Loss, "final targets: the loss falls");
        double before = InnerError(start.Merged!, inputs), afterFinal = InnerError(final.Merged!, inputs), afterLayers = InnerError(layers.Merged!, inputs);
        Assert.True(afterLayers < afterFinal && afterLayers < before, $"inner error {afterLayers} with layer targets vs {afterFinal} with the final feature only, {before} at the start");
    }

    [Fact]
    public void An_unknown_init_and_a_copy_of_model_1_wider_than_model_1_are_refused()
    {
        using var scope = torch.NewDisposeScope();
        var sources = Sources(2);
        var unknown = Assert.Throws<FsMergeException>(() => Distill(MergeTests.Inputs(sources), ("init", "best")));
        Assert.Contains("--init 'best' is not one of: first, average, zipit, cca", unknown.Message);
        var wide = Assert.Throws<FsMergeException>(() => Distill(MergeTests.Inputs(sources, width: [16, 10]), ("init", "first")));
        Assert.Contains("distill: --init first needs every model as wide as the merge (site layer0.merge: 12, 12 into 16)", wide.Message);
        // ZipIt's merge may be wider: the student then has the merged width.
        var zipped = Distill(MergeTests.Inputs(sources, width: [16, 10]), ("epochs", "2")).Merged!;
        Assert.Equal([16L, 784L], zipped.Weights["layers.0.weight"].shape);
    }
}
