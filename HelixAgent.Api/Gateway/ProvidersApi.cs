using System.Text.Json.Nodes;
using HelixAgent.Api.Health;
using HelixAgent.Api.Infrastructure;

namespace HelixAgent.Api.Gateway;

/// <summary><c>/v1/providers</c> (a JSON array, as the runbook's jq expects) and the provider health probes.</summary>
internal static class ProvidersApi
{
    public static IEndpointRouteBuilder MapProvidersApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/providers", (ProviderRegistry registry) =>
            GatewayApi.Json(new JsonArray([.. registry.Providers.Select(p => (JsonNode)Describe(p))])));

        app.MapGet("/v1/providers/health", (ProviderRegistry registry) =>
        {
            var list = new JsonArray([.. registry.Providers.Select(p => (JsonNode)new JsonObject { ["name"] = p.Name, ["status"] = p.State.Status })]);
            var healthy = registry.Providers.Count(p => p.State.IsHealthy);
            var status = healthy == registry.Providers.Count && healthy > 0 ? "healthy" : healthy > 0 ? "degraded" : "unhealthy";
            return GatewayApi.Json(new JsonObject { ["status"] = status, ["healthy"] = healthy, ["total"] = registry.Providers.Count, ["providers"] = list },
                healthy > 0 ? 200 : 503);
        });

        app.MapGet("/v1/providers/{name}/health", (string name, ProviderRegistry registry) =>
            registry.TryGetProvider(name, out var p)
                ? GatewayApi.Json(Describe(p), p.State.Status == "unhealthy" ? 503 : 200)
                : OpenAiErrors.Result(404, $"Unknown provider '{HelixAgent.Data.Echo.Clip(name)}'.", "invalid_request_error", "provider_not_found", "name"));
        return app;
    }

    /// <summary><c>closed</c>, <c>open</c> or <c>half_open</c>.</summary>
    internal static string CircuitName(ProviderEntry p) =>
        p.State.Circuit.ToString().ToLowerInvariant() switch { "halfopen" => "half_open", var c => c };

    private static JsonObject Describe(ProviderEntry p) => new()
    {
        ["name"] = p.Name,
        ["type"] = p.Adapter.Type,
        ["simulated"] = p.Adapter.IsSimulated,
        ["status"] = p.State.Status,
        ["latency_ms"] = Math.Round(p.State.LatencyMs, 2),
        ["error_rate"] = Math.Round(p.State.ErrorRate, 4),
        ["circuit"] = CircuitName(p),
        ["models"] = new JsonArray([.. p.Options.Models.Select(m => (JsonNode)JsonValue.Create(m))]),
        ["requests"] = p.State.Requests,
        ["failures"] = p.State.Failures,
        ["cooling_until"] = p.State.CoolingUntil?.ToString("o"),
        ["last_error"] = p.State.LastError,
    };
}

/// <summary><c>/health</c>'s providers component: how many providers are healthy right now.</summary>
internal sealed class RegistryProviderHealth(ProviderRegistry registry) : IProviderHealthSource
{
    public ProvidersHealth Current()
    {
        var healthy = registry.Providers.Count(p => p.State.IsHealthy);
        var status = healthy == 0 ? HealthStatus.Unhealthy : healthy < registry.Providers.Count ? HealthStatus.Degraded : HealthStatus.Healthy;
        return new ProvidersHealth(status, healthy);
    }
}

/// <summary>Cheap active probes (list-models style, never spending tokens) so idle providers have a known state.</summary>
internal sealed partial class ProviderProbeService(ProviderRegistry registry, Microsoft.Extensions.Options.IOptions<GatewayOptions> options, ILogger<ProviderProbeService> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = TimeSpan.FromSeconds(options.Value.ProbeIntervalSeconds);
        if (interval <= TimeSpan.Zero)
        {
            return;
        }
        using var timer = new PeriodicTimer(interval);
        do
        {
            await Task.WhenAll(registry.Providers.Select(p => ProbeAsync(p, stoppingToken)));
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    private async Task ProbeAsync(ProviderEntry provider, CancellationToken stoppingToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        cts.CancelAfter(TimeSpan.FromSeconds(5));
        try
        {
            await provider.Adapter.ProbeAsync(cts.Token);
            provider.State.RecordProbe(true, null);
        }
        catch (Exception ex) when (ex is UpstreamException or OperationCanceledException && !stoppingToken.IsCancellationRequested)
        {
            var message = ex is UpstreamException ? ex.Message : $"{provider.Name}: probe timed out";
            provider.State.RecordProbe(false, message);
            LogProbeFailed(logger, provider.Name, message);
        }
    }

    [LoggerMessage(20, LogLevel.Warning, "provider error: probe of {Provider} failed: {Message}")]
    private static partial void LogProbeFailed(ILogger logger, string provider, string message);
}
