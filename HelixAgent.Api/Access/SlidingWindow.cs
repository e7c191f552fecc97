namespace HelixAgent.Api.Access;

/// <summary>
/// The sliding-window estimate over two fixed one-minute buckets, shared by the local fallback and mirrored
/// line for line by the Lua script in <see cref="RateLimitScripts.Admit"/>:
/// <c>estimate = previous × (1 − elapsed/60 s) + current</c>.
/// </summary>
internal static class SlidingWindow
{
    public const long WindowMs = 60_000;

    /// <summary>Milliseconds until <paramref name="cost"/> fits (no further admissions assumed): 0 = fits now, -1 = never.</summary>
    public static long WaitMs(long limit, long previous, long current, long cost, long elapsedMs)
    {
        var weight = (double)(WindowMs - elapsedMs) / WindowMs;
        if (previous * weight + current + cost <= limit)
        {
            return 0;
        }
        if (cost > limit)
        {
            return -1;
        }
        double wait;
        if (current + cost <= limit)
        {
            // Fits later in this minute, once the previous bucket's weight has dropped enough (previous > 0 here).
            wait = Math.Ceiling((double)(WindowMs * (previous - limit + current + cost)) / previous) - elapsedMs;
        }
        else
        {
            // Fits only next minute, once this minute's bucket (then the previous one) has decayed enough.
            wait = WindowMs - elapsedMs + Math.Ceiling((double)(WindowMs * (current - limit + cost)) / current);
        }
        return Math.Max(1, (long)wait);
    }

    /// <summary>What is left of <paramref name="limit"/> now, rounded down.</summary>
    public static int Remaining(long limit, long previous, long current, long elapsedMs)
    {
        var estimate = previous * ((double)(WindowMs - elapsedMs) / WindowMs) + current;
        return (int)Math.Clamp(Math.Floor(limit - estimate), 0, int.MaxValue);
    }

    /// <summary>Milliseconds until everything counted so far has left the estimate (back to the initial state).</summary>
    public static long ResetMs(long previous, long current, long elapsedMs) =>
        current > 0 ? 2 * WindowMs - elapsedMs
        : previous > 0 ? WindowMs - elapsedMs
        : 0;
}
