using HelixAgent.Api.Access;
using Microsoft.AspNetCore.Http;

namespace HelixAgent.Tests.Access;

/// <summary>The per-replica fallback and the header format, without Redis.</summary>
public sealed class LocalRateLimitTests
{
    [Fact]
    public async Task Without_a_redis_connection_registered_the_same_limits_apply_per_replica()
    {
        await using var replica = Replica.WithoutRedis();
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(RequestsPerMinute: 3, TokensPerMinute: null);

        for (var i = 0; i < 3; i++)
        {
            var ok = await replica.Limiter.AdmitAsync(key, policy, 0, CancellationToken.None);
            Assert.True(ok.Allowed);
            Assert.True(ok.Degraded);
            Assert.True(ok.Ticket.Local);
        }
        var rejected = await replica.Limiter.AdmitAsync(key, policy, 0, CancellationToken.None);
        Assert.False(rejected.Allowed);
        Assert.True(rejected.Degraded);
        Assert.True(replica.Limiter.IsDegraded);

        // Another key has its own limit.
        Assert.True((await replica.Limiter.AdmitAsync(RateLimitTestKeys.NewKeyId(), policy, 0, CancellationToken.None)).Allowed);
    }

    [Fact]
    public async Task Locally_a_token_reservation_that_would_exceed_is_rejected_and_a_refund_lets_a_later_request_in()
    {
        await using var replica = Replica.WithoutRedis();
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(RequestsPerMinute: 10, TokensPerMinute: 1000);

        var first = await replica.Limiter.AdmitAsync(key, policy, 600, CancellationToken.None);
        Assert.True(first.Allowed);
        var second = await replica.Limiter.AdmitAsync(key, policy, 600, CancellationToken.None);
        Assert.False(second.Allowed);
        Assert.Equal(RateLimitRejection.TokensPerMinute, second.Rejection);
        Assert.True(second.RetryAfter > TimeSpan.Zero);
        Assert.Equal(9, second.RemainingRequests); // a token rejection does not spend a request

        await replica.Limiter.SettleAsync(first.Ticket, actualTokens: 100);
        var third = await replica.Limiter.AdmitAsync(key, policy, 600, CancellationToken.None);
        Assert.True(third.Allowed);
        Assert.True(third.Degraded);

        var tooBig = await replica.Limiter.AdmitAsync(key, policy, 1001, CancellationToken.None);
        Assert.Equal(RateLimitRejection.RequestExceedsTokenLimit, tooBig.Rejection);
        Assert.NotNull(tooBig.Reason);
    }

    [Fact]
    public async Task A_request_rejected_for_requests_gives_its_token_reservation_back()
    {
        await using var replica = Replica.WithoutRedis();
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(RequestsPerMinute: 1, TokensPerMinute: 1000);

        Assert.True((await replica.Limiter.AdmitAsync(key, policy, 100, CancellationToken.None)).Allowed);
        var rejected = await replica.Limiter.AdmitAsync(key, policy, 100, CancellationToken.None);
        Assert.Equal(RateLimitRejection.RequestsPerMinute, rejected.Rejection);
        Assert.Equal(900, rejected.RemainingTokens);
    }

    [Fact]
    public void A_limit_below_one_is_refused_when_the_policy_is_built()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new RateLimitPolicy(0, null));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RateLimitPolicy(null, -5));
        Assert.True(new RateLimitPolicy(null, null).IsUnlimited);
    }

    [Theory]
    [InlineData(0, "0s")]
    [InlineData(12, "12ms")]
    [InlineData(999, "999ms")]
    [InlineData(1000, "1s")]
    [InlineData(8640, "8.64s")]
    [InlineData(12_000, "12s")]
    [InlineData(60_000, "1m0s")]
    [InlineData(90_500, "1m30.5s")]
    [InlineData(360_000, "6m0s")]
    [InlineData(3_723_000, "1h2m3s")]
    public void Reset_durations_are_written_in_openai_format(long ms, string expected) =>
        Assert.Equal(expected, RateLimitHeaders.FormatDuration(TimeSpan.FromMilliseconds(ms)));

    [Fact]
    public void Headers_use_openai_names_only_for_limited_dimensions_and_retry_after_in_whole_seconds()
    {
        var decision = new RateLimitDecision(false, 60, 0, 10_000, 2500,
            TimeSpan.FromSeconds(61.5), TimeSpan.FromMilliseconds(30), TimeSpan.FromMilliseconds(1200),
            Degraded: false, new RateLimitTicket("k", -1, 10, false), RateLimitRejection.RequestsPerMinute);
        var response = new DefaultHttpContext().Response;
        RateLimitHeaders.Apply(response, decision);

        Assert.Equal("60", response.Headers["x-ratelimit-limit-requests"]);
        Assert.Equal("0", response.Headers["x-ratelimit-remaining-requests"]);
        // Refused on requests: its reset is when the next request fits, as Retry-After says (not the full 61.5 s).
        Assert.Equal("1.2s", response.Headers["x-ratelimit-reset-requests"]);
        Assert.Equal("10000", response.Headers["x-ratelimit-limit-tokens"]);
        Assert.Equal("2500", response.Headers["x-ratelimit-remaining-tokens"]);
        Assert.Equal("30ms", response.Headers["x-ratelimit-reset-tokens"]);
        Assert.Equal("2", response.Headers.RetryAfter);

        var tokensOnly = new RateLimitDecision(true, null, null, 500, 400, TimeSpan.Zero, TimeSpan.FromSeconds(1),
            TimeSpan.Zero, false, default);
        var other = new DefaultHttpContext().Response;
        RateLimitHeaders.Apply(other, tokensOnly);
        Assert.False(other.Headers.ContainsKey("x-ratelimit-limit-requests"));
        Assert.False(other.Headers.ContainsKey("x-ratelimit-remaining-requests"));
        Assert.False(other.Headers.ContainsKey("Retry-After"));
        Assert.Equal("500", other.Headers["x-ratelimit-limit-tokens"]);
    }

    [Theory]
    [InlineData(100, 0, 0, 1, 0, 0)]                 // empty: fits now
    [InlineData(100, 100, 0, 1, 30_000, 0)]          // half of the previous minute still counts: 50 + 1 fits
    [InlineData(100, 100, 50, 1, 0, 30_600)]         // fits once the previous minute's weight drops below 49 %
    [InlineData(100, 0, 100, 1, 0, 60_600)]          // this minute is full: fits 0.6 s into the next one
    [InlineData(100, 0, 0, 101, 0, -1)]              // never fits
    public void The_sliding_estimate_waits_exactly_until_the_cost_fits(long limit, long previous, long current, long cost, long elapsed, long expected) =>
        Assert.Equal(expected, SlidingWindow.WaitMs(limit, previous, current, cost, elapsed));
}
