namespace HelixAgent.Api.Observability;

/// <summary><c>GET /metrics</c>: Prometheus text exposition, no key (like the health endpoints), not traced.</summary>
internal static class MetricsApi
{
    public static IEndpointRouteBuilder MapMetricsApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/metrics", (PrometheusExposition exposition) =>
            Results.Text(exposition.Scrape(), PrometheusExposition.ContentType));
        return app;
    }

    /// <summary>Creates the instruments and starts listening before the first request, so every series exists from the start.</summary>
    public static void StartMetrics(this IServiceProvider services)
    {
        services.GetRequiredService<PrometheusExposition>();
        services.GetRequiredService<GatewayMetrics>();
        services.GetRequiredService<HelixAgent.Api.Ledger.CompletionLedger>();
    }
}
