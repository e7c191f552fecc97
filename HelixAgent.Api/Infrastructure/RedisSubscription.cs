using StackExchange.Redis;

namespace HelixAgent.Api.Infrastructure;

/// <summary>Subscribing to a Redis channel in the background, for as long as Redis takes to answer.</summary>
internal static class RedisSubscription
{
    /// <summary>
    /// Subscribes <paramref name="handler"/> to <paramref name="channel"/>, retrying with backoff (200 ms doubling to 10 s)
    /// while Redis is unreachable; <paramref name="unreachable"/> hears each failure. Returns true once subscribed
    /// (StackExchange.Redis re-subscribes by itself after later reconnects), false when stopped first.
    /// </summary>
    public static async Task<bool> SubscribeUntilDoneAsync(IConnectionMultiplexer redis, RedisChannel channel,
        Action<RedisChannel, RedisValue> handler, Action<string> unreachable, CancellationToken stopping)
    {
        for (var delay = TimeSpan.FromMilliseconds(200); !stopping.IsCancellationRequested; delay = TimeSpan.FromSeconds(Math.Min(delay.TotalSeconds * 2, 10)))
        {
            try
            {
                await redis.GetSubscriber().SubscribeAsync(channel, handler);
                return true;
            }
            catch (Exception ex) when (RedisOutage.Is(ex))
            {
                unreachable(ex.Message);
                try
                {
                    await Task.Delay(delay, stopping);
                }
                catch (OperationCanceledException)
                {
                    return false;
                }
            }
        }
        return false;
    }
}
