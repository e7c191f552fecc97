using System.Net;
using HelixAgent.Tests.Infrastructure;
using StackExchange.Redis;

namespace HelixAgent.Tests.Health;

/// <summary>A Redis that accepts connections but does not answer must not stop the gateway from starting or serving.</summary>
public sealed class SlowRedisStartupTests(PostgresServer postgres, OwnRedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<OwnRedisServer>
{
    [Fact]
    public async Task The_gateway_starts_and_serves_while_redis_is_paused()
    {
        await using var admin = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",allowAdmin=true");
        await admin.GetServer(admin.GetEndPoints()[0]).ExecuteAsync("CLIENT", "PAUSE", "10000", "ALL");
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        // Redis was still paused after the gateway had started and answered: a PING sent now gets no answer yet.
        // (CLIENT UNPAUSE would wait for the pause too, so the test waits for its end below instead.)
        var ping = PingAsync();
        Assert.NotSame(ping, await Task.WhenAny(ping, Task.Delay(TimeSpan.FromMilliseconds(500))));
        await ping.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(HttpStatusCode.OK, (await gw.Anonymous().GetAsync("/health")).StatusCode);
        Assert.Single(await gw.LedgerRowsAsync(1));
    }

    /// <summary>A PING on a connection of its own, answered once Redis takes commands again.</summary>
    private async Task PingAsync()
    {
        var options = ConfigurationOptions.Parse(redis.ConnectionString);
        options.SyncTimeout = options.AsyncTimeout = 30_000;
        options.AbortOnConnectFail = false;
        await using var probe = await ConnectionMultiplexer.ConnectAsync(options);
        await probe.GetDatabase().PingAsync();
    }
}
