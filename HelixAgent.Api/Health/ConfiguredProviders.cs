namespace HelixAgent.Api.Health;

/// <summary>
/// Providers component until the gateway's provider registry reports live state: counts the providers configured
/// under <c>Providers</c>. None configured means the gateway can route nothing, so the component is unhealthy
/// (and <c>/health</c> degraded).
/// </summary>
internal sealed class ConfiguredProviders(IConfiguration configuration) : IProviderHealthSource
{
    public ProvidersHealth Current()
    {
        var active = configuration.GetSection("Providers").GetChildren().Count();
        return new ProvidersHealth(active > 0 ? HealthStatus.Healthy : HealthStatus.Unhealthy, active);
    }
}
