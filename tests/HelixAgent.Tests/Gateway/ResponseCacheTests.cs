using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>The Redis response cache: repeated deterministic requests are answered without an upstream call.</summary>
public sealed class ResponseCacheTests(PostgresServer postgres, OwnRedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<OwnRedisServer>
{
    private async Task<(GatewayHarness Gw, FakeUpstream Upstream)> StartAsync(Action<Dictionary<string, string?>>? configure = null)
    {
        // This class's tests share its Redis: each starts without the others' cached answers.
        await CachedAnswers.DeleteAllAsync(redis.ConnectionString);
        var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var s = Settings(upstream, "cached-" + Guid.NewGuid().ToString("N")[..8]); // a route of its own: no other test's cache entries
        configure?.Invoke(s);
        return (await GatewayHarness.StartAsync(postgres, redis, s), upstream);
    }

    /// <summary>One OpenAI-compatible upstream serving <paramref name="model"/>, the ledger flushed every 10 ms.</summary>
    internal static Dictionary<string, string?> Settings(FakeUpstream upstream, string model) => new()
    {
        ["Providers:up:Type"] = "openai",
        ["Providers:up:BaseUrl"] = upstream.BaseUrl.ToString(),
        ["Providers:up:Models:0"] = model,
        ["Gateway:ProbeIntervalSeconds"] = "0",
        ["Ledger:FlushIntervalMs"] = "10",
    };

    private static JsonObject Deterministic(string model, string text = "what is two plus two") =>
        new() { ["model"] = model, ["temperature"] = 0, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) };

    private static string ModelOf(GatewayHarness gw) => gw.Factory.Services.GetService(typeof(HelixAgent.Api.Gateway.ProviderRegistry)) is HelixAgent.Api.Gateway.ProviderRegistry r
        ? r.Models.Single(m => !m.IsEnsemble).Id : throw new InvalidOperationException();

    [Fact]
    public async Task A_repeated_deterministic_request_is_served_from_the_cache_without_an_upstream_call()
    {
        var (gw, upstream) = await StartAsync();
        await using var _ = gw;
        await using var __ = upstream;
        var model = ModelOf(gw);

        var first = await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model));
        var firstBody = await first.Content.ReadAsStringAsync();
        Assert.Equal("miss", first.Headers.GetValues("x-helixagent-cache").Single());
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1); // the write is fire-and-forget

        var second = await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model));
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Equal("hit", second.Headers.GetValues("x-helixagent-cache").Single());
        Assert.Equal(firstBody, await second.Content.ReadAsStringAsync());
        Assert.Equal(1, upstream.RequestCount);

        var rows = await gw.LedgerRowsAsync(2);
        Assert.Equal(2, rows.Count);
        var metrics = await gw.Anonymous().GetStringAsync("/metrics");
        Assert.Contains("helixagent_cache_hits_total 1\n", metrics);
        Assert.Contains("helixagent_cache_hit_rate 0.5\n", metrics);
        var stats = JsonNode.Parse(await gw.WithKey(gw.AdminKey).GetStringAsync("/admin/cache"))!;
        Assert.Equal((1L, 1L, 0.5), (stats["hits"]!.GetValue<long>(), stats["misses"]!.GetValue<long>(), stats["hit_rate"]!.GetValue<double>()));
    }

    [Fact]
    public async Task Non_deterministic_no_cache_and_streaming_requests_always_go_upstream()
    {
        var (gw, upstream) = await StartAsync();
        await using var _ = gw;
        await using var __ = upstream;
        var model = ModelOf(gw);
        var warm = Deterministic(model);
        await gw.PostJsonAsync("/v1/chat/completions", warm);
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1);

        var creative = Deterministic(model);
        creative["temperature"] = 0.9;
        Assert.Equal("bypass", (await gw.PostJsonAsync("/v1/chat/completions", creative)).Headers.GetValues("x-helixagent-cache").Single());

        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(warm.ToJsonString(), Encoding.UTF8, "application/json") };
        request.Headers.CacheControl = new System.Net.Http.Headers.CacheControlHeaderValue { NoCache = true };
        Assert.Equal("bypass", (await gw.Client.SendAsync(request)).Headers.GetValues("x-helixagent-cache").Single());

        var streamed = Deterministic(model);
        streamed["stream"] = true;
        Assert.True((await Sse.ReadAsync(await gw.PostJsonAsync("/v1/chat/completions", streamed))).Done);

        Assert.Equal(4, upstream.RequestCount);
    }

    [Fact]
    public async Task Each_key_has_its_own_cache_unless_shared_and_admins_can_flush_it()
    {
        var (gw, upstream) = await StartAsync();
        await using var _ = gw;
        await using var __ = upstream;
        var model = ModelOf(gw);
        await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model));
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1);

        // Another key asking the same thing does not get the first key's answer.
        var other = await gw.WithKey(gw.AdminKey).PostAsync("/v1/chat/completions",
            new StringContent(Deterministic(model).ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal("miss", other.Headers.GetValues("x-helixagent-cache").Single());
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 2);

        var flush = await gw.WithKey(gw.AdminKey).DeleteAsync("/admin/cache");
        Assert.Equal(HttpStatusCode.OK, flush.StatusCode);
        Assert.Equal(2, JsonNode.Parse(await flush.Content.ReadAsStringAsync())!["deleted"]!.GetValue<long>());
        Assert.Equal("miss", (await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model))).Headers.GetValues("x-helixagent-cache").Single());
        Assert.Equal(3, upstream.RequestCount);
        Assert.Equal(HttpStatusCode.Forbidden, (await gw.Client.DeleteAsync("/admin/cache")).StatusCode);
    }

    [Fact]
    public async Task A_request_over_the_rate_limit_gets_429_not_the_cached_answer_and_is_not_counted_as_a_lookup()
    {
        // The lookup is sent to Redis together with the admission; a refused request must drop what it found.
        var (gw, upstream) = await StartAsync(s => s["RateLimits:RequestsPerMinute"] = "2");
        await using var _ = gw;
        await using var __ = upstream;
        var model = ModelOf(gw);
        Assert.Equal("miss", (await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model))).Headers.GetValues("x-helixagent-cache").Single());
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1); // the write is fire-and-forget
        var hit = await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model));
        Assert.Equal("hit", hit.Headers.GetValues("x-helixagent-cache").Single());

        var refused = await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model));
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.False(refused.Headers.Contains("x-helixagent-cache"));
        Assert.Equal("rate_limit_exceeded", JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        Assert.Equal(1, upstream.RequestCount);

        var stats = JsonNode.Parse(await gw.WithKey(gw.AdminKey).GetStringAsync("/admin/cache"))!;
        Assert.Equal((1L, 1L), (stats["hits"]!.GetValue<long>(), stats["misses"]!.GetValue<long>()));
        Assert.Equal(2, (await gw.LedgerRowsAsync(2)).Count);
    }

    [Fact]
    public async Task Without_redis_the_cache_is_bypassed_and_requests_still_succeed()
    {
        var (gw, upstream) = await StartAsync();
        await using var _ = gw;
        await using var __ = upstream;
        var model = ModelOf(gw);
        await redis.StopAsync();
        try
        {
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model))).StatusCode);
            }
            Assert.Equal(2, upstream.RequestCount);
        }
        finally
        {
            await redis.StartAsync();
        }
    }
}
