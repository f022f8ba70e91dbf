using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.IO;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// Checkpoints laid out as Hugging Face's save_pretrained (and older transformers) write them: configs without
/// labels or with [h, w] sizes, prefixed and TF-era tensor names, buffers and pre-training heads, backbones
/// without a head; and the checkpoints whose function FsMerge does not implement, refused with one line.
/// </summary>
[Collection("torch")]
public class HuggingFaceTests
{
    /// <summary>Writes <paramref name="model"/> as a Hugging Face folder: config.json edited by <paramref name="config"/>, tensors renamed by <paramref name="rename"/> (null drops one), plus <paramref name="extra"/> tensors.</summary>
    internal static void WriteHf(Model model, string dir, Action<JsonObject> config, Func<string, string?> rename,
        Dictionary<string, Tensor>? extra = null)
    {
        Directory.CreateDirectory(dir);
        var json = model.Config.ToJson();
        json.Remove("fsmerge");
        config(json);
        File.WriteAllText(Path.Combine(dir, Model.ConfigFile), json.ToJsonString());
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (name, w) in model.Weights)
            if (rename(name) is { } stored) tensors[stored] = w;
        foreach (var (name, w) in extra ?? []) tensors[name] = w;
        Safetensors.Write(Path.Combine(dir, Model.WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    static void AssertSameWeights(Model expected, Model actual, IEnumerable<string>? except = null)
    {
        var skip = except?.ToHashSet() ?? [];
        foreach (var (name, w) in expected.Weights.Where(kv => !skip.Contains(kv.Key)))
            Assert.True(w.equal(actual.Weights[name]).all().item<bool>(), name);
    }

    static ModelConfig Bert(string[] labels) => BertOracleTests.Config("lang:0-1") with { Heads = [new HeadInfo("task", labels)] };

    [Fact]
    public void A_binary_classifier_saved_with_default_labels_gets_LABEL_0_and_LABEL_1_from_its_classifier()
    {
        using var tmp = new TempDir();
        using var original = Model.Create(ModelTests.TinyVit(), 3, CPU);
        WriteHf(original, tmp.Sub("binary"), c => { c.Remove("id2label"); c.Remove("label2id"); }, n => n);
        using var loaded = Model.Load(tmp.Sub("binary"), CPU);
        Assert.Equal(["LABEL_0", "LABEL_1"], loaded.Config.Heads.Single().Labels);
        Assert.Equal(HeadInfo.Unrecorded, loaded.Config.Heads[0].Task);
        AssertSameWeights(original, loaded);

        var withCount = original.Config.ToJson();
        withCount.Remove("fsmerge");
        withCount.Remove("id2label");
        withCount.Remove("label2id");
        withCount["num_labels"] = 3;
        Assert.Equal(["LABEL_0", "LABEL_1", "LABEL_2"], ModelConfig.FromJson(withCount, "config.json").Heads.Single().Labels);
    }

    [Fact]
    public void An_old_bert_checkpoint_with_position_ids_gamma_beta_and_pretraining_heads_loads_as_the_same_model()
    {
        using var tmp = new TempDir();
        using var original = Model.Create(Bert(["x", "y", "z"]), 5, CPU);
        static string Old(string name) =>
            name.EndsWith("LayerNorm.weight") ? name[..^"weight".Length] + "gamma"
            : name.EndsWith("LayerNorm.bias") ? name[..^"bias".Length] + "beta"
            : name;
        WriteHf(original, tmp.Sub("old"), _ => { }, Old, new()
        {
            ["bert.embeddings.position_ids"] = torch.arange(12).unsqueeze(0),
            ["cls.predictions.bias"] = torch.zeros(40),
            ["cls.seq_relationship.weight"] = torch.zeros(2, 16),
        });
        using var loaded = Model.Load(tmp.Sub("old"), CPU);
        Assert.Equal(["x", "y", "z"], loaded.Config.Heads[0].Labels);
        AssertSameWeights(original, loaded);
    }

    [Fact]
    public void Backbones_without_a_head_load_headless_and_a_masked_lm_gets_a_fresh_pooler_for_fine_tuning()
    {
        using var tmp = new TempDir();
        // ViTModel: names without "vit.", its pooler, no classifier, no labels.
        using var vit = Model.Create(ModelTests.TinyVit(), 3, CPU);
        WriteHf(vit, tmp.Sub("vit-model"), c => { c.Remove("id2label"); c.Remove("label2id"); },
            n => n.StartsWith("vit.") ? n["vit.".Length..] : null, new() { ["pooler.dense.weight"] = torch.zeros(16, 16), ["pooler.dense.bias"] = torch.zeros(16) });
        using (var backbone = Model.Load(tmp.Sub("vit-model"), CPU))
        {
            Assert.Equal(0, backbone.HeadCount);
            AssertSameWeights(vit, backbone, vit.Weights.Keys.Where(k => k.StartsWith("classifier")));
        }

        // BertForMaskedLM: "bert." backbone without the pooler, plus the cls.* pre-training head.
        using var bert = Model.Create(Bert(["a", "b"]), 4, CPU);
        WriteHf(bert, tmp.Sub("bert-mlm"), c => { c.Remove("id2label"); c.Remove("label2id"); },
            n => n.StartsWith("bert.pooler") || n.StartsWith("classifier") ? null : n,
            new() { ["cls.predictions.transform.dense.weight"] = torch.zeros(16, 16), ["cls.predictions.bias"] = torch.zeros(40) });
        var error = Assert.Throws<FsMergeException>(() => Model.Load(tmp.Sub("bert-mlm"), CPU));
        Assert.Contains("bert.pooler.dense.weight' missing", error.Message);
        using var mlm = Model.Load(tmp.Sub("bert-mlm"), CPU, freshSeed: 1);
        Assert.Equal(["bert.pooler.dense.weight", "bert.pooler.dense.bias"], mlm.FreshWeights);
        Assert.Equal(0.0, mlm.Weights["bert.pooler.dense.bias"].abs().sum().item<float>());
        AssertSameWeights(bert, mlm, bert.Weights.Keys.Where(k => k.StartsWith("classifier") || k.StartsWith("bert.pooler")));
        using var tuned = mlm.WithFreshHead(new HeadInfo("lang:0-1", ["a", "b"]), 2);
        Assert.Equal(new long[] { 2, 2 }, tuned.Logits(tuned.Features(BertOracleTests.Ids(1).narrow(0, 0, 2)), 0).shape);
    }

    [Fact]
    public void Train_init_fine_tunes_from_a_vit_backbone_and_eval_refuses_a_backbone()
    {
        DataProvisioner.Provision(DataDirectory.Resolve(null), _ => { });
        using var tmp = new TempDir();
        using var vit = Model.Create(ModelTests.TinyVit(), 3, CPU);
        WriteHf(vit, tmp.Sub("backbone"), c => { c.Remove("id2label"); c.Remove("label2id"); c["image_size"] = new JsonArray(28, 28); },
            n => n.StartsWith("classifier") ? null : n);
        var (code, _, err) = CliTests.Run("eval", "--model", tmp.Sub("backbone"), "--task", "mnist:0-1");
        Assert.Equal(2, code);
        Assert.Contains("has no classification head", err);
        (code, var stdout, err) = CliTests.Run("train", "--task", "mnist:0-1", "--init", tmp.Sub("backbone"), "--epochs", "1",
            "--out", tmp.Sub("tuned"), "--quiet", "--threads", "1");
        Assert.True(code == 0, err);
        Assert.Contains("test accuracy on mnist:0-1", stdout);
        using var tuned = Model.Load(tmp.Sub("tuned"), CPU);
        Assert.Equal(["0", "1"], tuned.Config.Heads[0].Labels);
    }

    [Theory]
    [InlineData("is_decoder", "true", "is_decoder true is not supported")]
    [InlineData("add_cross_attention", "true", "add_cross_attention true is not supported")]
    [InlineData("hidden_act", "\"gelu_new\"", "hidden_act 'gelu_new' is not supported")]
    [InlineData("position_embedding_type", "\"relative_key\"", "position_embedding_type 'relative_key' is not supported")]
    [InlineData("image_size", "[28, 21]", "field 'image_size' is [28, 21]; only square sizes are supported")]
    [InlineData("patch_size", "[7, 7, 7]", "field 'patch_size' must be a positive integer or [height, width]")]
    public void Configs_that_change_the_function_are_refused_with_one_line_naming_the_field(string field, string value, string message)
    {
        var config = (field is "image_size" or "patch_size" ? ModelTests.TinyVit() : Bert(["a", "b"])).ToJson();
        config[field] = JsonNode.Parse(value);
        var error = Assert.Throws<FsMergeException>(() => ModelConfig.FromJson(config, "config.json"));
        Assert.Contains(message, error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void Square_sizes_as_lists_are_read_and_a_pytorch_bin_checkpoint_is_named()
    {
        var config = ModelTests.TinyVit().ToJson();
        config["image_size"] = new JsonArray(28, 28);
        config["patch_size"] = new JsonArray(7, 7);
        var read = ModelConfig.FromJson(config, "config.json");
        Assert.Equal((28, 7), (read.ImageSize, read.PatchSize));

        using var tmp = new TempDir();
        Directory.CreateDirectory(tmp.Sub("bin"));
        File.WriteAllText(tmp.Sub("bin", Model.ConfigFile), config.ToJsonString());
        File.WriteAllBytes(tmp.Sub("bin", "pytorch_model.bin"), [0x50, 0x4b]);
        var error = Assert.Throws<FsMergeException>(() => Model.Load(tmp.Sub("bin"), CPU));
        Assert.EndsWith("PyTorch .bin checkpoints are not read (convert to safetensors)", error.Message);
    }

    [Fact]
    public void Cosine_heads_are_labelled_with_a_class_name_no_hugging_face_class_claims()
    {
        static string Class(ModelConfig c) => c.ToJson()["architectures"]![0]!.GetValue<string>();
        var vit = ModelTests.TinyVit();
        var cosine = HeadInfo.Create(HeadKind.Cosine, "t", ["a", "b"], 8);
        Assert.Equal("ViTForImageClassification", Class(vit));
        Assert.Equal("FsMergeViTForCosineClassification", Class(vit with { Heads = [cosine] }));
        Assert.Equal("FsMergeBertForCosineClassification", Class(Bert(["a", "b"]) with { Heads = [cosine] }));
        Assert.Equal("ViTModel", Class(vit with { Heads = [cosine, cosine] }));
    }
}

/// <summary>preprocessor_config.json: read as ViTImageProcessor reads it, applied as its documented formulas say, written into every model folder.</summary>
[Collection("torch")]
public class ImageProcessorTests
{
    static ImageProcessor Parse(string json)
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.Sub(ImageProcessor.FileName), json);
        return ImageProcessor.Read(tmp.Sub(ImageProcessor.FileName));
    }

    static ImageSet Images(byte[] pixels, params long[] shape) =>
        new(torch.tensor(pixels, shape).to(ScalarType.Float32).div(255), new long[shape[0]], ["x"]);

    [Fact]
    public void Absent_fields_take_vit_image_processor_defaults()
    {
        var p = Parse("{}");
        Assert.True(p.DoResize && p.DoRescale && p.DoNormalize && !p.DoConvertRgb);
        Assert.Equal((224, 224), p.Size);
        Assert.Equal(2, p.Resample);
        Assert.Equal(1 / 255.0, p.RescaleFactor);
        Assert.Equal([0.5, 0.5, 0.5], p.ImageMean);
        Assert.Equal((32, 32), Parse("{\"size\": 32}").Size);
        Assert.Equal(20, Parse("{\"size\": {\"shortest_edge\": 20}}").ShortestEdge);
        Assert.Equal(1, Parse("{\"resample\": 1}").Resample);
        Assert.Contains("resample 6 is not a PIL filter", Assert.Throws<FsMergeException>(() => Parse("{\"resample\": 6}")).Message);
        Assert.Equal((32, 32), Parse("{\"image_processor_type\": \"ViTImageProcessor\", \"size\": 32}").Size);
        Assert.Contains("image_processor_type 'ConvNextImageProcessor' is not supported",
            Assert.Throws<FsMergeException>(() => Parse("{\"image_processor_type\": \"ConvNextImageProcessor\"}")).Message);
        Assert.Contains("do_center_crop true is not supported", Assert.Throws<FsMergeException>(() => Parse("{\"do_center_crop\": true}")).Message);
    }

    [Fact]
    public void Rescale_and_normalize_follow_the_formula_per_channel()
    {
        var p = Parse("{\"do_resize\": false, \"rescale_factor\": 0.00392156862745098, \"image_mean\": [0.485, 0.456, 0.406], \"image_std\": [0.229, 0.224, 0.225]}");
        byte[] pixels = [0, 17, 128, 255, 3, 99, 200, 254, 60, 61, 62, 63];
        using var x = p.Apply(Images(pixels, 1, 3, 2, 2), 3, "test");
        double[] mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225];
        var expected = pixels.Select((b, i) => (float)((b * 0.00392156862745098 - mean[i / 4]) / std[i / 4])).ToArray();
        Assert.Equal(expected, x.Images.data<float>().ToArray(), new FloatTolerance(1e-6f));
    }

    [Fact]
    public void Bilinear_upscaling_matches_pil_and_grayscale_becomes_rgb()
    {
        // 2x2 -> 4x4 with half-pixel centres and edge clamping: weights 1, 3/4-1/4, 1/4-3/4, 1 along each axis
        // (values chosen so that PIL's per-pass rounding to bytes changes nothing).
        var p = Parse("{\"size\": {\"height\": 4, \"width\": 4}, \"do_normalize\": false, \"do_convert_rgb\": true}");
        using var x = p.Apply(Images([0, 160, 240, 48], 1, 1, 2, 2), 3, "test");
        float[] expected = [0, 40, 120, 160, 60, 78, 114, 132, 180, 154, 102, 76, 240, 192, 96, 48];
        Assert.Equal(new long[] { 1, 3, 4, 4 }, x.Images.shape);
        for (int c = 0; c < 3; c++)
            Assert.Equal(expected.Select(v => v / 255f).ToArray(), x.Images[0, c].reshape(-1).data<float>().ToArray(), new FloatTolerance(1e-6f));
    }

    [Fact]
    public void Plain_images_pass_unchanged_and_every_saved_image_model_describes_its_input()
    {
        using var set = Images([1, 2, 3, 4], 1, 1, 2, 2);
        Assert.Same(set, ImageProcessor.Plain.Apply(set, 1, "test"));

        using var tmp = new TempDir();
        using var model = Model.Create(ModelTests.TinyVit(), 1, CPU);
        model.Save(tmp.Sub("plain"));
        var written = JsonNode.Parse(File.ReadAllText(tmp.Sub("plain", ImageProcessor.FileName)))!;
        Assert.False((bool)written["do_resize"]!);
        Assert.False((bool)written["do_normalize"]!);
        Assert.True((bool)written["do_rescale"]!);
        Assert.Equal(28, (int)written["size"]!["height"]!);
        Assert.Equal(ImageProcessor.Plain, ImageProcessor.ForModel(tmp.Sub("plain")));

        var normalized = Parse("{\"size\": 28, \"image_mean\": 0.1307, \"image_std\": 0.3081}");
        using var withFile = new Model(model.Config with { Preprocessor = normalized }, model.Weights);
        withFile.Save(tmp.Sub("normalized"));
        using var reread = Model.Load(tmp.Sub("normalized"), CPU);
        Assert.Equal(normalized, reread.Config.Preprocessor);
        Assert.Equal(normalized, reread.SingleTask(0).Config.Preprocessor);
    }

    [Fact]
    public void Eval_resizes_and_normalizes_as_the_model_folder_says()
    {
        DataProvisioner.Provision(DataDirectory.Resolve(null), _ => { });
        using var tmp = new TempDir();
        var config = ModelTests.TinyVit() with { ImageSize = 14, Heads = [new HeadInfo("mnist:0-1", ["0", "1"])] };
        using (var model = Model.Create(config, 2, CPU)) model.Save(tmp.Sub("vit14"));
        var (code, _, err) = CliTests.Run("eval", "--model", tmp.Sub("vit14"));
        Assert.Equal(2, code);
        Assert.Contains("expects 1 channel(s) 14x14", err);
        File.WriteAllText(tmp.Sub("vit14", ImageProcessor.FileName), "{\"size\": {\"height\": 14, \"width\": 14}, \"image_mean\": [0.5], \"image_std\": [0.5]}");
        (code, var stdout, err) = CliTests.Run("eval", "--model", tmp.Sub("vit14"), "--json");
        Assert.True(code == 0, err);
        Assert.Contains("\"task\": \"mnist:0-1\"", stdout);
    }
}

/// <summary>Sources that normalize differently: re-expressed exactly for model 1's preprocessing, which the merged model keeps.</summary>
[Collection("torch")]
public class MixedPreprocessingTests
{
    static ImageProcessor Normalizing(double mean, double std, double rescale = 1 / 255.0) =>
        ImageProcessor.Plain with { DoNormalize = true, ImageMean = [mean, mean, mean], ImageStd = [std, std, std], RescaleFactor = rescale };

    [Theory]
    [InlineData("vit")]
    [InlineData("mlp")]
    public void A_source_re_expressed_for_another_normalization_computes_the_same_features(string arch)
    {
        var config = (arch == "vit" ? ModelTests.TinyVit() with { NumChannels = 3, ImageSize = 14 } : ModelTests.TinyMlp() with { InputSize = 3 * 14 * 14 })
            with { Preprocessor = Normalizing(0.5, 0.25) };
        using var model = Model.Create(config, 5, CPU);
        var raw = torch.randint(0, 256, [4, 3, 14, 14], generator: new Generator(3)).to(ScalarType.Float32).div(255);
        using var own = config.Prepare(new ImageSet(raw.clone(), new long[4], ["x"]), "test");
        var expected = model.Features(own.Images);

        var imagenet = ImageProcessor.Plain with { DoNormalize = true, ImageMean = [0.485, 0.456, 0.406], ImageStd = [0.229, 0.224, 0.225] };
        using var theirs = (config with { Preprocessor = imagenet }).Prepare(new ImageSet(raw, new long[4], ["x"]), "test");
        var reader = model.ReadingInputOf(imagenet)!;
        Assert.Equal(imagenet, reader.Config.Preprocessor);
        Assert.True(torch.allclose(expected, reader.Features(theirs.Images), atol: 1e-4), $"max diff {(expected - reader.Features(theirs.Images)).abs().max().item<float>()}");
        Assert.Null(reader.ReadingInputOf(imagenet with { DoResize = true, Size = (7, 7) }));
    }

    [Fact]
    public void A_merge_of_sources_with_different_normalization_keeps_model_1s_and_says_so()
    {
        DataProvisioner.Provision(DataDirectory.Resolve(null), _ => { });
        using var tmp = new TempDir();
        BadInputTests.Models.Save(BadInputTests.Models.Mlp(16), tmp.Sub("a"), 1);
        BadInputTests.Models.Save(BadInputTests.Models.Mlp(16) with { Heads = [new HeadInfo("mnist:5-9", ["5", "6", "7", "8", "9"])] }, tmp.Sub("b"), 2);
        File.WriteAllText(tmp.Sub("b", ImageProcessor.FileName), "{\"do_resize\": false, \"image_mean\": [0.1307], \"image_std\": [0.3081]}");
        var (code, stdout, err) = CliTests.Run("merge", "--method", "average", "--model", tmp.Sub("a"), "--model", tmp.Sub("b"),
            "--samples", "8", "--out", tmp.Sub("out"), "--quiet", "--threads", "1");
        Assert.True(code == 0, err);
        Assert.Contains("its pixel layer was re-expressed for model 1's preprocessing", stdout);
        Assert.Contains("re-expressed", File.ReadAllText(tmp.Sub("out", "report.md")));
        foreach (var dir in new[] { tmp.Sub("out") }.Concat(Directory.GetDirectories(tmp.Sub("out", "tasks"))))
            Assert.Equal(ImageProcessor.Plain, ImageProcessor.ForModel(dir));
        (code, stdout, err) = CliTests.Run("compare", "--methods", "average,ensemble", "--model", tmp.Sub("a"), "--model", tmp.Sub("b"),
            "--samples", "8", "--out", tmp.Sub("compared"), "--quiet", "--threads", "1");
        Assert.True(code == 0, err);
        Assert.Contains("note: ", stdout);
        Assert.Contains("its pixel layer was re-expressed for model 1's preprocessing", stdout);
        (code, _, err) = CliTests.Run("eval", "--model", tmp.Sub("a"), "--model", tmp.Sub("b"), "--threads", "1");
        Assert.True(code == 0, err);
        File.WriteAllText(tmp.Sub("b", ImageProcessor.FileName), "{\"size\": 14}");
        (code, _, err) = CliTests.Run("eval", "--model", tmp.Sub("a"), "--model", tmp.Sub("b"), "--threads", "1");
        Assert.Equal(2, code);
        Assert.Contains("resizes or converts images otherwise", err);
    }
}

/// <summary>
/// Checkpoints written as save_pretrained writes them (one F16 file with default binary labels and a normalizing
/// preprocessor; BF16 shards; an old BERT with position_ids) go through eval, merge and train --init, and every
/// output folder read back computes the same logits as the model that wrote it.
/// </summary>
[Collection("torch")]
public class RoundTripTests
{
    static void WriteShards(Model model, string dir, ScalarType dtype)
    {
        Directory.CreateDirectory(dir);
        var json = model.Config.ToJson();
        json.Remove("fsmerge");
        File.WriteAllText(Path.Combine(dir, Model.ConfigFile), json.ToJsonString());
        var names = model.Weights.Keys.ToList();
        var map = new JsonObject();
        for (int part = 0; part < 2; part++)
        {
            var file = $"model-0000{part + 1}-of-00002.safetensors";
            var tensors = names.Where((_, i) => i % 2 == part).ToDictionary(n => n, n => model.Weights[n].to(dtype));
            Safetensors.Write(Path.Combine(dir, file), tensors, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var n in tensors.Keys) map[n] = file;
        }
        File.WriteAllText(Path.Combine(dir, Model.IndexFile), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
    }

    static Tensor Logits(Model model, Tensor images, int head) => model.Logits(model.Features(images), head);

    [Fact]
    public void Save_pretrained_layouts_go_through_eval_merge_and_train_init_and_read_back_with_identical_logits()
    {
        DataProvisioner.Provision(DataDirectory.Resolve(null), _ => { });
        using var tmp = new TempDir();
        var config = ModelTests.TinyVit() with { Heads = [new HeadInfo("mnist:0-1", ["0", "1"])] };
        using (var a = Model.Create(config, 1, CPU))
            HuggingFaceTests.WriteHf(a, tmp.Sub("a"), c => { c.Remove("id2label"); c.Remove("label2id"); }, n => n, a.Weights.ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float16)));
        File.WriteAllText(tmp.Sub("a", ImageProcessor.FileName), "{\"do_resize\": false, \"image_mean\": [0.5], \"image_std\": [0.5]}");
        using (var b = Model.Create(config with { Heads = [new HeadInfo("mnist:2-3", ["2", "3"])] }, 2, CPU))
            WriteShards(b, tmp.Sub("b"), ScalarType.BFloat16);

        using var sourceA = Model.Load(tmp.Sub("a"), CPU);
        Assert.Equal(["LABEL_0", "LABEL_1"], sourceA.Config.Heads[0].Labels);
        var (code, stdout, err) = CliTests.Run("eval", "--model", tmp.Sub("a"), "--task", "mnist:0-1", "--json");
        Assert.True(code == 0, err);
        Assert.Contains("\"per_task_mean\"", stdout);

        (code, _, err) = CliTests.Run("merge", "--method", "average", "--model", tmp.Sub("a"), "--model", tmp.Sub("b"), "--task", "mnist:0-1",
            "--task", "mnist:2-3", "--samples", "8", "--out", tmp.Sub("merged"), "--quiet", "--threads", "1");
        Assert.True(code == 0, err);
        (code, _, err) = CliTests.Run("train", "--task", "mnist:0-1", "--init", tmp.Sub("a"), "--epochs", "1", "--out", tmp.Sub("tuned"), "--quiet", "--threads", "1");
        Assert.True(code == 0, err);

        var images = torch.rand(6, 1, 28, 28, generator: new Generator(5));
        using var merged = Model.Load(tmp.Sub("merged"), CPU);
        Assert.Equal(sourceA.Config.Preprocessor, merged.Config.Preprocessor);
        for (int t = 0; t < 2; t++)
        {
            using var task = Model.Load(Directory.GetDirectories(tmp.Sub("merged", "tasks")).Order().ElementAt(t), CPU);
            Assert.Equal(merged.Config.Preprocessor, task.Config.Preprocessor);
            Assert.True(Logits(merged, images, t).equal(Logits(task, images, 0)).all().item<bool>(), $"task {t}");
        }
        // A saved model read back is the model that was saved: same config, same logits.
        using var tuned = Model.Load(tmp.Sub("tuned"), CPU);
        Assert.Equal(sourceA.Config.Preprocessor, tuned.Config.Preprocessor);
        tuned.Save(tmp.Sub("again"));
        using var again = Model.Load(tmp.Sub("again"), CPU);
        Assert.True(Logits(tuned, images, 0).equal(Logits(again, images, 0)).all().item<bool>());
        Assert.Equal(File.ReadAllText(tmp.Sub("tuned", Model.ConfigFile)), File.ReadAllText(tmp.Sub("again", Model.ConfigFile)));
    }
}

/// <summary>Compares floats to an absolute tolerance.</summary>
sealed class FloatTolerance(float tolerance) : IEqualityComparer<float>
{
    public bool Equals(float a, float b) => Math.Abs(a - b) <= tolerance;
    public int GetHashCode(float value) => 0;
}
