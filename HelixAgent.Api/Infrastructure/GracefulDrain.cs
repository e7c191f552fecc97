using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;

namespace HelixAgent.Api.Infrastructure;

internal sealed class ShutdownOptions
{
    public const string Section = "Shutdown";

    /// <summary>After SIGTERM, keep listening this long with <c>/ready</c> at 503 so load balancers stop sending work.</summary>
    [Range(0, 300)]
    public int DrainDelaySeconds { get; set; }

    /// <summary>How long in-flight requests (streams included) get to finish once listening stops.</summary>
    [Range(1, 3600)]
    public int TimeoutSeconds { get; set; } = 30;
}

/// <summary>Whether the process is shutting down; <c>/ready</c> answers 503 from the first moment it is.</summary>
internal sealed class DrainState
{
    private volatile bool _draining;
    public bool IsDraining => _draining;
    public void Begin() => _draining = true;
}

/// <summary>
/// Runs first when the host stops (SIGTERM, Ctrl+C): flips readiness, waits the drain delay while still
/// listening, then lets Kestrel stop accepting and finish in-flight requests within the shutdown timeout.
/// </summary>
internal sealed partial class DrainService(DrainState state, IOptions<ShutdownOptions> options, ILogger<DrainService> logger)
    : IHostedLifecycleService
{
    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        state.Begin();
        var delay = TimeSpan.FromSeconds(options.Value.DrainDelaySeconds);
        Log.Draining(logger, delay.TotalSeconds, options.Value.TimeoutSeconds);
        if (delay > TimeSpan.Zero)
        {
            try
            {
                await Task.Delay(delay, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                // Shutdown timeout reached: go on stopping.
            }
        }
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information,
            "Shutdown started: not ready; draining for {DrainSeconds}s, then up to {TimeoutSeconds}s for in-flight requests")]
        public static partial void Draining(ILogger logger, double drainSeconds, int timeoutSeconds);
    }
}

internal static class GracefulDrainExtensions
{
    public static IHostApplicationBuilder AddGracefulDrain(this IHostApplicationBuilder builder)
    {
        builder.Services.AddOptions<ShutdownOptions>().BindConfiguration(ShutdownOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<DrainState>();
        builder.Services.AddHostedService<DrainService>();
        var shutdown = builder.Configuration.GetSection(ShutdownOptions.Section).Get<ShutdownOptions>() ?? new();
        builder.Services.Configure<HostOptions>(o =>
            // + a margin for the ledger to flush after the last request finished
            o.ShutdownTimeout = TimeSpan.FromSeconds(shutdown.DrainDelaySeconds + shutdown.TimeoutSeconds + 10));
        return builder;
    }
}
