using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using FsMerge.IO;
using FsMerge.Models;
using FsMerge.Runs;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>Config-driven merges, Hugging Face checkpoints in (shards, prefixes) and out (read back by hand).</summary>
[Collection("torch")]
public class MergeRunTests : IClassFixture<BadInputTests.Models>
{
    readonly BadInputTests.Models models;
    public MergeRunTests(BadInputTests.Models models) => this.models = models;

    string Dir(string name) => Path.Combine(models.Root, name);

    /// <summary>An independent safetensors header reader: name → shape, straight from the bytes.</summary>
    static Dictionary<string, long[]> HeaderShapes(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)n))!.AsObject();
        return header.Where(kv => kv.Key != "__metadata__")
            .ToDictionary(kv => kv.Key, kv => kv.Value!["shape"]!.AsArray().Select(d => (long)d!).ToArray());
    }

    static JsonObject Json(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();

    [Fact]
    public void A_config_driven_vit_merge_writes_hugging_face_layouts_that_an_independent_reader_reads()
    {
        var (v1, v2, output) = (Dir("hf-v1"), Dir("hf-v2"), Dir("hf-out"));
        BadInputTests.Models.Save(BadInputTests.Models.Vit(), v1, 5);
        BadInputTests.Models.Save(BadInputTests.Models.Vit() with { Heads = [new HeadInfo("mnist:5-9", ["5", "6", "7", "8", "9"])] }, v2, 6);
        var config = Dir("vit.yaml");
        File.WriteAllText(config, $"sources:\n  - model: {v1}\n    samples: 8\n  - model: {v2}\n    samples: 8\nmethod: fs-merge\nthreads: 1\nout: {output}\n");
        var (code, _, err) = CliTests.Run("merge", config, "--method", "average", "--quiet");   // the flag overrides the file's method
        Assert.True(code == 0, err);

        Assert.Equal("average", (string?)Json(Path.Combine(output, "merge.json"))["method"]);
        var merged = HeaderShapes(Path.Combine(output, Model.WeightsFile));
        Assert.Equal([5, 16], merged["classifier.1.weight"]);
        Assert.Equal([1, 17, 16], merged["vit.embeddings.position_embeddings"]);
        Assert.Contains("vit.encoder.layer.0.attention.attention.query.weight", merged.Keys);
        Assert.Equal("ViTModel", (string?)Json(Path.Combine(output, Model.ConfigFile))["architectures"]![0]);

        var task2 = Path.Combine(output, OutputWriter.TasksFolder, "1-mnist-5-9");   // head 1 (0-based, as classifier.1)
        var index = Json(Path.Combine(task2, Model.IndexFile))["weight_map"]!.AsObject();
        var single = HeaderShapes(Path.Combine(task2, OutputWriter.HeadShard)).Concat(HeaderShapes(Path.Combine(task2, OutputWriter.BackboneShard))).ToDictionary();
        Assert.Equal(single.Keys.Order(), index.Select(kv => kv.Key).Order());
        Assert.Equal([5, 16], single["classifier.weight"]);
        Assert.DoesNotContain(single.Keys, k => k.StartsWith("classifier."+ "0"));
        Assert.Equal(merged.Count - 2, single.Count);
        var singleConfig = Json(Path.Combine(task2, Model.ConfigFile));
        Assert.Equal("ViTForImageClassification", (string?)singleConfig["architectures"]![0]);
        Assert.Equal("vit", (string?)singleConfig["model_type"]);
        Assert.Equal("7", (string?)singleConfig["id2label"]!["2"]);
        Assert.Equal(4, (int)singleConfig["label2id"]!["9"]!);
        Assert.Equal(16, (int)singleConfig["hidden_size"]!);
        Assert.Equal(2, (int)singleConfig["num_attention_heads"]!);
        Assert.Empty(Directory.GetDirectories(models.Root, "hf-out.partial-*"));

        // The single-task model is a valid fsmerge source again, with the merged model's head 2.
        using var reread = Model.Load(task2, CPU);
        using var whole = Model.Load(output, CPU);
        Assert.True(reread.Weights["classifier.weight"].equal(whole.Weights["classifier.1.weight"]).all().item<bool>());
    }

    [Fact]
    public void Sharded_checkpoints_with_hugging_face_prefixes_and_a_pooler_load_as_the_same_model()
    {
        var (plain, sharded) = (Dir("shard-src"), Dir("shard-hf"));
        BadInputTests.Models.Save(BadInputTests.Models.Vit(), plain, 7);
        using var original = Model.Load(plain, CPU);
        Directory.CreateDirectory(sharded);
        // HF-style config: id2label/label2id only, no fsmerge section.
        var config = Json(Path.Combine(plain, Model.ConfigFile));
        config.Remove("fsmerge");
        config.Remove("id2label");
        File.WriteAllText(Path.Combine(sharded, Model.ConfigFile), config.ToJsonString());
        // Shard 1: backbone under ViTModel's names (no "vit.") plus its pooler; shard 2: the head under "model.".
        var backbone = original.Weights.Where(kv => kv.Key.StartsWith("vit.")).ToDictionary(kv => kv.Key["vit.".Length..], kv => kv.Value);
        backbone["pooler.dense.weight"] = zeros(16, 16);
        var head = original.Weights.Where(kv => kv.Key.StartsWith("classifier")).ToDictionary(kv => "model." + kv.Key, kv => kv.Value);
        Safetensors.Write(Path.Combine(sharded, "model-00001-of-00002.safetensors"), backbone);
        Safetensors.Write(Path.Combine(sharded, "model-00002-of-00002.safetensors"), head);
        var map = new JsonObject();
        foreach (var k in backbone.Keys) map[k] = "model-00001-of-00002.safetensors";
        foreach (var k in head.Keys) map[k] = "model-00002-of-00002.safetensors";
        File.WriteAllText(Path.Combine(sharded, Model.IndexFile), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());

        using var loaded = Model.Load(sharded, CPU);
        Assert.Equal(original.Config.Heads[0].Labels, loaded.Config.Heads[0].Labels);
        Assert.Equal(original.Weights.Keys.Order(), loaded.Weights.Keys.Order());
        foreach (var (name, w) in original.Weights) Assert.True(w.equal(loaded.Weights[name]).all().item<bool>(), name);
    }

    [Fact]
    public void Flags_override_the_file_and_a_dry_run_prints_the_plan_and_writes_nothing()
    {
        var output = Dir("dry-out");
        var config = Dir("dry.yaml");
        File.WriteAllText(config, $"sources:\n  - model: {models.A}\n    samples: 8\n  - model: {models.B}\n    samples: 8\nmethod: fs-merge\noptions:\n  epochs: 10\n  type: low-rank\n  init: random\n  rank: 4\nthreads: 1\nout: {output}\n");
        var (code, stdout, err) = CliTests.Run("merge", config, "--dry-run", "--rank", "2");
        Assert.True(code == 0, err);
        Assert.Matches(@"--rank +2 +flag", stdout);
        Assert.Matches(@"--type +low-rank +config file", stdout);
        Assert.Matches(@"--optimizer +sgd +default for mlp", stdout);
        Assert.Matches(@"--lr +auto +default", stdout);
        Assert.Contains("layer0.merge", stdout);
        Assert.Contains("steps: 10 epochs x 1 batch(es) of 16", stdout);
        Assert.Contains("optimized parameters: ", stdout);
        Assert.Contains("estimate: about", stdout);
        // Timed step by step in the one (global) phase; a run of 10 steps is shorter than the probe, so it is the probe.
        Assert.Matches(@"ran 10 epochs of 1 step\(s\) per phase .*fs-merge global [0-9.]+ ms; [0-9.]+ s fixed \+ 10 steps", stdout);
        Assert.Contains("dry run: nothing written", stdout);
        Assert.False(Directory.Exists(output));

        var request = MergeRequestFile.Read(config);
        Assert.Equal(8, request.Sources[1].Samples);
        Assert.Equal("4", request.Options["rank"]);
        Assert.Equal(Path.GetFullPath(output), request.Output);
    }

    [Fact]
    public void Compare_runs_every_method_on_the_same_inputs_and_reports_them_side_by_side()
    {
        var output = Dir("compare-out");
        var (code, stdout, err) = CliTests.Run("compare", "--methods", "average,zipit", "--model", models.A, "--model", models.B,
            "--samples", "16", "--threads", "1", "--out", output, "--quiet");
        Assert.True(code == 0, err);
        var header = stdout.Split('\n').First(l => l.StartsWith("method"));
        Assert.Contains("mnist:0-4", header);
        Assert.Contains("joint", header);
        Assert.Contains(stdout.Split('\n'), l => l.StartsWith("zipit "));
        var csv = File.ReadAllText(Path.Combine(output, "metrics.csv"));
        Assert.Contains("average", csv);
        Assert.Contains("zipit", csv);
        Assert.True(File.Exists(Path.Combine(output, "report.md")));
        Assert.True(File.Exists(Path.Combine(output, "models", "zipit", OutputWriter.TasksFolder, "0-mnist-0-4", OutputWriter.HeadShard)));
    }

    [Fact]
    public void Method_auto_from_the_command_line_writes_its_choice_the_estimate_and_a_report()
    {
        var output = Dir("auto-out");
        var (code, stdout, err) = CliTests.Run("merge", "--method", "auto", "--candidates", "average,fs-merge", "--model", models.A, "--model", models.B,
            "--samples", "16", "--held-out", "8", "--out", output, "--quiet", "--threads", "1");
        Assert.True(code == 0, err);
        Assert.Contains("auto: chose", stdout);
        var record = Json(Path.Combine(output, "merge.json"));
        var candidates = record["details"]!["candidates"]!.AsArray();
        Assert.Equal(2, candidates.Count);
        Assert.Contains((string)record["details"]!["chosen"]!, new[] { "average", "fs-merge" });
        Assert.NotNull(record["label_free"]!["logit_error"]);
        Assert.Contains("## Label-free estimate", File.ReadAllText(Path.Combine(output, "report.md")));
    }

    [Fact]
    public void Unlabeled_data_from_an_image_folder_and_an_idx_file()
    {
        var (images, idx, output) = (Dir("unlabeled-png"), Dir("unlabeled-idx3-ubyte"), Dir("unlabeled-out"));
        for (int i = 0; i < 5; i++) ImageFolderTests.WritePng(Path.Combine(images, $"{i}.png"), 28, 28, false, (c, y, x) => (byte)(x * i + y));
        FsMerge.Data.Idx.Write(idx, new byte[7 * 28 * 28], [7, 28, 28]);
        var config = Dir("unlabeled.yaml");
        File.WriteAllText(config, $"sources:\n  - model: {models.A}\n    data: {{images: {images}}}\n  - model: {models.B}\n    data: {{idx: {idx}}}\n    samples: 6\nmethod: average\nout: {output}\n");
        var (code, stdout, err) = CliTests.Run("merge", config, "--quiet");
        Assert.True(code == 0, err);
        var sources = Json(Path.Combine(output, "merge.json"))["sources"]!.AsArray();
        Assert.Equal("images: ../unlabeled-png", (string?)sources[0]!["data"]);   // relative to the output folder
        Assert.Equal(4, (int)sources[0]!["samples"]!);     // 5 in the folder (64 asked): a quarter, one, is held out
        Assert.Equal(new[] { 1, 1 }, Json(Path.Combine(output, "merge.json"))["held_out_per_task"]!.AsArray().Select(n => (int)n!));
        Assert.Equal(6, (int)sources[1]!["samples"]!);
        Assert.Contains("merging 2 models with average", stdout);
    }
}
