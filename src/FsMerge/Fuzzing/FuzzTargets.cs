using System.Text;
using FsMerge.Data;
using FsMerge.IO;
using FsMerge.Merging;
using FsMerge.Models;
using FsMerge.Runs;
using SkiaSharp;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Fuzzing;

/// <summary>
/// One reader under fuzzing. <see cref="Path"/> is the file the fuzzer rewrites, inside a folder that also holds
/// whatever else the reader needs (a config.json beside weights, a vocab.txt beside a class file); <see cref="Read"/>
/// reads it the way the program does. <see cref="Seeds"/> are valid files that FsMerge itself wrote.
/// </summary>
internal sealed record FuzzTarget(string Name, string Path, IReadOnlyList<byte[]> Seeds, bool Text, Action Read);

/// <summary>The readers a user's files reach, each with seed files FsMerge writes (see <see cref="Fuzzer"/>).</summary>
internal static class FuzzTargets
{
    public static readonly string[] Names = ["safetensors", "index", "config", "yaml", "idx", "image", "text", "vocab", "tokenizer", "checkpoint", "sweep"];

    /// <summary>Builds every target (or those in <paramref name="only"/>) in folders under <paramref name="work"/>.</summary>
    public static List<FuzzTarget> Create(string work, IReadOnlyCollection<string>? only = null)
    {
        foreach (var name in only ?? [])
            if (!Names.Contains(name)) throw new FsMergeException($"fuzz target '{name}' is unknown (expected one of {string.Join(", ", Names)})");
        var targets = new List<FuzzTarget>();
        foreach (var name in Names.Where(n => only is null || only.Count == 0 || only.Contains(n)))
        {
            var dir = System.IO.Path.Combine(work, name);
            Directory.CreateDirectory(dir);
            using var scope = torch.NewDisposeScope();
            targets.Add(name switch
            {
                "safetensors" => SafetensorsTarget(dir),
                "index" => IndexTarget(dir),
                "config" => ConfigTarget(dir),
                "yaml" => YamlTarget(dir),
                "idx" => IdxTarget(dir),
                "image" => ImageTarget(dir),
                "text" => TextTarget(dir),
                "vocab" => VocabTarget(dir),
                "tokenizer" => TokenizerTarget(dir),
                "sweep" => SweepTarget(dir),
                _ => CheckpointTarget(dir),
            });
        }
        return targets;
    }

    static readonly string[] Digits = ["0", "1", "2", "3", "4"];

    static ModelConfig Mlp => new() { Architecture = "mlp", InputSize = 16, HiddenSizes = [8, 4], Heads = [new HeadInfo("mnist:0-4", Digits)] };

    /// <summary>The bytes FsMerge writes through <paramref name="write"/> (into a scratch file <paramref name="name"/> under <paramref name="dir"/>).</summary>
    static byte[] Written(string dir, Action<string> write, string name = ".seed")
    {
        var path = System.IO.Path.Combine(dir, name);
        write(path);
        var bytes = File.ReadAllBytes(path);
        File.Delete(path);
        return bytes;
    }

    static Model SmallModel() => Model.Create(Mlp, 1, CPU);

    static FuzzTarget SafetensorsTarget(string dir)
    {
        var path = System.IO.Path.Combine(dir, Model.WeightsFile);
        var mixed = new Dictionary<string, Tensor>
        {
            ["f32"] = torch.arange(6, ScalarType.Float32).reshape(2, 3),
            ["f64"] = torch.ones(2, ScalarType.Float64),
            ["f16"] = torch.ones(3, ScalarType.Float16),
            ["bf16"] = torch.ones(2, ScalarType.BFloat16),
            ["i64"] = torch.arange(2, ScalarType.Int64),
            ["i32"] = torch.arange(2, ScalarType.Int32),
            ["u8"] = torch.arange(3, ScalarType.Byte),
            ["bool"] = torch.tensor(new[] { true, false }),
            ["empty"] = torch.zeros(0, 4),
        };
        using var model = SmallModel();
        byte[][] seeds =
        [
            Written(dir, p => Safetensors.Write(p, mixed, new Dictionary<string, string> { ["format"] = "pt" })),
            Written(dir, p => Safetensors.Write(p, model.Weights)),
        ];
        return new(Name: "safetensors", path, seeds, Text: false, Read: () =>
        {
            using var content = Safetensors.Read(path);
        });
    }

    static FuzzTarget IndexTarget(string dir)
    {
        using var model = SmallModel();
        model.Config.Write(System.IO.Path.Combine(dir, Model.ConfigFile));
        var names = model.Weights.Keys.Order(StringComparer.Ordinal).ToList();
        var shards = new[] { "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors" };
        var map = new System.Text.Json.Nodes.JsonObject();
        for (int s = 0; s < 2; s++)
        {
            var part = names.Where((_, i) => i % 2 == s).ToList();
            Safetensors.Write(System.IO.Path.Combine(dir, shards[s]), part.ToDictionary(n => n, n => model.Weights[n]));
            foreach (var n in part) map[n] = shards[s];
        }
        var index = new System.Text.Json.Nodes.JsonObject { ["metadata"] = new System.Text.Json.Nodes.JsonObject { ["total_size"] = 1 }, ["weight_map"] = map };
        var path = System.IO.Path.Combine(dir, Model.IndexFile);
        var seed = Written(dir, p => AtomicFile.WriteAllText(p, index.ToJsonString(JsonFormat.Indented)));
        return new("index", path, [seed], Text: true, Read: () => LoadModel(dir));
    }

    static void LoadModel(string dir)
    {
        using var model = Model.Load(dir, CPU);
    }

    static FuzzTarget ConfigTarget(string dir)
    {
        using var model = SmallModel();
        Safetensors.Write(System.IO.Path.Combine(dir, Model.WeightsFile), model.Weights);
        var vit = new ModelConfig
        {
            Architecture = "vit", ImageSize = 8, NumChannels = 1, PatchSize = 4, HiddenSize = 8, NumHiddenLayers = 1,
            NumAttentionHeads = 2, IntermediateSize = 16, Heads = [HeadInfo.Create(HeadKind.Cosine, "t", ["a", "b"], 8)],
        };
        var bert = new ModelConfig
        {
            Architecture = "bert", VocabSize = 32, MaxPositionEmbeddings = 16, TypeVocabSize = 2, PadTokenId = 0, HiddenSize = 8,
            NumHiddenLayers = 1, NumAttentionHeads = 2, IntermediateSize = 16, Heads = [new HeadInfo("lang:0-1", ["en", "fr"]), new HeadInfo("x", ["p", "q"])],
        };
        var hfStyle = model.Config.ToJson();
        hfStyle.Remove("fsmerge");   // a Hugging Face checkpoint: id2label and label2id only
        var path = System.IO.Path.Combine(dir, Model.ConfigFile);
        byte[][] seeds =
        [
            Written(dir, p => model.Config.Write(p)),
            Written(dir, p => vit.Write(p)),
            Written(dir, p => bert.Write(p)),
            Encoding.UTF8.GetBytes(hfStyle.ToJsonString(JsonFormat.Indented)),
        ];
        return new("config", path, seeds, Text: true, Read: () => LoadModel(dir));
    }

    /// <summary>A merge config using every key (as examples/mlp.yaml, plus the rest).</summary>
    const string YamlSeed = """
        sources:
          - model: a
            task: mnist:0-4
            data: {task: mnist:0-4}
            samples: 64
            test: {images: test-a}
          - model: b
            data: {idx: b.idx}
        method: fs-merge
        options:
          init: zipit
          epochs: 300
          lr: 0.03
        seed: &s 1
        threads: 2
        device: cpu
        out: merged
        overwrite: false
        augment: 4
        held-out: 8
        width: [128, 64]
        eval: true
        data-dir: data
        """;

    static FuzzTarget YamlTarget(string dir) =>
        new("yaml", System.IO.Path.Combine(dir, "merge.yaml"), [Encoding.UTF8.GetBytes(YamlSeed)], Text: true,
            Read: () => MergeRequestFile.Read(System.IO.Path.Combine(dir, "merge.yaml")));

    static FuzzTarget IdxTarget(string dir)
    {
        var images = Enumerable.Range(0, 3 * 4 * 4).Select(i => (byte)(i * 7)).ToArray();
        byte[][] seeds =
        [
            Written(dir, p => Idx.Write(p, images, [3, 4, 4])),
            Written(dir, p => Idx.Write(p, images, [3, 4, 4]), ".seed.gz"),
            Written(dir, p => Idx.Write(p, [0, 1, 2, 1, 0], [5])),
        ];
        var path = System.IO.Path.Combine(dir, "images-idx3-ubyte");
        return new("idx", path, seeds, Text: false, Read: () => Idx.Read(path));
    }

    static FuzzTarget ImageTarget(string dir)
    {
        byte[] Encode(SKColorType type, SKEncodedImageFormat format)
        {
            using var bitmap = new SKBitmap(new SKImageInfo(6, 5, type, SKAlphaType.Opaque));
            for (int y = 0; y < 5; y++)
                for (int x = 0; x < 6; x++)
                    bitmap.SetPixel(x, y, new SKColor((byte)(x * 40), (byte)(y * 50), (byte)(x * y * 8)));
            using var data = bitmap.Encode(format, 90);
            return data.ToArray();
        }
        byte[][] seeds = [Encode(SKColorType.Gray8, SKEncodedImageFormat.Png), Encode(SKColorType.Rgba8888, SKEncodedImageFormat.Png), Encode(SKColorType.Rgba8888, SKEncodedImageFormat.Jpeg)];
        var path = System.IO.Path.Combine(dir, "0.png");
        return new("image", path, seeds, Text: false, Read: () =>
        {
            using var set = ImageFolder.ReadFiles([path], [0], shape: null).All(["x"]);
        });
    }

    static readonly string[] Corpus =
    [
        "The quick brown fox jumps over the lazy dog.", "Le renard brun saute par-dessus le chien paresseux !",
        "Der schnelle braune Fuchs springt über den faulen Hund.", "It's 3:14 p.m. — time for π; naïve café.",
    ];

    static WordPiece Vocabulary() => WordPiece.Build(Corpus.Concat(Corpus), 96, minCount: 1);

    static FuzzTarget TextTarget(string dir)
    {
        var vocab = Vocabulary();
        vocab.Write(System.IO.Path.Combine(dir, TextFolder.VocabFile));
        var path = System.IO.Path.Combine(dir, "c.txt");
        var seed = Written(dir, p => AtomicFile.WriteAllText(p, string.Join("\n", Corpus) + "\n\n"));
        return new("text", path, [seed], Text: true, Read: () =>
        {
            var words = WordPiece.Read(System.IO.Path.Combine(dir, TextFolder.VocabFile));
            foreach (var (text, _) in TextFolder.Lines(dir, ["c"])) words.Encode(text.A, text.B, TextFolder.SequenceLength);
        });
    }

    static FuzzTarget VocabTarget(string dir)
    {
        var path = System.IO.Path.Combine(dir, TextFolder.VocabFile);
        var seed = Written(dir, p => Vocabulary().Write(p));
        return new("vocab", path, [seed], Text: true, Read: () =>
        {
            var words = WordPiece.Read(path);
            foreach (var text in Corpus) words.Encode(text, TextFolder.SequenceLength);
        });
    }

    /// <summary>tokenizer_config.json as a BERT folder carries it (FsMerge writes one into every BERT output).</summary>
    static FuzzTarget TokenizerTarget(string dir)
    {
        var seedDir = System.IO.Path.Combine(dir, "seed");
        Directory.CreateDirectory(seedDir);
        TokenizerFiles.Write(seedDir, Vocabulary().Tokens, TokenizerSettings.HuggingFace, TextFolder.SequenceLength);
        var seed = File.ReadAllBytes(System.IO.Path.Combine(seedDir, TokenizerFiles.ConfigFile));
        return new("tokenizer", System.IO.Path.Combine(dir, TokenizerFiles.ConfigFile), [seed], Text: true, Read: () => TokenizerFiles.Read(dir));
    }

    /// <summary>The --lr auto sweep's checkpoint (lr-sweep.json), as a resumed run reads it.</summary>
    static FuzzTarget SweepTarget(string dir)
    {
        var checkpoints = new TrainingCheckpoints(dir, every: 1, resume: true, runKey: "fuzz");
        checkpoints.SaveSweep("distill", [new RateTrial(0.01, 0.25, 0.75, false, 1.5, "zipit"), new RateTrial(0.1, double.PositiveInfinity, 0, true, 0.5, "first")]);
        var path = System.IO.Path.Combine(dir, "lr-sweep.json");
        return new("sweep", path, [File.ReadAllBytes(path)], Text: true, Read: () => checkpoints.LoadSweep("distill"));
    }

    static FuzzTarget CheckpointTarget(string dir)
    {
        var checkpoints = new TrainingCheckpoints(dir, every: 1, resume: true, runKey: "fuzz");
        var parameters = new List<Parameter> { new(torch.randn(3, 2)), new(torch.zeros(2)) };
        foreach (var p in parameters) p.DetachFromDisposeScope();
        var optimizer = torch.optim.AdamW(parameters, 0.01);
        using (var scope = torch.NewDisposeScope())
        {
            parameters.Select(p => p.sum()).Aggregate((a, b) => a + b).backward();
            optimizer.step();
        }
        var state = new TrainingCheckpoints.LoopState
        {
            Step = 1, EpochSum = 0.5, WindowSum = 0.25, WindowSamples = 2, Points = [new LossPoint(1, 0.5)], Order = [2, 0, 1],
            GeneratorState = new Generator(7).get_state().bytes.ToArray(),
        };
        var path = System.IO.Path.Combine(dir, "train-0.ckpt");
        var seed = Written(dir, p => checkpoints.Save(p, "fuzz", 10, parameters, optimizer, state));
        return new("checkpoint", path, [seed], Text: false, Read: () => checkpoints.Load(path, "fuzz", 10, parameters, _ => optimizer));
    }
}
