namespace FsMerge.Data;

/// <summary>
/// Loads a task's train / validation / test splits from the data directory.
///
/// Split rule (fixed, independent of the task): test = the dataset's test files. Validation = the first
/// floor(n/10) entries of a Fisher–Yates permutation of ALL n train indices drawn with
/// System.Random(20241001); train = the other train samples. The permutation is computed over the
/// whole train set before class filtering, so a sample's split never depends on the task. Each split
/// then keeps the task's classes, in file order, and labels are re-indexed 0..K-1 in the order of the
/// task's class list; LabelNames keep the original class names.
/// </summary>
internal static class TaskData
{
    public const int SplitSeed = 20241001;

    public static TaskSplits Load(TaskSpec task, string dataDir)
    {
        ArgumentNullException.ThrowIfNull(task);
        var dataset = DatasetReader.Read(dataDir, task.Dataset);
        int k = dataset.ClassNames.Length;
        var classes = task.Classes ?? Enumerable.Range(0, k).ToArray();
        foreach (var c in classes)
            if (c >= k)
                throw new FsMergeException($"task '{task}': class {c} out of range; {task.Dataset} has classes 0-{k - 1}"
                    + (k <= 20 ? $" ({string.Join(", ", dataset.ClassNames.Select((n, i) => $"{i}={n}"))})" : ""));

        var relabel = new long[k];
        Array.Fill(relabel, -1L);
        for (int i = 0; i < classes.Length; i++) relabel[classes[i]] = i;
        var labelNames = classes.Select(c => dataset.ClassNames[c]).ToArray();

        var isValidation = ValidationMask(dataset.Train.Count);
        var train = new List<int>();
        var validation = new List<int>();
        for (int i = 0; i < dataset.Train.Count; i++)
        {
            if (relabel[dataset.Train.Labels[i]] < 0) continue;
            (isValidation[i] ? validation : train).Add(i);
        }
        var test = new List<int>();
        for (int i = 0; i < dataset.Test.Count; i++)
            if (relabel[dataset.Test.Labels[i]] >= 0) test.Add(i);

        ImageSet? trainSet = null, validationSet = null;
        try
        {
            trainSet = dataset.Train.Select(train, relabel, labelNames);
            validationSet = dataset.Train.Select(validation, relabel, labelNames);
            var testSet = dataset.Test.Select(test, relabel, labelNames);
            return new TaskSplits(task, trainSet, validationSet, testSet);
        }
        catch
        {
            trainSet?.Dispose();
            validationSet?.Dispose();
            throw;
        }
    }

    /// <summary>True for the train indices that belong to the validation split (see the class comment).</summary>
    public static bool[] ValidationMask(int trainCount)
    {
        var permutation = new int[trainCount];
        for (int i = 0; i < trainCount; i++) permutation[i] = i;
        var random = new Random(SplitSeed);
        for (int i = trainCount - 1; i > 0; i--)
        {
            int j = random.Next(i + 1);
            (permutation[i], permutation[j]) = (permutation[j], permutation[i]);
        }
        var mask = new bool[trainCount];
        for (int i = 0; i < trainCount / 10; i++) mask[permutation[i]] = true;
        return mask;
    }
}
