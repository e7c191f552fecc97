using HelixAgent.Data;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;

namespace HelixAgent.Worker;

/// <summary>Whether this worker has brought the schema to the version its build expects.</summary>
public sealed class SchemaState : IHealthCheck
{
    private volatile bool _done;
    private volatile string _lastError = "migrations not applied yet";

    public bool IsCurrent => _done;

    public void Succeeded() => _done = true;
    public void Failed(string error) => _lastError = error;

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(_done
            ? HealthCheckResult.Healthy($"schema at version {SchemaMigrator.ExpectedVersion}")
            : HealthCheckResult.Unhealthy(_lastError));
}

/// <summary>
/// Applies pending migrations when the worker starts (under the migrator's advisory lock, so several workers never
/// race), retrying while PostgreSQL is not reachable yet. The worker's <c>/health</c> turns healthy once the schema
/// is current, which is what the AppHost makes the API wait for.
/// </summary>
internal sealed partial class MigrationService(NpgsqlDataSource dataSource, SchemaState state, ILogger<MigrationService> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var migrator = new SchemaMigrator(dataSource);
        var delay = TimeSpan.FromMilliseconds(250);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                var applied = await migrator.UpAsync(stoppingToken);
                LogApplied(logger, applied.Count, SchemaMigrator.ExpectedVersion);
                state.Succeeded();
                return;
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException && !stoppingToken.IsCancellationRequested)
            {
                state.Failed(ex.Message);
                LogRetry(logger, ex.Message, delay.TotalSeconds);
                await Task.Delay(delay, stoppingToken);
                delay = TimeSpan.FromSeconds(Math.Min(delay.TotalSeconds * 2, 5));
            }
        }
    }

    [LoggerMessage(1, LogLevel.Information, "Applied {Count} migration(s); schema at version {Version}")]
    private static partial void LogApplied(ILogger logger, int count, long version);

    [LoggerMessage(2, LogLevel.Warning, "Database not ready for migrations ({Reason}); retrying in {Seconds}s")]
    private static partial void LogRetry(ILogger logger, string reason, double seconds);
}

internal static class MigrationExtensions
{
    public static IHostApplicationBuilder AddSchemaMigrations(this IHostApplicationBuilder builder)
    {
        builder.Services.AddSingleton<SchemaState>();
        builder.Services.AddHostedService<MigrationService>();
        builder.Services.AddHealthChecks().AddCheck<SchemaState>("schema", tags: [Extensions.ReadyTag]);
        return builder;
    }
}
