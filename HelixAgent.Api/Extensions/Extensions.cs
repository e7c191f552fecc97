using HelixAgent.Api.Health;
using HelixAgent.Api.Infrastructure;
using StackExchange.Redis;

namespace HelixAgent.Api.Extensions;

internal static class Extensions
{
    /// <summary>Registers the gateway's services: data sources, health, drain.</summary>
    public static IHostApplicationBuilder AddApplicationServices(this IHostApplicationBuilder builder)
    {
        builder.AddNpgsqlDataSource(KnownResourceNames.Database,
            configureSettings: s => s.DisableHealthChecks = true);
        builder.AddRedisClient(KnownResourceNames.Redis,
            configureSettings: s => s.DisableHealthChecks = true,
            configureOptions: ConfigureRedis);

        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<NpgsqlPoolMetrics>();
        builder.Services.AddOptions<HealthOptions>().BindConfiguration(HealthOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<IProviderHealthSource, ConfiguredProviders>();
        builder.Services.AddSingleton<HealthReporter>();

        builder.AddGracefulDrain();
        builder.Services.AddProblemDetails();
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
    }
}
