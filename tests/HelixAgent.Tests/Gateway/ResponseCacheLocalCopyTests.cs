using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using StackExchange.Redis;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// Local copies of cached answers: a repeated hit needs no Redis round trip, and a copy never outlives what an operator
/// or Redis says about the entry (flush on any replica, expiry, Redis unreachable). This class owns its Redis, so
/// Redis's own command counts tell whether a hit asked it.
/// </summary>
public sealed class ResponseCacheLocalCopyTests(PostgresServer postgres, OwnRedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<OwnRedisServer>
{
    private async Task<(GatewayHarness Gw, FakeUpstream Upstream, string Model)> StartAsync(
        Action<Dictionary<string, string?>>? configure = null, FakeUpstream? upstream = null, string? model = null, string? database = null)
    {
        upstream ??= await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        model ??= "local-" + Guid.NewGuid().ToString("N")[..8];
        if (database is null)
        {
            // This class owns its Redis but its tests share it: each starts without the others' cached answers.
            await CachedAnswers.DeleteAllAsync(redis.ConnectionString);
        }
        var s = ResponseCacheTests.Settings(upstream, model);
        configure?.Invoke(s);
        var gw = await GatewayHarness.StartAsync(postgres, redis, s, databaseConnectionString: database);
        await Eventually.TrueAsync(async () => (await CacheStatsAsync(gw))["local_active"]!.GetValue<bool>() || s.GetValueOrDefault("Cache:LocalMaxBytes") == "0",
            "the replica using local copies");
        return (gw, upstream, model);
    }

    private static async Task<JsonNode> CacheStatsAsync(GatewayHarness gw) =>
        JsonNode.Parse(await gw.WithKey(gw.AdminKey).GetStringAsync("/admin/cache"))!;

    private static async Task<string> AskAsync(HttpClient client, string model)
    {
        var body = new JsonObject { ["model"] = model, ["temperature"] = 0, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "two plus two" }) };
        var response = await client.PostAsync("/v1/chat/completions", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return response.Headers.GetValues("x-helixagent-cache").Single();
    }

    /// <summary>How many GET and PTTL commands Redis has run (its INFO commandstats).</summary>
    private async Task<long> RedisLookupsAsync()
    {
        await using var admin = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",allowAdmin=true,tiebreaker=");
        var stats = (await admin.GetServer(admin.GetEndPoints()[0]).InfoAsync("commandstats")).SelectMany(g => g).ToList();
        long Calls(string command) => stats.Where(kv => kv.Key == "cmdstat_" + command)
            .Select(kv => long.Parse(kv.Value.Split(',')[0].Split('=')[1])).SingleOrDefault();
        return Calls("get") + Calls("pttl");
    }

    [Fact]
    public async Task Repeated_hits_are_answered_from_the_replicas_local_copy_without_asking_redis()
    {
        var (gw, upstream, model) = await StartAsync();
        await using var _ = gw;
        await using var __ = upstream;

        Assert.Equal("miss", await AskAsync(gw.Client, model));
        var before = await RedisLookupsAsync();
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal("hit", await AskAsync(gw.Client, model));
        }

        Assert.Equal(before, await RedisLookupsAsync());
        Assert.Equal(1, upstream.RequestCount);
        var stats = await CacheStatsAsync(gw);
        Assert.Equal((20L, 20L, 1L), (stats["hits"]!.GetValue<long>(), stats["local_hits"]!.GetValue<long>(), stats["local_entries"]!.GetValue<long>()));
        Assert.True(stats["local_bytes"]!.GetValue<long>() > 0);
        var metrics = await gw.Anonymous().GetStringAsync("/metrics");
        Assert.Contains("helixagent_cache_local_hits_total 20\n", metrics);
        Assert.Contains("helixagent_cache_local_entries 1\n", metrics);
        Assert.Equal(21, (await gw.LedgerRowsAsync(21)).Count);
    }

    [Fact]
    public async Task A_replica_copies_an_answer_another_replica_cached_and_a_flush_on_either_clears_both_copies()
    {
        var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var __ = upstream;
        var (a, _, model) = await StartAsync(upstream: upstream);
        await using var ___ = a;
        var (b, _, _) = await StartAsync(upstream: upstream, model: model, database: a.DatabaseConnectionString);
        await using var ____ = b;
        var onB = b.WithKey(a.ClientKey); // the same key on both replicas: the same cache entries

        Assert.Equal("miss", await AskAsync(a.Client, model));
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1);
        Assert.Equal("hit", await AskAsync(onB, model)); // from Redis, then copied
        var before = await RedisLookupsAsync();
        Assert.Equal("hit", await AskAsync(onB, model));
        Assert.Equal("hit", await AskAsync(a.Client, model));
        Assert.Equal(before, await RedisLookupsAsync());

        var flush = await a.WithKey(a.AdminKey).DeleteAsync("/admin/cache");
        Assert.Equal(HttpStatusCode.OK, flush.StatusCode);
        Assert.Equal(1, JsonNode.Parse(await flush.Content.ReadAsStringAsync())!["deleted"]!.GetValue<long>());
        // The flush reaches B through Redis pub/sub, within milliseconds.
        await Eventually.TrueAsync(async () => (await CacheStatsAsync(b))["local_entries"]!.GetValue<long>() == 0, "replica B dropping its copy after the flush");
        Assert.Equal("miss", await AskAsync(onB, model));
        Assert.Equal(2, upstream.RequestCount);
    }

    [Fact]
    public async Task A_local_copy_expires_with_its_redis_entry_and_lives_at_most_local_seconds_when_the_entry_is_deleted_behind_its_back()
    {
        var (gw, upstream, model) = await StartAsync(s =>
        {
            s["Cache:TtlSeconds"] = "2";
            s["Cache:LocalSeconds"] = "1";
        });
        await using var _ = gw;
        await using var __ = upstream;

        Assert.Equal("miss", await AskAsync(gw.Client, model));
        Assert.Equal("hit", await AskAsync(gw.Client, model));
        // The Redis entry expires after Cache:TtlSeconds; the copy (at most Cache:LocalSeconds = 1 s) is gone before it.
        await Eventually.ValueAsync(() => CachedAnswers.CountAsync(redis.ConnectionString), n => n == 0, "the Redis entry expiring (Cache:TtlSeconds=2)");
        Assert.Equal("miss", await AskAsync(gw.Client, model)); // the Redis entry expired, and the copy with it
        Assert.Equal(2, upstream.RequestCount);

        // Deleted in Redis by hand (not through /admin/cache): the copy serves at most Cache:LocalSeconds longer.
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1);
        await CachedAnswers.DeleteAllAsync(redis.ConnectionString);
        // Hits from the copy until it ends; then one miss (the copy ended because Redis had nothing, not a second miss).
        await Eventually.ValueAsync(() => AskAsync(gw.Client, model), answer => answer == "miss", "the local copy ending after Cache:LocalSeconds=1 (within 5 s)",
            timeout: TimeSpan.FromSeconds(5));
        Assert.Equal(3, upstream.RequestCount);
    }

    [Fact]
    public async Task While_redis_is_unreachable_local_copies_are_not_used_and_requests_go_upstream()
    {
        var (gw, upstream, model) = await StartAsync();
        await using var _ = gw;
        await using var __ = upstream;
        Assert.Equal("miss", await AskAsync(gw.Client, model));
        Assert.Equal("hit", await AskAsync(gw.Client, model));

        await redis.StopAsync();
        try
        {
            var mux = gw.Factory.Services.GetRequiredService<IConnectionMultiplexer>();
            await Eventually.TrueAsync(() => !mux.IsConnected, "the gateway noticing Redis had stopped");
            Assert.Equal("miss", await AskAsync(gw.Client, model));
            Assert.Equal(2, upstream.RequestCount);
            // The copies are dropped when StackExchange.Redis reports the failure, an event that can come a moment
            // after IsConnected turns false; until then they are already not used (the miss above).
            await Eventually.TrueAsync(async () => (await CacheStatsAsync(gw))["local_entries"]!.GetValue<long>() == 0,
                "the local copies dropped after Redis became unreachable");
        }
        finally
        {
            await redis.StartAsync();
        }
    }

    [Fact]
    public async Task With_local_max_bytes_zero_every_hit_asks_redis()
    {
        var (gw, upstream, model) = await StartAsync(s => s["Cache:LocalMaxBytes"] = "0");
        await using var _ = gw;
        await using var __ = upstream;
        Assert.Equal("miss", await AskAsync(gw.Client, model));
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1);

        var before = await RedisLookupsAsync();
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal("hit", await AskAsync(gw.Client, model));
        }

        Assert.Equal(before + 5, await RedisLookupsAsync());
        var stats = await CacheStatsAsync(gw);
        Assert.Equal((false, 0L, 0L), (stats["local_active"]!.GetValue<bool>(), stats["local_hits"]!.GetValue<long>(), stats["local_entries"]!.GetValue<long>()));
    }
}
