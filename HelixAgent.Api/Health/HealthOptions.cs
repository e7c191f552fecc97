using System.ComponentModel.DataAnnotations;

namespace HelixAgent.Api.Health;

internal sealed class HealthOptions
{
    public const string Section = "Health";

    /// <summary>A probe result is reused this long, so a probe storm cannot hurt PostgreSQL or Redis.</summary>
    [Range(0, 60)]
    public double CacheSeconds { get; set; } = 1;

    [Range(50, 30000)]
    public int DatabaseTimeoutMs { get; set; } = 2000;

    [Range(50, 30000)]
    public int RedisTimeoutMs { get; set; } = 1000;
}
