using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using FsMerge.Models;
using FsMerge.Runs;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>How outputs are written (issue 18): whole or not at all, never over another run's output or a source.</summary>
public class OutputWriterTests
{
    [Fact]
    public void A_run_that_loses_the_race_for_its_output_leaves_the_winners_alone()
    {
        using var tmp = new TempDir();
        var output = tmp.Sub("out");
        var e = Assert.Throws<FsMergeException>(() => OutputWriter.Write(output, overwrite: false, staging =>
        {
            File.WriteAllText(Path.Combine(staging, "mine.txt"), "loser");
            Directory.CreateDirectory(output);   // another run finishes first
            File.WriteAllText(Path.Combine(output, "theirs.txt"), "winner");
        }));
        Assert.Contains("output directory exists", e.Message);
        Assert.Equal(["theirs.txt"], Directory.GetFiles(output).Select(Path.GetFileName));
        Assert.Equal([output], Directory.GetDirectories(tmp.Path));
    }

    [Fact]
    public void Real_paths_resolve_every_link_and_refuse_loops()
    {
        using var tmp = new TempDir();
        var model = Directory.CreateDirectory(tmp.Sub("models", "a")).FullName;
        File.CreateSymbolicLink(tmp.Sub("shelf"), tmp.Sub("models"));
        File.CreateSymbolicLink(tmp.Sub("link"), Path.Combine(tmp.Sub("shelf"), "a"));
        Assert.Equal(model, OutputWriter.RealPath(tmp.Sub("link")));
        Assert.Equal(Path.Combine(model, "not-yet"), OutputWriter.RealPath(Path.Combine(tmp.Sub("link"), "not-yet")));
        File.CreateSymbolicLink(tmp.Sub("loop1"), tmp.Sub("loop2"));
        File.CreateSymbolicLink(tmp.Sub("loop2"), tmp.Sub("loop1"));
        Assert.Contains("cannot resolve the path", Assert.Throws<FsMergeException>(() => OutputWriter.RealPath(Path.Combine(tmp.Sub("loop1"), "x"))).Message);
        Assert.Contains("would be written inside the source model",
            Assert.Throws<FsMergeException>(() => OutputWriter.CheckOutput(Path.Combine(tmp.Sub("link"), "merged"), false, [model])).Message);
    }
}

/// <summary>What a merge's output holds (issue 19, outputs): the sources' dtype, shards, task folders sharing one backbone,
/// 0-based names, relative paths, the run config in merge.json with typed values.</summary>
[Collection("torch")]
public class MergeOutputTests : IClassFixture<BadInputTests.Models>
{
    readonly BadInputTests.Models models;
    public MergeOutputTests(BadInputTests.Models models) => this.models = models;

    static JsonObject Json(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();

    /// <summary>The safetensors header's dtype of every tensor, read from the bytes.</summary>
    static HashSet<string> DTypes(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)n))!.AsObject();
        return header.Where(kv => kv.Key != "__metadata__").Select(kv => (string)kv.Value!["dtype"]!).ToHashSet();
    }

    /// <summary>Two MLP sources (mnist:0-4, mnist:5-9) saved in the given dtypes.</summary>
    static (string A, string B) Sources(TempDir tmp, ScalarType a, ScalarType b, int[]? hidden = null)
    {
        var config = BadInputTests.Models.Mlp(hidden ?? [16]);
        using var first = Model.Create(config, 1, CPU);
        first.Save(tmp.Sub("a"), new WeightFormat(a));
        using var second = Model.Create(config with { Heads = [new HeadInfo("mnist:5-9", ["5", "6", "7", "8", "9"])] }, 2, CPU);
        second.Save(tmp.Sub("b"), new WeightFormat(b));
        return (tmp.Sub("a"), tmp.Sub("b"));
    }

    static MergeRequest Request(string a, string b, string output) => new()
    {
        Sources = [new SourceRequest { Model = a, Samples = 12 }, new SourceRequest { Model = b, Samples = 12 }],
        Options = new DefaultOptions("average"),
        HeldOut = 4,
        Threads = 1,
        Output = output,
    };

    [Fact]
    public void The_sources_dtype_is_kept_unless_another_is_asked_for()
    {
        using var tmp = new TempDir();
        var (a, b) = Sources(tmp, ScalarType.BFloat16, ScalarType.BFloat16);
        using (Merger.Merge(Request(a, b, tmp.Sub("bf16")))) { }
        Assert.Equal(["BF16"], DTypes(tmp.Sub("bf16", Model.WeightsFile)));
        Assert.Equal("bfloat16", (string?)Json(tmp.Sub("bf16", Model.ConfigFile))["torch_dtype"]);
        Assert.Equal(["BF16"], DTypes(tmp.Sub("bf16", OutputWriter.TasksFolder, "0-mnist-0-4", OutputWriter.BackboneShard)));
        Assert.Equal("bfloat16", (string?)Json(tmp.Sub("bf16", "merge.json"))["dtype"]);
        Assert.Contains("weights in bfloat16", File.ReadAllText(tmp.Sub("bf16", "README.md")));

        using (Merger.Merge(Request(a, b, tmp.Sub("f32")) with { DType = "float32" })) { }
        Assert.Equal(["F32"], DTypes(tmp.Sub("f32", Model.WeightsFile)));

        var (c, d) = Sources(tmp, ScalarType.Float16, ScalarType.BFloat16);   // they differ: float32 loses neither
        using (Merger.Merge(Request(c, d, tmp.Sub("mixed")))) { }
        Assert.Equal(["F32"], DTypes(tmp.Sub("mixed", Model.WeightsFile)));

        Assert.Contains("dtype 'float64'", Assert.Throws<FsMergeException>(() => Merger.Merge(Request(a, b, tmp.Sub("never")) with { DType = "float64" })).Message);
        Assert.False(Directory.Exists(tmp.Sub("never")));
    }

    [Fact]
    public void A_shard_size_writes_hugging_face_shards_that_load_as_the_same_model()
    {
        using var tmp = new TempDir();
        var (a, b) = Sources(tmp, ScalarType.Float32, ScalarType.Float32, [128, 128]);   // 784x128 float32: 401 KB, the largest tensor
        using (Merger.Merge(Request(a, b, tmp.Sub("whole")))) { }
        using (Merger.Merge(Request(a, b, tmp.Sub("sharded")) with { ShardSize = 128 << 10 })) { }

        Assert.False(File.Exists(tmp.Sub("sharded", Model.WeightsFile)));
        var index = Json(tmp.Sub("sharded", Model.IndexFile));
        var shards = index["weight_map"]!.AsObject().Select(kv => (string)kv.Value!).Distinct().Order().ToList();
        Assert.True(shards.Count >= 2, string.Join(", ", shards));
        Assert.Equal(Enumerable.Range(1, shards.Count).Select(k => $"model-{k:D5}-of-{shards.Count:D5}.safetensors"), shards);
        foreach (var shard in shards)   // each at most the limit, but for a single tensor bigger than it
        {
            long size = new FileInfo(tmp.Sub("sharded", shard)).Length;
            Assert.True(size <= (128 << 10) + 4096 || index["weight_map"]!.AsObject().Count(kv => (string)kv.Value! == shard) == 1, $"{shard}: {size} bytes");
        }
        using var whole = Model.Load(tmp.Sub("whole"), CPU);
        using var sharded = Model.Load(tmp.Sub("sharded"), CPU);
        Assert.Equal(whole.Weights.Keys.Order(), sharded.Weights.Keys.Order());
        Assert.All(whole.Weights, kv => Assert.True(kv.Value.equal(sharded.Weights[kv.Key]).all().item<bool>(), kv.Key));
        Assert.Equal((long)index["metadata"]!["total_size"]!, whole.Weights.Values.Sum(t => t.NumberOfElements * 4));
    }

    [Fact]
    public void Task_folders_share_one_backbone_file_and_load_as_the_merged_model_s_heads()
    {
        using var tmp = new TempDir();
        var (a, b) = Sources(tmp, ScalarType.Float32, ScalarType.Float32);
        var output = tmp.Sub("out");
        using var result = Merger.Merge(Request(a, b, output));
        Assert.StartsWith("hard links", (string?)Json(Path.Combine(output, "merge.json"))["tasks_backbone"]);
        Assert.Contains("merge.log", result.Files);
        Assert.Contains(Path.Combine(OutputWriter.TasksFolder, "1-mnist-5-9", OutputWriter.HeadShard), result.Files);
        Assert.False(Directory.Exists(output + ".partial"));
        var first = Path.Combine(output, OutputWriter.TasksFolder, "0-mnist-0-4");
        var second = Path.Combine(output, OutputWriter.TasksFolder, "1-mnist-5-9");   // head 1 = classifier.1
        for (int head = 0; head < 2; head++)
        {
            using var single = Model.Load(head == 0 ? first : second, CPU);
            Assert.True(single.Weights["classifier.weight"].equal(result.Model!.Weights[$"classifier.{head}.weight"]).all().item<bool>());
            Assert.True(single.Weights["layers.0.weight"].equal(result.Model.Weights["layers.0.weight"]).all().item<bool>());
        }
        // One file under two names: what is written through one is read through the other.
        long before = new FileInfo(Path.Combine(second, OutputWriter.BackboneShard)).Length;
        File.AppendAllText(Path.Combine(first, OutputWriter.BackboneShard), "x");
        Assert.Equal(before + 1, new FileInfo(Path.Combine(second, OutputWriter.BackboneShard)).Length);
    }

    [Fact]
    public void Merge_json_embeds_the_run_config_with_typed_values_and_relative_paths_and_it_runs_again()
    {
        using var tmp = new TempDir();
        var (a, b) = Sources(tmp, ScalarType.Float32, ScalarType.Float32);
        var output = tmp.Sub("out");
        using (Merger.Merge(Request(a, b, output) with { Options = new RegMeanOptions { Alpha = 0.5 } })) { }

        var record = Json(Path.Combine(output, "merge.json"));
        Assert.Equal(0.5, (double)record["options"]!["alpha"]!);                         // a number, not "0.5"
        Assert.Equal(5, record["options"]!["alpha-grid"]!.AsArray().Count);              // a list of numbers
        Assert.Equal("../a", (string?)record["sources"]![0]!["path"]);
        Assert.Equal(1, (int)record["heads"]![1]!["head"]!);
        Assert.Equal("tasks/1-mnist-5-9", (string?)record["heads"]![1]!["folder"]);
        foreach (var file in new[] { "merge.json", "README.md", "report.md", "metrics.json" })
            Assert.DoesNotContain(tmp.Path, File.ReadAllText(Path.Combine(output, file)));

        // JSON is YAML: the embedded config, saved beside the output, is a config file that reproduces the run.
        var config = tmp.Sub("run.yaml");
        File.WriteAllText(config, record["config"]!.ToJsonString().Replace("\"../", "\"out/../"));
        var again = MergeRequestFile.Read(config) with { Output = tmp.Sub("again") };
        Assert.Equal("regmean", again.Method);
        Assert.Equal("0.5", again.Options["alpha"]);
        Assert.Equal(a, again.Sources[0].Model);
        using (Merger.Merge(again)) { }
        Assert.Equal(File.ReadAllBytes(Path.Combine(output, Model.WeightsFile)), File.ReadAllBytes(tmp.Sub("again", Model.WeightsFile)));
    }
}
