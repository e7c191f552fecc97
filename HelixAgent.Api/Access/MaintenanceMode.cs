using HelixAgent.Api.Infrastructure;
using StackExchange.Redis;

namespace HelixAgent.Api.Access;

/// <summary>
/// Maintenance mode, shared by every replica through Redis: the flag lives in <c>helixagent:maintenance</c>, changes
/// are published on a channel (instant) and each replica also re-reads the flag every couple of seconds (so a missed
/// message or a Redis restart cannot leave replicas disagreeing for long). Reading it on the hot path is a field read.
/// </summary>
public sealed partial class MaintenanceMode(IServiceProvider services, ILogger<MaintenanceMode> logger) : BackgroundService
{
    public const string RedisKey = "helixagent:maintenance";
    public static readonly RedisChannel Channel = RedisChannel.Literal("helixagent:maintenance");
    public static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(2);

    private volatile bool _on;

    public bool IsOn => _on;

    /// <summary>Switches maintenance mode for every replica; throws <see cref="RedisException"/> when Redis is unreachable.</summary>
    public static async Task SetAsync(IConnectionMultiplexer redis, bool on)
    {
        var db = redis.GetDatabase();
        if (on)
        {
            await db.StringSetAsync(RedisKey, DateTimeOffset.UtcNow.ToString("o"));
        }
        else
        {
            await db.KeyDeleteAsync(RedisKey);
        }
        await redis.GetSubscriber().PublishAsync(Channel, on ? "on" : "off");
    }

    public static async Task<bool> ReadAsync(IConnectionMultiplexer redis) => await redis.GetDatabase().KeyExistsAsync(RedisKey);

    /// <summary>Applies a change made by this replica right away (the published message confirms it).</summary>
    public void Apply(bool on) => _on = on;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var redis = services.GetService<IConnectionMultiplexer>();
        if (redis is null)
        {
            return;
        }
        // Changes arrive by message once subscribed (retried until Redis answers); the poll below is the safety net.
        var subscription = RedisSubscription.SubscribeUntilDoneAsync(redis, Channel, (_, message) => _on = message == "on",
            reason => LogUnreachable(logger, reason), stoppingToken);
        using var timer = new PeriodicTimer(PollInterval);
        do
        {
            try
            {
                if (redis.IsConnected)
                {
                    _on = await ReadAsync(redis);
                }
            }
            catch (Exception ex) when (RedisOutage.Is(ex))
            {
                LogUnreachable(logger, ex.Message);
            }
        }
        while (await WaitAsync(timer, stoppingToken));
        await subscription;
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken stoppingToken)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stoppingToken);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    [LoggerMessage(40, LogLevel.Warning, "Maintenance flag unreadable ({Reason}); keeping the last known state")]
    private static partial void LogUnreachable(ILogger logger, string reason);
}
