namespace HelixAgent.Tests.Infrastructure;

/// <summary>
/// Rate limits count per minute of the Redis server's clock, with a sliding estimate across two minutes, and slices are
/// not granted in a minute's last second. A test that must hold a limit exactly runs inside one minute.
/// </summary>
public static class RedisMinute
{
    /// <summary>The Redis server's minute (Unix ms / 60 000), as the rate-limit script computes it.</summary>
    public static async Task<long> CurrentAsync(RedisServer redis)
    {
        await using var mux = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        var now = await mux.GetServer(mux.GetEndPoints()[0]).TimeAsync();
        return new DateTimeOffset(now, TimeSpan.Zero).ToUnixTimeMilliseconds() / 60_000;
    }

    /// <summary>
    /// Waits (up to a minute) until the Redis minute is between 59.1 and 59.4 s old, and returns the minute: the last
    /// second, in which no rate-limit slice is granted.
    /// </summary>
    public static async Task<long> LastSecondAsync(RedisServer redis)
    {
        await using var mux = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        var server = mux.GetServer(mux.GetEndPoints()[0]);
        while (true)
        {
            var now = new DateTimeOffset(await server.TimeAsync(), TimeSpan.Zero).ToUnixTimeMilliseconds();
            var intoMinute = now % 60_000;
            if (intoMinute is >= 59_100 and < 59_400)
            {
                return now / 60_000;
            }
            var wait = intoMinute < 59_100 ? 59_150 - intoMinute : 60_000 - intoMinute + 59_150;
            await Task.Delay(TimeSpan.FromMilliseconds(wait));
        }
    }

    /// <summary>Waits, if need be, for a Redis minute with at least <paramref name="needed"/> left in it; returns it.</summary>
    public static async Task<long> FreshAsync(RedisServer redis, TimeSpan needed)
    {
        await using (var mux = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.ConnectionString))
        {
            var now = new DateTimeOffset(await mux.GetServer(mux.GetEndPoints()[0]).TimeAsync(), TimeSpan.Zero).ToUnixTimeMilliseconds();
            var left = TimeSpan.FromMilliseconds(60_000 - now % 60_000);
            if (left < needed)
            {
                await Task.Delay(left + TimeSpan.FromMilliseconds(200));
            }
        }
        return await CurrentAsync(redis);
    }
}
