using HelixAgent.Observability;
using HelixAgent.Worker.Jobs;

namespace HelixAgent.Worker;

/// <summary>
/// The maintenance worker: applies schema migrations at start, then runs the periodic jobs. <c>helixagent-worker run
/// &lt;job&gt;</c> runs one job now and exits.
/// </summary>
public static class WorkerProgram
{
    public static async Task<int> Main(string[] args)
    {
        var manual = args.Length > 0 && args[0] == "run";
        var builder = WebApplication.CreateBuilder(manual ? [] : args);

        builder.AddBasicServiceDefaults();
        builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddMeter(JobRunner.MeterName));
        builder.Services.AddPrometheusExposition(JobRunner.MeterName);
        builder.AddNpgsqlDataSource(KnownResourceNames.Database, configureSettings: s => s.DisableHealthChecks = true,
            configureDataSourceBuilder: b => HelixAgent.Data.DatabasePool.Configure(b, builder.Configuration[HelixAgent.Data.DatabasePool.MaxOpenKey]));
        builder.AddSchemaMigrations();
        builder.AddMaintenanceJobs(runScheduler: !manual);
        if (manual)
        {
            // A command: its output is the result on stdout; only warnings and errors are logged, to stderr.
            builder.Logging.ClearProviders();
            builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
        }

        var app = builder.Build();
        if (manual)
        {
            return await JobCommand.RunAsync(app.Services, args[1..]);
        }
        app.MapDefaultEndpoints();
        app.MapPrometheusMetrics();
        // Listen before the first job runs, so its numbers are in the first scrape.
        app.Services.GetRequiredService<PrometheusExposition>();
        await app.RunAsync();
        return 0;
    }
}
