using System.Globalization;
using System.Text;

namespace FsMerge.Data;

/// <summary>
/// A task: a dataset and an optional ordered list of its class ids (null = all classes).
/// Text form: <c>DATASET</c> or <c>DATASET:LIST</c> where LIST is comma-separated ids or ascending
/// ranges <c>a-b</c>, e.g. "mnist", "fashion:5-9", "mnist:0,3,7", "mydata:1-2,5". The order of the
/// list is the order of the task's labels (class list[k] becomes label k).
/// </summary>
public sealed record TaskSpec
{
    public const int MaxClassId = 1_000_000;
    public const int MaxClassCount = 100_000;

    public string Dataset { get; }
    public int[]? Classes { get; }

    public TaskSpec(string Dataset, int[]? Classes)
    {
        ArgumentNullException.ThrowIfNull(Dataset);
        if (!IsValidDatasetName(Dataset))
            throw new FsMergeException($"task: dataset name '{Dataset}' is invalid; expected letters, digits, '_', '-', '.' starting with a letter or digit");
        if (Classes is not null)
        {
            if (Classes.Length == 0)
                throw new FsMergeException($"task {Dataset}: the class list is empty; give class ids like {Dataset}:0-4 or {Dataset}:0,3,7, or just {Dataset} for all classes");
            var seen = new HashSet<int>();
            foreach (var c in Classes)
            {
                if (c < 0 || c > MaxClassId)
                    throw new FsMergeException($"task {Dataset}: class id {c} out of range; expected 0 to {MaxClassId}");
                if (!seen.Add(c))
                    throw new FsMergeException($"task {Dataset}: class {c} is listed twice");
            }
            Classes = (int[])Classes.Clone();
        }
        this.Dataset = Dataset;
        this.Classes = Classes;
    }

    public void Deconstruct(out string Dataset, out int[]? Classes)
    {
        Dataset = this.Dataset;
        Classes = this.Classes;
    }

    private const string Syntax =
        "expected DATASET or DATASET:CLASSES with CLASSES a comma list of ids or ascending ranges, e.g. mnist, fashion:5-9, mnist:0,3,7, mydata:1-2,5";

    public static TaskSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var s = text.Trim();
        int colon = s.IndexOf(':');
        var name = colon < 0 ? s : s[..colon];
        if (name.Length == 0)
            throw new FsMergeException($"task '{text}': missing dataset name; {Syntax}");
        if (!IsValidDatasetName(name))
            throw new FsMergeException($"task '{text}': invalid dataset name '{name}' (letters, digits, '_', '-', '.' allowed); {Syntax}");
        if (colon < 0) return new TaskSpec(name, null);

        var list = s[(colon + 1)..];
        if (list.Trim().Length == 0)
            throw new FsMergeException($"task '{text}': empty class list after ':'; {Syntax}");

        var classes = new List<int>();
        foreach (var rawItem in list.Split(','))
        {
            var item = rawItem.Trim();
            if (item.Length == 0)
                throw new FsMergeException($"task '{text}': empty item in the class list; {Syntax}");
            int dash = item.IndexOf('-');
            if (dash < 0)
            {
                classes.Add(ParseId(text, item));
            }
            else
            {
                int lo = ParseId(text, item[..dash].Trim());
                int hi = ParseId(text, item[(dash + 1)..].Trim());
                if (hi < lo)
                    throw new FsMergeException($"task '{text}': range {item} is descending; write ranges as low-high, e.g. {hi}-{lo}");
                if (classes.Count + (long)(hi - lo + 1) > MaxClassCount)
                    throw new FsMergeException($"task '{text}': more than {MaxClassCount} classes listed");
                for (int c = lo; c <= hi; c++) classes.Add(c);
            }
            if (classes.Count > MaxClassCount)
                throw new FsMergeException($"task '{text}': more than {MaxClassCount} classes listed");
        }

        var spec = new TaskSpec(name, classes.ToArray());
        if (KnownDatasets.TryGet(name, out var known))
        {
            foreach (var c in spec.Classes!)
                if (c >= known.LabelNames.Length)
                    throw new FsMergeException($"task '{text}': class {c} out of range; {name} has classes 0-{known.LabelNames.Length - 1}");
        }
        return spec;
    }

    private static int ParseId(string text, string item)
    {
        if (item.Length == 0 || item.Length > 7 || !item.All(char.IsAsciiDigit)
            || !int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int id) || id > MaxClassId)
            throw new FsMergeException($"task '{text}': '{item}' is not a class id (a whole number 0 to {MaxClassId}); {Syntax}");
        return id;
    }

    private static bool IsValidDatasetName(string name)
        => name.Length is > 0 and <= 100 && char.IsAsciiLetterOrDigit(name[0])
           && name.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '-' or '.');

    /// <summary>Canonical form: runs of consecutive ascending ids are written a-b, the list order is kept.</summary>
    public override string ToString()
    {
        if (Classes is null) return Dataset;
        var sb = new StringBuilder(Dataset).Append(':');
        int i = 0;
        while (i < Classes.Length)
        {
            int j = i;
            while (j + 1 < Classes.Length && Classes[j + 1] == Classes[j] + 1) j++;
            if (i > 0) sb.Append(',');
            sb.Append(Classes[i].ToString(CultureInfo.InvariantCulture));
            if (j > i) sb.Append('-').Append(Classes[j].ToString(CultureInfo.InvariantCulture));
            i = j + 1;
        }
        return sb.ToString();
    }

    public bool Equals(TaskSpec? other)
        => other is not null && Dataset == other.Dataset
           && (Classes is null ? other.Classes is null : other.Classes is not null && Classes.AsSpan().SequenceEqual(other.Classes));

    public override int GetHashCode() => ToString().GetHashCode(StringComparison.Ordinal);
}
