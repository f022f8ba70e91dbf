using FsMerge.Data;
using FsMerge.Merging;
using FsMerge.Merging.Methods;
using FsMerge.Models;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static FsMerge.Tests.VitOracleTests;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>
/// An explicit BERT SuperNet (spec §6: post-LN, embedding merge then the merged embedding LayerNorm,
/// values merged with M^v, pooler dense + tanh in merged space, then the task unmerge), written here
/// independently of <see cref="Bert.Features"/> and <see cref="Folding"/>, as an oracle for the fold:
/// SuperNet(ids) == Features(Fold(θ))(ids) · U_task for every θ, with padding in the batch, and equal gradients.
/// </summary>
[Collection("torch")]
public class BertOracleTests
{
    readonly ITestOutputHelper output;
    public BertOracleTests(ITestOutputHelper output) => this.output = output;

    const int Width = 16, Vocab = 40, Length = 7;

    internal static ModelConfig Config(string task) => new()
    {
        Architecture = "bert", VocabSize = Vocab, HiddenSize = Width, NumHiddenLayers = 2, NumAttentionHeads = 4,
        IntermediateSize = 32, MaxPositionEmbeddings = 12, TypeVocabSize = 2, PadTokenId = 0, LayerNormEps = 1e-12,
        Heads = [new HeadInfo(task, ["a", "b", "c"])],
    };

    /// <summary>Token ids [5, 7]: [CLS]=2 first, then words, then padding (id 0) at the end of 3 of the 5 rows.</summary>
    internal static Tensor Ids(long seed)
    {
        var ids = torch.randint(4, Vocab, [5, Length], generator: new Generator((ulong)seed));
        ids.select(1, 0).fill_(2);
        int[] lengths = [7, 3, 5, 2, 7];
        for (int r = 0; r < lengths.Length; r++)
            if (lengths[r] < Length) ids[r].narrow(0, lengths[r], Length - lengths[r]).fill_(0);
        return ids;
    }

    static Tensor MaskedMultiHead(Tensor q, Tensor k, Tensor v, Tensor additive, int heads)
    {
        long hd = q.shape[^1] / heads;
        var outputs = new Tensor[heads];
        for (int j = 0; j < heads; j++)
        {
            var scores = q.narrow(-1, j * hd, hd).matmul(k.narrow(-1, j * hd, hd).transpose(-1, -2)) / Math.Sqrt(hd) + additive;
            outputs[j] = Softmax(scores).matmul(v.narrow(-1, j * hd, hd));
        }
        return torch.cat(outputs, -1);
    }

    /// <summary>The SuperNet on token ids; returns the per-model pooled features after the task unmerge, [B, Σd].</summary>
    static Tensor SuperNet(ModelConfig c, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> w,
        IReadOnlyDictionary<string, Dictionary<string, Tensor>> mu, IReadOnlyDictionary<string, Tensor> ln, Tensor ids)
    {
        int n = w.Count;
        long batch = ids.shape[0], length = ids.shape[1];
        double eps = c.LayerNormEps;
        var models = Enumerable.Range(0, n).ToList();
        const string e = "bert.embeddings";
        var embedded = models.Select(i =>
            w[i][$"{e}.word_embeddings.weight"].index_select(0, ids.reshape(-1)).reshape(batch, length, -1)
            + w[i][$"{e}.position_embeddings.weight"].narrow(0, 0, length) + w[i][$"{e}.token_type_embeddings.weight"][0]).ToList();
        var h = LayerNorm(Merge(embedded, mu["embeddings.merge"]), ln[$"{e}.LayerNorm.weight"], ln[$"{e}.LayerNorm.bias"], eps);
        // 0 for real keys, a very negative number for padding keys: [B, 1, L], broadcast over queries.
        var additive = ids.eq(0).to(h.dtype).unsqueeze(1) * -1e9;

        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            string b = $"bert.encoder.layer.{l}", s = $"layer{l}";
            List<Tensor> PerModel(List<Tensor> inputs, string name) =>
                models.Select(i => inputs[i].matmul(w[i][$"{b}.{name}.weight"].t()) + w[i][$"{b}.{name}.bias"]).ToList();

            var aHat = Unmerge(h, mu[$"{s}.attention.unmerge"], n);          // post-LN: no LN before the unmerge
            var q = Merge(PerModel(aHat, "attention.self.query"), mu[$"{s}.query.merge"]);
            var k = Merge(PerModel(aHat, "attention.self.key"), mu[$"{s}.key.merge"]);
            var v = Merge(PerModel(aHat, "attention.self.value"), mu[$"{s}.value.merge"]);
            var oHat = Unmerge(MaskedMultiHead(q, k, v, additive, c.NumAttentionHeads), mu[$"{s}.attention_output.unmerge"], n);
            var y = Merge(PerModel(oHat, "attention.output.dense"), mu[$"{s}.attention_output.merge"]);
            h = LayerNorm(y + h, ln[$"{b}.attention.output.LayerNorm.weight"], ln[$"{b}.attention.output.LayerNorm.bias"], eps);

            var gHat = Unmerge(h, mu[$"{s}.mlp.unmerge"], n);
            var f = Merge(PerModel(gHat, "intermediate.dense"), mu[$"{s}.intermediate.merge"]);
            var sHat = Unmerge(Gelu(f), mu[$"{s}.intermediate.unmerge"], n);
            y = Merge(PerModel(sHat, "output.dense"), mu[$"{s}.output.merge"]);
            h = LayerNorm(y + h, ln[$"{b}.output.LayerNorm.weight"], ln[$"{b}.output.LayerNorm.bias"], eps);
        }
        var cHat = Unmerge(h.select(1, 0), mu["pooler.unmerge"], n);
        var pooled = Merge(models.Select(i => cHat[i].matmul(w[i]["bert.pooler.dense.weight"].t()) + w[i]["bert.pooler.dense.bias"]).ToList(),
            mu["pooler.merge"]);
        return torch.cat(Unmerge(pooled.tanh(), mu["task.unmerge"], n).ToArray(), 1);
    }

    static Model Rough(int i, long seed, ScalarType dtype) =>
        OracleCase.Rough(Config($"t{i}"), i, seed, dtype, name => name.Contains("LayerNorm") || name.EndsWith(".bias"));

    static OracleCase Make(int n, MuType type, MuInit init, ScalarType dtype, long seed = 0) =>
        OracleCase.Make(new Bert(), Enumerable.Range(0, n).Select(i => Rough(i, seed, dtype)).ToList(), type, init, dtype, 3, seed, Ids(77 + seed));

    static Tensor Oracle(OracleCase k) => SuperNet(k.Merged, k.Weights, k.Factors, k.Ln, k.Input);

    [Fact]
    public void Weights_have_hugging_face_bert_names_and_shapes_and_the_site_table_folds_each_once()
    {
        var c = Config("t") with { NumHiddenLayers = 1 };
        var specs = Model.ExpectedWeights(c).ToDictionary(s => s.Name, s => s.Shape);
        var expected = new Dictionary<string, long[]>
        {
            ["bert.embeddings.word_embeddings.weight"] = [Vocab, Width],
            ["bert.embeddings.position_embeddings.weight"] = [12, Width],
            ["bert.embeddings.token_type_embeddings.weight"] = [2, Width],
            ["bert.embeddings.LayerNorm.weight"] = [Width], ["bert.embeddings.LayerNorm.bias"] = [Width],
            ["bert.encoder.layer.0.attention.self.query.weight"] = [Width, Width], ["bert.encoder.layer.0.attention.self.query.bias"] = [Width],
            ["bert.encoder.layer.0.attention.self.key.weight"] = [Width, Width], ["bert.encoder.layer.0.attention.self.key.bias"] = [Width],
            ["bert.encoder.layer.0.attention.self.value.weight"] = [Width, Width], ["bert.encoder.layer.0.attention.self.value.bias"] = [Width],
            ["bert.encoder.layer.0.attention.output.dense.weight"] = [Width, Width], ["bert.encoder.layer.0.attention.output.dense.bias"] = [Width],
            ["bert.encoder.layer.0.attention.output.LayerNorm.weight"] = [Width], ["bert.encoder.layer.0.attention.output.LayerNorm.bias"] = [Width],
            ["bert.encoder.layer.0.intermediate.dense.weight"] = [32, Width], ["bert.encoder.layer.0.intermediate.dense.bias"] = [32],
            ["bert.encoder.layer.0.output.dense.weight"] = [Width, 32], ["bert.encoder.layer.0.output.dense.bias"] = [Width],
            ["bert.encoder.layer.0.output.LayerNorm.weight"] = [Width], ["bert.encoder.layer.0.output.LayerNorm.bias"] = [Width],
            ["bert.pooler.dense.weight"] = [Width, Width], ["bert.pooler.dense.bias"] = [Width],
            ["classifier.weight"] = [3, Width], ["classifier.bias"] = [3],
        };
        Assert.Equal(expected.Keys.Order(), specs.Keys.Order());
        foreach (var (name, shape) in expected) Assert.Equal(shape, specs[name]);

        var table = new Bert().Sites([c, c], c);
        Assert.Equal("task.unmerge", table.HeadInput);
        Assert.Equal(new Bert().BackboneWeights(c).Select(w => w.Name).Order(), table.Tensors.Select(t => t.Name).Order());
        Assert.Equal(TensorRole.MergedSpace, table.Tensors.Single(t => t.Name == "bert.encoder.layer.0.output.LayerNorm.weight").Role);
        Assert.Equal("layer0.value.merge", table.Tensors.Single(t => t.Name == "bert.encoder.layer.0.attention.self.value.weight").Out);
    }

    [Fact]
    public void Config_json_uses_bert_config_names_and_round_trips()
    {
        var c = Config("lang:0-2") with { LayerNormEps = 1e-7 };
        var json = c.ToJson();
        Assert.Equal("bert", json["model_type"]!.GetValue<string>());
        Assert.Equal("BertForSequenceClassification", json["architectures"]![0]!.GetValue<string>());
        foreach (var key in new[] { "vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id", "layer_norm_eps", "intermediate_size" })
            Assert.NotNull(json[key]);
        var back = ModelConfig.FromJson(json, "config.json");
        Assert.Equal(c.ToJson().ToJsonString(), back.ToJson().ToJsonString());
        json["hidden_act"] = "relu";
        var e = Assert.Throws<FsMergeException>(() => ModelConfig.FromJson(json, "x/config.json"));
        Assert.Contains("hidden_act", e.Message);
    }

    [Theory]
    [InlineData(2, "full", "f64")]
    [InlineData(3, "full", "f64")]
    [InlineData(2, "diagonal-low-rank", "f64")]
    [InlineData(3, "diagonal-low-rank", "f64")]
    [InlineData(2, "full", "f32")]
    public void The_explicit_supernet_equals_the_folded_bert_with_padding_in_the_batch(int n, string type, string dtype)
    {
        using var scope = torch.NewDisposeScope();
        var k = Make(n, Parse(type), MuInit.Random, Dtype(dtype));
        var oracle = Oracle(k);
        var (folded, weights) = k.FoldPath();
        Assert.Equal(new long[] { 5, n * Width }, oracle.shape);
        double rel = Relative(folded, oracle);
        double rowChange = Relative(oracle[1], oracle[3]), modelChange = Relative(oracle.narrow(1, 0, Width), oracle.narrow(1, Width, Width));
        output.WriteLine($"N={n} {type} {dtype}: max rel diff {rel:G3}; row 1 vs 3 {rowChange:G3}; block 0 vs 1 {modelChange:G3}");
        Assert.True(rel < Tolerance(Dtype(dtype)), $"max relative difference {rel:G3}");
        Assert.True(rowChange > 0.02 && modelChange > 0.1, "a trivial regime");
        // Each folded head reads block i.
        var features = new Bert().Features(k.Merged, weights, k.Input);
        for (int i = 0; i < n; i++)
        {
            var expected = oracle.narrow(1, i * Width, Width).matmul(k.Weights[i]["classifier.weight"].t()) + k.Weights[i]["classifier.bias"];
            Assert.True(Relative(Heads.Logits(weights, features, k.Merged.Heads[i], i, n), expected) < Tolerance(Dtype(dtype)), $"head {i}");
        }
    }

    [Theory]
    [InlineData(2, "full")]
    [InlineData(3, "diagonal-low-rank")]
    public void Gradients_through_the_fold_equal_the_supernet_gradients(int n, string type)
    {
        using var scope = torch.NewDisposeScope();
        var k = Make(n, Parse(type), MuInit.Random, ScalarType.Float64, seed: 2);
        var leaves = VitOracleTests.MakeLeaves(k.Mu, k.Ln);
        var target = torch.randn(5, n * Width, generator: new Generator(5)).to(ScalarType.Float64);
        var gradFold = Gradients((k.FoldPath().Output - target).pow(2).mean(), leaves);
        var gradOracle = Gradients((Oracle(k) - target).pow(2).mean(), leaves);
        var (worst, worstName) = OracleCase.WorstDifference(gradFold, gradOracle, leaves);
        output.WriteLine($"N={n} {type}: {leaves.Count} leaves; worst gradient max rel diff {worst:G3} ({worstName})");
        Assert.True(worst < 1e-9, $"gradient of {worstName} differs: {worst:G3}");
    }

    [Fact]
    public void First_init_zero_step_fs_merge_reproduces_model_1_exactly()
    {
        using var scope = torch.NewDisposeScope();
        var models = Enumerable.Range(0, 3).Select(i => Rough(i, 3, ScalarType.Float32)).ToList();
        var target = models[0].Config with { Heads = models.SelectMany(m => m.Config.Heads).ToList() };
        var data = Enumerable.Range(0, 3).Select(i => new ImageSet(Ids(10 + i), new long[5], ["a", "b", "c"])).ToList();
        var inputs = new MergeInputs { Sources = models, Data = data, Target = target, Device = CPU };
        var method = new FsMergeMethod();
        var outcome = method.Merge(inputs, new MethodSettings(method, new Dictionary<string, string>
        {
            ["type"] = "full", ["init"] = "first", ["epochs"] = "0", ["targets"] = "own", ["normalize"] = "false",
        }));
        var merged = outcome.Merged!;
        foreach (var spec in new Bert().BackboneWeights(target))
            Assert.True(merged.Weights[spec.Name].Equals(models[0].Weights[spec.Name]), spec.Name);
        var ids = Ids(99);
        var reference = models[0].Features(ids);
        Assert.True(merged.Features(ids).Equals(reference));
        Assert.True(merged.Logits(reference, 0).Equals(models[0].Logits(reference, 0)));
        Assert.True(Relative(models[1].Features(ids), reference) > 0.1, "model 1 is not model 2");
    }

    [Theory]
    [InlineData("ensemble")]
    [InlineData("average")]
    [InlineData("regmean")]
    [InlineData("distill")]
    [InlineData("pleas")]
    [InlineData("fs-merge")]
    [InlineData("fs-merge-seq")]
    public void Every_merge_method_accepts_three_bert_sources(string name)
    {
        using var scope = torch.NewDisposeScope();
        var models = Enumerable.Range(0, 3).Select(i => Rough(i, 5, ScalarType.Float32)).ToList();
        var target = models[0].Config with { Heads = models.SelectMany(m => m.Config.Heads).ToList() };
        var data = Enumerable.Range(0, 3).Select(i => new ImageSet(Ids(20 + i), new long[5], ["a", "b", "c"])).ToList();
        var inputs = new MergeInputs { Sources = models, Data = data, Target = target, Device = CPU };
        var method = MergeMethods.Get(name);
        var options = method.Options.Any(o => o.Name == "epochs")
            ? new Dictionary<string, string> { ["epochs"] = "2", ["optimizer"] = "adamw", ["lr"] = "0.001" }
            : [];
        if (name.StartsWith("fs-merge")) (options["type"], options["rank"]) = ("diagonal-low-rank", "4");
        var outcome = method.Merge(inputs, new MethodSettings(method, options));
        var logits = outcome.Predict(Ids(30));
        Assert.Equal(3, logits.Length);
        Assert.All(logits, l => Assert.Equal(new long[] { 5, 3 }, l.shape));
        Assert.All(logits, l => Assert.True(l.isfinite().all().item<bool>()));
        if (name != "ensemble") Assert.Equal(3, outcome.Merged!.HeadCount);
    }

    [Fact]
    public void Padding_tokens_do_not_change_the_pooled_output()
    {
        using var scope = torch.NewDisposeScope();
        var model = Rough(0, 4, ScalarType.Float64);
        var ids = torch.tensor(new long[] { 2, 17, 9, 33, 3 }).unsqueeze(0);
        var padded = torch.cat([ids, torch.zeros(1, 6, ScalarType.Int64)], 1);
        var short_ = model.Features(ids);
        var long_ = model.Features(padded);
        Assert.True(Relative(long_, short_) < 1e-12, $"{Relative(long_, short_):G3}");
        // The padding embedding itself is irrelevant too: change the [PAD] row of the table.
        model.Weights["bert.embeddings.word_embeddings.weight"][0].add_(5.0);
        Assert.True(Relative(model.Features(padded), short_) < 1e-12);
        // A real token at the same place does change it.
        var other = padded.clone();
        other[0, 5] = 11;
        Assert.True(Relative(model.Features(other), short_) > 1e-3);
    }
}
