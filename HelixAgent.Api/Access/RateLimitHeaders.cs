using System.Globalization;

namespace HelixAgent.Api.Access;

/// <summary>OpenAI's rate-limit response headers, for the dimensions that have a limit.</summary>
public static class RateLimitHeaders
{
    public const string LimitRequests = "x-ratelimit-limit-requests";
    public const string RemainingRequests = "x-ratelimit-remaining-requests";
    public const string ResetRequests = "x-ratelimit-reset-requests";
    public const string LimitTokens = "x-ratelimit-limit-tokens";
    public const string RemainingTokens = "x-ratelimit-remaining-tokens";
    public const string ResetTokens = "x-ratelimit-reset-tokens";

    /// <summary>
    /// Writes the limit, remaining and reset headers of each limited dimension, and <c>Retry-After</c> (whole seconds,
    /// at least 1) on a rejection that a retry can cure. A request that alone exceeds the token limit gets no
    /// <c>Retry-After</c>: retrying it never succeeds. A spent budget is what OpenAI's SDKs know as "out of quota":
    /// <c>x-should-retry: false</c>, and <c>Retry-After</c> only when the budget resets (daily, monthly), as far as the reset.
    /// </summary>
    /// <remarks>
    /// A reset header is the time until its dimension is replenished: fully, while requests are admitted; on a 429 that
    /// dimension refused, until the next request fits, the moment <c>Retry-After</c> names (at millisecond precision,
    /// where <c>Retry-After</c> is rounded up to whole seconds). So a client that waits for either header retries at the
    /// same time. Full replenishment of the sliding minute can take up to two minutes (the current minute's count
    /// weighs into the next one), which on a 429 told clients to wait far longer than needed (1m2.4s against
    /// <c>Retry-After: 23</c>).
    /// </remarks>
    public static void Apply(HttpResponse response, RateLimitDecision d)
    {
        var headers = response.Headers;
        var retryable = !d.Allowed && d.Rejection != RateLimitRejection.RequestExceedsTokenLimit
            && !(d.Rejection == RateLimitRejection.BudgetExceeded && d.RetryAfter <= TimeSpan.Zero);
        if (d.Rejection == RateLimitRejection.BudgetExceeded)
        {
            headers["x-should-retry"] = "false";
        }
        if (d.LimitRequests is int requests)
        {
            headers[LimitRequests] = requests.ToString(CultureInfo.InvariantCulture);
            headers[RemainingRequests] = (d.RemainingRequests ?? 0).ToString(CultureInfo.InvariantCulture);
            headers[ResetRequests] = FormatDuration(retryable && d.Rejection == RateLimitRejection.RequestsPerMinute ? d.RetryAfter : d.ResetRequests);
        }
        if (d.LimitTokens is int tokens)
        {
            headers[LimitTokens] = tokens.ToString(CultureInfo.InvariantCulture);
            headers[RemainingTokens] = (d.RemainingTokens ?? 0).ToString(CultureInfo.InvariantCulture);
            headers[ResetTokens] = FormatDuration(retryable && d.Rejection == RateLimitRejection.TokensPerMinute ? d.RetryAfter : d.ResetTokens);
        }
        if (retryable)
        {
            var seconds = Math.Max(1, (long)Math.Ceiling(d.RetryAfter.TotalSeconds));
            headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
        }
    }

    /// <summary>OpenAI's (Go's) duration format: <c>12ms</c>, <c>1s</c>, <c>8.64s</c>, <c>6m0s</c>, <c>1h2m3s</c>; whole milliseconds, rounded up.</summary>
    public static string FormatDuration(TimeSpan t)
    {
        var ms = (long)Math.Ceiling(t.TotalMilliseconds);
        if (ms <= 0)
        {
            return "0s";
        }
        if (ms < 1000)
        {
            return string.Create(CultureInfo.InvariantCulture, $"{ms}ms");
        }
        var hours = ms / 3_600_000;
        var minutes = ms / 60_000 % 60;
        var seconds = ms / 1000 % 60;
        var fraction = ms % 1000;
        Span<char> buffer = stackalloc char[48];
        var n = 0;
        if (hours > 0)
        {
            hours.TryFormat(buffer, out var w, provider: CultureInfo.InvariantCulture);
            n += w;
            buffer[n++] = 'h';
        }
        if (hours > 0 || minutes > 0)
        {
            minutes.TryFormat(buffer[n..], out var w, provider: CultureInfo.InvariantCulture);
            n += w;
            buffer[n++] = 'm';
        }
        seconds.TryFormat(buffer[n..], out var s, provider: CultureInfo.InvariantCulture);
        n += s;
        if (fraction > 0)
        {
            buffer[n++] = '.';
            fraction.TryFormat(buffer[n..], out var f, "000", CultureInfo.InvariantCulture);
            n += f;
            while (buffer[n - 1] == '0')
            {
                n--;
            }
        }
        buffer[n++] = 's';
        return new string(buffer[..n]);
    }
}
