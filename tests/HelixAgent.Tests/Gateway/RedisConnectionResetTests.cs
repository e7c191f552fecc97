using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// Redis's host dies with commands in flight: the connection is reset (RST) instead of refused, and the Redis client
/// fails those commands with the socket's own exception rather than one of its own. Nothing may turn that into a 500
/// or stop the gateway.
/// </summary>
public sealed class RedisConnectionResetTests(PostgresServer postgres, OwnRedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<OwnRedisServer>
{
    private static JsonObject Deterministic(string model, string text) =>
        new() { ["model"] = model, ["temperature"] = 0, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) };

    private static async Task<string?> ContentOf(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())?["choices"]?[0]?["message"]?["content"]?.GetValue<string>();

    [Fact]
    public async Task A_redis_connection_reset_mid_lookup_answers_the_waiting_request_from_upstream_and_the_gateway_keeps_serving()
    {
        await using var proxy = new CuttableTcpProxy(redis.Port);
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var model = "reset-" + Guid.NewGuid().ToString("N")[..8];
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, new Dictionary<string, string?>
        {
            ["Providers:up:Type"] = "openai",
            ["Providers:up:BaseUrl"] = upstream.BaseUrl.ToString(),
            ["Providers:up:Models:0"] = model,
            ["Gateway:ProbeIntervalSeconds"] = "0",
            ["Ledger:FlushIntervalMs"] = "10",
            // The lookup waits for Redis longer than the hold below (so does the Redis client: 1 s), so it is still in
            // flight when the connection is reset.
            ["Cache:LookupTimeoutMs"] = "5000",
        }, redisConnectionString: $"127.0.0.1:{proxy.Port}");
        var lifetime = gw.Factory.Services.GetRequiredService<IHostApplicationLifetime>();

        // Through the proxy, the cache works: a miss, then a hit.
        Assert.Equal("miss", (await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model, "warm"))).Headers.GetValues("x-helixagent-cache").Single());
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1); // the write is fire-and-forget
        Assert.Equal("hit", (await gw.PostJsonAsync("/v1/chat/completions", Deterministic(model, "warm"))).Headers.GetValues("x-helixagent-cache").Single());
        Assert.True(proxy.Accepted >= 1);

        proxy.Hold();
        var waiting = gw.PostJsonAsync("/v1/chat/completions", Deterministic(model, "asked while Redis hangs"));
        // The lookup has reached the proxy and is held there, and the request waits for it.
        await Eventually.TrueAsync(() => proxy.HeldText.Contains(HelixAgent.Api.Gateway.ResponseCache.Prefix, StringComparison.Ordinal) || waiting.IsCompleted,
            "the cache lookup held at the proxy");
        if (waiting.IsCompleted)
        {
            var early = await waiting;
            Assert.Fail($"the cache lookup should still be waiting on Redis: {(int)early.StatusCode} {string.Join(",", early.Headers.Select(h => h.Key + "=" + string.Join(";", h.Value)))}");
        }
        proxy.CutAll();

        var answer = await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal("miss", answer.Headers.GetValues("x-helixagent-cache").Single());
        Assert.Equal(upstream.Reply, await ContentOf(answer));

        // Once the gateway's Redis connection is back, whatever the reset could break has broken.
        var mux = gw.Factory.Services.GetRequiredService<StackExchange.Redis.IConnectionMultiplexer>();
        await Eventually.TrueAsync(() => mux.IsConnected, "the gateway reconnected to Redis through the proxy");
        Assert.False(lifetime.ApplicationStopping.IsCancellationRequested, "a background service died of the reset and stopped the gateway");
        var after = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat(model));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
        Assert.Equal(4, (await gw.LedgerRowsAsync(4)).Count);
    }
}
