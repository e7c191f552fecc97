using System.ComponentModel.DataAnnotations;
using System.Text.Json.Nodes;
using HelixAgent.Data;

namespace HelixAgent.Api.Access;

/// <summary>Global per-key limits (<c>RateLimits</c> section); a key's own <c>rpm_limit</c>/<c>tpm_limit</c> override them.</summary>
public sealed class RateLimitOptions
{
    public const string Section = "RateLimits";

    /// <summary>Default requests per minute per key; 0 = unlimited.</summary>
    [Range(0, int.MaxValue)]
    public int RequestsPerMinute { get; set; }

    /// <summary>Default tokens per minute per key; 0 = unlimited.</summary>
    [Range(0, int.MaxValue)]
    public int TokensPerMinute { get; set; }

    /// <summary>Completion tokens reserved on admission when the request sets no max_tokens.</summary>
    [Range(0, 1_000_000)]
    public int DefaultCompletionReserve { get; set; } = 256;

    public RateLimitPolicy PolicyFor(ApiKeyInfo key) => new(
        key.RpmLimit ?? (RequestsPerMinute > 0 ? RequestsPerMinute : null),
        key.TpmLimit ?? (TokensPerMinute > 0 ? TokensPerMinute : null));

    /// <summary>Tokens to reserve: the prompt estimated at 4 characters a token, plus the completion allowance.</summary>
    public int Reserve(JsonObject body, bool embeddings = false)
    {
        var (prompt, completion) = ReserveParts(body, embeddings);
        return (int)Math.Min(int.MaxValue, (long)prompt + completion);
    }

    /// <summary>The two halves of <see cref="Reserve"/>: the prompt estimate, and the completion allowance (priced at the output price).</summary>
    public (int Prompt, int Completion) ReserveParts(JsonObject body, bool embeddings = false)
    {
        var completion = body["max_completion_tokens"] is JsonValue a && a.TryGetValue<int>(out var x) ? x
            : body["max_tokens"] is JsonValue b && b.TryGetValue<int>(out var y) ? y
            : body["max_output_tokens"] is JsonValue c && c.TryGetValue<int>(out var z) ? z
            : embeddings ? 0 : DefaultCompletionReserve;
        return (HelixAgent.Api.Gateway.TokenEstimate.Prompt(body), Math.Max(0, completion));
    }
}
