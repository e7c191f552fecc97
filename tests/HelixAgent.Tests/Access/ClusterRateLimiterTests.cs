using System.Diagnostics;
using HelixAgent.Api.Access;
using HelixAgent.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace HelixAgent.Tests.Access;

/// <summary>The cluster-wide limits on a real redis-server.</summary>
public sealed class ClusterRateLimiterTests(OwnRedisServer redis, ITestOutputHelper output) : IClassFixture<OwnRedisServer>
{
    /// <summary>What Redis counts for the key in all its buckets of one kind (<c>r</c> requests, <c>t</c> tokens).</summary>
    private async Task<long> CountedAsync(string key, string kind)
    {
        await using var admin = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        var counted = 0L;
        await foreach (var bucket in admin.GetServer(admin.GetEndPoints()[0]).KeysAsync(pattern: $"helixagent:rl:{{{key}}}:{kind}:*"))
        {
            counted += (long)await admin.GetDatabase().StringGetAsync(bucket);
        }
        return counted;
    }

    [Fact]
    public async Task Requests_per_minute_admits_exactly_the_limit_then_rejects_with_retry_after_and_openai_headers()
    {
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(RequestsPerMinute: 5, TokensPerMinute: null);

        for (var i = 0; i < 5; i++)
        {
            var ok = await replica.Limiter.AdmitAsync(key, policy, 10, CancellationToken.None);
            Assert.True(ok.Allowed, $"request {i + 1} of 5 must be admitted");
            Assert.False(ok.Degraded);
            Assert.Equal(5 - i - 1, ok.RemainingRequests);
        }

        var rejected = await replica.Limiter.AdmitAsync(key, policy, 10, CancellationToken.None);
        Assert.False(rejected.Allowed);
        Assert.False(rejected.Degraded);
        Assert.Equal(RateLimitRejection.RequestsPerMinute, rejected.Rejection);
        Assert.Equal(0, rejected.RemainingRequests);
        Assert.True(rejected.RetryAfter > TimeSpan.Zero);
        Assert.True(rejected.RetryAfter <= TimeSpan.FromMinutes(2));
        Assert.Contains("5 requests per minute", rejected.Reason);

        var response = new DefaultHttpContext().Response;
        RateLimitHeaders.Apply(response, rejected);
        Assert.Equal("5", response.Headers["x-ratelimit-limit-requests"]);
        Assert.Equal("0", response.Headers["x-ratelimit-remaining-requests"]);
        Assert.NotEmpty(response.Headers["x-ratelimit-reset-requests"].ToString());
        Assert.True(int.Parse(response.Headers.RetryAfter!) >= 1);
        Assert.False(response.Headers.ContainsKey("x-ratelimit-limit-tokens")); // no token limit, no token headers

        Assert.Equal(5, replica.Limiter.Admitted);
        Assert.Equal(1, replica.Limiter.Rejected);
        Assert.Equal(0, replica.Limiter.DegradedDecisions);
    }

    [Fact]
    public async Task Tokens_per_minute_rejects_a_reservation_that_would_exceed_and_settlement_giving_tokens_back_lets_a_later_request_in()
    {
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(RequestsPerMinute: null, TokensPerMinute: 1000);

        var first = await replica.Limiter.AdmitAsync(key, policy, 600, CancellationToken.None);
        Assert.True(first.Allowed);
        Assert.Equal(400, first.RemainingTokens);
        Assert.Null(first.RemainingRequests);

        var second = await replica.Limiter.AdmitAsync(key, policy, 600, CancellationToken.None);
        Assert.False(second.Allowed);
        Assert.Equal(RateLimitRejection.TokensPerMinute, second.Rejection);
        Assert.True(second.RetryAfter > TimeSpan.Zero);

        // The first response used 100 of the 600 reserved: 500 go back.
        await replica.Limiter.SettleAsync(first.Ticket, actualTokens: 100);

        var third = await replica.Limiter.AdmitAsync(key, policy, 600, CancellationToken.None);
        Assert.True(third.Allowed, "the refund must make room for 600 more tokens");
        Assert.Equal(300, third.RemainingTokens);
    }

    [Fact]
    public async Task Settlement_above_the_reservation_charges_the_extra_tokens()
    {
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(null, 1000);

        var first = await replica.Limiter.AdmitAsync(key, policy, 100, CancellationToken.None);
        Assert.True(first.Allowed);
        await replica.Limiter.SettleAsync(first.Ticket, actualTokens: 950); // the estimate was far too low

        var second = await replica.Limiter.AdmitAsync(key, policy, 100, CancellationToken.None);
        Assert.False(second.Allowed);
        Assert.Equal(RateLimitRejection.TokensPerMinute, second.Rejection);
    }

    [Fact]
    public async Task A_request_whose_reservation_alone_exceeds_the_token_limit_is_rejected_with_a_reason_and_no_retry_after()
    {
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(RequestsPerMinute: 10, TokensPerMinute: 1000);

        var decision = await replica.Limiter.AdmitAsync(key, policy, 5000, CancellationToken.None);

        Assert.False(decision.Allowed);
        Assert.False(decision.Degraded);
        Assert.Equal(RateLimitRejection.RequestExceedsTokenLimit, decision.Rejection);
        Assert.Contains("5000 tokens", decision.Reason);
        Assert.Contains("1000 tokens per minute", decision.Reason);
        Assert.Equal(1000, decision.RemainingTokens); // nothing was counted
        Assert.Equal(10, decision.RemainingRequests);

        var response = new DefaultHttpContext().Response;
        RateLimitHeaders.Apply(response, decision);
        Assert.False(response.Headers.ContainsKey("Retry-After"));
        Assert.Equal("1000", response.Headers["x-ratelimit-limit-tokens"]);
    }

    [Fact]
    public async Task Two_replicas_hammered_concurrently_admit_at_most_the_cluster_wide_limit()
    {
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15)); // one window, slices granted throughout
        const int limit = 200;
        const int callsPerReplica = 300;
        await using var a = await Replica.ConnectAsync(redis);
        await using var b = await Replica.ConnectAsync(redis);
        var policy = new RateLimitPolicy(limit, null);

        // Load the script on both connections first, so the hammer measures admissions, not the first EVAL.
        var warm = new RateLimitPolicy(1000, null);
        await a.Limiter.AdmitAsync("warm-" + RateLimitTestKeys.NewKeyId(), warm, 0, CancellationToken.None);
        await b.Limiter.AdmitAsync("warm-" + RateLimitTestKeys.NewKeyId(), warm, 0, CancellationToken.None);

        // Both replicas must take part in the admissions for this to test anything. On a busy 2-core machine one
        // replica's 300 calls can all reach Redis after the other's used the limit up (CI once saw 0 and 200); then a
        // fresh key is hammered again, at most 3 times, within the same minute.
        for (var attempt = 0; ; attempt++)
        {
            var key = RateLimitTestKeys.NewKeyId();
            var (admittedBeforeA, admittedBeforeB) = (a.Limiter.Admitted, b.Limiter.Admitted);
            var stopwatch = Stopwatch.StartNew();
            var calls = Enumerable.Range(0, callsPerReplica)
                .SelectMany(_ => new[] { a.Limiter, b.Limiter })
                .Select(limiter => Task.Run(async () => await limiter.AdmitAsync(key, policy, 1, CancellationToken.None)))
                .ToArray();
            var decisions = await Task.WhenAll(calls);
            stopwatch.Stop();

            var admitted = decisions.Count(d => d.Allowed);
            var admittedByA = a.Limiter.Admitted - admittedBeforeA;
            var admittedByB = b.Limiter.Admitted - admittedBeforeB;
            output.WriteLine($"{decisions.Length} concurrent calls on 2 replicas against {limit} RPM: admitted {admitted} " +
                $"(replica A {admittedByA}, replica B {admittedByB}), rejected {decisions.Length - admitted}, " +
                $"degraded {decisions.Count(d => d.Degraded)}, {stopwatch.ElapsedMilliseconds} ms");

            Assert.DoesNotContain(decisions, d => d.Degraded);
            Assert.True(admitted <= limit * 1.01, $"admitted {admitted} > {limit} × 1.01");
            Assert.True(admitted >= limit * 0.99, $"admitted {admitted}: the limit must not under-admit either");
            Assert.All(decisions.Where(d => !d.Allowed), d => Assert.True(d.RetryAfter > TimeSpan.Zero));
            if (admittedByA > 0 && admittedByB > 0)
            {
                break;
            }
            Assert.True(attempt < 2, "both replicas took part in none of 3 attempts");
        }
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
    }

    [Fact]
    public async Task A_key_with_a_high_limit_is_admitted_from_slices_counted_in_redis_ahead_so_most_admissions_need_no_round_trip()
    {
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15)); // one window, slices granted throughout
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(1_000_000, null);
        Assert.Equal(new ClusterRateLimiter.SliceShape(ClusterRateLimiter.MaxSliceSize, 0), ClusterRateLimiter.SliceSize(policy));
        await using var admin = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",allowAdmin=true");
        var server = admin.GetServer(admin.GetEndPoints()[0]);
        var before = EvalCounts(await server.InfoAsync("commandstats"));

        var decisions = new List<RateLimitDecision>();
        for (var i = 0; i < 1000; i++)
        {
            decisions.Add(await replica.Limiter.AdmitAsync(key, policy, 10, CancellationToken.None));
        }

        var after = EvalCounts(await server.InfoAsync("commandstats"));
        var scriptCalls = after.Eval + after.EvalSha - before.Eval - before.EvalSha;
        output.WriteLine($"1000 admissions: {replica.Limiter.SliceAdmissions} from slices, {scriptCalls} script calls");
        Assert.All(decisions, d => Assert.True(d.Allowed && !d.Degraded && !d.Ticket.Local && d.Ticket.HoldsReservation));
        Assert.True(replica.Limiter.SliceAdmissions >= 900, $"only {replica.Limiter.SliceAdmissions} of 1000 from slices");
        Assert.True(scriptCalls <= 60, $"{scriptCalls} script calls for 1000 admissions");
        Assert.All(decisions, d => Assert.InRange(d.RemainingRequests ?? -1, 1_000_000 - 1000 - 2 * ClusterRateLimiter.MaxSliceSize, 1_000_000 - 1));
        // Counted before use: Redis holds every admission, and at most what the replica's slice still holds besides.
        var counted = await CountedAsync(key, "r");
        Assert.InRange(counted, 1000, 1000 + 2 * ClusterRateLimiter.MaxSliceSize);
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
    }

    [Fact]
    public async Task A_key_with_high_request_and_token_limits_takes_tokens_with_its_slices_and_settles_against_them_without_a_round_trip()
    {
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15)); // one window, slices granted throughout
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(1_000_000, 10_000_000);
        Assert.Equal(new ClusterRateLimiter.SliceShape(100, 50_000), ClusterRateLimiter.SliceSize(policy));

        var decisions = new List<RateLimitDecision>();
        for (var i = 0; i < 300; i++)
        {
            var decision = await replica.Limiter.AdmitAsync(key, policy, 1_000, CancellationToken.None);
            decisions.Add(decision);
            await replica.Limiter.SettleAsync(decision.Ticket, 400); // each answer used 400 of the 1,000 reserved
        }

        Assert.All(decisions, d => Assert.True(d.Allowed && !d.Degraded));
        // A slice holds 50 reservations of 1,000 tokens: most admissions come from slices, and the 600 tokens each
        // request did not use go back into the slice instead of to Redis.
        Assert.True(replica.Limiter.SliceAdmissions >= 250, $"only {replica.Limiter.SliceAdmissions} of 300 from slices");
        Assert.True(replica.Limiter.SliceSettlements >= 250, $"only {replica.Limiter.SliceSettlements} of 300 settled in the slice");
        Assert.All(decisions.Where(d => d.Ticket.HoldsReservation), d => Assert.Equal(1_000, d.Ticket.ReservedTokens));
        Assert.All(decisions, d => Assert.InRange(d.RemainingTokens ?? -1, 10_000_000 - 300 * 1_000 - 2 * 50_000, 10_000_000));
        // Redis holds the 300 × 400 tokens used, plus what the replica's current slice still holds unused: never less
        // than was used, never more than a slice or two over.
        var tokens = await CountedAsync(key, "t");
        Assert.InRange(tokens, 300 * 400, 300 * 400 + 2 * 50_000);
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
    }

    [Fact]
    public async Task Tokens_used_beyond_the_reservation_come_out_of_the_slice_or_are_counted_in_redis_so_redis_never_counts_less_than_was_used()
    {
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15)); // one window, slices granted throughout
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(1_000_000, 10_000_000); // slices of 100 requests and 50,000 tokens

        var used = 0L;
        for (var i = 0; i < 200; i++)
        {
            var decision = await replica.Limiter.AdmitAsync(key, policy, 100, CancellationToken.None);
            Assert.True(decision.Allowed);
            // Every tenth answer is far longer than reserved: 30,000 tokens, more than half a slice.
            var actual = i % 10 == 9 ? 30_000 : 100;
            used += actual;
            await replica.Limiter.SettleAsync(decision.Ticket, actual);
        }

        var tokens = await CountedAsync(key, "t");
        output.WriteLine($"used {used} tokens, Redis counted {tokens}; {replica.Limiter.SliceSettlements} of 200 settled in the slice");
        Assert.InRange(tokens, used, used + 2 * 50_000);
        Assert.True(replica.Limiter.SliceSettlements > 0);
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
    }

    [Fact]
    public async Task Refilling_a_slice_for_small_requests_counts_no_more_tokens_in_redis_than_they_use_plus_one_slice()
    {
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15)); // one window, slices granted throughout
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(1_000_000, 10_000_000); // slices of 100 requests and 50,000 tokens

        for (var i = 0; i < 500; i++)
        {
            var decision = await replica.Limiter.AdmitAsync(key, policy, 10, CancellationToken.None);
            Assert.True(decision.Allowed);
            await replica.Limiter.SettleAsync(decision.Ticket, 10);
        }

        // Requests run out long before tokens: each refill must top the slice up, not count another 50,000 tokens
        // (which would use up the key's tokens per minute with a few thousand small requests).
        var tokens = await CountedAsync(key, "t");
        Assert.True(replica.Limiter.SliceAdmissions >= 400, $"only {replica.Limiter.SliceAdmissions} of 500 from slices");
        Assert.InRange(tokens, 500 * 10, 500 * 10 + 50_000);
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
    }

    [Fact]
    public async Task Two_replicas_hammered_concurrently_on_a_sliced_limit_admit_at_most_the_limit_and_at_least_99_percent_of_it()
    {
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15)); // one window, slices granted throughout
        const int limit = 10_000;
        const int callsPerReplica = 6_000;
        await using var a = await Replica.ConnectAsync(redis);
        await using var b = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var policy = new RateLimitPolicy(limit, null);
        Assert.Equal(new ClusterRateLimiter.SliceShape(50, 0), ClusterRateLimiter.SliceSize(policy));

        // 16 callers per replica at a time, as many requests in flight as a busy gateway has.
        var bag = new System.Collections.Concurrent.ConcurrentBag<RateLimitDecision>();
        await Task.WhenAll(new[] { a.Limiter, b.Limiter }.Select(limiter => Parallel.ForEachAsync(Enumerable.Range(0, callsPerReplica),
            new ParallelOptions { MaxDegreeOfParallelism = 16 },
            async (_, _) => bag.Add(await limiter.AdmitAsync(key, policy, 1, CancellationToken.None)))));
        var decisions = bag.ToArray();

        var admitted = decisions.Count(d => d.Allowed);
        output.WriteLine($"{decisions.Length} calls on 2 replicas against {limit} RPM: admitted {admitted}, from slices " +
            $"{a.Limiter.SliceAdmissions} + {b.Limiter.SliceAdmissions}, degraded {decisions.Count(d => d.Degraded)}");
        Assert.DoesNotContain(decisions, d => d.Degraded);
        Assert.True(admitted <= limit, $"admitted {admitted} > {limit}");
        Assert.True(admitted >= limit * 0.99, $"admitted {admitted}: the limit must not under-admit either");
        Assert.All(decisions.Where(d => !d.Allowed), d => Assert.True(d.RetryAfter > TimeSpan.Zero));
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
    }

    [Fact]
    public async Task Buckets_are_named_by_key_id_and_minute_with_a_two_minute_expiry_and_never_hold_the_secret()
    {
        await using var replica = await Replica.ConnectAsync(redis);
        var key = RateLimitTestKeys.NewKeyId();
        var decision = await replica.Limiter.AdmitAsync(key, new RateLimitPolicy(10, 1000), 42, CancellationToken.None);
        Assert.True(decision.Allowed);

        var server = replica.Redis!.GetServer(replica.Redis.GetEndPoints()[0]);
        var found = new List<string>();
        await foreach (var k in server.KeysAsync(pattern: $"helixagent:rl:{{{key}}}:*"))
        {
            found.Add(k!);
        }
        var keys = found.Order().ToArray();
        Assert.Equal(
            [$"helixagent:rl:{{{key}}}:r:{decision.Ticket.Window}", $"helixagent:rl:{{{key}}}:seen", $"helixagent:rl:{{{key}}}:t:{decision.Ticket.Window}"],
            keys);

        var db = replica.Redis.GetDatabase();
        Assert.Equal(1, (long)await db.StringGetAsync(keys[0]));
        Assert.Equal(42, (long)await db.StringGetAsync(keys[2]));
        var ttl = await db.KeyTimeToLiveAsync(keys[0]);
        Assert.NotNull(ttl);
        Assert.InRange(ttl.Value, TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(126));

        // The window is the server's minute.
        var serverNow = await server.TimeAsync();
        Assert.InRange(decision.Ticket.Window, new DateTimeOffset(serverNow).ToUnixTimeMilliseconds() / 60_000 - 1,
            new DateTimeOffset(serverNow).ToUnixTimeMilliseconds() / 60_000);
    }

    [Fact]
    public async Task The_script_is_run_by_its_hash_after_the_first_load()
    {
        await using var replica = await Replica.ConnectAsync(redis);
        var policy = new RateLimitPolicy(100, null);
        var key = RateLimitTestKeys.NewKeyId();
        // The key's first admission also rebuilds its window (Redis has not seen it): Admit, Seed, Admit.
        await replica.Limiter.AdmitAsync(key, policy, 0, CancellationToken.None);
        await using var admin = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",allowAdmin=true");
        var server = admin.GetServer(admin.GetEndPoints()[0]);
        Assert.True(await server.ScriptExistsAsync(RateLimitScripts.AdmitSha1));

        var before = EvalCounts(await server.InfoAsync("commandstats"));
        for (var i = 0; i < 20; i++)
        {
            await replica.Limiter.AdmitAsync(key, policy, 0, CancellationToken.None);
        }
        var after = EvalCounts(await server.InfoAsync("commandstats"));
        Assert.Equal(20, after.EvalSha - before.EvalSha);
        Assert.Equal(0, after.Eval - before.Eval);
    }

    private static (long Eval, long EvalSha) EvalCounts(IGrouping<string, KeyValuePair<string, string>>[] info)
    {
        long Calls(string name)
        {
            var entry = info.SelectMany(g => g).FirstOrDefault(kv => kv.Key == $"cmdstat_{name}");
            if (entry.Value is null)
            {
                return 0;
            }
            var calls = entry.Value.Split(',')[0]; // calls=N
            return long.Parse(calls["calls=".Length..]);
        }
        return (Calls("eval"), Calls("evalsha"));
    }
}
