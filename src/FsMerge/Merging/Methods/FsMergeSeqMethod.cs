using System.Globalization;
using System.Text.Json.Nodes;
using FsMerge.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// FS-Merge seq. (spec §8): merge N models in N − 1 stages holding two models at a time. Stage k merges the
/// previous stage's folded model (first source, so "first" init starts from it) with model k + 2, on tasks
/// 1..k + 2, always against the <b>original</b> models' features. The head-input unmerge has one block per
/// task seen so far; blocks learned in earlier stages are carried over and the new task's block starts at I
/// (a dense U^task, where the spec copies the factors of a low-rank one, §2.6). Every stage is a global
/// FS-Merge run with this method's options.
/// </summary>
internal sealed class FsMergeSeqMethod : IMergeMethod
{
    public string Name => "fs-merge-seq";
    public string Summary => "FS-Merge seq.: sequential pairwise stages (two models in memory), targets always the original models";

    public IReadOnlyList<MethodOption> Options =>
    [
        .. new FsMergeMethod().Options.Where(o => o.Name is not ("scope" or "targets" or "init" or "init-candidates")),
        new("stage-epochs", "", "comma-separated epochs per stage (N - 1 values); empty = --epochs for every stage"),
    ];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings) => LearningRateSearch.Merge(this, inputs, settings, Sequential);

    MergeOutcome Sequential(MergeInputs inputs, MethodSettings settings)
    {
        int n = inputs.Sources.Count;
        var stageEpochs = StageEpochs(settings, n);
        var originals = new List<Tensor>();
        for (int t = 0; t < n; t++)
            originals.Add(Probing.Features(inputs.Sources[t], inputs.Images(t)));

        var fsMerge = new FsMergeMethod();
        Model previous = inputs.Sources[0];
        Tensor? carried = null;
        MergeOutcome? outcome = null;
        var stages = new JsonArray();
        var curves = new List<LossCurve>();
        for (int k = 0; k < n - 1; k++)
        {
            int tasks = k + 2;
            // The previous stage's backbone with the original heads of the tasks it serves.
            var container = k == 0 ? inputs.Sources[0] : WithOriginalHeads(previous, inputs, k + 1);
            var stageTarget = inputs.Target with { Heads = inputs.Sources.Take(tasks).SelectMany(s => s.Config.Heads).ToList() };
            var headWidth = inputs.Target.Arch.FeatureWidth(inputs.Target);
            var stageInputs = new MergeInputs
            {
                Sources = [container, inputs.Sources[k + 1]],
                Data = inputs.Data.Take(tasks).ToList(),
                Target = stageTarget,
                Targets = originals.Take(tasks).ToList(),
                HeadInputInit = carried is null ? null
                    : torch.cat([carried, torch.eye(headWidth, originals[k + 1].shape[1], device: inputs.Device)], 1),
                Device = inputs.Device,
                Seed = inputs.Seed + k,
                Progress = inputs.Progress,
                Checkpoints = inputs.Checkpoints,
            };
            var options = settings.All.Where(kv => kv.Key != "stage-epochs").ToDictionary(kv => kv.Key, kv => kv.Value);
            options["epochs"] = stageEpochs[k];
            options["targets"] = "own";
            var stageSettings = new MethodSettings(fsMerge, options);
            var (stageOutcome, dense) = FsMergeMethod.Train(stageInputs, stageSettings);
            if (k > 0) previous.Dispose();
            previous = stageOutcome.Merged!;
            carried = dense[stageInputs.Sites.HeadInput];
            outcome = stageOutcome;
            curves.AddRange(stageOutcome.LossCurves.Select(c => c with { Phase = $"stage {k + 1}: {c.Phase}" }));
            int epochs = OptimizerSettings.EpochsFor(stageSettings, stageInputs.Data.Sum(d => (long)d.Count), stageSettings.Int("batch", min: 0));
            stages.Add((JsonNode)new JsonObject { ["stage"] = k, ["epochs"] = epochs, ["details"] = stageOutcome.Details.DeepClone() });
        }
        return outcome! with { Details = new JsonObject { ["stages"] = stages }, LossCurves = curves };
    }

    /// <summary>Each stage's --epochs value: --stage-epochs, or --epochs (a number or auto) for every stage.</summary>
    static string[] StageEpochs(MethodSettings settings, int models)
    {
        var text = settings.String("stage-epochs");
        if (string.IsNullOrWhiteSpace(text)) return Enumerable.Repeat(settings.String("epochs"), models - 1).ToArray();
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != models - 1 || parts.Any(p => !int.TryParse(p, NumberStyles.Integer, CultureInfo.InvariantCulture, out int e) || e < 0))
            throw new FsMergeException($"fs-merge-seq: --stage-epochs '{text}' must list {models - 1} non-negative integers (one per stage)");
        return parts;
    }

    /// <summary>The folded backbone of a stage, with the first <paramref name="tasks"/> sources' original heads.</summary>
    static Model WithOriginalHeads(Model stage, MergeInputs inputs, int tasks)
    {
        var config = inputs.Target with { Heads = inputs.Sources.Take(tasks).SelectMany(s => s.Config.Heads).ToList() };
        var weights = config.Arch.BackboneWeights(config).ToDictionary(w => w.Name, w => stage.Weights[w.Name]);
        for (int t = 0; t < tasks; t++)
            foreach (var spec in Heads.Weights(inputs.Sources[t].Config))
                weights[$"{Heads.Prefix(t, tasks)}.{Heads.Field(spec.Name)}"] = inputs.Sources[t].Weights[spec.Name];
        return new Model(config, weights);
    }
}
