using FsMerge.Merging;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Bench;

/// <summary>
/// The explicit ViT SuperNet as the reference implementation runs it (spec §5, §2.3): every frozen source
/// model computes its own linear layers, and dense M/U matrices merge and unmerge the concatenated
/// per-model vectors at every site. FS-Merge never trains through it (it folds every step, spec §14);
/// it exists for `fsmerge bench perf`, which measures what folding saves.
/// </summary>
internal static class VitSuperNet
{
    public static Tensor Forward(ModelConfig merged, SiteTable sites, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> sources,
        IReadOnlyDictionary<string, Tensor> dense, IReadOnlyDictionary<string, Tensor> mergedSpace, Tensor images)
    {
        int n = sources.Count;
        long batch = images.shape[0], d = merged.HiddenSize;
        Tensor Merge(string site, IEnumerable<Tensor> perModel) => torch.cat(perModel.ToArray(), -1).matmul(dense[site]);
        Tensor[] Unmerge(string site, Tensor x) => x.matmul(dense[site]).split(sites[site].ModelWidths, -1);
        Tensor Linear(Tensor x, IReadOnlyDictionary<string, Tensor> w, string prefix) =>
            nn.functional.linear(x, w[$"{prefix}.weight"], w[$"{prefix}.bias"]);
        Tensor Norm(Tensor x, string prefix) =>
            nn.functional.layer_norm(x, [d], mergedSpace[$"{prefix}.weight"], mergedSpace[$"{prefix}.bias"], merged.LayerNormEps);

        var embedded = sources.Select(w => Vit.Embed(merged, w, images));
        var x = Merge("embeddings.merge", embedded);
        for (int l = 0; l < merged.NumHiddenLayers; l++)
        {
            var b = Vit.Block(l);
            var h = Unmerge($"layer{l}.attention.unmerge", Norm(x, $"{b}.layernorm_before"));
            Tensor Projected(string name) => Merge($"layer{l}.{name}.merge",
                Enumerable.Range(0, n).Select(i => Linear(h[i], sources[i], $"{b}.attention.attention.{name}")));
            long heads = merged.NumAttentionHeads, tokens = x.shape[1];
            Tensor Split(Tensor t) => t.view(batch, tokens, heads, -1).transpose(1, 2);
            var attended = nn.functional.scaled_dot_product_attention(Split(Projected("query")), Split(Projected("key")), Split(Projected("value")))
                .transpose(1, 2).reshape(batch, tokens, -1);
            var o = Unmerge($"layer{l}.attention_output.unmerge", attended);
            x = x + Merge($"layer{l}.attention_output.merge", Enumerable.Range(0, n).Select(i => Linear(o[i], sources[i], $"{b}.attention.output.dense")));
            h = Unmerge($"layer{l}.mlp.unmerge", Norm(x, $"{b}.layernorm_after"));
            var hidden = nn.functional.gelu(Merge($"layer{l}.intermediate.merge",
                Enumerable.Range(0, n).Select(i => Linear(h[i], sources[i], $"{b}.intermediate.dense"))));
            var g = Unmerge($"layer{l}.intermediate.unmerge", hidden);
            x = x + Merge($"layer{l}.output.merge", Enumerable.Range(0, n).Select(i => Linear(g[i], sources[i], $"{b}.output.dense")));
        }
        return Norm(x, "vit.layernorm").select(1, 0).matmul(dense[sites.HeadInput]);
    }
}
