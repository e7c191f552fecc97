using System.Net;
using HelixAgent.Api.Access;
using HelixAgent.Api.Gateway;
using HelixAgent.Data;
using HelixAgent.Api.Health;
using HelixAgent.Api.Ledger;
using Microsoft.Extensions.Options;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Observability;
using HelixAgent.Observability;
using StackExchange.Redis;

namespace HelixAgent.Api.Extensions;

internal static class Extensions
{
    /// <summary>Registers the gateway's services: data sources, health, drain.</summary>
    public static IHostApplicationBuilder AddApplicationServices(this IHostApplicationBuilder builder)
    {
        builder.AddNpgsqlDataSource(KnownResourceNames.Database,
            configureSettings: s => s.DisableHealthChecks = true,
            configureDataSourceBuilder: b => DatabasePool.Configure(b, builder.Configuration[HelixAgent.Data.DatabasePool.MaxOpenKey]));
        builder.AddRedisClient(KnownResourceNames.Redis,
            configureSettings: s =>
            {
                s.DisableHealthChecks = true;
                // A span per Redis command (two per request: rate-limit admit and settle) costs more than the request's
                // own spans; the request and upstream-attempt spans already show the time. Opt in when debugging Redis.
                s.DisableTracing = !builder.Configuration.GetValue("Telemetry:RedisCommandSpans", false);
            },
            configureOptions: ConfigureRedis);

        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<NpgsqlPoolMetrics>();
        builder.Services.AddSingleton(sp => new GatewayMetrics(
            sp.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(),
            sp.GetRequiredService<ProviderRegistry>(),
            sp.GetRequiredService<ClusterRateLimiter>(),
            sp.GetRequiredService<NpgsqlPoolMetrics>(),
            sp.GetRequiredService<ResponseCache>(),
            sp.GetRequiredService<KeyAuthenticator>()));
        builder.Services.AddPrometheusExposition(GatewayMetrics.MeterName, CompletionLedger.MeterName);
        builder.Services.AddOptions<HealthOptions>().BindConfiguration(HealthOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<IProviderHealthSource, RegistryProviderHealth>();
        builder.Services.AddSingleton<HealthReporter>();

        builder.Services.AddOptions<ReplicaOptions>().BindConfiguration(ReplicaOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<ReadReplica>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ReadReplica>());

        builder.AddGateway();
        builder.AddAccess();
        builder.AddFileLogging();
        builder.AddGracefulDrain();
        builder.Services.AddProblemDetails();
        return builder;
    }

    /// <summary>Providers, routing, the ledger and the provider probes.</summary>
    public static IHostApplicationBuilder AddGateway(this IHostApplicationBuilder builder)
    {
        builder.Services.AddOptions<GatewayOptions>().BindConfiguration(GatewayOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<LedgerOptions>().BindConfiguration(LedgerOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<EnsembleOptions>().BindConfiguration(EnsembleOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();

        // One pooled client for every upstream: no overall timeout (streams run long; the router cancels per attempt).
        builder.Services.AddSingleton(_ => new HttpClient(new SocketsHttpHandler
        {
            PooledConnectionLifetime = TimeSpan.FromMinutes(2),
            ConnectTimeout = TimeSpan.FromSeconds(10),
            AutomaticDecompression = DecompressionMethods.GZip | DecompressionMethods.Deflate,
            MaxConnectionsPerServer = 1024,
        })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        });
        builder.Services.AddSingleton(sp => new ProviderRegistry(
            sp.GetRequiredService<IConfiguration>(),
            sp.GetRequiredService<IHostEnvironment>(),
            sp.GetRequiredService<IOptions<GatewayOptions>>().Value,
            sp.GetRequiredService<IOptions<EnsembleOptions>>().Value,
            sp.GetRequiredService<HttpClient>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<ProviderRegistry>>()));
        builder.Services.AddSingleton<GatewayRouter>();
        builder.Services.AddSingleton<PriceTable>();
        builder.Services.AddOptions<CacheOptions>().BindConfiguration(CacheOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<ResponseCache>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ResponseCache>());
        // Per-key RPM/TPM limits shared by all replicas through Redis, per replica while Redis is unreachable.
        builder.Services.AddSingleton<ClusterRateLimiter>();
        builder.Services.AddSingleton<ReplicaHeartbeat>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ReplicaHeartbeat>());
        builder.Services.AddOptions<RateLimitOptions>().BindConfiguration(RateLimitOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<CompletionLedger>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<CompletionLedger>());
        // Stored OpenAI Responses (store: true), written off the request path like the ledger.
        builder.Services.AddOptions<ResponsesOptions>().BindConfiguration("Responses");
        builder.Services.AddSingleton<StoredResponses>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<StoredResponses>());
        builder.Services.AddHostedService<ProviderProbeService>();
        return builder;
    }

    /// <summary>API keys, maintenance mode.</summary>
    public static IHostApplicationBuilder AddAccess(this IHostApplicationBuilder builder)
    {
        builder.Services.AddOptions<AuthOptions>().BindConfiguration(AuthOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<ApiKeyStore>();
        builder.Services.AddSingleton<KeyAuthenticator>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<KeyAuthenticator>());
        builder.Services.AddSingleton<InFlightRequests>();
        builder.Services.AddOptions<DiagnosticsOptions>().BindConfiguration(DiagnosticsOptions.Section);
        builder.Services.AddSingleton<MaintenanceMode>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<MaintenanceMode>());
        return builder;
    }

    /// <summary>Redis is optional at runtime: never abort on a failed connect, reconnect in the background.</summary>
    internal static void ConfigureRedis(ConfigurationOptions options)
    {
        options.AbortOnConnectFail = false;
        options.ConnectTimeout = 2000;
        options.SyncTimeout = 1000;
        options.AsyncTimeout = 1000;
        options.ConnectRetry = 1;
        options.ReconnectRetryPolicy = new LinearRetry(500);
        // Complete Redis replies on the .NET thread pool instead of StackExchange.Redis's own dedicated threads: on a
        // small machine (2 cores) those extra spinning threads cost more CPU and tail latency than they save.
        options.SocketManager = SocketManager.ThreadPool;
    }
}
