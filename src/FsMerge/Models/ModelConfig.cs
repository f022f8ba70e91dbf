using System.Globalization;
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

    /// <summary>BERT: how texts become token ids (tokenizer_config.json beside config.json).</summary>
    public Data.TokenizerSettings Tokenizer { get; init; } = Data.TokenizerSettings.FsMerge;

    /// <summary>BERT: the tokens per sequence: the tokenizer's model_max_length, at most max_position_embeddings.</summary>
    public int SequenceLength => Math.Min(Tokenizer.MaxLength ?? MaxPositionEmbeddings, MaxPositionEmbeddings);

    /// <summary>BERT: whether texts become the same ids for both (vocabulary, tokenizer settings, sequence length).</summary>
    public bool TokenizesLike(ModelConfig other) =>
        (Vocabulary is null || other.Vocabulary is null || Vocabulary.SequenceEqual(other.Vocabulary))
        && Tokenizer with { MaxLength = null } == other.Tokenizer with { MaxLength = null } && SequenceLength == other.SequenceLength;

    /// <summary>BERT: the tokenization, in tokenizer_config.json's words, for messages.</summary>
    public string DescribeTokenizer() =>
        $"do_lower_case {Tokenizer.LowerCase}, strip_accents {Tokenizer.StripsAccents}, tokenize_chinese_chars {Tokenizer.ChineseChars}, {SequenceLength} tokens".ToLowerInvariant();

    /// <summary>This config tokenizing to <paramref name="length"/> tokens (--max-length); more than the model has positions for is an error.</summary>
    public ModelConfig WithMaxLength(int length, string what) =>
        length > MaxPositionEmbeddings ? throw new FsMergeException($"{what}: --max-length {length} exceeds the model's max_position_embeddings {MaxPositionEmbeddings}")
        : length < 3 ? throw new FsMergeException($"{what}: --max-length {length}: expected at least 3 ([CLS] and two [SEP] of a sentence pair)")
        : this with { Tokenizer = Tokenizer with { MaxLength = length } };

    /// <summary>
    /// This model's input from a set of images in [0, 1], or of texts (tokenized with <see cref="Tokenizer"/> to
    /// <see cref="SequenceLength"/>); takes over <paramref name="set"/> (see <see cref="ImageProcessor.Apply"/>).
    /// </summary>
    public Data.ImageSet Prepare(Data.ImageSet set, string what) =>
        Architecture == "bert" ? set.Texts is { } texts ? texts.Prepare(set, this, what) : set : Preprocessor.Apply(set, Architecture == "vit" ? NumChannels : set.Images.shape.Length == 4 ? (int)set.Images.shape[1] : 1, what);

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

    /// <summary>Bounds on config.json's counts and widths: far above any model FsMerge trains on a CPU, and small
    /// enough that listing the weights a config implies stays cheap (a 300,000-layer config would take gigabytes).</summary>
    public const int MaxLayers = 256, MaxWidth = 1 << 18, MaxVocabulary = 1 << 21, MaxPositions = 1 << 16, MaxImageSize = 1 << 14,
        MaxChannels = 64, MaxClasses = 1 << 20, MaxHeads = 1 << 10, MaxConfigBytes = 16 << 20;

    public static ModelConfig Read(string path) =>
        FromJson(JsonInput.ReadObject(path, "a model config.json", MaxConfigBytes), path);

    public static ModelConfig FromJson(JsonObject root, string source)
    {
        string modelType = JsonInput.String(root["model_type"], source, "model_type");
        string arch = modelType switch
        {
            "vit" => "vit",
            "fsmerge-mlp" => "mlp",
            "bert" => "bert",
            _ => throw new FsMergeException($"{source}: model_type '{modelType}' is not supported (expected 'vit', 'bert' or 'fsmerge-mlp')"),
        };
        var fs = JsonInput.Object(root["fsmerge"], source, "fsmerge");
        var heads = new List<HeadInfo>();
        string Task() => JsonInput.String(fs?["task"], source, "fsmerge.task", HeadInfo.Unrecorded);
        var headArray = JsonInput.Array(fs?["heads"], source, "fsmerge.heads", MaxHeads);
        if (headArray != null)
        {
            for (int i = 0; i < headArray.Count; i++)
            {
                string field = $"fsmerge.heads[{i}]";
                var h = JsonInput.Object(headArray[i], source, field) ?? throw new FsMergeException($"{source}: field '{field}' is null, expected an object");
                var labelArray = JsonInput.Array(h["labels"], source, $"{field}.labels", MaxClasses)
                                 ?? throw new FsMergeException($"{source}: field '{field}.labels' missing (expected the class names)");
                var labels = labelArray.Select((l, k) => JsonInput.String(l, source, $"{field}.labels[{k}]")).ToArray();
                heads.Add(ReadHead(h, labels, source, field));
            }
        }
        else if (JsonInput.Object(root["id2label"], source, "id2label") is { } id2label)
        {
            if (id2label.Count > MaxClasses) throw new FsMergeException($"{source}: id2label has {id2label.Count} classes, expected at most {MaxClasses}");
            var labels = new string[id2label.Count];
            foreach (var (k, v) in id2label)
            {
                if (!int.TryParse(k, NumberStyles.None, CultureInfo.InvariantCulture, out int i) || i >= labels.Length || labels[i] != null)
                    throw new FsMergeException($"{source}: id2label key '{k}' is not a distinct index 0..{labels.Length - 1}");
                labels[i] = JsonInput.String(v, source, $"id2label.{k}", k);
            }
            heads.Add(new HeadInfo(Task(), labels));
        }
        else if (JsonInput.Object(root["label2id"], source, "label2id") is { } label2id)
        {
            if (label2id.Count > MaxClasses) throw new FsMergeException($"{source}: label2id has {label2id.Count} classes, expected at most {MaxClasses}");
            var labels = new string[label2id.Count];
            foreach (var (name, v) in label2id)
            {
                int i = JsonInput.Int(v, source, $"label2id.{name}", 0, labels.Length - 1);
                if (labels[i] != null)
                    throw new FsMergeException($"{source}: label2id['{name}'] is {i}, already the index of '{labels[i]}'; expected distinct indices");
                labels[i] = name;
            }
            heads.Add(new HeadInfo(Task(), labels));
        }
        // save_pretrained omits id2label when it is the default LABEL_0..LABEL_{n-1}: num_labels, else the stored
        // classifier's shape (Model.Load), says how many; a checkpoint without a classifier is a backbone.
        else if (root["num_labels"] is { } count)
            heads.Add(new HeadInfo(Task(), DefaultLabels(JsonInput.Int(count, source, "num_labels", 1, MaxClasses))));
        bool labelsFromWeights = heads.Count == 0 && headArray == null;

        var training = JsonInput.Object(fs?["training"], source, "fsmerge.training")?.DeepClone().AsObject() ?? new JsonObject();
        int Int(string key, int max) => JsonInput.Int(root[key], source, key, 1, max);
        if (arch == "mlp")
        {
            var hidden = JsonInput.Array(root["hidden_sizes"], source, "hidden_sizes", MaxLayers)
                         ?? throw new FsMergeException($"{source}: field 'hidden_sizes' missing (expected a list of widths)");
            if (hidden.Count == 0) throw new FsMergeException($"{source}: field 'hidden_sizes' is empty, expected at least one width");
            return new ModelConfig
            {
                Architecture = arch,
                InputSize = Int("input_size", MaxWidth * 64),
                HiddenSizes = hidden.Select((n, i) => JsonInput.Int(n, source, $"hidden_sizes[{i}]", 1, MaxWidth)).ToArray(),
                Heads = heads,
                LabelsFromWeights = labelsFromWeights,
                Training = training,
            };
        }

        // The fields every transformer encoder shares (ViTConfig, BertConfig).
        // A decoder (causal mask, cross-attention) computes another function than the encoders implemented here.
        foreach (var flag in new[] { "is_decoder", "add_cross_attention" })
            if (JsonInput.Bool(root[flag], source, flag, false))
                throw new FsMergeException($"{source}: {flag} true is not supported (FsMerge reads bidirectional encoders)");
        var activation = JsonInput.String(root["hidden_act"], source, "hidden_act", "gelu");
        if (activation != "gelu")
            throw new FsMergeException($"{source}: hidden_act '{activation}' is not supported (expected 'gelu')");
        var encoder = new ModelConfig
        {
            Architecture = arch,
            HiddenSize = Int("hidden_size", MaxWidth),
            NumHiddenLayers = Int("num_hidden_layers", MaxLayers),
            NumAttentionHeads = Int("num_attention_heads", MaxWidth),
            IntermediateSize = Int("intermediate_size", MaxWidth),
            LayerNormEps = JsonInput.Double(root["layer_norm_eps"], source, "layer_norm_eps", 0, 1e-12),
            Heads = heads,
            LabelsFromWeights = labelsFromWeights,
            Training = training,
        };
        ModelConfig config;
        if (arch == "bert")
        {
            config = encoder with
            {
                VocabSize = Int("vocab_size", MaxVocabulary),
                MaxPositionEmbeddings = Int("max_position_embeddings", MaxPositions),
                TypeVocabSize = Int("type_vocab_size", MaxPositions),
                PadTokenId = JsonInput.Int(root["pad_token_id"], source, "pad_token_id", 0, MaxVocabulary),
            };
            var position = JsonInput.String(root["position_embedding_type"], source, "position_embedding_type", "absolute");
            if (position != "absolute")
                throw new FsMergeException($"{source}: position_embedding_type '{position}' is not supported (expected 'absolute')");
        }
        else
        {
            if (!JsonInput.Bool(root["qkv_bias"], source, "qkv_bias", true))
                throw new FsMergeException($"{source}: qkv_bias false is not supported (expected true, ViT's default)");
            // A ViTConfig size: one integer, or [height, width] as Hugging Face also accepts, which must be square here.
            int Square(string key)
            {
                if (root[key] is not JsonArray pair) return Int(key, MaxImageSize);
                if (pair.Count != 2) throw new FsMergeException($"{source}: field '{key}' must be a positive integer or [height, width] (it has {pair.Count} entries)");
                int height = JsonInput.Int(pair[0], source, $"{key}[0]", 1, MaxImageSize), width = JsonInput.Int(pair[1], source, $"{key}[1]", 1, MaxImageSize);
                return height == width ? height
                    : throw new FsMergeException($"{source}: field '{key}' is [{height}, {width}]; only square sizes are supported");
            }
            config = encoder with
            {
                ImageSize = Square("image_size"),
                NumChannels = Int("num_channels", MaxChannels),
                PatchSize = Square("patch_size"),
            };
        }
        try
        {
            if (arch == "bert") Bert.Validate(config);
            else Vit.Patches(config);
        }
        catch (FsMergeException e) { throw new FsMergeException($"{source}: {e.Message}"); }
        return config;
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

    /// <summary>One fsmerge.heads[] entry (<paramref name="field"/>): a linear head unless "kind" says otherwise.</summary>
    static HeadInfo ReadHead(JsonObject h, string[] labels, string source, string field)
    {
        var head = new HeadInfo(JsonInput.String(h["task"], source, $"{field}.task", HeadInfo.Unrecorded), labels);
        if (h["kind"] is null) return head;
        var kind = HeadInfo.ParseKind(JsonInput.String(h["kind"], source, $"{field}.kind"), $"{source}: fsmerge.heads[].kind");
        if (kind == HeadKind.Linear) return head;
        if (h["logit_scale"] is null)
            throw new FsMergeException($"{source}: field '{field}.logit_scale' missing (a cosine head needs a positive number)");
        return head with
        {
            Kind = kind,
            LogitScale = JsonInput.Double(h["logit_scale"], source, $"{field}.logit_scale", 0, 0),
            EmbedWidth = JsonInput.Int(h["embed_width"], source, $"{field}.embed_width", 1, MaxWidth),
        };
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
}
