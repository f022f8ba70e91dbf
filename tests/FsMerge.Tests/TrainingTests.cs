using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Models;
using FsMerge.Training;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

[Collection("torch")]
public class TrainingTests
{
    [Fact]
    public void Training_on_real_mnist_learns_and_the_same_seed_gives_identical_weights()
    {
        var dir = DataDirectory.Resolve(null);
        DataProvisioner.Provision(dir, _ => { });
        var data = TaskData.Load(TaskSpec.Parse("mnist:5-9"), dir);
        var config = new ModelConfig
        {
            Architecture = "mlp", InputSize = 784, HiddenSizes = [32],
            Heads = [new HeadInfo("mnist:5-9", data.Train.LabelNames)],
        };
        var options = new TrainOptions { Epochs = 1, BatchSize = 16, Seed = 4 };
        Model Train() => SourceTrainer.Train(Model.Create(config, 4, CPU), data, options, CPU).Model;
        using var first = Train();
        using var second = Train();
        foreach (var (name, w) in first.Weights) Assert.True(w.Equals(second.Weights[name]), name);
        double accuracy = Evaluator.Accuracy(first, 0, data.Test, CPU);
        Assert.True(accuracy > 0.85, $"test accuracy {accuracy}");   // chance is 0.2
    }

    [Fact]
    public void A_tiny_vit_learns_on_real_fashion_mnist()
    {
        var dir = DataDirectory.Resolve(null);
        DataProvisioner.Provision(dir, _ => { });
        var full = TaskData.Load(TaskSpec.Parse("fashion:0,1"), dir);
        // 2,000 training images keep the test quick; trousers vs T-shirts is easy for a model that learns.
        var train = new ImageSet(full.Train.Images.narrow(0, 0, 2000), full.Train.Labels[..2000], full.Train.LabelNames);
        var data = full with { Train = train };
        var config = ModelTests.TinyVit() with { Heads = [new HeadInfo("fashion:0,1", data.Train.LabelNames)] };
        var (model, _) = SourceTrainer.Train(Model.Create(config, 2, CPU), data,
            new TrainOptions { Epochs = 2, BatchSize = 32, LearningRate = 2e-3, Seed = 2 }, CPU);
        using (model)
            Assert.True(Evaluator.Accuracy(model, 0, data.Test, CPU) > 0.85);
    }
}
