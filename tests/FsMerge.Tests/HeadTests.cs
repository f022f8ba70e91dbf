using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Cosine heads (CLIP-like): their logits, their file format, and how merges fold them.</summary>
[Collection("torch")]
public class HeadTests
{
    static ModelConfig CosineMlp(string task, double scale = 16) => MergeTests.Mlp([12, 10], task) with
    {
        Heads = [HeadInfo.Create(HeadKind.Cosine, task, ["a", "b", "c"], 6, scale)],
    };

    static readonly Tensor Images = torch.rand(7, 1, 28, 28, generator: new Generator(31));

    [Fact]
    public void A_cosine_head_is_the_scaled_cosine_of_the_projected_feature_with_each_class()
    {
        using var model = Model.Create(CosineMlp("t", scale: 20), 4, CPU);
        Assert.Equal(new long[] { 6, 10 }, model.Weights["classifier.projection"].shape);
        Assert.False(model.Weights.ContainsKey("classifier.bias"));
        var features = model.Features(Images);
        var logits = model.Logits(features, 0);
        var embedded = features.matmul(model.Weights["classifier.projection"].t());
        var weight = model.Weights["classifier.weight"];
        for (int c = 0; c < 3; c++)
        {
            var cosine = nn.functional.cosine_similarity(embedded, weight[c].unsqueeze(0).expand(7, -1), dim: 1);
            Assert.True(torch.allclose(logits.select(1, c), cosine * 20, atol: 1e-4), $"class {c}");
        }
        // Bounded by the scale and blind to the feature's norm: what makes heads comparable in joint accuracy.
        Assert.True(logits.abs().max().item<float>() <= 20.0001);
        Assert.True(torch.allclose(model.Logits(features * 7, 0), logits, atol: 1e-4));
    }

    [Fact]
    public void Cosine_heads_survive_save_and_load_and_a_bad_kind_is_refused_by_field()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"fsmerge-cosine-{Guid.NewGuid():N}");
        try
        {
            using var model = Model.Create(CosineMlp("t", scale: 12.5), 4, CPU);
            model.Save(dir);
            using (var loaded = Model.Load(dir, CPU))
            {
                Assert.Equal(model.Config.Heads[0], loaded.Config.Heads[0] with { Labels = model.Config.Heads[0].Labels });
                Assert.True(loaded.Logits(loaded.Features(Images), 0).Equals(model.Logits(model.Features(Images), 0)));
            }
            var json = model.Config.ToJson();
            json["fsmerge"]!["heads"]![0]!["kind"] = "softmax";
            var e = Assert.Throws<FsMergeException>(() => ModelConfig.FromJson(json, "c.json"));
            Assert.Contains("fsmerge.heads[].kind", e.Message);
            Assert.Contains("'softmax'", e.Message);
            json["fsmerge"]!["heads"]![0]!["kind"] = "cosine";
            json["fsmerge"]!["heads"]![0]!.AsObject().Remove("logit_scale");
            Assert.Contains("logit_scale", Assert.Throws<FsMergeException>(() => ModelConfig.FromJson(json, "c.json")).Message);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Folding_puts_the_head_input_unmerge_into_the_projection()
    {
        // Zero-step FS-Merge with first init: U = [I, I], so head 1 reads model 1's feature through model 2's head.
        var sources = new[] { "t0", "t1" }.Select((t, i) => Model.Create(CosineMlp(t), 40 + i, CPU)).ToList();
        var merged = new FsMergeMethod().Merge(MergeTests.Inputs(sources), MergeTests.Settings(new FsMergeMethod(), ("epochs", "0"), ("type", "diagonal"))).Merged!;
        Assert.Equal(HeadKind.Cosine, merged.Config.Heads[1].Kind);
        var f = sources[0].Features(Images);
        Assert.True(torch.allclose(merged.Logits(merged.Features(Images), 0), sources[0].Logits(f, 0), atol: 1e-5));
        Assert.True(torch.allclose(merged.Logits(merged.Features(Images), 1), sources[1].Logits(f, 0), atol: 1e-5));

        // Distillation's heads read the student through I/s_t: a cosine head is blind to that scale.
        var distilled = new DistillationMerge().Merge(MergeTests.Inputs(sources), MergeTests.Settings(new DistillationMerge(), ("epochs", "0"), ("init", "first"))).Merged!;
        Assert.True(torch.allclose(distilled.Logits(distilled.Features(Images), 0), sources[0].Logits(f, 0), atol: 1e-4));
    }

    [Fact]
    public void Sequential_merging_carries_cosine_heads_through_its_stages()
    {
        var sources = new[] { "t0", "t1", "t2" }.Select((t, i) => Model.Create(CosineMlp(t), 60 + i, CPU)).ToList();
        var method = new FsMergeSeqMethod();
        var zero = method.Merge(MergeTests.Inputs(sources), MergeTests.Settings(method, ("epochs", "0"))).Merged!;
        Assert.Equal(3, zero.HeadCount);
        Assert.All(zero.Config.Heads, h => Assert.Equal(HeadKind.Cosine, h.Kind));
        Assert.True(torch.allclose(zero.Logits(zero.Features(Images), 0), sources[0].Logits(sources[0].Features(Images), 0), atol: 1e-5));
        var trained = method.Merge(MergeTests.Inputs(sources), MergeTests.Settings(method, ("stage-epochs", "5,5"), ("lr", "0.05"))).Merged!;
        Assert.Equal(new long[] { 6, 10 }, trained.Weights["classifier.2.projection"].shape);
    }

    [Fact]
    public void A_single_task_model_of_a_merged_cosine_model_keeps_its_projection()
    {
        var sources = new[] { "t0", "t1" }.Select((t, i) => Model.Create(CosineMlp(t), 50 + i, CPU)).ToList();
        var merged = new AverageMerge().Merge(MergeTests.Inputs(sources), MergeTests.Settings(new AverageMerge())).Merged!;
        var single = merged.SingleTask(1);
        Assert.True(single.Logits(single.Features(Images), 0).Equals(merged.Logits(merged.Features(Images), 1)));
    }
}

/// <summary>Per-task, joint and task-identification accuracy on hand-made logits.</summary>
[Collection("torch")]
public class EvaluatorTests
{
    [Fact]
    public void Task_identification_counts_a_joint_argmax_among_the_own_heads_classes_whatever_the_class()
    {
        // Task 0 (2 classes, 4 images), task 1 (3 classes, 2 images); the "images" are just row ids.
        var sets = new[]
        {
            new ImageSet(torch.arange(4, dtype: ScalarType.Float32).view(4, 1, 1, 1), [0, 1, 0, 1], ["a", "b"]),
            new ImageSet(torch.arange(4, 6, dtype: ScalarType.Float32).view(2, 1, 1, 1), [2, 0], ["c", "d", "e"]),
        };
        // Row → (head 0 logits, head 1 logits). Task 0: right; right head, wrong class; wrong head (and wrong
        // class); right. Task 1: right; wrong head (but head 1 alone is right).
        float[][] head0 = [[5, 1], [5, 1], [0, 1], [1, 6], [0, 0], [9, 0]];
        float[][] head1 = [[0, 0, 0], [0, 0, 0], [0, 0, 4], [0, 0, 0], [1, 2, 3], [1, 0, 0]];
        AllHeadLogits heads = images =>
        {
            var rows = images.view(-1).to(ScalarType.Int64);
            return [torch.tensor(head0.SelectMany(r => r).ToArray(), [6, 2]).index_select(0, rows),
                    torch.tensor(head1.SelectMany(r => r).ToArray(), [6, 3]).index_select(0, rows)];
        };
        var result = Evaluator.Evaluate(heads, sets, CPU);
        Assert.Equal((2 / 4.0 + 2 / 2.0) / 2, result.PerTaskMean, 12);
        Assert.Equal((2 / 4.0 + 1 / 2.0) / 2, result.Joint, 12);
        Assert.Equal((3 / 4.0 + 1 / 2.0) / 2, result.TaskIdentified, 12);
        Assert.Equal(result.TaskIdentified, (double)result.ToJson()["task_identified"]!, 12);
    }
}
