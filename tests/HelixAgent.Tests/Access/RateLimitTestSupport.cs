using HelixAgent.Api.Access;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace HelixAgent.Tests.Access;

/// <summary>A <see cref="ClusterRateLimiter"/> as one replica: its own multiplexer to the shared Redis.</summary>
internal sealed class Replica : IAsyncDisposable
{
    private readonly ServiceProvider _services;

    private Replica(ConnectionMultiplexer? redis, ServiceProvider services, TimeProvider time)
    {
        Redis = redis;
        _services = services;
        Limiter = new ClusterRateLimiter(services, time, NullLogger<ClusterRateLimiter>.Instance);
    }

    public ConnectionMultiplexer? Redis { get; }
    public ClusterRateLimiter Limiter { get; }

    /// <summary>A replica connected to <paramref name="redis"/> with the gateway's own Redis timeouts (waits for the
    /// connection: a busy CI machine can take longer than the connect timeout, and a replica that starts disconnected
    /// decides degraded).</summary>
    public static async Task<Replica> ConnectAsync(RedisServer redis)
    {
        var mux = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",abortConnect=false,connectTimeout=2000,syncTimeout=1000,asyncTimeout=1000");
        await Eventually.TrueAsync(() => mux.IsConnected, "the replica's connection to Redis");
        var services = new ServiceCollection().AddSingleton<IConnectionMultiplexer>(mux).BuildServiceProvider();
        return new Replica(mux, services, TimeProvider.System);
    }

    /// <summary>A replica whose container has no Redis registered at all.</summary>
    public static Replica WithoutRedis(TimeProvider? time = null) =>
        new(null, new ServiceCollection().BuildServiceProvider(), time ?? TimeProvider.System);

    public async ValueTask DisposeAsync()
    {
        Limiter.Dispose();
        await _services.DisposeAsync();
        if (Redis is not null)
        {
            await Redis.DisposeAsync();
        }
    }
}

internal static class RateLimitTestKeys
{
    /// <summary>Every test limits its own key, so tests sharing one Redis never see each other's counts.</summary>
    public static string NewKeyId() => "key_" + Guid.NewGuid().ToString("N");
}
