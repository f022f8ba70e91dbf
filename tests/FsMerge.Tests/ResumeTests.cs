using FsMerge.Merging;
using FsMerge.Models;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Training checkpoints: a run stopped at any step and resumed ends bit-identical to an uninterrupted one.</summary>
[Collection("torch")]
public class ResumeTests
{
    sealed class Crash : Exception;

    /// <summary>A small regression trained by <see cref="MergeTrainer"/>; crashes (like a kill) when it reaches step <paramref name="crashAt"/>.</summary>
    static (Tensor[] Weights, LossCurve Curve) Train(OptimizerSettings settings, TrainingCheckpoints? checkpoints, long crashAt = -1)
    {
        var generator = new Generator(5);
        var x = torch.randn(new long[] { 30, 6 }, generator: generator);
        var y = torch.randn(new long[] { 30, 3 }, generator: generator);
        var w = new Parameter(torch.randn(new long[] { 6, 3 }, generator: generator) * 0.1);
        var b = new Parameter(torch.zeros(3));
        long step = 0;
        var curve = MergeTrainer.Train([w, b], 30, settings, index =>
        {
            if (++step == crashAt) throw new Crash();
            return nn.functional.mse_loss(x.index_select(0, index).matmul(w) + b, y.index_select(0, index));
        }, seed: 9, progress: null, phase: "test", checkpoints);
        return ([w.detach().clone(), b.detach().clone()], curve);
    }

    [Theory]
    [InlineData("sgd", "cosine", 11)]      // resumes at step 9, inside epoch 2 (8 steps an epoch): the epoch's order comes from the checkpoint
    [InlineData("adamw", "onecycle", 26)]  // resumes at step 24, an epoch boundary: the next order comes from the saved RNG state
    [InlineData("adamw", "cosine", 2)]     // crashed before the first checkpoint: starts over
    public void A_run_crashed_and_resumed_ends_bit_identical(string optimizer, string schedule, long crashAt)
    {
        var settings = new OptimizerSettings(optimizer, 0.05, 5, 4, 0.9, 1e-3, 0.1, schedule);
        var dir = Directory.CreateTempSubdirectory("fsmerge-resume").FullName;
        try
        {
            var (reference, referenceCurve) = Train(settings, null);
            Assert.Throws<Crash>(() => Train(settings, new TrainingCheckpoints(dir, 3, resume: false, "key"), crashAt));
            Assert.Equal(crashAt > 3, TrainingCheckpoints.ExistIn(dir));
            var (resumed, curve) = Train(settings, new TrainingCheckpoints(dir, 3, resume: true, "key"));
            for (int i = 0; i < reference.Length; i++)
                Assert.True(reference[i].bytes.SequenceEqual(resumed[i].bytes), $"tensor {i} differs");
            Assert.Equal(referenceCurve.Points, curve.Points);
            Assert.Equal(referenceCurve.FinalLoss, curve.FinalLoss);
            // A finished phase resumes to its end without training again.
            var (again, _) = Train(settings, new TrainingCheckpoints(dir, 3, resume: true, "key"), crashAt: 1);
            Assert.True(again[0].bytes.SequenceEqual(reference[0].bytes));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void A_divergent_rate_is_recovered_from_deterministically_and_a_run_killed_after_a_recovery_resumes_identically()
    {
        // SGD at rate 1.5 on this regression diverges within a few steps; recoveries (restarts at a third of the rate) train it.
        var settings = new OptimizerSettings("sgd", 1.5, 8, 4, 0.9, 0, 0.1);
        var (first, curve) = Train(settings, null);
        Assert.NotEmpty(curve.Recoveries);
        Assert.All(curve.Recoveries, r => Assert.True(r.ToScale < r.FromScale));
        var (_, stable) = Train(settings with { LearningRate = 0.05 }, null);   // the rate the other tests train at
        Assert.True(double.IsFinite(curve.FinalLoss) && curve.FinalLoss < 1.5 * stable.FinalLoss, $"final loss {curve.FinalLoss} against {stable.FinalLoss} at rate 0.05");
        var (again, againCurve) = Train(settings, null);
        for (int i = 0; i < first.Length; i++) Assert.True(first[i].bytes.SequenceEqual(again[i].bytes), $"tensor {i} differs between two runs");
        Assert.Equal(curve.Recoveries, againCurve.Recoveries);

        var dir = Directory.CreateTempSubdirectory("fsmerge-resume").FullName;
        try
        {
            long killAt = curve.Recoveries[^1].Step + 12;   // loss evaluations count recoveries' too: well after the last one
            Assert.Throws<Crash>(() => Train(settings, new TrainingCheckpoints(dir, 3, resume: false, "key"), killAt));
            var (resumed, resumedCurve) = Train(settings, new TrainingCheckpoints(dir, 3, resume: true, "key"));
            for (int i = 0; i < first.Length; i++) Assert.True(first[i].bytes.SequenceEqual(resumed[i].bytes), $"tensor {i} differs after resuming");
            Assert.Equal(curve.Recoveries, resumedCurve.Recoveries);
        }
        finally
        {
            Directory.Delete(dir, true);
        }

        var e = Assert.Throws<DivergenceException>(() => Train(settings with { Recoveries = 0 }, null));
        Assert.Contains("lower --lr", e.Message);
    }

    [Fact]
    public void An_interrupt_saves_and_stops_with_a_resume_hint_and_another_runs_checkpoint_is_refused()
    {
        var settings = new OptimizerSettings("sgd", 0.05, 5, 4, 0.9, 1e-3, 0.1);
        var dir = Directory.CreateTempSubdirectory("fsmerge-resume").FullName;
        try
        {
            var checkpoints = new TrainingCheckpoints(dir, 1000, resume: false, "key");
            checkpoints.Interrupt();
            var e = Assert.Throws<FsMergeException>(() => Train(settings, checkpoints));
            Assert.Contains("saved at step 1 of 40", e.Message);
            Assert.Contains("--resume", e.Message);
            var other = Assert.Throws<FsMergeException>(() => Train(settings, new TrainingCheckpoints(dir, 1000, resume: true, "other")));
            Assert.Contains("belongs to a run with other models, data or options", other.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("fs-merge")]       // local scope: one phase per hidden layer, interrupted in the second
    [InlineData("fs-merge-seq")]   // three models: one phase per stage, interrupted in the second
    public void A_multi_phase_merge_interrupted_in_a_later_phase_resumes_to_the_same_weights(string name)
    {
        var method = MergeMethods.Get(name);
        var options = new Dictionary<string, string> { ["epochs"] = "30", ["lr"] = "0.1" };
        if (name == "fs-merge") options["scope"] = "local";
        var sources = Enumerable.Range(0, name == "fs-merge" ? 2 : 3).Select(i => Model.Create(MergeTests.Mlp([12, 10], $"t{i}"), 10 + i, CPU)).ToList();
        var dir = Directory.CreateTempSubdirectory("fsmerge-resume").FullName;
        try
        {
            Model Merge(TrainingCheckpoints? checkpoints, MergeProgress? progress = null)
            {
                var inputs = MergeTests.Inputs(sources);
                return method.Merge(new MergeInputs
                {
                    Sources = inputs.Sources, Data = inputs.Data, Target = inputs.Target, Device = CPU, Seed = inputs.Seed,
                    Progress = progress, Checkpoints = checkpoints,
                }, new MethodSettings(method, options)).Merged!;
            }
            using var reference = Merge(null);
            var first = new TrainingCheckpoints(dir, 4, resume: false, "key");
            int phases = 0;   // full batch: every step ends an epoch, and a phase starts at done = 1
            Assert.Throws<FsMergeException>(() => Merge(first, (_, done, _, _, _) =>
            {
                if (done == 1) phases++;
                if (phases == 2 && done == 11) first.Interrupt();
            }));
            using var resumed = Merge(new TrainingCheckpoints(dir, 4, resume: true, "key"));
            foreach (var (key, value) in reference.Weights)
                Assert.True(value.bytes.SequenceEqual(resumed.Weights[key].bytes), key);
        }
        finally
        {
            Directory.Delete(dir, true);
            foreach (var s in sources) s.Dispose();
        }
    }
}
