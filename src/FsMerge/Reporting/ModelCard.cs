using System.Globalization;
using System.Text;
using FsMerge.Models;
using FsMerge.Runs;

namespace FsMerge.Reporting;

/// <summary>The model card (README.md) of a merged model: what it is, its heads, how it was made, how to load it, its limits.</summary>
internal static class ModelCard
{
    public static string Markdown(MergeRunSummary run, MethodResult method, ModelConfig config)
    {
        var md = new StringBuilder();
        var tasks = config.Heads.Select(h => h.Task).ToList();
        md.AppendLine("---");
        md.AppendLine("library_name: fsmerge");
        md.AppendLine("tags: [model-merging, multi-task, " + method.Method + "]");
        md.AppendLine("---\n");
        md.AppendLine($"# Merged multi-task model: {string.Join(" + ", tasks)}\n");
        md.AppendLine($"One {MergeReport.Describe(config)} backbone with {config.Heads.Count} classification heads, one per task. " +
                      $"It was made by merging {run.Sources.Count} models, each trained on one task, with **{method.Method}** " +
                      $"(FsMerge), using unlabeled {config.Arch.Samples} only: no labels and no fine-tuning on labelled data.\n");

        md.AppendLine("## Heads\n");
        md.AppendLine($"Head t (0-based, as in the tensor names) reads the backbone's feature and classifies task t's {config.Arch.Samples}; pick the head of the task you want. " +
                      "`tasks/{t}-{task}/` holds head t alone as a single-task model (Hugging Face's *ForImageClassification / *ForSequenceClassification layout); " +
                      "every task folder shares one backbone file (`backbone.safetensors`, hard-linked; merge.json's `tasks_backbone` says if it had to be copied).\n");
        md.AppendLine("| head | task | tensors | single-task folder | classes | labels |");
        md.AppendLine("|---|---|---|---|---|---|");
        for (int t = 0; t < config.Heads.Count; t++)
        {
            var h = config.Heads[t];
            var labels = h.Labels.Length <= 12 ? string.Join(", ", h.Labels) : string.Join(", ", h.Labels.Take(12)) + ", …";
            var prefix = Heads.Prefix(t, config.Heads.Count);
            var names = Heads.Weights(config).Select(w => w.Name).Where(n => n == $"{prefix}.{Heads.Field(n)}").ToList();
            var tensors = string.Join(", ", names.Select((n, i) => i == 0 ? $"`{n}`" : $"`.{Heads.Field(n)}`"))
                + (h.Kind == HeadKind.Cosine ? $" (cosine, logit scale {h.LogitScale.ToString(CultureInfo.InvariantCulture)})" : "");
            md.AppendLine($"| {t} | {h.Task} | {tensors} | `tasks/{OutputWriter.TaskFolder(t, h.Task)}` | {h.Labels.Length} | {labels} |");
        }
        md.AppendLine();

        md.AppendLine("## How it was made\n");
        md.AppendLine($"| source (path relative to this folder) | task | unlabeled merge {config.Arch.Samples} |");
        md.AppendLine("|---|---|---|");
        foreach (var s in run.Sources) md.AppendLine($"| `{s.Path}` | {s.Task} | {s.MergeSamples} |");
        md.AppendLine();
        md.AppendLine($"Method {method.Method} with options {string.Join(", ", method.Options.Select(kv => $"`--{kv.Key} {kv.Value}`"))}; seed {run.Seed}; " +
                      $"{method.Seconds:F1} s" + (method.OptimizedParameters is { } p ? $", {p.ToString("N0", CultureInfo.InvariantCulture)} optimized parameters" : "") + ".");
        // Not the command line: it holds the paths of the machine it ran on; the config holds them relative to this folder.
        md.AppendLine("\nThe run's full config (every option's value, the sources relative to this folder) is `config` in merge.json; " +
                      "saved as a file, `fsmerge merge FILE --out DIR` runs it again.");
        md.AppendLine();
        if (method.Test is { } test)
        {
            md.AppendLine("## Accuracy\n");
            md.AppendLine($"| task | test {config.Arch.Samples} | accuracy % |");
            md.AppendLine("|---|---|---|");
            foreach (var t in test.Tasks) md.AppendLine($"| {t.Task} | {t.Count} | {100 * t.Accuracy:F2} |");
            md.AppendLine($"| per-task mean | | {100 * test.PerTaskMean:F2} |");
            md.AppendLine($"| joint (task not given) | | {100 * test.Joint:F2} |");
            md.AppendLine($"| task identified (joint argmax in the task's own head) | | {100 * test.TaskIdentified:F2} |");
            md.AppendLine();
        }

        md.AppendLine("## How to load it\n");
        md.AppendLine($"The folder holds `config.json` (shape, heads and labels under `fsmerge.heads`) and the weights in {run.SavedDType} " +
                      "(`model.safetensors`, or shards listed in `model.safetensors.index.json`); `merge.json` holds the run's full config under `config`.\n");
        md.AppendLine("```sh\nfsmerge eval --model THIS_FOLDER            # accuracy per task and joint\n```\n");
        md.AppendLine("```csharp\nusing var model = FsMerge.Models.Model.Load(\"THIS_FOLDER\", TorchSharp.torch.CPU);\n" +
                      "var features = model.Features(inputs);      // inputs as the sources were fed: " + config.Arch.InputShape(config) + "\n" +
                      "var logits = model.Logits(features, head);  // head = the task's index in the table above\n```\n");
        md.AppendLine("```python\nfrom safetensors.torch import load_file\nweights = load_file(\"THIS_FOLDER/model.safetensors\")  # tensor names as in the table above\n```\n");

        if (config.Heads.Any(h => h.Kind == HeadKind.Cosine) && config.Architecture != "mlp")
        {
            var family = config.Architecture == "bert" ? "Bert" : "ViT";
            md.AppendLine("### Cosine heads\n");
            md.AppendLine($"No Hugging Face class computes a cosine head: its single-task folder under `tasks/` is labelled `FsMerge{family}ForCosineClassification`. " +
                          $"Load the backbone with `{family}Model` (the `classifier*` tensors are then unused) and compute head T from `fsmerge.heads[T]` in config.json:\n");
            md.AppendLine("```python\nimport torch.nn.functional as F\n" +
                          (config.Architecture == "bert" ? "f = backbone(input_ids, attention_mask=mask).pooler_output\n" : "f = backbone(pixel_values).last_hidden_state[:, 0]   # the final LayerNorm's CLS token\n") +
                          "e = F.normalize(f @ weights[\"classifier.T.projection\"].T, dim=1)\n" +
                          "logits = logit_scale * e @ F.normalize(weights[\"classifier.T.weight\"], dim=1).T   # no bias\n```\n");
        }

        md.AppendLine("## Limitations\n");
        md.AppendLine("- A merged model is usually less accurate than each source model on its own task; the accuracies above are measured, others are not.");
        md.AppendLine(config.Heads.All(h => h.Kind == HeadKind.Cosine) && config.Heads.Select(h => h.LogitScale).Distinct().Count() == 1
            ? "- Joint accuracy (the model is not told the task) is lower than per-task accuracy: the cosine heads share one logit scale, but each was trained on its own task only, so none learned to stay quiet on another task's inputs."
            : "- Joint accuracy (the model is not told the task) is lower than per-task accuracy: heads were trained separately, so their logits are not calibrated against each other.");
        md.AppendLine(config.Architecture == "bert"
            ? "- Text must be tokenized with this folder's `vocab.txt` and `tokenizer_config.json`."
            : "- Images must be prepared as this folder's `preprocessor_config.json` says (size, channels, rescaling, normalization).");
        md.AppendLine($"- The merge saw only the unlabeled {config.Arch.Samples} listed above; behaviour on other data distributions is untested.");
        return md.ToString();
    }
}
