using System.Text.Json;
using FsMerge.Bench;
using FsMerge.Models;

namespace FsMerge.Cli.Commands;

sealed class BenchCommand : ICommand
{
    public string Name => "bench";
    public string Summary => "benchmarks: 'bench mlp' and 'bench vit' reproduce the paper's MLP and ViT experiments at CPU scale; 'bench bert' merges pairs of tiny BERTs on text tasks; 'bench perf' measures training-step cost; 'bench load' thread settings on an idle and a busy machine";
    public string Usage => "bench mlp|vit|bert [--quick] [--seeds N] [--resume] --out DIR  |  bench perf [--models 2,4] [--thread-counts 1,2] [--rounds 3] [--type T] [--size tiny|small] --out DIR  |  bench load [--steps S] [--rounds R] --out DIR";

    /// <summary>The benchmark to run, named first: "fsmerge bench mlp".</summary>
    public IReadOnlyList<ArgumentSpec> Arguments =>
    [
        new("benchmark", "mlp|vit|bert|perf|load", "mlp: the MLP experiments (MNIST / Fashion-MNIST halves by depth and width); vit: four tiny ViTs pre-trained on Fashion-MNIST from distinct seeds, fine-tuned on distinct tasks (pairs, all four, data curve, ablations, model order, cost); bert: pairs of tiny BERTs MLM-pre-trained from distinct seeds, fine-tuned on distinct text tasks, four such BERTs at once, and a data-amount curve; perf: step time and peak memory of fold-every-step vs explicit SuperNet vs distillation; load: thread settings (1 thread, the default, idle cores only, LibTorch's default) on this machine as it is and beside a CPU-burning process per CPU, FS-Merge step time side by side (takes --steps, --rounds, --size)",
            ["mlp", "vit", "bert", "perf", "load"]),
    ];

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("sections", "S,S,..", $"vit: sections to run, each into OUT/vit-SECTION.* ({string.Join(", ", VitBench.SectionNames)}; default all; the others need 'pairs' done first)"),
        new("settings", "K,K,..", $"mlp: settings to run, by key ({string.Join(", ", MlpBench.Settings(false).Select(s => s.Key))}; default all)"),
        new("head", "linear|cosine", "vit: the source models' heads: linear, or cosine (CLIP-like: projection, L2 normalization, one logit scale for every head, as the paper's joint accuracy assumes)", "linear"),
        new("quick", null, "one setting, one seed, shorter training: a few minutes"),
        new("lr-auto", null, $"mlp, vit, bert: beside each method whose rate is chosen on the labelled validation split, a '(lr auto)' row whose rate --lr auto chooses from the same grid on {HeldOutPerTask} held-out unlabeled train images per task (the cost of having no labels)"),
        new("seeds", "N", "seeds per setting (default: 5 for mlp, 1 for vit, 2 for bert)"),
        new("resume", null, "keep the settings an earlier run finished (OUT/mlp.json, OUT/vit-SECTION.json) and run the rest"),
        new("samples", "N", "mlp, bert: unlabeled merge samples per task (bert: in the pairs table); default 64 for mlp, 200 for bert", OldNames: ["data-per-task", "per-task"]),
        new("models", "N,N,..", "perf: numbers of merged models", "2,4"),
        new("thread-counts", "T,T,..", "perf: LibTorch thread counts to measure", "1,2"),
        new("rank", "R", "perf: low-rank rank of FS-Merge", PerfSettings.DefaultRank.ToString()),
        new("steps", "S", "perf: timed training steps per measurement", PerfSettings.DefaultSteps.ToString()),
        new("rounds", "R", "perf: rounds of measurements (each variant's median is reported)", "3"),
        new("type", "T", "perf: FS-Merge's M/U: diagonal-low-rank, diagonal or low-rank", "diagonal-low-rank"),
        new("size", "S", $"perf: the ViT measured: {string.Join("; ", PerfSettings.Sizes.Select(z => $"{z.Name} = {z.Description}, {z}"))}", PerfSettings.Sizes[0].Name),
        new("child", "VARIANT", "perf: measure one variant in this process (used by bench perf itself)", Hidden: true),
        new("out", "DIR", "output directory", "runs/bench", Short: "-o"),
        Common.Data, Common.Device, Common.Threads, Common.Quiet,
    ];

    /// <summary>Held-out unlabeled samples per task for --lr-auto rows: the merge command's default.</summary>
    const int HeldOutPerTask = FsMerge.Runs.MergeRequest.DefaultHeldOut;

    public int Run(ParsedArgs args)
    {
        if (args.Get("benchmark") is "perf" or "load") return Perf(args);
        var device = Common.Setup(args);
        if (args.Get("benchmark") == "bert")
        {
            var bert = new BertBenchOptions
            {
                Quick = args.Has("quick"), LrAuto = args.Has("lr-auto"), Seeds = args.Has("seeds") ? args.Int("seeds", min: 1) : 2, PerTask = args.Has("samples") ? args.Int("samples", min: 1) : 200,
                OutDir = args.Require("out"), DataDir = Common.DataDir(args), Device = device,
            };
            BertBench.Run(bert, Console.WriteLine);
            Console.WriteLine($"wrote {Path.Combine(bert.OutDir, "bert.md")}, bert.csv, bert.json");
            return 0;
        }
        if (args.Get("benchmark") == "vit")
        {
            var vit = new VitBenchOptions
            {
                Quick = args.Has("quick"), LrAuto = args.Has("lr-auto"), Seeds = args.Has("seeds") ? args.Int("seeds", min: 1) : 1, Resume = args.Has("resume"),
                OutDir = args.Require("out"), DataDir = Common.DataDir(args), Device = device,
                Heads = HeadInfo.ParseKind(args.Get("head")!, "--head"),
                Sections = args.Get("sections")?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries) ?? VitBench.SectionNames,
            };
            VitBench.Run(vit, Console.WriteLine);
            Console.WriteLine($"wrote {string.Join(", ", vit.Sections.Select(s => Path.Combine(vit.OutDir, $"vit-{s}.md")))} (with .csv and .json){(vit.Sections.Contains("data") ? ", vit-data-curve.csv, vit-data-curve.png, vit-data-curve-joint.png" : "")}");
            return 0;
        }
        if (args.Get("benchmark") != "mlp") throw new FsMergeException("fsmerge bench: name the benchmark: 'fsmerge bench mlp', 'bench vit', 'bench bert', 'bench perf' or 'bench load' (see 'fsmerge bench --help')");
        var options = new MlpBenchOptions
        {
            Quick = args.Has("quick"), LrAuto = args.Has("lr-auto"),
            Seeds = args.Has("seeds") ? args.Int("seeds", min: 1) : 5,
            Resume = args.Has("resume"),
            Only = args.Get("settings")?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
            DataPerTask = args.Has("samples") ? args.Int("samples", min: 1) : 64,
            OutDir = args.Require("out"),
            DataDir = Common.DataDir(args),
            Device = device,
        };
        MlpBench.Run(options, Console.WriteLine);
        Console.WriteLine($"wrote {Path.Combine(options.OutDir, "mlp.md")}, mlp.csv, mlp.json");
        return 0;
    }

    static int Perf(ParsedArgs args)
    {
        var settings = new PerfSettings(args.Int("rank", min: 1), args.Int("steps", min: 1), args.Require("type"), args.Require("size"));
        settings.Check();
        if (args.Get("child") is { } variant)
        {
            TorchRuntime.Configure(args.Int("threads", min: 0, max: TorchRuntime.MaxThreads));
            int threads = TorchRuntime.Threads;
            int models = args.IntList("models", 64, 64)[0];
            Console.WriteLine("RESULT " + (variant == PerfBench.Paired
                ? JsonSerializer.Serialize(PerfBench.MeasurePaired(models, threads, settings))
                : JsonSerializer.Serialize(PerfBench.Measure(variant, models, threads, settings))));
            return 0;
        }
        var outDir = args.Require("out");
        Directory.CreateDirectory(outDir);
        if (args.Get("benchmark") == "load")
        {
            Console.WriteLine($"measuring each thread setting in its own process, idle and beside {Environment.ProcessorCount} CPU-burning processes ({settings.Shape})");
            ThreadBench.Run(settings, args.Int("rounds", min: 1), outDir, Console.WriteLine);
            Console.WriteLine($"wrote {Path.Combine(outDir, "threads.md")}, threads.json");
            return 0;
        }
        Console.WriteLine($"measuring each variant in its own process ({settings.Shape}, batch {PerfBench.Batch})");
        PerfBench.Run(args.IntList("models", 64, 64), args.IntList("thread-counts", TorchRuntime.MaxThreads, 16), settings, args.Int("rounds", min: 1), outDir, Console.WriteLine);
        Console.WriteLine($"wrote {Path.Combine(outDir, "perf.md")}, perf.json");
        return 0;
    }
}
