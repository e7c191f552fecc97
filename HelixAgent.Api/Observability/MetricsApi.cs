using HelixAgent.Observability;

namespace HelixAgent.Api.Observability;

/// <summary>The gateway's and the ledger's meters, served on <c>GET /metrics</c> by <see cref="PrometheusExpositionExtensions.MapPrometheusMetrics"/>.</summary>
internal static class MetricsApi
{
    /// <summary>Creates the instruments and starts listening before the first request, so every series exists from the start.</summary>
    public static void StartMetrics(this IServiceProvider services)
    {
        services.GetRequiredService<PrometheusExposition>();
        services.GetRequiredService<GatewayMetrics>();
        services.GetRequiredService<HelixAgent.Api.Ledger.CompletionLedger>();
    }
}
