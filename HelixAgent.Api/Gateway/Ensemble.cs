using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway.Providers;

namespace HelixAgent.Api.Gateway;

/// <summary>The ensemble's defaults and members (<c>Ensemble</c> section).</summary>
public sealed class EnsembleOptions
{
    public const string Section = "Ensemble";

    /// <summary>The virtual model that fans out to the members.</summary>
    public const string ModelName = "helixagent-ensemble";

    /// <summary>Lists <see cref="ModelName"/> (it is left out when false, or when no provider is configured).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>
    /// The members, as <c>provider/upstream-model</c> or <c>provider</c> (its first model). Empty: every provider with
    /// its first model that is not an embedding model.
    /// </summary>
    public List<string> Members { get; set; } = [];

    /// <summary><c>confidence_weighted</c> or <c>majority_vote</c>; a request may choose with <c>ensemble_config.strategy</c>.</summary>
    [RegularExpression("^(confidence_weighted|majority_vote)$")]
    public string Strategy { get; set; } = "confidence_weighted";

    /// <summary>Answers needed (capped at the number of members); a request may ask for more with <c>ensemble_config.min_providers</c>.</summary>
    [Range(1, 100)]
    public int MinProviders { get; set; } = 2;

    /// <summary>How long the ensemble waits for its members' answers; <c>ensemble_config.timeout</c> overrides it per request.</summary>
    [Range(0.1, 3600)]
    public double TimeoutSeconds { get; set; } = 60;
}

/// <summary>
/// How one request is answered by an ensemble: asked of <c>helixagent-ensemble</c>, or of any model with
/// <c>ensemble_config</c> on the request (then the model's own providers are the members).
/// </summary>
public sealed record EnsemblePlan(string Strategy, int MinProviders, IReadOnlyList<string> Preferred, TimeSpan Timeout)
{
    public const string ConfidenceWeighted = "confidence_weighted";
    public const string MajorityVote = "majority_vote";

    private static readonly string[] Keys = ["strategy", "min_providers", "preferred_providers", "timeout"];

    /// <summary>
    /// Reads <c>ensemble_config</c> against the route's members. Returns the error to answer (400 naming the field), or
    /// null with <paramref name="plan"/> set for an ensemble request and left null for any other request.
    /// </summary>
    public static ValidationError? Parse(JsonObject body, ModelRoute route, EnsembleOptions defaults, double deadlineSeconds, out EnsemblePlan? plan)
    {
        plan = null;
        var node = body["ensemble_config"];
        if (node is null && !route.IsEnsemble)
        {
            return null;
        }
        if (node is not null and not JsonObject)
        {
            return new ValidationError("'ensemble_config' must be an object.", "ensemble_config");
        }
        var config = node as JsonObject ?? [];
        foreach (var (key, _) in config)
        {
            if (!Keys.Contains(key))
            {
                return new ValidationError($"Unrecognized key 'ensemble_config.{key}': expected {string.Join(", ", Keys)}.", $"ensemble_config.{key}");
            }
        }
        if (OpenAiShapes.IntOf(body["n"]) is > 1)
        {
            return new ValidationError("An ensemble answers with one choice: 'n' must be 1.", "n");
        }

        var strategy = defaults.Strategy;
        if (config["strategy"] is { } s)
        {
            strategy = OpenAiShapes.StringOf(s) ?? "";
            if (strategy is not (ConfidenceWeighted or MajorityVote))
            {
                return new ValidationError($"Invalid value for 'ensemble_config.strategy': expected {ConfidenceWeighted} or {MajorityVote}.", "ensemble_config.strategy");
            }
        }

        var members = route.Targets.Count;
        var min = Math.Min(defaults.MinProviders, members);
        if (config["min_providers"] is { } m)
        {
            if (OpenAiShapes.IntOf(m) is not { } asked || asked < 1)
            {
                return new ValidationError("Invalid value for 'ensemble_config.min_providers': expected an integer of 1 or more.", "ensemble_config.min_providers");
            }
            min = asked;
            if (min > members)
            {
                return new ValidationError(
                    $"Invalid value for 'ensemble_config.min_providers': {min} answers were asked for, but model '{route.Id}' has {members} provider(s): {MemberList(route)}.",
                    "ensemble_config.min_providers");
            }
        }

        var preferred = new List<string>();
        if (config["preferred_providers"] is { } p)
        {
            if (p is not JsonArray list || list.Any(x => OpenAiShapes.StringOf(x) is null))
            {
                return new ValidationError("Invalid value for 'ensemble_config.preferred_providers': expected an array of provider names.", "ensemble_config.preferred_providers");
            }
            foreach (var name in list.Select(x => OpenAiShapes.StringOf(x)!))
            {
                if (!route.Targets.Any(t => Matches(t, name)))
                {
                    return new ValidationError(
                        $"Invalid value for 'ensemble_config.preferred_providers': '{HelixAgent.Data.Echo.Clip(name)}' is not a provider of model '{route.Id}' ({MemberList(route)}).",
                        "ensemble_config.preferred_providers");
                }
                preferred.Add(name);
            }
        }

        var timeout = Math.Min(defaults.TimeoutSeconds, deadlineSeconds);
        if (config["timeout"] is { } t)
        {
            if (t is not JsonValue tv || !tv.TryGetValue<double>(out timeout) || !(timeout > 0) || timeout > deadlineSeconds)
            {
                return new ValidationError(
                    $"Invalid value for 'ensemble_config.timeout': expected seconds, more than 0 and at most {deadlineSeconds.ToString(CultureInfo.InvariantCulture)}.",
                    "ensemble_config.timeout");
            }
        }

        plan = new EnsemblePlan(strategy, min, preferred, TimeSpan.FromSeconds(timeout));
        return null;
    }

    /// <summary>A member is named by its provider (<c>p</c>) or its provider and upstream model (<c>p/model</c>).</summary>
    public static bool Matches(RouteTarget target, string name) =>
        name == target.Provider.Name || name == target.Provider.Name + "/" + target.UpstreamModel;

    public bool IsPreferred(RouteTarget target) => Preferred.Any(name => Matches(target, name));

    private static string MemberList(ModelRoute route) => string.Join(", ", route.Targets.Select(t => t.Provider.Name + "/" + t.UpstreamModel));
}

/// <summary>One member's answer as the scoring sees it.</summary>
public sealed record EnsembleCandidate(string Text, string? FinishReason, double Weight, bool Preferred, double LatencyMs);

/// <summary>
/// How an ensemble picks its answer. <c>confidence_weighted</c>: each answer scores
/// 0.6 × its agreement with the others (mean word-set similarity; 1 when it is the only one) + 0.25 × how it finished
/// (stop or tool calls 1, length 0.5, content filter 0, else 0.7) + 0.15 × its provider's weight relative to the
/// heaviest; an empty answer scores 0. <c>majority_vote</c>: answers that are the same text (case, spacing and final
/// punctuation aside) form a group; the largest group wins and its score is its share of the answers. Ties go to the
/// higher confidence score, then to a preferred provider, then to the quicker answer.
/// </summary>
public static class EnsembleScoring
{
    /// <summary>The index of the chosen candidate; <paramref name="scores"/> and <paramref name="votes"/> per candidate.</summary>
    public static int Choose(string strategy, IReadOnlyList<EnsembleCandidate> candidates, out double[] scores, out int[] votes)
    {
        var n = candidates.Count;
        var words = candidates.Select(c => Words(c.Text)).ToArray();
        var maxWeight = candidates.Count == 0 ? 0 : candidates.Max(c => c.Weight);
        var confidence = new double[n];
        for (var i = 0; i < n; i++)
        {
            if (candidates[i].Text.Length == 0)
            {
                continue;
            }
            var agreement = 1.0;
            if (n > 1)
            {
                agreement = Enumerable.Range(0, n).Where(j => j != i).Average(j => Similarity(words[i], words[j]));
            }
            var finish = candidates[i].FinishReason switch
            {
                "stop" or "tool_calls" => 1.0,
                "length" => 0.5,
                "content_filter" => 0.0,
                _ => 0.7,
            };
            var weight = maxWeight > 0 ? candidates[i].Weight / maxWeight : 1.0;
            confidence[i] = Math.Round(0.6 * agreement + 0.25 * finish + 0.15 * weight, 4);
        }

        var keys = candidates.Select(c => Normalize(c.Text)).ToArray();
        votes = keys.Select(k => k.Length == 0 ? 0 : keys.Count(other => other == k)).ToArray();
        var v = votes;
        scores = strategy == EnsemblePlan.MajorityVote
            ? v.Select(x => n == 0 ? 0 : Math.Round((double)x / n, 4)).ToArray()
            : confidence;
        var s = scores;
        return Enumerable.Range(0, n)
            .OrderByDescending(i => s[i])
            .ThenByDescending(i => confidence[i])
            .ThenByDescending(i => candidates[i].Preferred)
            .ThenBy(i => candidates[i].LatencyMs)
            .ThenBy(i => i)
            .DefaultIfEmpty(-1)
            .First();
    }

    /// <summary>Jaccard similarity of two word sets (1 when both are empty).</summary>
    public static double Similarity(HashSet<string> a, HashSet<string> b)
    {
        if (a.Count == 0 && b.Count == 0)
        {
            return 1;
        }
        var common = a.Count(b.Contains);
        return (double)common / (a.Count + b.Count - common);
    }

    /// <summary>Lower-case words (runs of letters and digits).</summary>
    public static HashSet<string> Words(string text)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        var word = new StringBuilder();
        foreach (var ch in text)
        {
            if (char.IsLetterOrDigit(ch))
            {
                word.Append(char.ToLowerInvariant(ch));
            }
            else if (word.Length > 0)
            {
                set.Add(word.ToString());
                word.Clear();
            }
        }
        if (word.Length > 0)
        {
            set.Add(word.ToString());
        }
        return set;
    }

    /// <summary>The text a vote compares: lower case, single spaces, no final punctuation.</summary>
    public static string Normalize(string text)
    {
        var collapsed = string.Join(' ', text.ToLowerInvariant().Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
        return collapsed.TrimEnd('.', '!', '?', ';', ':', ',', ' ');
    }

    /// <summary>What an answer says: its first choice's text, or its tool calls as <c>name(arguments)</c>.</summary>
    public static string TextOf(JsonObject completion)
    {
        var message = completion["choices"] is JsonArray { Count: > 0 } choices ? choices[0]?["message"] as JsonObject : null;
        if (message is null)
        {
            return "";
        }
        if (message["tool_calls"] is JsonArray { Count: > 0 } calls)
        {
            return string.Join("; ", calls.Select(c => $"{OpenAiShapes.StringOf(c?["function"]?["name"])}({OpenAiShapes.StringOf(c?["function"]?["arguments"])})"));
        }
        return OpenAiShapes.TextOf(message["content"]);
    }

    public static string? FinishReasonOf(JsonObject completion) =>
        completion["choices"] is JsonArray { Count: > 0 } choices ? OpenAiShapes.StringOf(choices[0]?["finish_reason"]) : null;
}
