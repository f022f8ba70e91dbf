namespace FsMerge.Data;

/// <summary>
/// The built-in text datasets, made from Debian packages into text folders (<see cref="TextFolder"/>):
/// <list type="bullet">
/// <item><c>fortunes</c>: fortune-cookie quotes of 8 categories of the package <c>fortunes</c>
/// (/usr/share/games/fortunes/CATEGORY, quotes separated by "%" lines, each joined into one line).</item>
/// <item><c>lang</c>: language identification of single words, 5 languages from the word lists
/// <c>wamerican</c>, <c>wfrench</c>, <c>wngerman</c>, <c>witalian</c>, <c>wspanish</c> (/usr/share/dict/):
/// lower-cased words of 3 or more letters without apostrophes that occur in exactly one of the five
/// lists; of each language the <see cref="WordsPerLanguage"/> words with the smallest FNV-1a hash (a
/// fixed sample, independent of the files' order).</item>
/// </list>
/// Fixed split: the j-th example of a class goes to test when j % 5 == 4, else to train. Both folders get
/// the same vocab.txt, built by <see cref="WordPiece.Build"/> (size <see cref="VocabularySize"/>) from the
/// pooled train examples of both, so models trained on either can be merged. Idempotent: complete folders
/// with identical vocabularies are left alone.
/// </summary>
internal static class TextDatasets
{
    public const int WordsPerLanguage = 3000;
    public const int VocabularySize = 3000;
    internal static string FortuneDir = "/usr/share/games/fortunes";
    internal static string DictDir = "/usr/share/dict";

    public static readonly string[] FortuneCategories = ["computers", "definitions", "people", "politics", "science", "songs-poems", "work", "zippy"];

    /// <summary>Class name, word-list file, Debian package; in class order (alphabetical, as the text folder reads them).</summary>
    public static readonly (string Name, string File, string Package)[] Languages =
    [
        ("english", "american-english", "wamerican"), ("french", "french", "wfrench"), ("german", "ngerman", "wngerman"),
        ("italian", "italian", "witalian"), ("spanish", "spanish", "wspanish"),
    ];

    static string[] Packages => ["fortunes", .. Languages.Select(l => l.Package)];

    public static void Provision(string root, Action<string> log)
    {
        var fortunes = Path.Combine(root, "fortunes");
        var lang = Path.Combine(root, "lang");
        if (Present(fortunes, FortuneCategories) && Present(lang, Languages.Select(l => l.Name).ToArray())
            && File.ReadAllText(Path.Combine(fortunes, TextFolder.VocabFile)) == File.ReadAllText(Path.Combine(lang, TextFolder.VocabFile)))
        {
            log("fortunes, lang: already present");
            return;
        }
        var missing = FortuneCategories.Select(c => Path.Combine(FortuneDir, c)).Concat(Languages.Select(l => Path.Combine(DictDir, l.File)))
            .Where(f => !File.Exists(f)).ToList();
        if (missing.Count > 0)
        {
            if (!Environment.IsPrivilegedProcess)
                throw new FsMergeException($"text datasets: {missing[0]} not found; install them with `sudo apt-get install -y {string.Join(' ', Packages)}` and run `fsmerge data` again");
            DataProvisioner.InstallPackages("text datasets", Packages, log);
            missing = missing.Where(f => !File.Exists(f)).ToList();
            if (missing.Count > 0)
                throw new FsMergeException($"text datasets: after installing {string.Join(' ', Packages)}, {missing[0]} is still missing");
        }

        var fortuneClasses = FortuneCategories.Select(c => ReadFortunes(Path.Combine(FortuneDir, c))).ToList();
        var languageClasses = ReadWords();
        WriteSplits(fortunes, FortuneCategories, fortuneClasses);
        WriteSplits(lang, Languages.Select(l => l.Name).ToArray(), languageClasses);
        var corpus = fortuneClasses.Concat(languageClasses).SelectMany(c => c.Where((_, j) => j % 5 != 4));
        var vocab = WordPiece.Build(corpus, VocabularySize);
        vocab.Write(Path.Combine(fortunes, TextFolder.VocabFile));
        vocab.Write(Path.Combine(lang, TextFolder.VocabFile));
        log($"fortunes: wrote {fortunes} ({string.Join(", ", FortuneCategories.Select((c, i) => $"{c} {fortuneClasses[i].Count}"))} quotes)");
        log($"lang: wrote {lang} ({WordsPerLanguage} words per language: {string.Join(", ", Languages.Select(l => l.Name))})");
        log($"fortunes, lang: shared WordPiece vocabulary of {vocab.Count} tokens from their train splits");
    }

    static bool Present(string folder, string[] classes) =>
        File.Exists(Path.Combine(folder, TextFolder.VocabFile))
        && classes.All(c => File.Exists(Path.Combine(folder, "train", c + ".txt")) && File.Exists(Path.Combine(folder, "test", c + ".txt")));

    /// <summary>The quotes of a fortune file, each on one line (whitespace collapsed), in file order.</summary>
    public static List<string> ReadFortunes(string path)
    {
        var quotes = new List<string>();
        foreach (var quote in File.ReadAllText(path).Replace("\r", "").Split("\n%\n"))
        {
            var line = string.Join(' ', quote.Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries)).Trim('%', ' ');
            if (line.Length > 0) quotes.Add(line);
        }
        return quotes;
    }

    /// <summary>Per language the fixed sample of words that occur in no other list (see the class summary).</summary>
    static List<List<string>> ReadWords()
    {
        var lists = Languages.Select(l => File.ReadLines(Path.Combine(DictDir, l.File))
            .Select(w => w.Trim().ToLowerInvariant())
            .Where(w => w.Length >= 3 && !w.Contains('\'') && w.All(char.IsLetter))
            .ToHashSet(StringComparer.Ordinal)).ToList();
        var counts = lists.SelectMany(s => s).GroupBy(w => w, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        return lists.Select(s => s.Where(w => counts[w] == 1).OrderBy(Fnv1a).ThenBy(w => w, StringComparer.Ordinal)
            .Take(WordsPerLanguage).ToList()).ToList();
    }

    static ulong Fnv1a(string s)
    {
        ulong hash = 14695981039346656037;
        foreach (var b in System.Text.Encoding.UTF8.GetBytes(s)) hash = (hash ^ b) * 1099511628211;
        return hash;
    }

    static void WriteSplits(string folder, string[] classes, List<List<string>> examples)
    {
        for (int c = 0; c < classes.Length; c++)
            foreach (var (split, test) in new[] { ("train", false), ("test", true) })
                AtomicFile.WriteAllText(Path.Combine(folder, split, classes[c] + ".txt"),
                    string.Concat(examples[c].Where((_, j) => (j % 5 == 4) == test).Select(e => e + "\n")));
    }
}
