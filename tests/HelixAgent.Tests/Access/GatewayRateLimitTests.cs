using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace HelixAgent.Tests.Access;

/// <summary>Per-key limits as clients meet them: 429 with Retry-After and x-ratelimit headers, shared by replicas.</summary>
public sealed class GatewayRateLimitTests(PostgresServer postgres, OwnRedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<OwnRedisServer>
{
    private static async Task<string> KeyAsync(GatewayHarness gw, string name, int? rpm, int? tpm)
    {
        await using var ds = NpgsqlDataSource.Create(gw.DatabaseConnectionString);
        return (await new ApiKeyStore(ds).CreateAsync(name, "client", rpm, tpm, null, null, DateTimeOffset.UtcNow)).Secret;
    }

    private static StringContent Chat(int? maxTokens = null)
    {
        var body = GatewayHarness.Chat("sim-small");
        if (maxTokens is { } m)
        {
            body["max_tokens"] = m;
        }
        return new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
    }

    [Fact]
    public async Task A_key_over_its_requests_per_minute_gets_429_with_retry_after_and_openai_headers()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var client = gw.WithKey(await KeyAsync(gw, "rpm-3-" + Guid.NewGuid().ToString("N")[..6], 3, null));
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15)); // one window: the 4th request is over the limit

        for (var i = 0; i < 3; i++)
        {
            var ok = await client.PostAsync("/v1/chat/completions", Chat());
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            Assert.Equal("3", ok.Headers.GetValues("x-ratelimit-limit-requests").Single());
            Assert.Equal((2 - i).ToString(), ok.Headers.GetValues("x-ratelimit-remaining-requests").Single());
        }
        var limited = await client.PostAsync("/v1/chat/completions", Chat());

        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.True(limited.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
        Assert.Equal("rate_limit_exceeded", JsonNode.Parse(await limited.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        Assert.Equal("0", limited.Headers.GetValues("x-ratelimit-remaining-requests").Single());
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
        Assert.Equal(3, (await gw.LedgerRowsAsync(3)).Count);
    }

    [Fact]
    public async Task A_request_that_alone_needs_more_than_the_tokens_per_minute_is_refused_with_400()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var client = gw.WithKey(await KeyAsync(gw, "tpm-100", null, 100));

        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync("/v1/chat/completions", Chat(maxTokens: 20))).StatusCode);
        var tooBig = await client.PostAsync("/v1/chat/completions", Chat(maxTokens: 500));

        Assert.Equal(HttpStatusCode.BadRequest, tooBig.StatusCode);
        Assert.Equal("tokens_exceed_limit", JsonNode.Parse(await tooBig.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
    }

    [Fact]
    public async Task Two_gateway_replicas_sharing_redis_hold_one_limit_within_one_percent()
    {
        await using var a = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        await using var b = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings(), databaseConnectionString: a.DatabaseConnectionString);
        var key = await KeyAsync(a, "shared-" + Guid.NewGuid().ToString("N")[..6], 100, null);
        var clients = new[] { a.WithKey(key), b.WithKey(key) };
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15)); // one window, slices granted throughout

        var responses = await Task.WhenAll(Enumerable.Range(0, 300).Select(i => clients[i % 2].PostAsync("/v1/chat/completions", Chat())));
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));

        // Each replica got 150 requests: limits kept per replica would admit up to 200 in all.
        var admitted = responses.Count(r => r.StatusCode == HttpStatusCode.OK);
        Assert.InRange(admitted, 100, 101);
        Assert.All(responses, r => Assert.True(r.StatusCode is HttpStatusCode.OK or HttpStatusCode.TooManyRequests));
    }

    [Fact]
    public async Task Without_redis_limits_fall_back_to_each_replica_and_requests_still_succeed()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var client = gw.WithKey(await KeyAsync(gw, "degraded", 5, null));
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync("/v1/chat/completions", Chat())).StatusCode);

        await redis.StopAsync();
        try
        {
            var statuses = new List<HttpStatusCode>();
            for (var i = 0; i < 7; i++)
            {
                statuses.Add((await client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
            }
            // The replica goes on from what Redis last said (1 of 5 used): 4 more, not a fresh 5.
            Assert.Equal(4, statuses.Count(s => s == HttpStatusCode.OK));
            Assert.Equal(HttpStatusCode.TooManyRequests, statuses[^1]);
            var health = JsonNode.Parse(await (await gw.Anonymous().GetAsync("/health")).Content.ReadAsStringAsync())!;
            Assert.Equal("degraded", health["status"]!.GetValue<string>());
        }
        finally
        {
            await redis.StartAsync();
        }
    }

    /// <summary>Sends <paramref name="count"/> requests, 8 at a time; returns how many were admitted.</summary>
    private static async Task<int> SendAsync(HttpClient client, int count)
    {
        var ok = 0;
        for (var i = 0; i < count; i += 8)
        {
            var batch = await Task.WhenAll(Enumerable.Range(0, Math.Min(8, count - i)).Select(_ => client.PostAsync("/v1/chat/completions", Chat())));
            ok += batch.Count(r => r.StatusCode == HttpStatusCode.OK);
        }
        return ok;
    }

    [Fact]
    public async Task A_key_at_600_a_minute_keeps_its_count_across_a_redis_flush_rebuilt_from_the_ledger()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var name = "flushed-" + Guid.NewGuid().ToString("N")[..6];
        var client = gw.WithKey(await KeyAsync(gw, name, 600, null));
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(40));

        Assert.Equal(600, await SendAsync(client, 600));
        await gw.LedgerRowsAsync(600);
        await using (var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",allowAdmin=true"))
        {
            await admin.GetServers()[0].FlushAllDatabasesAsync();
        }
        var afterFlush = await SendAsync(client, 100);

        // An empty Redis would admit another 100: the window is rebuilt from the ledger's 600 rows first.
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
        Assert.True(afterFlush <= 6, $"{afterFlush} admitted after the flush: {600 + afterFlush} in the minute of a 600/min key");
        Assert.True(gw.Factory.Services.GetRequiredService<HelixAgent.Api.Access.ClusterRateLimiter>().WindowsRebuilt >= 1);
    }

    [Fact]
    public async Task A_key_at_600_a_minute_admits_at_most_one_percent_over_across_a_redis_outage()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var client = gw.WithKey(await KeyAsync(gw, "outage-" + Guid.NewGuid().ToString("N")[..6], 600, null));
        await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(40));

        Assert.Equal(300, await SendAsync(client, 300));
        await redis.StopAsync();
        try
        {
            var alone = await SendAsync(client, 400);

            // Alone, the replica goes on from the 300 Redis counted: a fresh local minute would admit all 400.
            Assert.InRange(300 + alone, 590, 606);
        }
        finally
        {
            await redis.StartAsync();
        }
    }
}
