using System.Text;
using FsMerge.Data;
using FsMerge.Models;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// The catalogue of bad inputs to `fsmerge merge` (issue 6) and the other commands (issue 18): each case gets one
/// line "error: ..." naming the file or key and what was expected, with no raw control character, exit code 2, no
/// stack trace, no output directory, within seconds and without a large allocation. The models are
/// freshly initialized (every case fails before any training), the data is the provisioned MNIST.
/// The safetensors reader's own defects are covered in depth by SafetensorsTests; here they are seen
/// from the command line.
/// </summary>
[Collection("torch")]
public class BadInputTests : IClassFixture<BadInputTests.Models>
{
    public sealed class Models : IDisposable
    {
        public string Root { get; } = Path.Combine(Path.GetTempPath(), $"fsmerge-bad-{Guid.NewGuid():N}");
        public string A => Path.Combine(Root, "a");
        public string B => Path.Combine(Root, "b");

        public static readonly string[] Digits = ["0", "1", "2", "3", "4"];

        public static ModelConfig Mlp(params int[] hidden) => new()
        {
            Architecture = "mlp", InputSize = 784, HiddenSizes = hidden, Heads = [new HeadInfo("mnist:0-4", Digits)],
        };

        public static ModelConfig Vit(int heads = 2) => new()
        {
            Architecture = "vit", ImageSize = 28, NumChannels = 1, PatchSize = 7, HiddenSize = 16, NumHiddenLayers = 1,
            NumAttentionHeads = heads, IntermediateSize = 32, Heads = [new HeadInfo("mnist:0-4", Digits)],
        };

        public Models()
        {
            DataProvisioner.Provision(DataDirectory.Resolve(null), _ => { });
            Save(Mlp(16), A, 1);
            Save(Mlp(16) with { Heads = [new HeadInfo("mnist:5-9", ["5", "6", "7", "8", "9"])] }, B, 2);
        }

        public static void Save(ModelConfig config, string dir, long seed)
        {
            using var model = Model.Create(config, seed, CPU);
            model.Save(dir);
        }

        public void Dispose() => Directory.Delete(Root, recursive: true);
    }

    readonly Models models;
    public BadInputTests(Models models) => this.models = models;

    string Out => Path.Combine(models.Root, "out-never");

    string Path_(string name) => Path.Combine(models.Root, name);

    /// <summary>Runs fsmerge; A, B and OUT stand for the two good models and the output that must not appear.</summary>
    void Fails(string expected, params string[] args)
    {
        var resolved = args.Select(a => a switch { "A" => models.A, "B" => models.B, "OUT" => Out, _ => a }).ToArray();
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (code, _, err) = CliTests.Run(resolved);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - allocated < 1L << 30, "allocated more than 1 GB");
        Assert.Equal(2, code);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, err);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain(lines[0], c => char.IsControl(c));
        Assert.DoesNotContain("   at ", err);
        Assert.False(Directory.Exists(Out), "output directory was written");
        Assert.Empty(Directory.GetDirectories(models.Root, "out-never.partial-*"));
    }

    void MergeFails(string expected, string source, params string[] extra) =>
        Fails(expected, ["merge", "--method", "average", "--model", "A", "--model", source, "--out", "OUT", .. extra]);

    /// <summary>A copy of model A whose safetensors file is replaced by <paramref name="weights"/>.</summary>
    string WithWeights(string name, byte[] weights)
    {
        var dir = Path_(name);
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(models.A, Model.ConfigFile), Path.Combine(dir, Model.ConfigFile), overwrite: true);
        File.WriteAllBytes(Path.Combine(dir, Model.WeightsFile), weights);
        return dir;
    }

    /// <summary>A copy of model A with its weights changed by <paramref name="change"/> before saving.</summary>
    string WithChangedModel(string name, Action<Model> change)
    {
        var dir = Path_(name);
        using var model = Model.Load(models.A, CPU);
        change(model);
        model.Save(dir);
        return dir;
    }

    static byte[] Safetensors(string header, int dataBytes, ulong? headerLength = null)
    {
        var json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + dataBytes];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), headerLength ?? (ulong)json.Length);
        json.CopyTo(bytes, 8);
        return bytes;
    }

    string Yaml(string name, string text)
    {
        var path = Path_(name + ".yaml");
        File.WriteAllText(path, text.Replace("MODEL_A", models.A).Replace("MODEL_B", models.B).Replace("OUTPUT", Out));
        return path;
    }

    static void Png(string path, int size, bool colour) => ImageFolderTests.WritePng(path, size, size, colour, (c, y, x) => (byte)(x * 9 + y * 5 + c));

    // ---------------------------------------------------------------- output format

    [Fact]
    public void Unknown_dtype() => MergeFails("dtype 'float64' (--dtype", "B", "--dtype", "float64");

    [Fact]
    public void Shard_size_too_small_or_not_a_number()
    {
        MergeFails("shard size 12 (--shard-size", "B", "--shard-size", "12");
        MergeFails("--shard-size '2GB': expected a number of bytes", "B", "--shard-size", "2GB");
    }

    // ---------------------------------------------------------------- safetensors files

    [Fact]
    public void Truncated_weights_file()
    {
        var bytes = File.ReadAllBytes(Path.Combine(models.A, Model.WeightsFile));
        var dir = WithWeights("truncated", bytes[..(bytes.Length / 2)]);
        MergeFails(Path.Combine(dir, Model.WeightsFile), dir);
    }

    [Fact]
    public void Corrupt_header_that_is_not_json() =>
        MergeFails(Model.WeightsFile, WithWeights("corrupt", Safetensors("{\"layers.0.weight\": {\"dtype\": ", 0)));

    [Fact]
    public void Overlapping_tensor_data() =>
        MergeFails("overlap", WithWeights("overlap", Safetensors(
            "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24)));

    [Fact]
    public void Over_large_header_length() =>
        MergeFails("header", WithWeights("huge-header", Safetensors("{}", 0, headerLength: 1UL << 40)));

    [Fact]
    public void Header_length_beyond_the_end_of_the_file() =>
        MergeFails(Model.WeightsFile, WithWeights("short-header", Safetensors("{}", 0, headerLength: 4096)));

    [Fact]
    public void Missing_weights_file()
    {
        var dir = Path_("no-weights");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(models.A, Model.ConfigFile), Path.Combine(dir, Model.ConfigFile), overwrite: true);
        MergeFails(Model.WeightsFile, dir);
    }

    [Fact]
    public void Shard_missing_from_an_index()
    {
        var dir = Path_("sharded");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(models.A, Model.ConfigFile), Path.Combine(dir, Model.ConfigFile), overwrite: true);
        File.Copy(Path.Combine(models.A, Model.WeightsFile), Path.Combine(dir, "model-00001-of-00002.safetensors"), overwrite: true);
        File.WriteAllText(Path.Combine(dir, Model.IndexFile),
            "{\"metadata\":{},\"weight_map\":{\"layers.0.weight\":\"model-00001-of-00002.safetensors\",\"classifier.weight\":\"model-00002-of-00002.safetensors\"}}");
        MergeFails("shard model-00002-of-00002.safetensors", dir);
    }

    [Fact]
    public void Tensor_shape_disagrees_with_config() =>
        MergeFails("'layers.0.weight' has shape [16, 783]", WithChangedModel("bad-shape", m => m.Weights["layers.0.weight"] = m.Weights["layers.0.weight"].narrow(1, 0, 783)));

    [Fact]
    public void NaN_weight() =>
        MergeFails("'layers.0.bias' contains NaN or Inf", WithChangedModel("nan", m => m.Weights["layers.0.bias"][3] = float.NaN));

    [Fact]
    public void Inf_weight() =>
        MergeFails("'classifier.weight' contains NaN or Inf", WithChangedModel("inf", m => m.Weights["classifier.weight"][0, 0] = float.PositiveInfinity));

    [Fact]
    public void Tensor_the_config_does_not_describe() =>
        MergeFails("unexpected tensor 'extra.weight'", WithChangedModel("extra", m => m.Weights["extra.weight"] = zeros(2)));

    [Fact]
    public void Backbone_without_a_classification_head() =>
        MergeFails("no classification head", WithChangedModel("headless", m => m.Weights.Remove("classifier.weight")));

    // ---------------------------------------------------------------- sources that do not fit together

    [Fact]
    public void Sources_of_different_architectures()
    {
        var vit = Path_("vit");
        Models.Save(Models.Vit(), vit, 3);
        MergeFails("architecture vit differs from model 1's mlp", vit);
    }

    [Fact]
    public void Sources_of_different_depths()
    {
        var deep = Path_("deep");
        Models.Save(Models.Mlp(16, 16), deep, 3);
        MergeFails("must share depth", deep);
    }

    [Fact]
    public void Vits_with_different_attention_head_counts()
    {
        var (two, four) = (Path_("vit2"), Path_("vit4"));
        Models.Save(Models.Vit(2), two, 3);
        Models.Save(Models.Vit(4), four, 4);
        Fails("heads 4", "merge", "--method", "average", "--model", two, "--model", four, "--out", "OUT");
    }

    [Fact]
    public void Sources_with_incompatible_input_shapes()
    {
        var wide = Path_("wide-input");
        Models.Save(Models.Mlp(16) with { InputSize = 3072 }, wide, 3);
        MergeFails("input_size 3072", wide);
    }

    [Fact]
    public void A_multi_task_model_as_a_source()
    {
        var twoHeads = Path_("two-heads");
        Models.Save(Models.Mlp(16) with { Heads = [new HeadInfo("mnist:0-4", Models.Digits), new HeadInfo("mnist:5-9", Models.Digits)] }, twoHeads, 3);
        MergeFails("has 2 heads", twoHeads);
    }

    [Fact]
    public void Config_of_an_unsupported_model_type()
    {
        var dir = Path_("gpt2");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, Model.ConfigFile), "{\"model_type\": \"gpt2\"}");
        MergeFails("model_type 'gpt2' is not supported", dir);
    }

    [Fact]
    public void Hugging_face_source_without_a_task_or_data()
    {
        var dir = Path_("hf-no-task");
        Models.Save(Models.Mlp(16), dir, 3);
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, Model.ConfigFile)))!.AsObject();
        config.Remove("fsmerge");
        File.WriteAllText(Path.Combine(dir, Model.ConfigFile), config.ToJsonString());
        MergeFails("config.json records no task", dir);
    }

    [Fact]
    public void Source_directory_not_found() => MergeFails("model directory not found", Path_("nowhere"));

    // ---------------------------------------------------------------- data

    [Fact]
    public void Empty_data_folder()
    {
        var empty = Path_("empty-images");
        Directory.CreateDirectory(empty);
        var config = Yaml("empty-data", $"sources:\n  - model: MODEL_A\n    data: {{images: {empty}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        Fails($"{empty}: no PNG/JPEG images", "merge", config);
    }

    [Fact]
    public void Data_folder_that_is_a_file()
    {
        var file = Path_("not-a-folder.txt");
        File.WriteAllText(file, "x");
        var config = Yaml("file-data", $"sources:\n  - model: MODEL_A\n    data: {{images: {file}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        Fails($"{file}: is a file", "merge", config);
    }

    [Fact]
    public void Image_of_the_wrong_size()
    {
        var dir = Path_("images-32");
        for (int i = 0; i < 3; i++) Png(Path.Combine(dir, $"{i}.png"), 32, colour: false);
        var config = Yaml("wrong-size", $"sources:\n  - model: MODEL_A\n    data: {{images: {dir}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        Fails("images of 1x32x32 = 1024 values, but the model expects input_size 784", "merge", config);
    }

    [Fact]
    public void Images_of_the_wrong_channel_count_for_a_vit()
    {
        var (v1, v2, dir) = (Path_("vit-c1"), Path_("vit-c2"), Path_("images-rgb"));
        Models.Save(Models.Vit(), v1, 3);
        Models.Save(Models.Vit() with { Heads = [new HeadInfo("mnist:5-9", Models.Digits)] }, v2, 4);
        for (int i = 0; i < 3; i++) Png(Path.Combine(dir, $"{i}.png"), 28, colour: true);
        var config = Yaml("wrong-channels", $"sources:\n  - model: {v1}\n    data: {{images: {dir}}}\n  - model: {v2}\nmethod: average\nout: OUTPUT\n");
        Fails("images of 3 channel(s) 28x28, but the model expects 1 channel(s) 28x28", "merge", config);
    }

    [Fact]
    public void Images_of_mixed_sizes_in_one_folder()
    {
        var dir = Path_("images-mixed");
        Png(Path.Combine(dir, "a.png"), 28, colour: false);
        Png(Path.Combine(dir, "b.png"), 30, colour: false);
        var config = Yaml("mixed", $"sources:\n  - model: MODEL_A\n    data: {{images: {dir}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        Fails($"{Path.Combine(dir, "b.png")}: image is 30x30", "merge", config);
    }

    [Fact]
    public void Corrupt_image_file()
    {
        var dir = Path_("images-corrupt");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "0.png"), "not a png");
        var config = Yaml("corrupt-image", $"sources:\n  - model: MODEL_A\n    data: {{images: {dir}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        Fails($"{Path.Combine(dir, "0.png")}: cannot decode image", "merge", config);
    }

    [Fact]
    public void Test_labels_outside_the_heads_range()
    {
        var dir = Path_("test-7-classes");
        for (int k = 0; k < 7; k++) Png(Path.Combine(dir, $"class{k}", "0.png"), 28, colour: false);
        var config = Yaml("labels", $"sources:\n  - model: MODEL_A\n    test: {{images: {dir}}}\n  - model: MODEL_B\nmethod: average\neval: true\nout: OUTPUT\n");
        Fails("its head has 5 classes but the test data of mnist:0-4 has 7", "merge", config);
    }

    [Fact]
    public void Task_with_more_classes_than_the_head() =>
        Fails("its head has 5 classes but task mnist:0-6 has 7", "merge", "--method", "average", "--model", "A", "--model", "B", "--task", "mnist:0-6", "--task", "mnist:5-9", "--out", "OUT");

    [Fact]
    public void Idx_file_that_is_not_images()
    {
        var idx = Path_("labels-idx1-ubyte");
        Idx.Write(idx, [1, 2, 3], [3]);
        var config = Yaml("idx", $"sources:\n  - model: MODEL_A\n    data: {{idx: {idx}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        Fails($"{idx}: IDX file has 1 dimension(s); expected images [n, height, width]", "merge", config);
    }

    // ---------------------------------------------------------------- method and options

    [Fact]
    public void Unknown_method() =>
        Fails("unknown merge method 'nope'", "merge", "--method", "nope", "--model", "A", "--model", "B", "--out", "OUT");

    [Fact]
    public void Option_of_another_method() => MergeFails("method 'average' has no option --rank", "B", "--rank", "3");

    [Fact]
    public void Option_value_the_method_does_not_know() =>
        Fails("fs-merge: --init 'best' is not one of: first, average, random, zipit, cca, rebasin", "merge", "--method", "fs-merge", "--init", "best", "--model", "A", "--model", "B", "--out", "OUT");

    [Fact]
    public void A_dry_run_checks_option_values_too() =>
        Fails("rebasin: --matching 'bogus' is not one of: weights, activations", "merge", "--dry-run", "--method", "rebasin", "--matching", "bogus", "--model", "A", "--model", "B", "--out", "OUT");

    [Fact]
    public void Rank_larger_than_the_width() =>
        Fails("--rank 999 exceeds the merged feature width 16", "merge", "--method", "fs-merge", "--type", "low-rank", "--rank", "999", "--epochs", "1", "--model", "A", "--model", "B", "--out", "OUT");

    // ---------------------------------------------------------------- output

    [Fact]
    public void Unwritable_output_folder()
    {
        var file = Path_("a-file");
        File.WriteAllText(file, "x");
        var output = Path.Combine(file, "merged");
        Fails($"{output}: cannot write the output", "merge", "--method", "average", "--model", "A", "--model", "B", "--out", output);
        Assert.Equal("x", File.ReadAllText(file));
    }

    [Fact]
    public void Existing_output_without_overwrite_is_kept()
    {
        var existing = Path_("existing");
        Directory.CreateDirectory(existing);
        File.WriteAllText(Path.Combine(existing, "keep.txt"), "mine");
        Fails("output directory exists (use --overwrite to replace it)", "merge", "--method", "average", "--model", "A", "--model", "B", "--out", existing);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(existing, "keep.txt")));
    }

    [Fact]
    public void Output_that_would_replace_a_source_model()
    {
        var source = Path_("source-as-output");
        BadInputTests.Models.Save(Models.Mlp(16) with { Heads = [new HeadInfo("mnist:5-9", Models.Digits)] }, source, 9);
        var before = File.ReadAllBytes(Path.Combine(source, Model.WeightsFile));
        Fails("the output would replace the source model", "merge", "--method", "average", "--model", "A", "--model", source, "--out", source, "--overwrite");
        Fails("the output would replace the source model", "merge", "--method", "average", "--model", "A", "--model", source, "--out", models.Root, "--overwrite");
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(source, Model.WeightsFile)));
    }

    // ---------------------------------------------------------------- YAML files

    [Fact]
    public void Yaml_unknown_key_names_its_line_and_the_allowed_keys()
    {
        var config = Yaml("unknown-key", "sources:\n  - model: MODEL_A\n    sampels: 10\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        Fails($"{config}:3: unknown key 'sampels' in sources[1] (allowed: model, task, data, samples, test)", "merge", config);
    }

    [Fact]
    public void Yaml_wrong_type_names_its_line()
    {
        var config = Yaml("wrong-type", "sources:\n  - model: MODEL_A\n  - model: MODEL_B\nmethod: average\nseed: one\nout: OUTPUT\n");
        Fails($"{config}:5: 'seed' is 'one'; expected a whole number >= 0", "merge", config);
    }

    [Fact]
    public void Yaml_method_option_of_the_wrong_type()
    {
        var config = Yaml("option-type", "sources:\n  - model: MODEL_A\n  - model: MODEL_B\nmethod: fs-merge\noptions:\n  epochs: many\nout: OUTPUT\n");
        Fails($"{config}:6: option 'epochs' of fs-merge is 'many'; expected a whole number", "merge", config);
    }

    [Fact]
    public void Yaml_unknown_method_option()
    {
        var config = Yaml("option-unknown", "sources:\n  - model: MODEL_A\n  - model: MODEL_B\nmethod: average\noptions:\n  lr: 0.1\nout: OUTPUT\n");
        Fails($"{config}:6: unknown key 'lr' in options of method 'average'", "merge", config);
    }

    [Fact]
    public void Yaml_missing_required_key()
    {
        var config = Yaml("missing-model", "sources:\n  - model: MODEL_A\n  - task: mnist:5-9\nmethod: average\nout: OUTPUT\n");
        Fails($"{config}:3: sources[2]: missing required key 'model'", "merge", config);
    }

    [Fact]
    public void Yaml_without_sources()
    {
        var config = Yaml("no-sources", "method: average\nout: OUTPUT\n");
        Fails($"{config}:1: missing required key 'sources'", "merge", config);
    }

    [Fact]
    public void Yaml_with_a_single_source()
    {
        var config = Yaml("one-source", "sources:\n  - model: MODEL_A\nmethod: average\nout: OUTPUT\n");
        Fails("'sources' lists 1 model(s); a merge needs at least two", "merge", config);
    }

    [Fact]
    public void Yaml_syntax_error_names_its_line()
    {
        var config = Yaml("syntax", "sources:\n  - model: MODEL_A\n  - model: [MODEL_B\nmethod: average\n");
        Fails($"{config}:", "merge", config);
        Fails("invalid YAML", "merge", config);
    }

    [Fact]
    public void Yaml_unknown_data_source_kind()
    {
        var config = Yaml("data-kind", "sources:\n  - model: MODEL_A\n    data: {text: corpus.txt}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        Fails($"{config}:3: unknown key 'text' in sources[1].data (allowed: task, images, idx)", "merge", config);
    }

    [Fact]
    public void Config_file_not_found() => Fails("file not found (expected a merge config file", "merge", Path_("missing.yaml"));
    [Fact]
    public void Bench_perf_with_an_unknown_type() =>
        Fails("unknown --type 'dense' (expected diagonal-low-rank, diagonal, low-rank)", "bench", "perf", "--type", "dense", "--out", "OUT");
    [Fact]
    public void Bench_perf_with_an_unknown_size() =>
        Fails("unknown --size 'huge' (expected tiny, small)", "bench", "perf", "--size", "huge", "--out", "OUT");
    [Fact]
    public void Checkpoint_of_an_older_format()
    {
        var partial = Out + ".partial";
        Directory.CreateDirectory(partial);
        using (var writer = new BinaryWriter(File.Create(Path.Combine(partial, "train-0.ckpt")), Encoding.UTF8))
            writer.Write("fsmerge-train-checkpoint-1");
        try
        {
            Fails("a checkpoint of another fsmerge version (format 1, this one reads 4); start the merge again without --resume",
                "merge", "--method", "fs-merge", "--model", "A", "--model", "B", "--epochs", "2", "--samples", "8", "--resume", "--out", "OUT");
        }
        finally { Directory.Delete(partial, recursive: true); }
    }

    // ---------------------------------------------------------------- issue 18: hardened readers

    /// <summary>A copy of model A whose config.json text is <paramref name="change"/>d.</summary>
    string WithConfig(string name, Func<string, string> change)
    {
        var dir = Path_(name);
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(models.A, Model.WeightsFile), Path.Combine(dir, Model.WeightsFile), overwrite: true);
        var text = File.ReadAllText(Path.Combine(models.A, Model.ConfigFile));
        File.WriteAllText(Path.Combine(dir, Model.ConfigFile), change(text));
        return dir;
    }

    static string Hf(string config)
    {
        var json = System.Text.Json.Nodes.JsonNode.Parse(config)!.AsObject();
        json.Remove("fsmerge");
        return json.ToJsonString();
    }

    public static TheoryData<string, string, string, string> ConfigCases => new()
    {
        { "labels-numbers", "\"labels\": [\n          \"0\"", "\"labels\": [\n          0", "field 'fsmerge.heads[0].labels[0]' is a number (0), expected a string" },
        { "labels-object", "\"labels\": [", "\"labels\": {\"a\": 1}, \"x\": [", "field 'fsmerge.heads[0].labels' is an object, expected an array" },
        { "task-number", "\"task\": \"mnist:0-4\"", "\"task\": 4", "field 'fsmerge.heads[0].task' is a number (4), expected a string" },
        { "hidden-sizes-empty", "\"hidden_sizes\": [\n    16\n  ]", "\"hidden_sizes\": []", "field 'hidden_sizes' is empty, expected at least one width" },
        { "hidden-sizes-string", "\"hidden_sizes\": [\n    16\n  ]", "\"hidden_sizes\": [\"16\"]", "field 'hidden_sizes[0]' is a string (\"16\"), expected a whole number from 1 to 262144" },
        { "hidden-sizes-huge", "\"hidden_sizes\": [\n    16\n  ]", "\"hidden_sizes\": [99999999999]", "field 'hidden_sizes[0]' is a number (99999999999), expected a whole number from 1 to 262144" },
        { "duplicate-key", "\"input_size\": 784", "\"input_size\": 784, \"input_size\": 785", "duplicate key 'input_size'; expected each key once" },
        { "unpaired-surrogate", "\"task\": \"mnist:0-4\"", "\"task\": \"\\ud800\"", "field 'fsmerge.heads[0].task' is not valid UTF-16" },
        { "top-level-array", "{", "[{", "not valid JSON" },
    };

    [Theory]
    [MemberData(nameof(ConfigCases))]
    public void Config_value_of_the_wrong_kind_is_one_line_naming_the_field(string name, string find, string replace, string expected)
    {
        var dir = WithConfig(name, text =>
        {
            Assert.Contains(find, text);
            return text.Replace(find, replace);
        });
        MergeFails($"{Path.Combine(dir, Model.ConfigFile)}: {expected}", dir);
    }

    [Fact]
    public void Hugging_face_id2label_value_of_the_wrong_kind() =>
        MergeFails("field 'id2label.0' is a number (5), expected a string", WithConfig("id2label-number", t => Hf(t).Replace("\"0\":\"0\"", "\"0\":5")));

    [Fact]
    public void Vit_config_with_300000_layers_and_a_string_layer_norm_eps()
    {
        var (v1, v2) = (Path_("vit-layers"), Path_("vit-eps"));
        Models.Save(Models.Vit(), v1, 3);
        Models.Save(Models.Vit(), v2, 3);
        void Change(string dir, string from, string to)
        {
            var path = Path.Combine(dir, Model.ConfigFile);
            File.WriteAllText(path, File.ReadAllText(path).Replace(from, to));
        }
        Change(v1, "\"num_hidden_layers\": 1", "\"num_hidden_layers\": 300000");
        Change(v2, "\"layer_norm_eps\": 1E-12", "\"layer_norm_eps\": \"small\"");
        MergeFails("field 'num_hidden_layers' is a number (300000), expected a whole number from 1 to 256", v1);
        MergeFails("field 'layer_norm_eps' is a string (\"small\"), expected a finite number above 0", v2);
    }

    [Fact]
    public void Vit_shape_error_names_the_file()
    {
        var dir = Path_("vit-patch");
        Models.Save(Models.Vit(), dir, 3);
        var path = Path.Combine(dir, Model.ConfigFile);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"patch_size\": 7", "\"patch_size\": 5"));
        MergeFails($"{path}: image_size 28 is not a multiple of patch_size 5", dir);
    }

    [Fact]
    public void Safetensors_zero_dimension_beside_huge_ones() =>
        MergeFails("is too large: its dimensions multiply beyond what a F32 tensor can address", WithWeights("zero-dim",
            Safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,4294967296,4294967296],\"data_offsets\":[0,0]}}", 0)));

    [Fact]
    public void Safetensors_unpaired_surrogate_in_a_name_and_a_dtype()
    {
        MergeFails("is not valid UTF-16", WithWeights("surrogate-name", Safetensors("{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4)));
        MergeFails("field 'a.dtype' is not valid UTF-16", WithWeights("surrogate-dtype", Safetensors("{\"a\":{\"dtype\":\"\\udfff\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4)));
    }

    [Fact]
    public void Safetensors_name_with_control_characters_is_escaped() =>
        MergeFails("unexpected tensor '\\x1b[31mred\\n'", WithWeights("escape-name", Safetensors("{\"\\u001b[31mred\\n\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4)));

    [Fact]
    public void Shard_index_with_an_unpaired_surrogate_or_a_name_of_the_wrong_kind()
    {
        string Index(string name, string weightMap)
        {
            var dir = Path_(name);
            Directory.CreateDirectory(dir);
            File.Copy(Path.Combine(models.A, Model.ConfigFile), Path.Combine(dir, Model.ConfigFile), overwrite: true);
            File.WriteAllText(Path.Combine(dir, Model.IndexFile), "{\"weight_map\":" + weightMap + "}");
            return dir;
        }
        MergeFails("field 'weight_map.layers.0.weight' is not valid UTF-16", Index("index-surrogate", "{\"layers.0.weight\":\"\\ud800\"}"));
        MergeFails("field 'weight_map.layers.0.weight' is a number (3), expected a string", Index("index-number", "{\"layers.0.weight\":3}"));
        MergeFails("field 'weight_map' is an array, expected an object", Index("index-array", "[1]"));
    }

    [Fact]
    public void A_fifo_or_a_device_is_refused_before_it_is_opened()
    {
        var fifo = Path_("fifo");
        if (!Path.Exists(fifo))
        {
            using var mkfifo = System.Diagnostics.Process.Start("mkfifo", [fifo]);
            mkfifo.WaitForExit();
        }
        var weights = Path_("fifo-weights");
        Directory.CreateDirectory(weights);
        File.Copy(Path.Combine(models.A, Model.ConfigFile), Path.Combine(weights, Model.ConfigFile), overwrite: true);
        File.CreateSymbolicLink(Path.Combine(weights, Model.WeightsFile), fifo);
        MergeFails($"{Path.Combine(weights, Model.WeightsFile)}: is a FIFO, expected a .safetensors file", weights);

        var config = Path_("device-config");
        Directory.CreateDirectory(config);
        File.Copy(Path.Combine(models.A, Model.WeightsFile), Path.Combine(config, Model.WeightsFile), overwrite: true);
        File.CreateSymbolicLink(Path.Combine(config, Model.ConfigFile), "/dev/zero");
        MergeFails("is a character device, expected a model config.json", config);

        var images = Path_("fifo-images");
        Directory.CreateDirectory(images);
        File.CreateSymbolicLink(Path.Combine(images, "0.png"), fifo);
        Fails("0.png: is a FIFO, expected a PNG or JPEG image", "merge", Yaml("fifo-images", $"sources:\n  - model: MODEL_A\n    data: {{images: {images}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n"));
        Fails("/dev/zero: is a character device, expected an IDX file", "merge", Yaml("dev-zero", "sources:\n  - model: MODEL_A\n    data: {idx: /dev/zero}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n"));
    }

    [Fact]
    public void Gzip_idx_that_declares_more_than_it_can_hold_is_refused_before_inflating()
    {
        string Bomb(string name, byte[] header)
        {
            var path = Path_(name);
            using var file = File.Create(path);
            using var gzip = new System.IO.Compression.GZipStream(file, System.IO.Compression.CompressionLevel.SmallestSize);
            gzip.Write(header);
            gzip.Write(new byte[4 << 20]);
            return path;
        }
        string Merge(string name, string idx) => Yaml(name, $"sources:\n  - model: MODEL_A\n    data: {{idx: {idx}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n");
        var huge = Bomb("bomb1-idx3-ubyte.gz", [0, 0, 8, 3, 0, 0, 0x27, 0x10, 0, 0, 0x0f, 0xa0, 0, 0, 0x0f, 0xa0]);        // [10000, 4000, 4000]
        Fails("IDX dimensions [10000, 4000, 4000...] declare more than the 1073741824 bytes allowed", "merge", Merge("idx-bomb1", huge));
        var ratio = Bomb("bomb2-idx3-ubyte.gz", [0, 0, 8, 3, 0, 0, 0x03, 0xe8, 0, 0, 0x03, 0xe8, 0, 0, 0x03, 0xe8]);    // [1000, 1000, 1000]
        Fails("declare 1000000000 bytes, more than", "merge", Merge("idx-bomb2", ratio));
    }

    [Fact]
    public void Png_that_declares_8000x8000_pixels_is_refused_from_its_header()
    {
        var dir = Path_("images-huge");
        Directory.CreateDirectory(dir);
        for (int i = 0; i < 10; i++) File.WriteAllBytes(Path.Combine(dir, $"{i}.png"), PngHeader(8000, 8000));
        Fails($"{Path.Combine(dir, "0.png")}: image size 8000x8000; expected at most 16777216 pixels", "merge",
            Yaml("huge-png", $"sources:\n  - model: MODEL_A\n    data: {{images: {dir}}}\n  - model: MODEL_B\nmethod: average\nout: OUTPUT\n"));
    }

    /// <summary>A PNG (8-bit grayscale) whose header promises a large image and whose data is a few bytes.</summary>
    static byte[] PngHeader(int width, int height)
    {
        var header = new byte[13];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(header, width);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), height);
        header[8] = 8;
        var deflated = new MemoryStream();
        using (var zlib = new System.IO.Compression.ZLibStream(deflated, System.IO.Compression.CompressionLevel.SmallestSize)) zlib.Write(new byte[64]);
        return [0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10, .. Chunk("IHDR", header), .. Chunk("IDAT", deflated.ToArray()), .. Chunk("IEND", [])];
    }

    static byte[] Chunk(string type, byte[] data)
    {
        byte[] typed = [.. Encoding.ASCII.GetBytes(type), .. data];
        var chunk = new byte[4 + typed.Length + 4];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(chunk, data.Length);
        typed.CopyTo(chunk, 4);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(4 + typed.Length), Crc32(typed));
        return chunk;
    }

    /// <summary>PNG's chunk checksum (CRC-32, polynomial 0xEDB88320).</summary>
    static uint Crc32(byte[] bytes)
    {
        uint crc = 0xFFFFFFFF;
        foreach (var b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
    }

    [Fact]
    public void Yaml_nested_50000_deep() =>
        Fails("nested more than 32 levels deep", "merge", Yaml("deep", "sources: " + new string('[', 50_000)));

    [Fact]
    public void Yaml_alias_bomb_used_as_a_key()
    {
        var text = new StringBuilder("a0: &a0 [x, x]\n");
        for (int i = 1; i < 40; i++) text.Append($"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n");
        text.Append("? *a39\n: 1\n");
        Fails("expands to more than 100000 values", "merge", Yaml("alias-bomb", text.ToString()));
    }

    [Fact]
    public void Yaml_empty_key_and_nul_in_a_path()
    {
        Fails("invalid YAML", "merge", Yaml("empty-key", "sources:\n  - : x\n  - model: MODEL_B\n"));
        Fails("invalid YAML", "merge", Yaml("empty-key-2", "sources:\n  - :\n"));
        Fails(":2: 'model' holds a NUL character", "merge", Yaml("nul", "sources:\n  - model: \"a\\0b\"\n  - model: MODEL_B\n"));
    }

    [Fact]
    public void Yaml_numbers_beyond_their_bounds()
    {
        Fails(":5: 'threads' is 9999; expected at most 256", "merge", Yaml("threads", "sources:\n  - model: MODEL_A\n  - model: MODEL_B\nmethod: average\nthreads: 9999\nout: OUTPUT\n"));
        Fails(":5: 'augment' is 99999999; expected at most 65536", "merge", Yaml("augment", "sources:\n  - model: MODEL_A\n  - model: MODEL_B\nmethod: average\naugment: 99999999\nout: OUTPUT\n"));
        Fails(":5: 'width' is 99999999999; expected at most 262144", "merge", Yaml("width", "sources:\n  - model: MODEL_A\n  - model: MODEL_B\nmethod: average\nwidth: [99999999999]\nout: OUTPUT\n"));
    }

    [Theory]
    [InlineData("--width", "99999999999", "--width '99999999999' is not a comma-separated list of at most 256 integers from 1 to 262144")]
    [InlineData("--threads", "9999", "--threads '9999' is not an integer from 0 to 256")]
    [InlineData("--augment", "99999999", "--augment '99999999' is not an integer from 0 to 65536")]
    [InlineData("--samples", "99999999", "--samples '99999999' is not an integer from 1 to 65536")]
    public void Merge_numbers_beyond_their_bounds(string option, string value, string expected) => MergeFails(expected, "B", option, value);

    [Fact]
    public void Empty_output_name() => Fails("option '--out' is \"\", expected DIR", "merge", "--method", "average", "--model", "A", "--model", "B", "--out", "");

    [Theory]
    [InlineData("--width", "99999999999", "--width '99999999999' is not an integer from 1 to 262144")]
    [InlineData("--depth", "300000", "--depth '300000' is not an integer from 1 to 256")]
    [InlineData("--threads", "9999", "--threads '9999' is not an integer from 0 to 256")]
    [InlineData("--hidden", "16,99999999999", "--hidden '16,99999999999' is not a comma-separated list")]
    public void Train_numbers_beyond_their_bounds(string option, string value, string expected) =>
        Fails(expected, "train", "--arch", option is "--hidden" ? "mlp" : "vit", "--task", "mnist:0-4", option, value, "--out", "OUT");

    [Fact]
    public void Control_characters_of_a_name_reach_the_terminal_escaped() =>
        MergeFails("\\x1b[2J\\nline: model directory not found", Path_("\u001b[2J\nline"));

    [Fact]
    public void Output_through_a_symbolic_link_to_a_source_is_refused()
    {
        var source = Path_("linked-source");
        Models.Save(Models.Mlp(16) with { Heads = [new HeadInfo("mnist:5-9", ["5", "6", "7", "8", "9"])] }, source, 9);
        var link = Path_("link-to-source");
        if (!Path.Exists(link)) File.CreateSymbolicLink(link, source);
        var before = File.ReadAllBytes(Path.Combine(source, Model.WeightsFile));
        Fails("the output would replace the source model", "merge", "--method", "average", "--model", "A", "--model", link, "--out", source, "--overwrite");
        Fails("the output would replace the source model", "merge", "--method", "average", "--model", "A", "--model", source, "--out", link, "--overwrite");
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(source, Model.WeightsFile)));
    }

    [Fact]
    public void Train_keeps_an_existing_output_without_overwrite_and_never_writes_into_its_init()
    {
        var existing = Path_("train-existing");
        Directory.CreateDirectory(existing);
        File.WriteAllText(Path.Combine(existing, "keep.txt"), "mine");
        Fails("output directory exists (use --overwrite to replace it)", "train", "--task", "mnist:0-4", "--epochs", "1", "--out", existing);
        Assert.Equal(["keep.txt"], Directory.GetFiles(existing).Select(Path.GetFileName));
        Fails("the output would replace the source model", "train", "--task", "mnist:0-4", "--init", models.A, "--out", models.A, "--overwrite");
    }

    /// <summary>A text dataset "words" under a data folder of its own, with class files a and b as <paramref name="makeB"/> makes b.</summary>
    string TextDataset(string name, Action<string> makeB)
    {
        var data = Path_(name);
        var folder = Path.Combine(data, "words");
        foreach (var split in new[] { "train", "test" })
        {
            Directory.CreateDirectory(Path.Combine(folder, split));
            File.WriteAllText(Path.Combine(folder, split, "a.txt"), "hello there\ngood morning\n");
            var b = Path.Combine(folder, split, "b.txt");
            if (!Path.Exists(b)) makeB(b);
        }
        WordPiece.Build(["hello there good morning", "hello there good morning"], 64).Write(Path.Combine(folder, TextFolder.VocabFile));
        return data;
    }

    [Fact]
    public void Text_class_file_that_is_a_symbolic_link_loop_or_has_no_lines()
    {
        var loop = TextDataset("text-loop", b => File.CreateSymbolicLink(b, b));
        Fails("b.txt: a loop of symbolic links", "train", "--arch", "bert", "--task", "words", "--data-dir", loop, "--out", "OUT");
        var empty = TextDataset("text-empty", b => File.WriteAllText(b, "\n  \n"));
        Fails("b.txt: no examples", "train", "--arch", "bert", "--task", "words", "--data-dir", empty, "--out", "OUT");
    }

    [Fact]
    public void Stale_staging_folders_of_dead_runs_are_removed_by_the_next_run()
    {
        var output = Path_("stale-out");
        var stale = output + ".partial-999999999";
        Directory.CreateDirectory(stale);
        File.WriteAllText(Path.Combine(stale, "half.safetensors"), "x");
        var (code, _, err) = CliTests.Run("merge", "--method", "average", "--model", models.A, "--model", models.B, "--out", output, "--quiet");
        Assert.True(code == 0, err);
        Assert.False(Directory.Exists(stale));
        Assert.Empty(Directory.GetDirectories(models.Root, "stale-out.partial*"));
    }
}
