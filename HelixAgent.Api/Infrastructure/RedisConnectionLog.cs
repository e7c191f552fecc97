using StackExchange.Redis;

namespace HelixAgent.Api.Infrastructure;

/// <summary>
/// One line when the Redis connection is lost and one when it is back, at Information. StackExchange.Redis itself logs
/// every failed reconnect (twice a second, per connection) at Error: on Ctrl-C of the AppHost, which stops Redis before
/// the API, that was 10-14 error lines for an expected event. Its own log is therefore kept to Critical
/// (<c>Logging:LogLevel:StackExchange.Redis</c>); a Redis outage degrades (cache bypassed, local rate limits) and shows
/// in <c>/health</c> and <c>helixagent_rate_limit_*</c>, it never fails requests.
/// </summary>
internal static partial class RedisConnectionLog
{
    public static void Attach(IConnectionMultiplexer? redis, ILogger logger)
    {
        if (redis is null)
        {
            return;
        }
        var lost = 0;
        redis.ConnectionFailed += (_, e) =>
        {
            if (Interlocked.Exchange(ref lost, 1) == 0)
            {
                LogLost(logger, e.FailureType.ToString());
            }
        };
        redis.ConnectionRestored += (_, _) =>
        {
            if (Interlocked.Exchange(ref lost, 0) == 1)
            {
                LogRestored(logger);
            }
        };
    }

    [LoggerMessage(40, LogLevel.Information, "Redis connection lost ({FailureType}): serving degraded (cache bypassed, rate limits per replica) until it is back")]
    private static partial void LogLost(ILogger logger, string failureType);

    [LoggerMessage(41, LogLevel.Information, "Redis connection restored")]
    private static partial void LogRestored(ILogger logger);
}
