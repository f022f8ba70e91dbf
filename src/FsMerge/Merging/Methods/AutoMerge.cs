using System.Diagnostics;
using System.Text.Json.Nodes;
using FsMerge.Evaluation;

namespace FsMerge.Merging.Methods;

/// <summary>
/// --method auto: runs each candidate method with its defaults for the sources' architecture (trained ones with
/// --lr auto) and keeps the merged model with the lowest mean held-out divergence from the source models
/// (<see cref="HeldOutReference"/>), labels never read. A candidate that cannot merge these sources (say, a method
/// for MLPs only) is skipped and the report says why; merge.json's details list every candidate's estimate.
/// </summary>
internal sealed class AutoMerge : IMergeMethod
{
    public string Name => "auto";
    public string Summary => "run the candidate methods and keep the one whose merged model agrees best with the source models on held-out unlabeled samples";

    public const string DefaultCandidates = "fs-merge,distill,regmean,zipit,average";

    public IReadOnlyList<MethodOption> Options =>
    [
        new("candidates", DefaultCandidates, "comma-separated methods to try (each with its defaults for the architecture)"),
    ];

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var names = settings.String("candidates").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Distinct().ToList();
        if (names.Count == 0 || names.Contains(Name))
            throw new FsMergeException($"auto: --candidates '{settings.String("candidates")}' must name one or more methods other than auto");
        var methods = names.Select(MergeMethods.Get).ToList();
        using var heldOut = HeldOutReference.For(inputs, Name, "the method to keep");

        var table = new JsonArray();
        MergeOutcome? best = null;
        LabelFreeEstimate? bestEstimate = null;
        string? bestName = null;
        foreach (var method in methods)
        {
            var clock = Stopwatch.StartNew();
            var row = new JsonObject { ["method"] = method.Name };
            try
            {
                var outcome = method.Merge(inputs, new MethodSettings(method, new Dictionary<string, string>(), inputs.Target.Arch));
                if (outcome.Merged is null)
                {
                    row["skipped"] = "keeps every model (not one merged model)";
                    table.Add((JsonNode)row);
                    continue;
                }
                var estimate = heldOut.Estimate(outcome.Predict);
                row["label_free"] = estimate.ToJson();
                row["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 2);
                inputs.Log?.Invoke($"auto: {method.Name}: held-out divergence {estimate.Divergence:F4}, logit error {estimate.LogitError:F4}, agreement {100 * estimate.Agreement:F1}%, joint agreement {100 * estimate.JointAgreement:F1}% ({clock.Elapsed.TotalSeconds:F1} s)");
                if (bestEstimate is null || estimate.IsBetterThan(bestEstimate))
                {
                    best?.Merged?.Dispose();
                    (best, bestEstimate, bestName) = (outcome, estimate, method.Name);
                }
                else outcome.Merged.Dispose();
            }
            catch (FsMergeException e) when (e is not DivergenceException)
            {
                row["skipped"] = e.Message;
                inputs.Log?.Invoke($"auto: {method.Name} skipped: {e.Message}");
            }
            table.Add((JsonNode)row);
        }
        if (best is null)
            throw new FsMergeException($"auto: none of the candidates ({string.Join(", ", names)}) could merge these models");
        var details = new JsonObject
        {
            ["chosen"] = bestName,
            ["why"] = $"lowest mean held-out divergence from the source models ({bestEstimate!.Divergence:F4}; agreement {100 * bestEstimate.Agreement:F1}%) of {table.Count} candidates",
            ["candidates"] = table,
            ["chosen_details"] = best.Details.DeepClone(),
            ["optimized_parameters"] = best.Details["optimized_parameters"]?.DeepClone(),
            ["final_loss"] = best.Details["final_loss"]?.DeepClone(),
        };
        inputs.Log?.Invoke($"auto: chose {bestName} ({details["why"]})");
        // The winner's own sweep stays in its details (chosen_details.lr_search): auto has no --lr of its own.
        return best with { Details = details, Settings = null, RateTrials = [] };
    }
}
