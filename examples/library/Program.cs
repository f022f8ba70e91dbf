// Merges two single-task models with FS-Merge through the typed library API and prints the accuracies.
// usage: dotnet run -- MODEL_A MODEL_B OUT   (task data from $FSMERGE_DATA; see docs/library.md)
using FsMerge;
using FsMerge.Runs;

TorchRuntime.Configure(threads: 1);   // process-wide speed settings: the library never sets them on its own
using var result = Merger.Merge(new MergeRequest
{
    Sources = [new SourceRequest { Model = args[0] }, new SourceRequest { Model = args[1] }],
    Options = new FsMergeOptions { Lr = 0.01, Steps = 300 },   // unset options: the defaults for the sources' architecture
    Output = args[2],
    Eval = true,
}, new MergeCallbacks { Log = Console.WriteLine });

foreach (var task in result.Test!.Tasks) Console.WriteLine($"{task.Task}: {100 * task.Accuracy:F2} %");
Console.WriteLine($"per-task mean {100 * result.Test.PerTaskMean:F2} %, joint {100 * result.Test.Joint:F2} %");
Console.WriteLine($"label-free agreement with the sources {100 * result.LabelFree!.Agreement:F2} %; {result.Files.Count} files in {result.Output}");
