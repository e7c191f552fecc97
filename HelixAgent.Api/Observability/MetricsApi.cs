using HelixAgent.Observability;

namespace HelixAgent.Api.Observability;

/// <summary><c>GET /metrics</c>: Prometheus text exposition of the gateway's and the ledger's meters, no key, not traced.</summary>
internal static class MetricsApi
{
    public static IEndpointRouteBuilder MapMetricsApi(this IEndpointRouteBuilder app) => app.MapPrometheusMetrics();

    /// <summary>Creates the instruments and starts listening before the first request, so every series exists from the start.</summary>
    public static void StartMetrics(this IServiceProvider services)
    {
        services.GetRequiredService<PrometheusExposition>();
        services.GetRequiredService<GatewayMetrics>();
        services.GetRequiredService<HelixAgent.Api.Ledger.CompletionLedger>();
    }
}
