using HelixAgent.Api.Health;

namespace HelixAgent.Tests.Health;

public sealed class HealthFormattingTests
{
    [Theory]
    [InlineData(0, "0h0m0s")]
    [InlineData(59, "0h0m59s")]
    [InlineData(48 * 3600 + 32 * 60 + 15, "48h32m15s")]
    [InlineData(1000 * 3600 + 1, "1000h0m1s")]
    public void Uptime_is_written_like_the_runbook(int seconds, string expected) =>
        Assert.Equal(expected, HealthReporter.FormatUptime(TimeSpan.FromSeconds(seconds)));

    private static readonly ComponentHealth Up = new(HealthStatus.Healthy, 1);
    private static readonly ComponentHealth Down = new(HealthStatus.Unhealthy, 1, "down");

    [Theory]
    [InlineData(true, true, 1, "healthy")]
    [InlineData(true, false, 1, "degraded")]
    [InlineData(true, true, 0, "degraded")]
    [InlineData(false, true, 1, "unhealthy")]
    [InlineData(false, false, 0, "unhealthy")]
    public void Postgres_down_is_unhealthy_while_redis_or_providers_down_is_degraded(bool db, bool redis, int providers, string expected)
    {
        var snapshot = new HealthSnapshot(db ? Up : Down, redis ? Up : Down,
            new ProvidersHealth(providers > 0 ? HealthStatus.Healthy : HealthStatus.Unhealthy, providers), 1, DateTimeOffset.UtcNow);
        Assert.Equal(expected, snapshot.Status);
    }
}
