using System.Collections.Concurrent;
using System.Threading.RateLimiting;

namespace HelixAgent.Api.Access;

/// <summary>
/// The per-replica fallback used while Redis is unreachable: the same policy, enforced by this process alone.
/// Requests: a <see cref="PartitionedRateLimiter{TResource}"/> of <see cref="SlidingWindowRateLimiter"/>s
/// (12 five-second segments), which replenishes them from one shared timer and drops a key's limiter once it has been
/// idle (fully replenished) for a few seconds. Tokens: the two-bucket estimate of <see cref="SlidingWindow"/>, because
/// settlement must be able to give reserved tokens back, which System.Threading.RateLimiting's leases cannot; buckets
/// whose minutes no longer count are swept every 30 s.
/// </summary>
internal sealed class LocalRateLimiter : IDisposable
{
    internal const int SegmentsPerWindow = 12;
    private static readonly TimeSpan Window = TimeSpan.FromMilliseconds(SlidingWindow.WindowMs);
    private static readonly TimeSpan Segment = Window / SegmentsPerWindow;
    private const long SweepEveryMs = 30_000;

    private readonly TimeProvider _time;
    private readonly PartitionedRateLimiter<RequestPartition> _requests;
    private readonly ConcurrentDictionary<string, TokenBuckets> _tokens = new(StringComparer.Ordinal);
    private long _nextSweepMs;

    public LocalRateLimiter(TimeProvider time)
    {
        _time = time;
        _requests = PartitionedRateLimiter.Create<RequestPartition, RequestPartition>(static p =>
            RateLimitPartition.Get(p, static p => new SlidingWindowRateLimiter(new SlidingWindowRateLimiterOptions
            {
                PermitLimit = p.Limit,
                Window = Window,
                SegmentsPerWindow = SegmentsPerWindow,
                QueueLimit = 0,
                AutoReplenishment = false, // the partitioned limiter's timer replenishes every partition
            })));
    }

    /// <summary>Keys with live token buckets (for tests and diagnostics).</summary>
    internal int TrackedTokenKeys => _tokens.Count;

    public RateLimitDecision Admit(string keyId, RateLimitPolicy policy, int cost)
    {
        var nowMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var window = nowMs / SlidingWindow.WindowMs;
        var elapsed = nowMs - window * SlidingWindow.WindowMs;
        MaybeSweep(nowMs, window);

        // Tokens first: they can be reserved and rolled back exactly, request permits cannot be returned.
        long tokenWait = 0;
        int? remainingTokens = null;
        long tokenReset = 0;
        TokenBuckets? buckets = null;
        if (policy.TokensPerMinute is int tpm)
        {
            while (true)
            {
                buckets = _tokens.GetOrAdd(keyId, static _ => new TokenBuckets());
                lock (buckets)
                {
                    if (buckets.Evicted)
                    {
                        continue; // swept between GetOrAdd and lock: take the fresh one
                    }
                    buckets.Roll(window);
                    tokenWait = SlidingWindow.WaitMs(tpm, buckets.Previous, buckets.Current, cost, elapsed);
                    if (tokenWait == 0)
                    {
                        buckets.Current += cost;
                    }
                    remainingTokens = SlidingWindow.Remaining(tpm, buckets.Previous, buckets.Current, elapsed);
                    tokenReset = SlidingWindow.ResetMs(buckets.Previous, buckets.Current, elapsed);
                    break;
                }
            }
        }

        long requestWait = 0;
        int? remainingRequests = null;
        var requestReset = TimeSpan.Zero;
        if (policy.RequestsPerMinute is int rpm)
        {
            var partition = new RequestPartition(keyId, rpm);
            if (tokenWait == 0)
            {
                using var lease = _requests.AttemptAcquire(partition);
                if (!lease.IsAcquired)
                {
                    // A permit frees up at a segment boundary at the earliest.
                    requestWait = (long)Segment.TotalMilliseconds;
                    if (buckets is not null)
                    {
                        lock (buckets)
                        {
                            buckets.Adjust(window, -cost);
                            remainingTokens = SlidingWindow.Remaining(policy.TokensPerMinute!.Value, buckets.Previous, buckets.Current, elapsed);
                        }
                    }
                }
            }
            var available = _requests.GetStatistics(partition)?.CurrentAvailablePermits ?? rpm;
            remainingRequests = (int)Math.Clamp(available, 0, rpm);
            requestReset = remainingRequests < rpm ? Window : TimeSpan.Zero;
        }

        var allowed = tokenWait == 0 && requestWait == 0;
        var rejection = allowed ? RateLimitRejection.None
            : tokenWait < 0 ? RateLimitRejection.RequestExceedsTokenLimit
            : tokenWait > 0 ? RateLimitRejection.TokensPerMinute
            : RateLimitRejection.RequestsPerMinute;
        var retry = Math.Max(Math.Max(tokenWait, requestWait), 0);
        return new RateLimitDecision(
            allowed,
            policy.RequestsPerMinute, remainingRequests,
            policy.TokensPerMinute, remainingTokens,
            requestReset, TimeSpan.FromMilliseconds(tokenReset), TimeSpan.FromMilliseconds(retry),
            Degraded: true,
            new RateLimitTicket(keyId, allowed && buckets is not null ? window : -1, cost, Local: true),
            rejection);
    }

    /// <summary>
    /// Starts the key's local window with what was used already (as Redis last said): that many request permits are
    /// taken (they come back as the window slides), and the token bucket of this minute holds at least that many.
    /// </summary>
    public void Seed(string keyId, RateLimitPolicy policy, int usedRequests, long usedTokens)
    {
        if (policy.RequestsPerMinute is int rpm && usedRequests > 0)
        {
            var partition = new RequestPartition(keyId, rpm);
            var available = _requests.GetStatistics(partition)?.CurrentAvailablePermits ?? rpm;
            if (Math.Min(usedRequests, available) is var take and > 0)
            {
                _requests.AttemptAcquire(partition, (int)take).Dispose();
            }
        }
        if (policy.TokensPerMinute is not null && usedTokens > 0)
        {
            var window = _time.GetUtcNow().ToUnixTimeMilliseconds() / SlidingWindow.WindowMs;
            var buckets = _tokens.GetOrAdd(keyId, static _ => new TokenBuckets());
            lock (buckets)
            {
                if (!buckets.Evicted)
                {
                    buckets.Roll(window);
                    buckets.Current = Math.Max(buckets.Current, usedTokens);
                }
            }
        }
    }

    /// <summary>Corrects the local token count of the ticket's minute by <paramref name="delta"/>.</summary>
    public void Settle(string keyId, long window, int delta)
    {
        if (_tokens.TryGetValue(keyId, out var buckets))
        {
            lock (buckets)
            {
                if (!buckets.Evicted)
                {
                    buckets.Adjust(window, delta);
                }
            }
        }
    }

    private void MaybeSweep(long nowMs, long window)
    {
        var next = Volatile.Read(ref _nextSweepMs);
        if (nowMs < next || Interlocked.CompareExchange(ref _nextSweepMs, nowMs + SweepEveryMs, next) != next)
        {
            return;
        }
        foreach (var entry in _tokens)
        {
            var buckets = entry.Value;
            lock (buckets)
            {
                if (buckets.Window < window - 1) // neither bucket counts any more
                {
                    buckets.Evicted = true;
                    _tokens.TryRemove(entry);
                }
            }
        }
    }

    public void Dispose() => _requests.Dispose();

    private readonly record struct RequestPartition(string KeyId, int Limit);

    /// <summary>Two one-minute token buckets of one key; guarded by locking the instance.</summary>
    private sealed class TokenBuckets
    {
        public long Window = long.MinValue;
        public long Previous;
        public long Current;
        public bool Evicted;

        public void Roll(long window)
        {
            if (window == Window)
            {
                return;
            }
            Previous = window == Window + 1 ? Current : 0;
            Current = 0;
            Window = window;
        }

        public void Adjust(long window, long delta)
        {
            if (window == Window)
            {
                Current = Math.Max(0, Current + delta);
            }
            else if (window == Window - 1)
            {
                Previous = Math.Max(0, Previous + delta);
            }
        }
    }
}
