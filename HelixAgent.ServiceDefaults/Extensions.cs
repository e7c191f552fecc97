using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Microsoft.Extensions.Hosting;

/// <summary>
/// Cross-cutting defaults every HelixAgent service shares: OpenTelemetry (traces, metrics and logs over OTLP to the
/// Aspire dashboard or any collector), service discovery and health checks.
/// Unlike the Aspire template, the health endpoints are served in every environment: Kubernetes probes them in
/// Production.
/// </summary>
public static class Extensions
{
    public const string LiveTag = "live";
    public const string ReadyTag = "ready";

    /// <summary>Names of the ActivitySources and Meters our own code emits; registered with OpenTelemetry.</summary>
    public static readonly string[] HelixAgentTelemetrySources = ["HelixAgent", "HelixAgent.Ledger", "HelixAgent.Migrations", "HelixAgent.Gateway"];

    /// <summary>Full defaults for the API: telemetry, health, service discovery.</summary>
    public static TBuilder AddServiceDefaults<TBuilder>(this TBuilder builder) where TBuilder : IHostApplicationBuilder
    {
        builder.AddBasicServiceDefaults();
        builder.Services.AddServiceDiscovery();
        // No blanket resilience handler on every HttpClient: provider calls stream for minutes and the gateway does
        // its own failover; clients that want the standard handler add it where they are registered.
        builder.Services.ConfigureHttpClientDefaults(http => http.AddServiceDiscovery());
        return builder;
    }

    /// <summary>Basic defaults for the worker: telemetry and health checks, no HTTP client conventions.</summary>
    public static TBuilder AddBasicServiceDefaults<TBuilder>(this TBuilder builder) where TBuilder : IHostApplicationBuilder
    {
        builder.ConfigureConsoleLogging();
        builder.ConfigureOpenTelemetry();
        builder.Services.AddHealthChecks().AddCheck("self", () => HealthCheckResult.Healthy(), [LiveTag]);
        return builder;
    }

    /// <summary>
    /// Console logs as <see cref="LineConsoleFormatter"/> lines (level in capitals, one line per entry) unless
    /// <c>Logging:Console:FormatterName</c> names another formatter (<c>simple</c>, <c>json</c>, <c>systemd</c>).
    /// </summary>
    public static TBuilder ConfigureConsoleLogging<TBuilder>(this TBuilder builder) where TBuilder : IHostApplicationBuilder
    {
        builder.Logging.AddConsoleFormatter<LineConsoleFormatter, LineConsoleFormatterOptions>();
        builder.Services.Configure<ConsoleLoggerOptions>(o => o.FormatterName ??= LineConsoleFormatter.FormatterName);
        return builder;
    }

    public static TBuilder ConfigureOpenTelemetry<TBuilder>(this TBuilder builder) where TBuilder : IHostApplicationBuilder
    {
        builder.Logging.AddOpenTelemetry(logging =>
        {
            logging.IncludeFormattedMessage = true;
            logging.IncludeScopes = true;
        });

        builder.Services.AddOpenTelemetry()
            .WithMetrics(metrics => metrics
                .AddAspNetCoreInstrumentation()
                .AddHttpClientInstrumentation()
                .AddRuntimeInstrumentation()
                .AddMeter(HelixAgentTelemetrySources)
                .AddMeter("Npgsql"))
            .WithTracing(tracing => tracing
                .AddSource(builder.Environment.ApplicationName)
                .AddSource(HelixAgentTelemetrySources)
                .AddSource("Npgsql")
                .AddAspNetCoreInstrumentation(o =>
                    // Probes and scrapes would drown the real traffic in the dashboard.
                    o.Filter = ctx => !IsProbePath(ctx.Request.Path))
                .AddHttpClientInstrumentation());

        if (!string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
        {
            builder.Services.AddOpenTelemetry().UseOtlpExporter();
        }
        return builder;
    }

    /// <summary>
    /// Maps <c>/alive</c> (liveness: the process answers) in every environment. Services without a richer
    /// health endpoint of their own also get <c>/health</c> (all checks) and <c>/ready</c> (checks tagged ready).
    /// </summary>
    public static WebApplication MapDefaultEndpoints(this WebApplication app, bool mapHealthAndReady = true)
    {
        app.MapHealthChecks("/alive", new HealthCheckOptions { Predicate = r => r.Tags.Contains(LiveTag) });
        if (mapHealthAndReady)
        {
            app.MapHealthChecks("/health");
            app.MapHealthChecks("/ready", new HealthCheckOptions { Predicate = r => r.Tags.Contains(ReadyTag) });
        }
        return app;
    }

    public static bool IsProbePath(PathString path) =>
        path.StartsWithSegments("/health") || path.StartsWithSegments("/alive") ||
        path.StartsWithSegments("/ready") || path.StartsWithSegments("/metrics");
}
