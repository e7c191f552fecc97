using System.Net;
using HelixAgent.Tests.Infrastructure;
using StackExchange.Redis;

namespace HelixAgent.Tests.Functional;

/// <summary>A Redis that accepts connections but does not answer must not stop the gateway from starting or serving.</summary>
public sealed class SlowRedisStartupTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task The_gateway_starts_and_serves_while_redis_is_paused()
    {
        await using (var admin = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",allowAdmin=true"))
        {
            await admin.GetServer(admin.GetEndPoints()[0]).ExecuteAsync("CLIENT", "PAUSE", "4000", "ALL");
        }
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await gw.Anonymous().GetAsync("/health")).StatusCode);
        Assert.Single(await gw.LedgerRowsAsync(1));
    }
}
