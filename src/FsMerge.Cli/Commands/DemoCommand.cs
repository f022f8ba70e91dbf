using System.Diagnostics;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Models;
using FsMerge.Training;

namespace FsMerge.Cli.Commands;

/// <summary>
/// The README's main command: provision the data, train two MLPs from different seeds on the two halves
/// of MNIST, and evaluate them per task and jointly. Under 10 minutes on 2 cores.
/// </summary>
sealed class DemoCommand : ICommand
{
    public string Name => "demo";
    public string Summary => "provision data, train two MLPs on MNIST 0-4 and 5-9 from different seeds, evaluate them";
    public string Usage => "demo [--out DIR] [--epochs N]";

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("out", "DIR", "where the demo's models go", "runs/demo"),
        new("epochs", "N", "training epochs per source model", "2"),
        Common.Data, Common.Device, Common.Threads, Common.Quiet,
    ];

    static readonly (string Task, long Seed)[] Sources = [("mnist:0-4", 1), ("mnist:5-9", 2)];

    public int Run(ParsedArgs args)
    {
        var device = Common.Setup(args);
        var clock = Stopwatch.StartNew();
        var dataDir = Common.DataDir(args);
        var outDir = args.Require("out");
        int epochs = args.Int("epochs", min: 1);

        Console.WriteLine($"== 1. data ({dataDir})");
        DataProvisioner.Provision(dataDir, line => Console.WriteLine($"  {line}"));

        Console.WriteLine("== 2. source models: MLP 784-128-128, one per task, different seeds");
        var dirs = new List<string>();
        var tests = new List<ImageSet>();
        foreach (var (task, seed) in Sources)
        {
            var data = TaskData.Load(TaskSpec.Parse(task), dataDir);
            var config = new ModelConfig
            {
                Architecture = "mlp",
                InputSize = 784,
                HiddenSizes = [128, 128],
                Heads = [new HeadInfo(data.Task.ToString(), data.Train.LabelNames)],
            };
            var dir = Path.Combine(outDir, $"mlp-{task.Replace(':', '-')}-seed{seed}");
            using var initial = Model.Create(config, seed, device);
            TrainCommand.TrainAndSave(initial, data, new TrainOptions { Epochs = epochs, Seed = seed, BatchSize = 10 }, null, dir, device);
            dirs.Add(dir);
            tests.Add(data.Test);
        }

        Console.WriteLine("== 3. evaluation of the source models (each head on its own model's features)");
        var models = dirs.Select(d => Model.Load(d, device)).ToList();
        var result = Evaluator.Evaluate(Evaluator.SeparateModels(models), tests, device, Sources.Select(s => s.Task).ToList());
        foreach (var m in models) m.Dispose();
        Console.WriteLine(EvalCommand.ToTable(result));
        Console.WriteLine($"demo finished in {clock.Elapsed.TotalSeconds:F0} s; models in {outDir}");
        return 0;
    }
}
