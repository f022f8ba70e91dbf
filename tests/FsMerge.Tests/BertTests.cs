using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Models;
using Xunit;
using static TorchSharp.torch;

namespace FsMerge.Tests;

/// <summary>WordPiece against hand-checked examples (the same splits Hugging Face's BertTokenizer gives for this vocabulary).</summary>
public class WordPieceTests
{
    static readonly string[] Tokens =
    [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello", "world", "!", ",", "cat", "##s", "caf", "##é",
        "the", "##e", "a", "##b",
    ];

    static WordPiece Vocab => new(Tokens);

    [Theory]
    [InlineData("UNaffable", "un ##aff ##able")]                 // BERT's README example
    [InlineData("Hello, World!", "hello , world !")]             // punctuation is its own word, lower-cased
    [InlineData("  cats\tthe\ncat ", "cat ##s the cat")]         // any whitespace separates words
    [InlineData("café", "caf ##é")]                              // accents kept (strip_accents=False)
    [InlineData("Cafe", "caf ##e")]
    [InlineData("catz hello", "[UNK] hello")]                    // no full split: the whole word is [UNK]
    [InlineData("ab", "a ##b")]
    [InlineData("abab", "[UNK]")]                                // "a", "##b", then no piece for "ab…": the whole word, not a partial split
    public void Tokenizes_hand_checked_examples(string text, string expected)
    {
        Assert.Equal(expected, string.Join(" ", Vocab.Tokenize(text)));
    }

    [Fact]
    public void Encodes_cls_pieces_sep_then_padding_and_truncates_keeping_sep()
    {
        var v = Vocab;
        Assert.Equal(new long[] { 2, 8, 9, 10, 3, 0, 0 }, v.Encode("hello world!", 7));
        Assert.Equal(new long[] { 2, 5, 6, 3 }, v.Encode("unaffable", 4));
        Assert.Equal(new long[] { 2, 3 }, v.Encode("", 2));
        Assert.Equal(0, v.PadId);
        Assert.Equal(4, v.MaskId);
    }

    [Fact]
    public void Reads_a_standard_vocab_txt_and_rejects_bad_ones()
    {
        var dir = Directory.CreateTempSubdirectory("fsmerge-vocab-").FullName;
        try
        {
            var path = Path.Combine(dir, "vocab.txt");
            // Hugging Face order: [PAD] first, specials elsewhere; ids are line numbers.
            File.WriteAllText(path, "[PAD]\n[unused0]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n##s\n");
            var v = WordPiece.Read(path);
            Assert.Equal(new long[] { 3, 6, 7, 4 }, v.Encode("hellos", 4));
            File.WriteAllText(path, "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n");
            Assert.Contains("[MASK] missing", Assert.Throws<FsMergeException>(() => WordPiece.Read(path)).Message);
            File.WriteAllText(path, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nhello\n");
            Assert.Contains("appears twice (lines 6 and 7)", Assert.Throws<FsMergeException>(() => WordPiece.Read(path)).Message);
            Assert.Contains("file not found", Assert.Throws<FsMergeException>(() => WordPiece.Read(Path.Combine(dir, "none.txt"))).Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_built_vocabulary_is_deterministic_and_covers_its_corpus()
    {
        string[] corpus = ["The cat sat on the mat.", "Cats and hats!", "Der Hund läuft.", "the the the cat"];
        var a = WordPiece.Build(corpus, 60, minCount: 1);
        var b = WordPiece.Build(corpus.Reverse(), 60, minCount: 1);
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.Equal(60, a.Count);
        Assert.Equal(TokenizerSettings.FsMerge.Specials, a.Tokens.Take(5));
        foreach (var text in corpus) Assert.DoesNotContain("[UNK]", a.Tokenize(text));
        Assert.Contains("the", a.Tokens);   // the most frequent word is a token of its own
        Assert.Throws<FsMergeException>(() => WordPiece.Build(corpus, 10, minCount: 1));
    }
}

/// <summary>Text folders (user data), the provisioned text datasets, and BERT through the command line.</summary>
[Collection("torch")]
public class TextDataTests
{
    static string MakeFolder(string root, Dictionary<string, string> files)
    {
        foreach (var (name, text) in files)
        {
            var path = Path.Combine(root, "mytext", name);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, text);
        }
        return root;
    }

    [Fact]
    public void A_text_folder_loads_as_token_ids_with_classes_in_file_name_order()
    {
        var root = Directory.CreateTempSubdirectory("fsmerge-text-").FullName;
        try
        {
            MakeFolder(root, new()
            {
                ["vocab.txt"] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\ncat\n",
                ["train/zeta.txt"] = string.Concat(Enumerable.Repeat("hello world\n", 12)),
                ["train/alpha.txt"] = "cat\n\ncat cat\n",
                ["test/zeta.txt"] = "world\n",
                ["test/alpha.txt"] = "dog\n",
            });
            using var splits = TaskData.Load(TaskSpec.Parse("mytext:1,0"), root);
            Assert.Equal(new[] { "zeta", "alpha" }, splits.Test.LabelNames);
            Assert.Equal(ScalarType.Int64, splits.Train.Images.dtype);
            Assert.Equal(new long[] { splits.Train.Count, TextFolder.SequenceLength }, splits.Train.Images.shape);
            Assert.Equal(14, splits.Train.Count + splits.Validation.Count);   // the blank line is skipped
            // Test keeps file order (alpha's "dog", then zeta's "world"); labels follow the task's class list.
            Assert.Equal(new long[] { 2, 1, 3, 0 }, splits.Test.Images[0].narrow(0, 0, 4).data<long>().ToArray()); // "dog" is [UNK]
            Assert.Equal(new long[] { 2, 6, 3, 0 }, splits.Test.Images[1].narrow(0, 0, 4).data<long>().ToArray());
            Assert.Equal(new long[] { 1, 0 }, splits.Test.Labels);

            File.Delete(Path.Combine(root, "mytext", "test", "alpha.txt"));
            var e = Assert.Throws<FsMergeException>(() => TaskData.Load(TaskSpec.Parse("mytext"), root));
            Assert.Contains("differ from train/", e.Message);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Provisioned_lang_and_fortunes_share_a_vocabulary_and_split_deterministically()
    {
        var dir = DataDirectory.Resolve(null);
        DataProvisioner.Provision(dir, _ => { });
        Assert.Equal(File.ReadAllText(Path.Combine(dir, "lang", "vocab.txt")), File.ReadAllText(Path.Combine(dir, "fortunes", "vocab.txt")));
        using var lang = TaskData.Load(TaskSpec.Parse("lang"), dir);
        Assert.Equal(new[] { "english", "french", "german", "italian", "spanish" }, lang.Test.LabelNames);
        Assert.Equal(5 * TextDatasets.WordsPerLanguage, lang.Train.Count + lang.Validation.Count + lang.Test.Count);
        Assert.Equal(5 * TextDatasets.WordsPerLanguage / 5, lang.Test.Count);
        Assert.True(lang.Train.Images.select(1, 0).eq(2).all().item<bool>(), "every sequence starts with [CLS]");
        using var fortunes = TaskData.Load(TaskSpec.Parse("fortunes:0-1"), dir);
        Assert.Equal(new[] { "computers", "definitions" }, fortunes.Train.LabelNames);
        Assert.True(fortunes.Test.Count > 300);
    }

    [Fact]
    public void Bert_pretrain_train_merge_and_eval_run_from_the_command_line()
    {
        var root = Directory.CreateTempSubdirectory("fsmerge-bert-cli-").FullName;
        try
        {
            DataProvisioner.Provision(DataDirectory.Resolve(null), _ => { });
            string[] tiny = ["--width", "16", "--depth", "1", "--heads", "2", "--mlp-width", "32", "--quiet", "--threads", "1"];
            var pre = Path.Combine(root, "pre");
            var (code, _, err) = CliTests.Run(["pretrain", "--corpus", "lang,fortunes", "--seed", "3", "--epochs", "1", "--out", pre, .. tiny]);
            Assert.True(code == 0, err);
            Assert.Equal("bert", JsonNode.Parse(File.ReadAllText(Path.Combine(pre, "config.json")))!["model_type"]!.GetValue<string>());
            Assert.True(File.Exists(Path.Combine(pre, "vocab.txt")));

            var a = Path.Combine(root, "a");
            var b = Path.Combine(root, "b");
            (code, _, err) = CliTests.Run(["train", "--init", pre, "--task", "lang:0-1", "--epochs", "1", "--out", a, "--quiet", "--threads", "1"]);
            Assert.True(code == 0, err);
            (code, _, err) = CliTests.Run(["train", "--arch", "bert", "--task", "fortunes:0-1", "--seed", "4", "--epochs", "1", "--out", b, .. tiny]);
            Assert.True(code == 0, err);
            using (var model = Model.Load(a, CPU)) Assert.Equal("lang:0-1", model.Config.Heads[0].Task);

            var merged = Path.Combine(root, "m");
            (code, var output, err) = CliTests.Run(["merge", "--method", "fs-merge", "--model", a, "--model", b, "--out", merged, "--type", "diagonal-low-rank",
                "--rank", "4", "--targets", "own", "--optimizer", "adamw", "--lr", "0.001", "--epochs", "2", "--batch", "32", "--samples", "32",
                "--held-out", "16", "--early-stop", "1", "--quiet", "--threads", "1", "--eval"]);
            Assert.True(code == 0, err);
            Assert.Contains("joint", output);
            // Every folder states its tokenizer as Hugging Face's BertTokenizer reads it: accents kept, lower case.
            foreach (var dir in new[] { merged }.Concat(Directory.GetDirectories(Path.Combine(merged, "tasks"))))
            {
                Assert.Equal(File.ReadAllText(Path.Combine(a, "vocab.txt")), File.ReadAllText(Path.Combine(dir, "vocab.txt")));
                var tokenizer = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, TokenizerFiles.ConfigFile)))!;
                Assert.False((bool)tokenizer["strip_accents"]!);
                Assert.True((bool)tokenizer["do_lower_case"]!);
                Assert.Equal("[PAD]", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, TokenizerFiles.SpecialTokensFile)))!["pad_token"]);
            }
            (code, _, err) = CliTests.Run(["eval", "--model", Path.Combine(merged, "tasks", "0-lang-0-1"), "--quiet"]);
            Assert.True(code == 0, err);
            var record = JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "merge.json")))!;
            Assert.NotNull(record["details"]!["early_stopping"]);
            // The report and the card say what a BERT's samples and inputs are: sequences of token ids, not images.
            foreach (var file in new[] { "report.md", "README.md" })
            {
                var text = File.ReadAllText(Path.Combine(merged, file));
                Assert.Contains("sequences", text);
                Assert.DoesNotContain("images", text);
            }
            Assert.Contains("int64 token ids", File.ReadAllText(Path.Combine(merged, "README.md")));

            // The dry run describes a BERT and its sequences, with the architecture's defaults.
            (code, output, err) = CliTests.Run(["merge", "--method", "fs-merge", "--model", a, "--model", b, "--dry-run", "--samples", "8", "--threads", "1"]);
            Assert.True(code == 0, err);
            Assert.Contains("bert vocab", output);
            Assert.Contains("8 sequences of", output);
            Assert.Matches(@"--weight-decay +0 +default for bert", output);

            // b as an older transformers saved it: F16, LayerNorm gamma/beta, a position_ids buffer, no fsmerge section.
            var old = Path.Combine(root, "old");
            using (var model = Model.Load(b, CPU))
                HuggingFaceTests.WriteHf(model, old, _ => { }, n => n.EndsWith("LayerNorm.weight") ? n[..^6] + "gamma" : n.EndsWith("LayerNorm.bias") ? n[..^4] + "beta" : n,
                    model.Weights.Where(kv => !kv.Key.Contains("LayerNorm")).ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float16))
                        .Append(KeyValuePair.Create("bert.embeddings.position_ids", arange(32).unsqueeze(0))).ToDictionary());
            File.Copy(Path.Combine(b, "vocab.txt"), Path.Combine(old, "vocab.txt"));
            (code, _, err) = CliTests.Run(["eval", "--model", old, "--task", "fortunes:0-1", "--json", "--quiet"]);
            Assert.True(code == 0, err);
            using (var f16 = Model.Load(b, CPU))
            {
                foreach (var w in f16.Weights.Where(kv => !kv.Key.Contains("LayerNorm"))) w.Value.copy_(w.Value.to(ScalarType.Float16).to(ScalarType.Float32));
                using var reread = Model.Load(old, CPU);
                var ids = BertOracleTests.Ids(1).clamp(0, reread.Config.VocabSize - 1);
                Assert.True(f16.Logits(f16.Features(ids), 0).equal(reread.Logits(reread.Features(ids), 0)).all().item<bool>());
            }
            (code, _, err) = CliTests.Run(["merge", "--method", "average", "--model", a, "--model", old, "--task", "lang:0-1", "--task", "fortunes:0-1",
                "--samples", "8", "--out", Path.Combine(root, "old-merged"), "--quiet", "--threads", "1"]);
            Assert.True(code == 0, err);
            (code, _, err) = CliTests.Run(["train", "--init", old, "--task", "fortunes:0-1", "--epochs", "1", "--out", Path.Combine(root, "old-tuned"), "--quiet", "--threads", "1"]);
            Assert.True(code == 0, err);

            // Bad inputs: one error line, non-zero exit.
            (code, _, err) = CliTests.Run(["train", "--arch", "bert", "--task", "mnist:0-1", "--out", Path.Combine(root, "x"), "--quiet"]);
            Assert.NotEqual(0, code);
            Assert.StartsWith("error: task mnist:0-1: --arch bert reads text", err);
            (code, _, err) = CliTests.Run(["eval", "--model", b, "--max-length", "33", "--quiet"]);
            Assert.Equal(2, code);
            Assert.Equal($"error: {b}: --max-length 33 exceeds the model's max_position_embeddings 32", err.Trim());
            File.WriteAllText(Path.Combine(b, TokenizerFiles.ConfigFile), "{\"tokenizer_class\": \"RobertaTokenizer\"}");
            (code, _, err) = CliTests.Run(["eval", "--model", b, "--quiet"]);
            Assert.Equal(2, code);
            Assert.Contains("tokenizer_class 'RobertaTokenizer' is not supported", err);
            File.AppendAllText(Path.Combine(a, "vocab.txt"), "extra\n");
            (code, _, err) = CliTests.Run(["eval", "--model", a, "--quiet"]);
            Assert.Contains("tokens, but config.json's vocab_size is", err);
            Assert.Single(err.Trim().Split('\n'));
            (code, _, err) = CliTests.Run(["merge", "--method", "average", "--model", a, "--model", b, "--out", Path.Combine(root, "y"), "--quiet"]);
            Assert.NotEqual(0, code);
            Assert.Contains("tokens, but config.json's vocab_size is", err);
            Assert.Single(err.Trim().Split('\n'));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
