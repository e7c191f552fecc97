namespace HelixAgent.Api.Access;

/// <summary>
/// Per-key limits. <c>null</c> means unlimited for that dimension; a set limit must be at least 1
/// (a key that may send nothing should be disabled, not rate limited).
/// </summary>
public sealed record RateLimitPolicy(int? RequestsPerMinute, int? TokensPerMinute)
{
    public int? RequestsPerMinute { get; init; } = RequestsPerMinute is null or > 0
        ? RequestsPerMinute
        : throw new ArgumentOutOfRangeException(nameof(RequestsPerMinute), RequestsPerMinute, "must be at least 1 (null = unlimited)");

    public int? TokensPerMinute { get; init; } = TokensPerMinute is null or > 0
        ? TokensPerMinute
        : throw new ArgumentOutOfRangeException(nameof(TokensPerMinute), TokensPerMinute, "must be at least 1 (null = unlimited)");

    /// <summary>Neither dimension is limited: admission needs no bookkeeping at all.</summary>
    public bool IsUnlimited => RequestsPerMinute is null && TokensPerMinute is null;
}

/// <summary>Why a request was not admitted.</summary>
public enum RateLimitRejection
{
    None = 0,
    /// <summary>The requests-per-minute limit is reached; retrying after <see cref="RateLimitDecision.RetryAfter"/> can succeed.</summary>
    RequestsPerMinute = 1,
    /// <summary>The tokens-per-minute limit is reached; retrying after <see cref="RateLimitDecision.RetryAfter"/> can succeed.</summary>
    TokensPerMinute = 2,
    /// <summary>The request alone reserves more tokens than the key may use in a minute: retrying never helps.</summary>
    RequestExceedsTokenLimit = 3,
    /// <summary>The key's or its team's budget has no room for the request's worst-case cost (<see cref="RateLimitDecision.Budget"/> says which).</summary>
    BudgetExceeded = 4,
    /// <summary>Redis has no counter for a budget and the ledger (PostgreSQL) cannot say what was spent: refused, never a fresh budget.</summary>
    BudgetUnknown = 5,
}

/// <summary>
/// Outcome of <see cref="ClusterRateLimiter.AdmitAsync"/>. Limits and remaining counts are null for an unlimited dimension.
/// <see cref="Degraded"/> is true when Redis was unreachable and this replica decided alone with the same policy.
/// </summary>
public readonly record struct RateLimitDecision(
    bool Allowed,
    int? LimitRequests,
    int? RemainingRequests,
    int? LimitTokens,
    int? RemainingTokens,
    TimeSpan ResetRequests,
    TimeSpan ResetTokens,
    TimeSpan RetryAfter,
    bool Degraded,
    RateLimitTicket Ticket,
    RateLimitRejection Rejection = RateLimitRejection.None,
    BudgetOutcome? Budget = null)
{
    /// <summary>A sentence for the error body when the request was rejected; null when admitted.</summary>
    public string? Reason => Rejection switch
    {
        RateLimitRejection.None => null,
        RateLimitRejection.RequestsPerMinute =>
            $"rate limit reached: {LimitRequests} requests per minute for this key; retry after {RateLimitHeaders.FormatDuration(RetryAfter)}",
        RateLimitRejection.TokensPerMinute =>
            $"rate limit reached: {LimitTokens} tokens per minute for this key, the request reserves {Ticket.ReservedTokens}; retry after {RateLimitHeaders.FormatDuration(RetryAfter)}",
        RateLimitRejection.RequestExceedsTokenLimit =>
            $"the request reserves {Ticket.ReservedTokens} tokens (prompt estimate + max tokens), more than this key's limit of {LimitTokens} tokens per minute; lower max_tokens or shorten the prompt",
        RateLimitRejection.BudgetExceeded => Budget!.Reason(),
        RateLimitRejection.BudgetUnknown => "The spend of this key's budget cannot be read right now (Redis has no count and the ledger database is unreachable); retry shortly.",
        _ => "rate limited",
    };
}

/// <summary>
/// What <see cref="ClusterRateLimiter.SettleAsync"/> needs to correct the token count after the response.
/// <see cref="Window"/> is the minute (Unix ms / 60 000, server clock for Redis, local clock when <see cref="Local"/>)
/// the tokens were reserved in; it is -1 when nothing was reserved (rejected or unlimited), which makes settling a no-op.
/// </summary>
public readonly record struct RateLimitTicket(string KeyId, long Window, int ReservedTokens, bool Local, BudgetHold? Budget = null)
{
    /// <summary>The prefix of the key's rate-limit buckets in Redis (in its budgets' hash slot when it has any).</summary>
    public string Prefix => Budget?.Prefix ?? RateLimitScripts.Prefix(KeyId);

    public bool HoldsReservation => Window >= 0 && KeyId is not null;
}
