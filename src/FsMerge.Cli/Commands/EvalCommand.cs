using System.Text.Json;
using System.Text.Json.Nodes;
using FsMerge.Data;
using FsMerge.Evaluation;
using FsMerge.Models;

namespace FsMerge.Cli.Commands;

sealed class EvalCommand : ICommand
{
    public string Name => "eval";
    public string Summary => "per-task and joint accuracy of one multi-task model, or of several single-task models (one per task)";
    public string Usage => "eval --model DIR [--model DIR ...] [--task TASK ...] [--json]";

    public IReadOnlyList<OptionSpec> Options =>
    [
        new("model", "DIR", "model directory (config.json + model.safetensors)", Repeatable: true, Short: "-m"),
        new("task", "TASK", "task of each head in order (default: the tasks recorded in the model)", Repeatable: true, Short: "-t"),
        new("split", "test|validation", "which split to evaluate on", "test"),
        new("json", null, "print JSON: tasks[{task, accuracy}], per_task_mean, joint, task_identified (the joint argmax falls among the task's own head's classes)"),
        Common.MaxLength, Common.Data, Common.Device, Common.Threads, Common.Quiet,
    ];

    public int Run(ParsedArgs args)
    {
        var device = Common.Setup(args);
        var dirs = args.GetAll("model");
        if (dirs.Count == 0) throw new FsMergeException("fsmerge eval: option '--model' is required (see 'fsmerge eval --help')");
        var split = args.Require("split");
        if (split is not ("test" or "validation")) throw new FsMergeException($"fsmerge eval: --split '{split}' must be test or validation");

        var models = dirs.Select(d => Model.Load(d, device).WithMaxLength(Common.MaxLengthOf(args), d)).ToList();
        try
        {
            if (models.FirstOrDefault(m => m.HeadCount == 0) is { } backbone)
                throw new FsMergeException($"{dirs[models.IndexOf(backbone)]}: has no classification head (a backbone such as ViTModel or BertModel); fine-tune it with `fsmerge train --init`");
            // Several models see each other's test images in the joint accuracy: a model that normalizes otherwise
            // is re-expressed, exactly, for model 1's preprocessing (as a merge does).
            for (int i = 1; i < models.Count; i++)
                if (models[i].Config.Architecture == "bert" && !models[i].Config.TokenizesLike(models[0].Config))
                    throw new FsMergeException($"{dirs[i]}: tokenizes otherwise than {dirs[0]} (vocab.txt, or tokenizer_config.json: {models[i].Config.DescribeTokenizer()} against {models[0].Config.DescribeTokenizer()}); evaluate such models one at a time");
                else if (!models[i].Config.Preprocessor.Equals(models[0].Config.Preprocessor))
                    models[i] = models[i].ReadingInputOf(models[0].Config.Preprocessor)
                        ?? throw new FsMergeException($"{dirs[i]}: its {ImageProcessor.FileName} resizes or converts images otherwise than {dirs[0]}'s; evaluate such models one at a time");
            // Head t: its model and head index. Several models → each is single-task; one model → all its heads.
            var heads = models.Count == 1
                ? Enumerable.Range(0, models[0].HeadCount).Select(t => (Model: models[0], Head: t, Dir: dirs[0])).ToList()
                : models.Select((m, i) => (Model: m, Head: 0, Dir: dirs[i])).ToList();
            if (models.Count > 1 && models.FirstOrDefault(m => m.HeadCount != 1) is { } multi)
                throw new FsMergeException($"{dirs[models.IndexOf(multi)]}: has {multi.HeadCount} heads; give several models only when each has one head");

            var tasks = args.GetAll("task").Select(TaskSpec.Parse).ToList();
            if (tasks.Count == 0) tasks = heads.Select(h => TaskSpec.Parse(h.Model.Config.Heads[h.Head].Task)).ToList();
            if (tasks.Count != heads.Count)
                throw new FsMergeException($"fsmerge eval: {tasks.Count} --task given but the model(s) have {heads.Count} head(s); give one task per head, in order");

            var dataDir = Common.DataDir(args);
            var sets = new List<ImageSet>();
            for (int t = 0; t < tasks.Count; t++)
            {
                var splits = TaskData.Load(tasks[t], dataDir);
                var (model, head, dir) = heads[t];
                var set = model.Config.Prepare(split == "test" ? splits.Test : splits.Validation, $"task {tasks[t]}");
                model.Config.CheckImages(set.Images.shape, $"task {tasks[t]}");
                int classes = model.Config.Heads[head].Labels.Length;
                if (set.LabelNames.Length != classes)
                    throw new FsMergeException($"{dir}: head {head + 1} has {classes} classes but task {tasks[t]} has {set.LabelNames.Length}");
                sets.Add(set);
            }

            AllHeadLogits logits = models.Count == 1 ? Evaluator.MultiTask(models[0]) : Evaluator.SeparateModels(models);
            var result = Evaluator.Evaluate(logits, sets, device, tasks.Select(t => t.ToString()).ToList());
            Console.WriteLine(args.Has("json") ? ToJson(result) : ToTable(result));
            return 0;
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    public static string ToJson(EvaluationResult result) => result.ToJson().ToJsonString(JsonFormat.Indented);

    /// <summary>The label-free estimate, with the accuracies beside it when labels were given.</summary>
    public static string ToTable(LabelFreeEstimate estimate, EvaluationResult? test)
    {
        int width = Math.Max(14, estimate.Tasks.Max(t => t.Task.Length)) + 2;
        var header = $"{"task".PadRight(width)}{"held-out",9}{"agreement %",13}{"divergence",12}{"logit error",13}";
        var lines = new List<string> { test is null ? header : header + $"{"accuracy %",12}" };
        for (int t = 0; t < estimate.Tasks.Count; t++)
        {
            var a = estimate.Tasks[t];
            lines.Add($"{a.Task.PadRight(width)}{a.Count,9}{Common.Percent(a.Agreement),13}{a.Divergence,12:F4}{a.LogitError,13:F4}"
                + (test is null ? "" : $"{Common.Percent(test.Tasks[t].Accuracy),12}"));
        }
        lines.Add($"{"per-task mean".PadRight(width)}{"",9}{Common.Percent(estimate.Agreement),13}{estimate.Divergence,12:F4}{estimate.LogitError,13:F4}"
            + (test is null ? "" : $"{Common.Percent(test.PerTaskMean),12}"));
        lines.Add($"{"joint".PadRight(width)}{"",9}{Common.Percent(estimate.JointAgreement),13}{"",12}{"",13}" + (test is null ? "" : $"{Common.Percent(test.Joint),12}"));
        lines.Add("(agreement: held-out unlabeled samples on which head t predicts what source model t predicts; joint: the argmax over all");
        lines.Add(" heads is the source models' ensemble's; divergence: the KL divergence of head t's predictions from source t's, relative to");
        lines.Add(" that of the source's mean prediction, 0 = identical, 1 = no better than that mean; logit error: the squared error of the logits");
        lines.Add(" on the same scale; the means cap each task's at 1)");
        return string.Join(Environment.NewLine, lines);
    }

    public static string ToTable(EvaluationResult result)
    {
        int width = Math.Max(14, result.Tasks.Max(t => t.Task.Length)) + 2;
        var lines = new List<string> { $"{"task".PadRight(width)}{"images",8}{"accuracy %",12}" };
        lines.AddRange(result.Tasks.Select(t => $"{t.Task.PadRight(width)}{t.Count,8}{Common.Percent(t.Accuracy),12}"));
        lines.Add($"{"per-task mean".PadRight(width)}{"",8}{Common.Percent(result.PerTaskMean),12}");
        lines.Add($"{"joint".PadRight(width)}{"",8}{Common.Percent(result.Joint),12}");
        lines.Add($"{"task identified".PadRight(width)}{"",8}{Common.Percent(result.TaskIdentified),12}");
        return string.Join(Environment.NewLine, lines);
    }
}
