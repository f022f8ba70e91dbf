using System.Text.Json.Nodes;
using FsMerge.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Training;

/// <summary>
/// Masked-language-model pre-training of a BERT backbone (as BERT's MLM, without next-sentence prediction):
/// of the real tokens other than [CLS]/[SEP], 15% are chosen per step; a chosen token becomes [MASK] (80%),
/// a random vocabulary token (10%) or stays (10%), and the model predicts the original from its last hidden
/// state through BERT's prediction head (dense + GELU + LayerNorm, decoder tied to the word embeddings,
/// output bias). The head is trained with the backbone and dropped afterwards: the result is a backbone
/// with no task heads. AdamW, linear warm-up 5% then cosine decay (as <see cref="SourceTrainer"/>).
/// </summary>
internal static class MlmPretrainer
{
    public const double MaskFraction = 0.15;

    /// <summary>Returns the pre-trained backbone (no heads) and the mean loss of each epoch.</summary>
    public static (Model Model, List<double> EpochLoss) Train(ModelConfig config, Tensor corpus, IReadOnlyCollection<long> specialIds,
        int maskId, TrainOptions options, Device device, Action<int, double>? onEpoch = null)
    {
        if (config.Architecture != "bert") throw new FsMergeException($"masked-language pre-training needs --arch bert, not {config.Architecture}");
        if (corpus.shape[0] == 0) throw new FsMergeException("masked-language pre-training: the corpus is empty");
        var backbone = config with { Heads = [], Training = new() };
        using var initial = Model.Create(backbone, options.Seed, device);
        var parameters = initial.Weights.ToDictionary(kv => kv.Key, kv => new Parameter(kv.Value.detach().clone(), requires_grad: true));
        var weights = parameters.ToDictionary(kv => kv.Key, kv => (Tensor)kv.Value);
        long d = config.HiddenSize, vocab = config.VocabSize;
        var generator = new Generator((ulong)options.Seed + 7);
        var head = new Dictionary<string, Parameter>
        {
            ["transform.weight"] = new((torch.randn(d, d, generator: generator) * 0.02).to(device)),
            ["transform.bias"] = new(torch.zeros(d, device: device)),
            ["norm.weight"] = new(torch.ones(d, device: device)),
            ["norm.bias"] = new(torch.zeros(d, device: device)),
            ["decoder.bias"] = new(torch.zeros(vocab, device: device)),
        };
        var all = parameters.Values.Concat(head.Values).ToList();
        int n = (int)corpus.shape[0];
        int stepsPerEpoch = (n + options.BatchSize - 1) / options.BatchSize, total = stepsPerEpoch * options.Epochs;
        int warmup = Math.Max(1, (int)(options.WarmupFraction * total));
        var optimizer = torch.optim.AdamW(all, options.LearningRate, weight_decay: options.WeightDecay);
        var scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, step => SourceTrainer.WarmupCosine(step, warmup, total));
        var special = torch.tensor(specialIds.ToArray());
        var losses = new List<double>();
        for (int epoch = 1; epoch <= options.Epochs; epoch++)
        {
            using var order = torch.randperm(n, generator: generator);
            double sum = 0;
            long count = 0;
            for (int start = 0; start < n; start += options.BatchSize)
            {
                using var scope = torch.NewDisposeScope();
                var ids = Bert.TrimPadding(corpus.index_select(0, order.narrow(0, start, Math.Min(options.BatchSize, n - start))), config.PadTokenId);
                var candidates = torch.isin(ids, special).logical_not();
                var chosen = torch.rand(ids.shape, generator: generator).lt(MaskFraction).logical_and(candidates);
                if (!chosen.any().item<bool>()) continue;
                var draw = torch.rand(ids.shape, generator: generator);
                var random = torch.randint(0, vocab, ids.shape, generator: generator);
                var input = torch.where(chosen.logical_and(draw.lt(0.8)), torch.full_like(ids, maskId), ids);
                input = torch.where(chosen.logical_and(draw.ge(0.8)).logical_and(draw.lt(0.9)), random, input);
                var hidden = Bert.Encode(config, weights, input.to(device));
                var selected = hidden.reshape(-1, d).index_select(0, chosen.reshape(-1).nonzero().squeeze(1).to(device));
                var h = nn.functional.layer_norm(nn.functional.gelu(nn.functional.linear(selected, head["transform.weight"], head["transform.bias"])),
                    [d], head["norm.weight"], head["norm.bias"], config.LayerNormEps);
                var logits = nn.functional.linear(h, weights["bert.embeddings.word_embeddings.weight"], head["decoder.bias"]);
                var loss = nn.functional.cross_entropy(logits, ids.masked_select(chosen).to(device));
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                scheduler.step();
                double value = loss.item<float>();
                if (!double.IsFinite(value)) throw new FsMergeException($"masked-language pre-training: the loss became {value}; lower --lr");
                sum += value * selected.shape[0];
                count += selected.shape[0];
            }
            losses.Add(sum / Math.Max(1, count));
            onEpoch?.Invoke(epoch, losses[^1]);
        }
        var result = new Model(backbone, weights.ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone()));
        foreach (var p in all) p.Dispose();
        result.Config.Training["pretraining"] = new JsonObject
        {
            ["objective"] = "masked-language modelling (15% of tokens; 80% [MASK], 10% random, 10% kept)",
            ["sequences"] = n,
            ["seed"] = options.Seed,
            ["epochs"] = options.Epochs,
            ["lr"] = options.LearningRate,
            ["batch"] = options.BatchSize,
            ["epoch_loss"] = new JsonArray(losses.Select(l => (JsonNode)Math.Round(l, 4)).ToArray()),
        };
        return (result, losses);
    }
}
