using System.Text.Json;
using System.Text.Json.Nodes;

namespace FsMerge.Models;

/// <summary>How a head turns features into logits (<see cref="Heads"/>).</summary>
public enum HeadKind { Linear, Cosine }

/// <summary>
/// One classification head: the task it serves and its class names (index = class id). A linear head is
/// W·f + b. A cosine head is CLIP's: a projection P [EmbedWidth, feature width], then
/// LogitScale · cos(P·f, w_c) for every class c, with no bias; all cosine heads of one model share one logit
/// scale, so their logits are comparable without calibration (the paper's joint accuracy, spec §10.4).
/// </summary>
public sealed record HeadInfo(string Task, string[] Labels)
{
    /// <summary>The task name of a head whose config.json does not record one (a Hugging Face checkpoint).</summary>
    public const string Unrecorded = "task";

    /// <summary>The default logit scale of cosine heads: moderate, so they train from scratch (the argmax does not depend on it).</summary>
    public const double DefaultLogitScale = 16;

    public HeadKind Kind { get; init; } = HeadKind.Linear;
    public double LogitScale { get; init; } = DefaultLogitScale;

    /// <summary>Cosine heads: the width of the projected embedding (0 = linear head).</summary>
    public int EmbedWidth { get; init; }

    /// <summary>A new head; a cosine one projects to <paramref name="embedWidth"/>.</summary>
    public static HeadInfo Create(HeadKind kind, string task, string[] labels, int embedWidth, double logitScale = DefaultLogitScale) =>
        new(task, labels) { Kind = kind, LogitScale = logitScale, EmbedWidth = kind == HeadKind.Cosine ? embedWidth : 0 };

    /// <summary>A fresh head of this head's kind and scale for another task.</summary>
    public HeadInfo Fresh(string task, string[] labels, int embedWidth) => Create(Kind, task, labels, embedWidth, LogitScale);

    public static HeadKind ParseKind(string text, string what) => text switch
    {
        "linear" => HeadKind.Linear,
        "cosine" => HeadKind.Cosine,
        _ => throw new FsMergeException($"{what}: head kind '{text}' is not supported (expected linear or cosine)"),
    };
}

/// <summary>
/// A model's config.json. Field names follow Hugging Face's configs (ViTConfig for "vit", BertConfig for "bert"); the MLP,
/// which has no Hugging Face class, uses "fsmerge-mlp". Everything FsMerge-specific (tasks of every
/// head, training provenance) lives under the "fsmerge" key, which Hugging Face ignores.
/// How images are prepared lives beside it in preprocessor_config.json (<see cref="Preprocessor"/>).
/// </summary>
public sealed record ModelConfig
{
    public string Architecture { get; init; } = "mlp";

    // MLP
    public int InputSize { get; init; } = 784;
    public int[] HiddenSizes { get; init; } = [128];

    // ViT (Hugging Face ViTConfig names in config.json)
    public int ImageSize { get; init; } = 28;
    public int NumChannels { get; init; } = 1;
    public int PatchSize { get; init; } = 7;
    public int HiddenSize { get; init; } = 64;
    public int NumHiddenLayers { get; init; } = 4;
    public int NumAttentionHeads { get; init; } = 4;
    public int IntermediateSize { get; init; } = 256;
    public double LayerNormEps { get; init; } = 1e-12;

    // BERT (Hugging Face BertConfig names in config.json; shares the ViT fields above)
    public int VocabSize { get; init; } = 30522;
    public int MaxPositionEmbeddings { get; init; } = 512;
    public int TypeVocabSize { get; init; } = 2;
    public int PadTokenId { get; init; }

    /// <summary>How images become this model's input (preprocessor_config.json beside config.json); unused by BERT.</summary>
    public ImageProcessor Preprocessor { get; init; } = ImageProcessor.Plain;

    /// <summary>This model's input from a set of images in [0, 1] (token ids pass unchanged); takes over <paramref name="set"/> (see <see cref="ImageProcessor.Apply"/>).</summary>
    public Data.ImageSet Prepare(Data.ImageSet set, string what) =>
        Architecture == "bert" ? set : Preprocessor.Apply(set, Architecture == "vit" ? NumChannels : set.Images.shape.Length == 4 ? (int)set.Images.shape[1] : 1, what);

    /// <summary>BERT: the vocab.txt tokens beside config.json (null when the folder has none); written back with the tokenizer files.</summary>
    public IReadOnlyList<string>? Vocabulary { get; init; }

    /// <summary>One head per task, in order. A source model has one; a merged model has one per source; a pre-trained backbone none.</summary>
    public List<HeadInfo> Heads { get; init; } = [];

    /// <summary>
    /// config.json describes no head (Hugging Face's default labels, or a backbone): <see cref="Model.Load"/> makes one
    /// head of default labels when the weights hold a classifier, none otherwise.
    /// </summary>
    public bool LabelsFromWeights { get; init; }

    /// <summary>Hugging Face's default label names: LABEL_0 .. LABEL_{n-1}.</summary>
    public static string[] DefaultLabels(long count) => Enumerable.Range(0, (int)count).Select(i => $"LABEL_{i}").ToArray();

    /// <summary>Provenance written under "fsmerge.training" (seed, hyper-parameters, data counts, accuracy).</summary>
    public JsonObject Training { get; init; } = new();

    public IArchitecture Arch => Architectures.Get(Architecture);

    /// <summary>Checks that images [n, C, H, W] (token ids [n, L] for BERT) fit this model's input; <paramref name="what"/> names their source.</summary>
    public void CheckImages(long[] shape, string what)
    {
        if (Architecture == "bert" || shape.Length == 2)
        {
            if (Architecture != "bert" || shape.Length != 2)
                throw new FsMergeException(Architecture == "bert"
                    ? $"{what}: images [{string.Join(", ", shape)}], but a BERT model reads token ids (a text dataset)"
                    : $"{what}: token ids (a text dataset), but a {Architecture} model reads images");
            if (shape[1] > MaxPositionEmbeddings)
                throw new FsMergeException($"{what}: sequences of {shape[1]} tokens, but the model has max_position_embeddings {MaxPositionEmbeddings}");
            return;
        }
        bool fits = Architecture == "mlp"
            ? shape[1] * shape[2] * shape[3] == InputSize
            : shape[1] == NumChannels && shape[2] == ImageSize && shape[3] == ImageSize;
        if (!fits)
            throw new FsMergeException(Architecture == "mlp"
                ? $"{what}: images of {shape[1]}x{shape[2]}x{shape[3]} = {shape[1] * shape[2] * shape[3]} values, but the model expects input_size {InputSize}"
                : $"{what}: images of {shape[1]} channel(s) {shape[2]}x{shape[3]}, but the model expects {NumChannels} channel(s) {ImageSize}x{ImageSize}");
    }

    public static ModelConfig Read(string path)
    {
        if (!File.Exists(path)) throw new FsMergeException($"{path}: file not found (expected a model config.json)");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                   ?? throw new FsMergeException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new FsMergeException($"{path}: invalid JSON ({e.Message.Split('\n')[0]})");
        }
        return FromJson(root, path);
    }

    public static ModelConfig FromJson(JsonObject root, string source)
    {
        string modelType = Str(root, "model_type", source);
        string arch = modelType switch
        {
            "vit" => "vit",
            "fsmerge-mlp" => "mlp",
            "bert" => "bert",
            _ => throw new FsMergeException($"{source}: model_type '{modelType}' is not supported (expected 'vit', 'bert' or 'fsmerge-mlp')"),
        };
        var fs = root["fsmerge"] as JsonObject;
        var heads = new List<HeadInfo>();
        if (fs?["heads"] is JsonArray headArray)
        {
            foreach (var h in headArray)
            {
                var labels = (h?["labels"] as JsonArray)?.Select(l => l?.GetValue<string>() ?? "").ToArray()
                             ?? throw new FsMergeException($"{source}: fsmerge.heads[].labels missing");
                heads.Add(ReadHead(h!.AsObject(), labels, source));
            }
        }
        else if (root["id2label"] is JsonObject id2label)
        {
            var labels = new string[id2label.Count];
            foreach (var (k, v) in id2label)
            {
                if (!int.TryParse(k, out int i) || i < 0 || i >= labels.Length)
                    throw new FsMergeException($"{source}: id2label key '{k}' is not an index 0..{labels.Length - 1}");
                labels[i] = v?.GetValue<string>() ?? k;
            }
            heads.Add(new HeadInfo(fs?["task"]?.GetValue<string>() ?? HeadInfo.Unrecorded, labels));
        }
        else if (root["label2id"] is JsonObject label2id)
        {
            var labels = new string[label2id.Count];
            foreach (var (name, v) in label2id)
            {
                if (v is not JsonValue value || !value.TryGetValue<int>(out int i) || i < 0 || i >= labels.Length || labels[i] != null)
                    throw new FsMergeException($"{source}: label2id['{name}'] is not a distinct index 0..{labels.Length - 1}");
                labels[i] = name;
            }
            heads.Add(new HeadInfo(fs?["task"]?.GetValue<string>() ?? HeadInfo.Unrecorded, labels));
        }
        // save_pretrained omits id2label when it is the default LABEL_0..LABEL_{n-1}: num_labels, else the stored
        // classifier's shape (Model.Load), says how many; a checkpoint without a classifier is a backbone.
        else if (root["num_labels"] is JsonValue count)
            heads.Add(new HeadInfo(fs?["task"]?.GetValue<string>() ?? HeadInfo.Unrecorded,
                DefaultLabels(count.TryGetValue<int>(out int n) && n > 0 ? n : throw new FsMergeException($"{source}: field 'num_labels' is not a positive integer"))));
        bool labelsFromWeights = heads.Count == 0 && fs?["heads"] is not JsonArray;

        var training = (fs?["training"] as JsonObject)?.DeepClone().AsObject() ?? new JsonObject();
        if (arch == "mlp")
            return new ModelConfig
            {
                Architecture = arch,
                InputSize = Int(root, "input_size", source),
                HiddenSizes = (root["hidden_sizes"] as JsonArray)?.Select(n => n!.GetValue<int>()).ToArray()
                              ?? throw new FsMergeException($"{source}: field 'hidden_sizes' missing (expected a list of widths)"),
                Heads = heads,
                LabelsFromWeights = labelsFromWeights,
                Training = training,
            };

        // The fields every transformer encoder shares (ViTConfig, BertConfig).
        // A decoder (causal mask, cross-attention) computes another function than the encoders implemented here.
        foreach (var flag in new[] { "is_decoder", "add_cross_attention" })
            if (root[flag] is JsonValue f && f.TryGetValue<bool>(out var set) && set)
                throw new FsMergeException($"{source}: {flag} true is not supported (FsMerge reads bidirectional encoders)");
        if (root["hidden_act"] is JsonValue act && act.TryGetValue<string>(out var activation) && activation != "gelu")
            throw new FsMergeException($"{source}: hidden_act '{activation}' is not supported (expected 'gelu')");
        var encoder = new ModelConfig
        {
            Architecture = arch,
            HiddenSize = Int(root, "hidden_size", source),
            NumHiddenLayers = Int(root, "num_hidden_layers", source),
            NumAttentionHeads = Int(root, "num_attention_heads", source),
            IntermediateSize = Int(root, "intermediate_size", source),
            LayerNormEps = root["layer_norm_eps"]?.GetValue<double>() ?? 1e-12,
            Heads = heads,
            LabelsFromWeights = labelsFromWeights,
            Training = training,
        };
        if (arch == "bert")
        {
            var bert = encoder with
            {
                VocabSize = Int(root, "vocab_size", source),
                MaxPositionEmbeddings = Int(root, "max_position_embeddings", source),
                TypeVocabSize = Int(root, "type_vocab_size", source),
                PadTokenId = root["pad_token_id"] is JsonValue pad && pad.TryGetValue<int>(out int p) ? p
                    : throw new FsMergeException($"{source}: field 'pad_token_id' missing or not an integer"),
            };
            if (root["position_embedding_type"] is JsonValue position && position.TryGetValue<string>(out var type) && type != "absolute")
                throw new FsMergeException($"{source}: position_embedding_type '{type}' is not supported (expected 'absolute')");
            try { Bert.Validate(bert); }
            catch (FsMergeException e) { throw new FsMergeException($"{source}: {e.Message}"); }
            return bert;
        }
        if (root["qkv_bias"] is JsonValue bias && bias.TryGetValue<bool>(out var withBias) && !withBias)
            throw new FsMergeException($"{source}: qkv_bias false is not supported (expected true, ViT's default)");
        return encoder with
        {
            ImageSize = Square(root, "image_size", source),
            NumChannels = Int(root, "num_channels", source),
            PatchSize = Square(root, "patch_size", source),
        };
    }


    /// <summary>The Hugging Face config fields every transformer encoder shares (ViTConfig, BertConfig); no dropout.</summary>
    void WriteEncoderFields(JsonObject root, string modelType, string architecture)
    {
        root["model_type"] = modelType;
        root["architectures"] = new JsonArray(architecture);
        root["hidden_size"] = HiddenSize;
        root["num_hidden_layers"] = NumHiddenLayers;
        root["num_attention_heads"] = NumAttentionHeads;
        root["intermediate_size"] = IntermediateSize;
        root["hidden_act"] = "gelu";
        root["hidden_dropout_prob"] = 0.0;
        root["attention_probs_dropout_prob"] = 0.0;
    }
    /// <summary>
    /// The "architectures" entry: Hugging Face's classifier class for one linear head, its backbone class for
    /// several heads or none. A cosine head gets a name of its own, which no Hugging Face class claims, so that
    /// nothing loads it as a linear classifier and computes another function (the model card says how to load it).
    /// </summary>
    string ClassName(string family, string linearClassifier) =>
        Heads.Count != 1 ? $"{family}Model" : Heads[0].Kind == HeadKind.Cosine ? $"FsMerge{family}ForCosineClassification" : linearClassifier;

    public JsonObject ToJson()
    {
        var root = new JsonObject();
        if (Architecture == "mlp")
        {
            root["model_type"] = "fsmerge-mlp";
            root["input_size"] = InputSize;
            root["hidden_sizes"] = new JsonArray(HiddenSizes.Select(h => (JsonNode)h).ToArray());
        }
        else if (Architecture == "bert")
        {
            WriteEncoderFields(root, "bert", ClassName("Bert", "BertForSequenceClassification"));
            root["vocab_size"] = VocabSize;
            root["max_position_embeddings"] = MaxPositionEmbeddings;
            root["type_vocab_size"] = TypeVocabSize;
            root["initializer_range"] = 0.02;
            root["layer_norm_eps"] = LayerNormEps;
            root["pad_token_id"] = PadTokenId;
            root["position_embedding_type"] = "absolute";
        }
        else
        {
            WriteEncoderFields(root, "vit", ClassName("ViT", "ViTForImageClassification"));
            root["image_size"] = ImageSize;
            root["num_channels"] = NumChannels;
            root["patch_size"] = PatchSize;
            root["layer_norm_eps"] = LayerNormEps;
            root["qkv_bias"] = true;
        }
        if (Heads.Count == 1)
        {
            var id2label = new JsonObject();
            var label2id = new JsonObject();
            for (int i = 0; i < Heads[0].Labels.Length; i++)
            {
                id2label[i.ToString()] = Heads[0].Labels[i];
                label2id[Heads[0].Labels[i]] = i;
            }
            root["id2label"] = id2label;
            root["label2id"] = label2id;
        }
        root["fsmerge"] = new JsonObject
        {
            ["heads"] = new JsonArray(Heads.Select(h => (JsonNode)WriteHead(h)).ToArray()),
            ["training"] = Training.DeepClone(),
        };
        return root;
    }

    /// <summary>One fsmerge.heads[] entry: a linear head unless "kind" says otherwise.</summary>
    static HeadInfo ReadHead(JsonObject h, string[] labels, string source)
    {
        var head = new HeadInfo(h["task"]?.GetValue<string>() ?? HeadInfo.Unrecorded, labels);
        if (h["kind"] is null) return head;
        var kind = HeadInfo.ParseKind(h["kind"] is JsonValue k && k.TryGetValue<string>(out var text) ? text : "", $"{source}: fsmerge.heads[].kind");
        if (kind == HeadKind.Linear) return head;
        double scale = h["logit_scale"] is JsonValue v && v.TryGetValue<double>(out var d) && d > 0 && double.IsFinite(d) ? d
            : throw new FsMergeException($"{source}: fsmerge.heads[].logit_scale missing or not a positive number (a cosine head needs it)");
        return head with { Kind = kind, LogitScale = scale, EmbedWidth = Int(h, "embed_width", $"{source}: fsmerge.heads[]") };
    }

    static JsonObject WriteHead(HeadInfo h)
    {
        var entry = new JsonObject
        {
            ["task"] = h.Task,
            ["labels"] = new JsonArray(h.Labels.Select(l => (JsonNode)l).ToArray()),
        };
        if (h.Kind == HeadKind.Cosine)
        {
            entry["kind"] = "cosine";
            entry["logit_scale"] = h.LogitScale;
            entry["embed_width"] = h.EmbedWidth;
        }
        return entry;
    }

    public void Write(string path) =>
        AtomicFile.WriteAllText(path, ToJson().ToJsonString(JsonFormat.Indented));

    static string Str(JsonObject o, string key, string source) =>
        o[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s
            : throw new FsMergeException($"{source}: field '{key}' missing or not a string");

    /// <summary>A ViTConfig size: one integer, or [height, width] as Hugging Face also accepts, which must be square here.</summary>
    static int Square(JsonObject o, string key, string source)
    {
        if (o[key] is not JsonArray pair) return Int(o, key, source);
        int[] sides = pair.Count == 2 && pair.All(v => v is JsonValue x && x.TryGetValue<int>(out int i) && i > 0)
            ? pair.Select(v => v!.GetValue<int>()).ToArray()
            : throw new FsMergeException($"{source}: field '{key}' must be a positive integer or [height, width]");
        if (sides[0] != sides[1])
            throw new FsMergeException($"{source}: field '{key}' is [{sides[0]}, {sides[1]}]; only square sizes are supported");
        return sides[0];
    }

    static int Int(JsonObject o, string key, string source) =>
        o[key] is JsonValue v && v.TryGetValue<int>(out var i) && i > 0 ? i
            : throw new FsMergeException($"{source}: field '{key}' missing or not a positive integer");
}
