using FsMerge.Merging;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Models;

/// <summary>
/// Post-LayerNorm BERT with Hugging Face BertForSequenceClassification weight names ("bert.embeddings…",
/// "bert.encoder.layer.{l}…", "bert.pooler.dense"): word, position and token-type embeddings summed and
/// LayerNorm'ed; L encoder blocks of multi-head attention and a GELU MLP, each followed by a LayerNorm of
/// the residual sum; the pooler (dense + tanh on the first token) is the feature the heads read.
/// <para>
/// Input: int64 token ids [B, L] (L ≤ max_position_embeddings), every sequence starting with [CLS], each id carrying
/// its token type above bit 32 (<see cref="PackTokenTypes"/>: 0 for a single text and a pair's first part, 1 for
/// its second); the attention mask is derived from the ids (ids != pad_token_id), added to the attention scores as
/// −1e9 at padded keys. The model's layer_norm_eps is used in every LayerNorm
/// (spec §13.23), so source, SuperNet and folded model run the same numbers.
/// </para>
/// </summary>
internal sealed class Bert : IArchitecture
{
    public string Name => "bert";

    const string Embeddings = "bert.embeddings";
    const string Pooler = "bert.pooler.dense";
    public static string Block(int layer) => $"bert.encoder.layer.{layer}";

    /// <summary>The additive attention score at padded keys.</summary>
    public const double MaskValue = -1e9;

    /// <summary>
    /// Token types ride in the ids' upper 32 bits (id + type · 2³²), so that one int64 tensor carries Hugging Face's
    /// input_ids and token_type_ids through every path that batches, samples or caches inputs; padding is type 0.
    /// </summary>
    const int TokenTypeShift = 32;

    public static long[] PackTokenTypes(long[] ids, long[] types) => ids.Select((id, i) => id | types[i] << TokenTypeShift).ToArray();

    /// <summary>The (input_ids, token_type_ids) of packed ids.</summary>
    public static (Tensor Ids, Tensor Types) UnpackTokenTypes(Tensor packed) =>
        (packed.bitwise_and((1L << TokenTypeShift) - 1), packed.bitwise_right_shift(TokenTypeShift));

    public IReadOnlyList<WeightSpec> BackboneWeights(ModelConfig c)
    {
        long d = c.HiddenSize, D = c.IntermediateSize;
        var specs = new List<WeightSpec>
        {
            new($"{Embeddings}.word_embeddings.weight", [c.VocabSize, d]),
            new($"{Embeddings}.position_embeddings.weight", [c.MaxPositionEmbeddings, d]),
            new($"{Embeddings}.token_type_embeddings.weight", [c.TypeVocabSize, d]),
            new($"{Embeddings}.LayerNorm.weight", [d]),
            new($"{Embeddings}.LayerNorm.bias", [d]),
        };
        void Linear(string prefix, long outWidth, long inWidth)
        {
            specs.Add(new($"{prefix}.weight", [outWidth, inWidth]));
            specs.Add(new($"{prefix}.bias", [outWidth]));
        }
        void Norm(string prefix)
        {
            specs.Add(new($"{prefix}.weight", [d]));
            specs.Add(new($"{prefix}.bias", [d]));
        }
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var b = Block(l);
            foreach (var proj in new[] { "query", "key", "value" }) Linear($"{b}.attention.self.{proj}", d, d);
            Linear($"{b}.attention.output.dense", d, d);
            Norm($"{b}.attention.output.LayerNorm");
            Linear($"{b}.intermediate.dense", D, d);
            Linear($"{b}.output.dense", d, D);
            Norm($"{b}.output.LayerNorm");
        }
        Linear(Pooler, d, d);
        return specs;
    }

    public long FeatureWidth(ModelConfig config) => config.HiddenSize;

    /// <summary>The ViT's transformer setting with weight decay 0, as the paper's BERT runs (spec §7.4, §7.7).</summary>
    public IReadOnlyDictionary<string, string> MergeDefaults { get; } =
        new Dictionary<string, string>(Vit.TransformerMergeDefaults) { ["weight-decay"] = "0" };

    public bool InitializedByTaskModel(string weight) => weight.StartsWith(Pooler + ".");

    public int? TokensPerInput(ModelConfig config) => null;

    public string Samples => "sequences";

    public string InputShape(ModelConfig config) =>
        $"[B, {config.SequenceLength}] int64 token ids from the folder's tokenizer files, padded with [PAD] (the attention mask)";

    /// <summary>Checks what the shapes need: heads divide the width, and token type 0 exists.</summary>
    public static void Validate(ModelConfig c)
    {
        if (c.HiddenSize % c.NumAttentionHeads != 0)
            throw new FsMergeException($"hidden_size {c.HiddenSize} is not a multiple of num_attention_heads {c.NumAttentionHeads}");
        if (c.PadTokenId < 0 || c.PadTokenId >= c.VocabSize)
            throw new FsMergeException($"pad_token_id {c.PadTokenId} is outside the vocabulary 0..{c.VocabSize - 1}");
    }

    /// <summary>Hugging Face's BERT init: N(0, 0.02²) weights and embeddings (the padding row zero), zero biases, unit LayerNorms.</summary>
    public Dictionary<string, Tensor> InitBackbone(ModelConfig config, Generator generator, Device device)
    {
        Validate(config);
        var weights = new Dictionary<string, Tensor>();
        foreach (var spec in BackboneWeights(config))
        {
            Tensor t;
            if (spec.Name.Contains("LayerNorm") && spec.Name.EndsWith(".weight")) t = torch.ones(spec.Shape);
            else if (spec.Name.EndsWith(".bias")) t = torch.zeros(spec.Shape);
            else t = torch.randn(spec.Shape, generator: generator).mul_(0.02);
            if (spec.Name.EndsWith("word_embeddings.weight")) t[config.PadTokenId].zero_();
            weights[spec.Name] = t.to(device);
        }
        return weights;
    }

    /// <summary>
    /// Token ids [B, L] → pooled features [B, d] (after <see cref="TrimPadding"/>). Token-level probe values are reported for the real
    /// (non-padding) tokens only, so statistics such as RegMean's Gram matrices never see padding.
    /// </summary>
    public Tensor Features(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor ids, Probe? probe = null)
    {
        Tensor? rows = null;
        void Report(string point, Tensor value)
        {
            if (probe is null) return;
            var flat = value.reshape(-1, value.shape[^1]);
            rows ??= UnpackTokenTypes(ids).Ids.ne(c.PadTokenId).reshape(-1).nonzero().squeeze(1);
            probe(point, value.dim() == 3 ? flat.index_select(0, rows) : flat);
        }
        ids = TrimPadding(ids, c.PadTokenId);
        var first = Encoder(c, w, ids, Report).select(1, 0);
        Report(PoolerUnmerge, first);
        var pooled = nn.functional.linear(first, w[$"{Pooler}.weight"], w[$"{Pooler}.bias"]);
        Report(PoolerMerge, pooled);
        pooled = pooled.tanh();
        Report(TaskUnmerge, pooled);
        return pooled;
    }

    /// <summary>
    /// Drops trailing columns that are padding in every row: the pooled output does not depend on them (the
    /// mask test checks this), and short texts (single words) then cost a fraction of the full length.
    /// </summary>
    public static Tensor TrimPadding(Tensor ids, long padId)
    {
        if (ids.dim() != 2 || ids.shape[1] == 0) return ids;
        var columns = ids.ne(padId).any(0).nonzero();
        long used = columns.numel() == 0 ? ids.shape[1] : columns.max().item<long>() + 1;
        return used < ids.shape[1] ? ids.narrow(1, 0, used) : ids;
    }

    /// <summary>The encoder's last hidden states [B, L, d] (what a masked-language-model head reads).</summary>
    public static Tensor Encode(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor ids) => Encoder(c, w, ids, (_, _) => { });

    static Tensor Encoder(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor ids, Action<string, Tensor> report)
    {
        if (ids.dim() != 2 || ids.dtype != ScalarType.Int64)
            throw new FsMergeException($"bert: expected int64 token ids [batch, length], got {ids.dtype} [{string.Join(", ", ids.shape)}]");
        long batch = ids.shape[0], length = ids.shape[1], d = c.HiddenSize;
        (ids, var types) = UnpackTokenTypes(ids);
        if (length > c.MaxPositionEmbeddings)
            throw new FsMergeException($"bert: sequences of {length} tokens exceed max_position_embeddings {c.MaxPositionEmbeddings}");
        if (ids.numel() > 0 && ids.max().item<long>() >= c.VocabSize)
            throw new FsMergeException($"bert: token id {ids.max().item<long>()} is outside the vocabulary (vocab_size {c.VocabSize}); the data was tokenized with another vocab.txt");
        if (ids.numel() > 0 && types.max().item<long>() >= c.TypeVocabSize)
            throw new FsMergeException($"bert: token type {types.max().item<long>()} is outside type_vocab_size {c.TypeVocabSize} (sentence pairs need 2)");
        var eps = c.LayerNormEps;
        var x = w[$"{Embeddings}.word_embeddings.weight"].index_select(0, ids.reshape(-1)).view(batch, length, -1)
                + w[$"{Embeddings}.position_embeddings.weight"].narrow(0, 0, length)
                + w[$"{Embeddings}.token_type_embeddings.weight"].index_select(0, types.reshape(-1)).view(batch, length, -1);
        report(EmbedMerge, x);
        x = nn.functional.layer_norm(x, [d], w[$"{Embeddings}.LayerNorm.weight"], w[$"{Embeddings}.LayerNorm.bias"], eps);
        var additive = ids.eq(c.PadTokenId).to(x.dtype).mul(MaskValue).view(batch, 1, 1, length);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var b = Block(l);
            report(Site(l, "attention.unmerge"), x);
            var attention = Attention(c, w, b, x, additive, l, report);
            report(Site(l, "attention_output.merge"), attention);
            x = nn.functional.layer_norm(x + attention, [d], w[$"{b}.attention.output.LayerNorm.weight"], w[$"{b}.attention.output.LayerNorm.bias"], eps);
            report(Site(l, "mlp.unmerge"), x);
            var h = nn.functional.linear(x, w[$"{b}.intermediate.dense.weight"], w[$"{b}.intermediate.dense.bias"]);
            report(Site(l, "intermediate.merge"), h);
            h = nn.functional.gelu(h);
            report(Site(l, "intermediate.unmerge"), h);
            h = nn.functional.linear(h, w[$"{b}.output.dense.weight"], w[$"{b}.output.dense.bias"]);
            report(Site(l, "output.merge"), h);
            x = nn.functional.layer_norm(x + h, [d], w[$"{b}.output.LayerNorm.weight"], w[$"{b}.output.LayerNorm.bias"], eps);
        }
        return x;
    }

    static Tensor Attention(ModelConfig c, IReadOnlyDictionary<string, Tensor> w, string block, Tensor h, Tensor additive, int layer,
        Action<string, Tensor> report)
    {
        long batch = h.shape[0], tokens = h.shape[1], heads = c.NumAttentionHeads, hd = c.HiddenSize / heads;
        Tensor Project(string name)
        {
            var projected = nn.functional.linear(h, w[$"{block}.attention.self.{name}.weight"], w[$"{block}.attention.self.{name}.bias"]);
            report(Site(layer, $"{name}.merge"), projected);
            return projected.view(batch, tokens, heads, hd).transpose(1, 2);
        }
        var attended = nn.functional.scaled_dot_product_attention(Project("query"), Project("key"), Project("value"), additive);
        var merged = attended.transpose(1, 2).reshape(batch, tokens, c.HiddenSize);
        report(Site(layer, "attention_output.unmerge"), merged);
        return nn.functional.linear(merged, w[$"{block}.attention.output.dense.weight"], w[$"{block}.attention.output.dense.bias"]);
    }

    const string EmbedMerge = "embeddings.merge";
    const string PoolerUnmerge = "pooler.unmerge";
    const string PoolerMerge = "pooler.merge";
    const string TaskUnmerge = "task.unmerge";
    static string Site(int layer, string name) => $"layer{layer}.{name}";

    /// <summary>
    /// The BERT site table (spec §6, §3.7). The residual stream is one merged space: the embedding merge
    /// (word, position and token-type tables, concatenated across models on the feature axis, times M^emb)
    /// writes it, the post-LN LayerNorms live in it (no LN before a merge), the attention-output and
    /// MLP-output merges add into it, and the attention, MLP and pooler unmerges read it. Q, K, V share one
    /// unmerge and have three merges; values are merged with their own M^v (not the reference's M^k, §6
    /// [bug]). GELU acts in the merged intermediate space, tanh in the merged pooler space; the task unmerge
    /// after the tanh feeds the heads.
    /// </summary>
    public SiteTable Sites(IReadOnlyList<ModelConfig> sources, ModelConfig merged)
    {
        foreach (var s in sources)
            if (s.NumHiddenLayers != merged.NumHiddenLayers || s.NumAttentionHeads != merged.NumAttentionHeads || s.VocabSize != merged.VocabSize
                || s.MaxPositionEmbeddings != merged.MaxPositionEmbeddings || s.TypeVocabSize != merged.TypeVocabSize || s.PadTokenId != merged.PadTokenId)
                throw new FsMergeException($"BERT sources must share depth, heads, vocabulary, positions, token types and pad id: got depth {s.NumHiddenLayers}, heads {s.NumAttentionHeads}, vocab_size {s.VocabSize}, max_position_embeddings {s.MaxPositionEmbeddings}, type_vocab_size {s.TypeVocabSize}, pad_token_id {s.PadTokenId}; expected {merged.NumHiddenLayers}, {merged.NumAttentionHeads}, {merged.VocabSize}, {merged.MaxPositionEmbeddings}, {merged.TypeVocabSize}, {merged.PadTokenId}");
        var d = sources.Select(s => (long)s.HiddenSize).ToArray();
        var dm = sources.Select(s => (long)s.IntermediateSize).ToArray();
        var t = new SiteTableBuilder();
        t.Site(EmbedMerge, SiteKind.Merge, "residual", d, merged.HiddenSize);
        foreach (var table in new[] { "word_embeddings", "position_embeddings", "token_type_embeddings" })
            t.Vector($"{Embeddings}.{table}.weight", EmbedMerge);
        t.Norm($"{Embeddings}.LayerNorm", EmbedMerge);
        for (int l = 0; l < merged.NumHiddenLayers; l++)
        {
            t.EncoderLayer($"layer{l}", Block(l), "attention.self", d, merged.HiddenSize, dm, merged.IntermediateSize, merged.NumAttentionHeads);
            t.Norm($"{Block(l)}.attention.output.LayerNorm", EmbedMerge);   // post-LN: after each residual add
            t.Norm($"{Block(l)}.output.LayerNorm", EmbedMerge);
        }
        t.Site(PoolerUnmerge, SiteKind.Unmerge, "residual", d, merged.HiddenSize);
        t.Site(PoolerMerge, SiteKind.Merge, "pooler", d, merged.HiddenSize);
        t.Linear(Pooler, PoolerMerge, PoolerUnmerge);
        t.Activation("pooler", x => x.tanh());
        t.Site(TaskUnmerge, SiteKind.Unmerge, "pooler", d, merged.HiddenSize);
        return t.Build(TaskUnmerge);
    }
}
