using System.Runtime;
using HelixAgent.Api.Access;
using HelixAgent.Api.Gateway;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Ledger;
using HelixAgent.Api.Observability;
using Microsoft.Extensions.Options;
using HelixAgent.Data;
using Microsoft.AspNetCore.Http.HttpResults;

namespace HelixAgent.Api.Health;

/// <summary><c>/health</c>, <c>/health/detailed</c> and <c>/ready</c> as the runbook and Kubernetes use them.</summary>
internal static class HealthApi
{
    public static IEndpointRouteBuilder MapHealthApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/health", GetHealth).ExcludeFromDescription();
        app.MapGet("/health/detailed", GetDetailed).ExcludeFromDescription();
        app.MapGet("/ready", GetReady).ExcludeFromDescription();
        return app;
    }

    /// <summary>200 when healthy or degraded, 503 when unhealthy (PostgreSQL unreachable).</summary>
    internal static async Task<JsonHttpResult<HealthResponse>> GetHealth(HealthReporter reporter, CompletionLedger ledger)
    {
        var s = await reporter.GetAsync();
        var components = Components(s, ledger);
        var body = new HealthResponse(Status(s, components), components, reporter.Uptime, HealthReporter.Version);
        return TypedResults.Json(body, ApiJsonContext.Default.HealthResponse, statusCode: StatusOf(s));
    }

    internal static async Task<JsonHttpResult<DetailedHealthResponse>> GetDetailed(HealthReporter reporter, NpgsqlPoolMetrics pool, MaintenanceMode maintenance,
        ClusterRateLimiter limiter, ReadReplica replica, ProviderRegistry registry, ResponseCache cache, GatewayMetrics metrics, IOptions<CacheOptions> cacheOptions, CompletionLedger ledger)
    {
        var s = await reporter.GetAsync();
        var components = Components(s, ledger);
        var gc = GC.GetGCMemoryInfo();
        var process = new ProcessStats(
            Environment.WorkingSet,
            gc.HeapSizeBytes,
            GC.GetTotalAllocatedBytes(),
            GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2),
            System.Diagnostics.Process.GetCurrentProcess().Threads.Count,
            ThreadPool.PendingWorkItemCount);
        var body = new DetailedHealthResponse(
            Status(s, components), components, reporter.Uptime, HealthReporter.Version,
            IsReady(reporter), reporter.IsDraining, maintenance.IsOn,
            new RateLimitHealth(limiter.IsDegraded ? HealthStatus.Degraded : HealthStatus.Healthy, limiter.IsDegraded,
                limiter.Admitted, limiter.Rejected, limiter.DegradedDecisions),
            new ReplicaHealth(replica.Configured, replica.ServingReads, replica.LagSeconds, replica.Configured ? replica.Problem : null),
            new SchemaHealth(s.SchemaVersion, SchemaMigrator.ExpectedVersion, s.SchemaVersion == SchemaMigrator.ExpectedVersion),
            pool.Snapshot(), process,
            [.. registry.Providers.Select(p => new ProviderDetail(p.Name, p.Adapter.Type, p.State.Status, ProvidersApi.CircuitName(p),
                Math.Round(p.State.LatencyMs, 2), Math.Round(p.State.ErrorRate, 4), p.State.CoolingUntil))],
            CacheStatsOf(cache, metrics, cacheOptions.Value), s.CheckedAt);
        return TypedResults.Json(body, ApiJsonContext.Default.DetailedHealthResponse, statusCode: StatusOf(s));
    }

    /// <summary>200 only when the schema is at the version this build expects and the process is not draining.</summary>
    internal static async Task<IResult> GetReady(HttpContext ctx, HealthReporter reporter, MaintenanceMode maintenance)
    {
        if (!reporter.IsDraining)
        {
            await reporter.GetAsync();
        }
        var ready = IsReady(reporter);
        // Maintenance mode is reported, not failed: pods stay in the load balancer so admin and health keep answering.
        var body = new ReadyResponse(ready ? "ready" : "not_ready", reporter.IsDraining, maintenance.IsOn,
            reporter.LastKnownSchemaVersion, SchemaMigrator.ExpectedVersion);
        if (!ready)
        {
            ctx.Response.Headers.RetryAfter = "5";
        }
        return TypedResults.Json(body, ApiJsonContext.Default.ReadyResponse,
            statusCode: ready ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>The cache's counters and local copies, shared by <c>/health/detailed</c> and <c>GET /admin/cache</c>.</summary>
    internal static CacheStats CacheStatsOf(ResponseCache cache, GatewayMetrics metrics, CacheOptions options)
    {
        var (hits, misses) = (metrics.CacheHits, metrics.CacheMisses);
        return new CacheStats(options.Mode, options.TtlSeconds, hits, misses, hits + misses == 0 ? 0 : Math.Round((double)hits / (hits + misses), 4),
            cache.LocalActive, metrics.CacheLocalHits, cache.LocalEntries, cache.LocalBytes, options.LocalMaxBytes);
    }

    private static bool IsReady(HealthReporter reporter) =>
        !reporter.IsDraining && reporter.LastKnownSchemaVersion == SchemaMigrator.ExpectedVersion;

    private static HealthComponents Components(HealthSnapshot s, CompletionLedger ledger) => new(s.Database, s.Redis, s.Providers, LedgerHealth.Of(ledger));

    /// <summary>The probes' status, degraded too when the ledger is (it is live, not cached with the probes).</summary>
    private static string Status(HealthSnapshot s, HealthComponents c) =>
        s.Status == HealthStatus.Healthy && c.Ledger.Status != HealthStatus.Healthy ? HealthStatus.Degraded : s.Status;

    private static int StatusOf(HealthSnapshot s) =>
        s.Status == HealthStatus.Unhealthy ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status200OK;
}
