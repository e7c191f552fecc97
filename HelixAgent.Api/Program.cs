using HelixAgent.Api.Access;
using HelixAgent.Api.Cli;
using HelixAgent.Api.Extensions;
using HelixAgent.Api.Gateway;
using HelixAgent.Api.Health;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Observability;
using HelixAgent.Observability;

if (CommandLine.IsCommand(args))
{
    return await CommandLine.RunAsync(args);
}

var builder = WebApplication.CreateBuilder(args);

builder.AddServiceDefaults();
builder.AddApplicationServices();

var app = builder.Build();

try
{
    // Build the provider registry now: an invalid configuration stops the start with a clear message.
    var registry = app.Services.GetRequiredService<ProviderRegistry>();
    if (app.Services.GetRequiredService<PriceTable>().Unpriced(registry) is { Count: > 0 } unpriced)
    {
        app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("HelixAgent.Api.Pricing").LogWarning(
            "No price for the routed models {Models}: their requests' cost is NULL and counted in helixagent_unpriced_requests_total; set Pricing:Models:<model>:InputPerMTok and OutputPerMTok",
            string.Join(", ", unpriced));
    }
    app.Services.StartMetrics();
    // Open the ledger's journal now (after the metrics listener, which must see its counters' first 0): a second
    // process on the same folder stops here, naming the setting.
    app.Services.GetRequiredService<HelixAgent.Api.Ledger.CompletionLedger>();
}
catch (GatewayConfigurationException ex)
{
    await Console.Error.WriteLineAsync($"helixagent: invalid configuration: {ex.Message}");
    return 78; // EX_CONFIG
}
catch (HelixAgent.Api.Ledger.JournalInUseException ex)
{
    await Console.Error.WriteLineAsync($"helixagent: {ex.Message}");
    return 75; // EX_TEMPFAIL: the other process may stop
}
catch (UnauthorizedAccessException ex)
{
    await Console.Error.WriteLineAsync($"helixagent: the ledger journal's folder cannot be written ({ex.Message}); set Ledger:Journal:Path (Ledger__Journal__Path) to a folder this user owns");
    return 73; // EX_CANTCREAT
}

// Connect to Redis now, before listening. Resolved lazily by the first request instead, the client's synchronous
// connect blocks a thread-pool thread while its own completions wait for the pool to grow: about a second on a
// 2-core pod, added to the first requests and reported as "redis: not connected" by /health. With Redis down this
// waits out the connect timeout (2 s) once; the gateway then starts degraded and reconnects in the background.
var startupLog = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("HelixAgent.Api");
RedisConnectionLog.Attach(app.Services.GetService<StackExchange.Redis.IConnectionMultiplexer>(), startupLog);

// The last line of a stop: after every hosted service (the ledger's flush included) has stopped.
app.Lifetime.ApplicationStopped.Register(() => HelixAgent.Api.Ledger.CompletionLedger.LogStopped(
    startupLog, app.Services.GetRequiredService<HelixAgent.Api.Ledger.CompletionLedger>()));

app.UseApplicationErrors();
app.UseMiddleware<AccessMiddleware>();
app.MapDefaultEndpoints(mapHealthAndReady: false);
app.MapHealthApi();
app.MapGatewayApi();
app.MapProvidersApi();
app.MapAdminApi();
app.MapDiagnosticsApi();
app.MapPrometheusMetrics();

await app.RunAsync();
return 0;

/// <summary>Entry point, visible to <c>WebApplicationFactory&lt;Program&gt;</c> in the functional tests.</summary>
public partial class Program;
