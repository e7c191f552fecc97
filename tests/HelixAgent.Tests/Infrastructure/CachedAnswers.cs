using HelixAgent.Api.Gateway;
using StackExchange.Redis;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>The response cache's entries in a Redis (the gateway writes them without waiting for Redis).</summary>
internal static class CachedAnswers
{
    /// <summary>How many cached answers the Redis at <paramref name="redisConnectionString"/> holds now.</summary>
    public static async Task<int> CountAsync(string redisConnectionString)
    {
        await using var admin = await ConnectionMultiplexer.ConnectAsync(redisConnectionString);
        var server = admin.GetServer(admin.GetEndPoints()[0]);
        var count = 0;
        await foreach (var _ in server.KeysAsync(admin.GetDatabase().Database, pattern: ResponseCache.Prefix + "*"))
        {
            count++;
        }
        return count;
    }

    /// <summary>Until that Redis holds at least <paramref name="count"/> cached answers.</summary>
    public static Task WaitForAsync(string redisConnectionString, int count) =>
        Eventually.ValueAsync(() => CountAsync(redisConnectionString), n => n >= count, $"{count} cached answer(s) in Redis");

    /// <summary>Deletes every cached answer there, as an operator deleting keys by hand would (not through /admin/cache).</summary>
    public static async Task DeleteAllAsync(string redisConnectionString)
    {
        await using var admin = await ConnectionMultiplexer.ConnectAsync(redisConnectionString);
        var db = admin.GetDatabase();
        await foreach (var key in admin.GetServer(admin.GetEndPoints()[0]).KeysAsync(db.Database, pattern: ResponseCache.Prefix + "*"))
        {
            await db.KeyDeleteAsync(key);
        }
    }
}
