using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>The real API (<c>Program</c>) in-process, pointed at real PostgreSQL and Redis servers, with its own
/// ledger journal folder (<see cref="JournalPath"/>, removed with the factory unless the settings name one).</summary>
public sealed class GatewayFactory(
    string databaseConnectionString,
    string redisConnectionString,
    IDictionary<string, string?>? settings = null,
    Action<IServiceCollection>? services = null)
    : WebApplicationFactory<Program>
{
    private readonly bool _ownJournal = settings?.ContainsKey("Ledger:Journal:Path") != true;

    public string JournalPath { get; } = settings?.TryGetValue("Ledger:Journal:Path", out var path) == true && path is not null
        ? path : Path.Combine(Path.GetTempPath(), "helixagent-ledger-" + Guid.NewGuid().ToString("N"));

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseSetting("Ledger:Journal:Path", JournalPath);
        builder.UseEnvironment("Testing");
        builder.UseSetting("ConnectionStrings:" + KnownResourceNames.Database, databaseConnectionString);
        builder.UseSetting("ConnectionStrings:" + KnownResourceNames.Redis, redisConnectionString);
        builder.UseSetting("Health:CacheSeconds", "0");
        // The probes' own timeouts (2 s and 1 s by default) are not what these tests are about: on a 2-core CI machine
        // running the fault suite in parallel, opening a first PostgreSQL connection has taken longer than 2 s and
        // turned a healthy database into a 503. Tests of the timeouts themselves set them again.
        builder.UseSetting("Health:DatabaseTimeoutMs", "15000");
        builder.UseSetting("Health:RedisTimeoutMs", "15000");
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            builder.UseSetting(key, value);
        }
        if (services is not null)
        {
            builder.ConfigureServices(services);
        }
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        if (_ownJournal && Directory.Exists(JournalPath))
        {
            Directory.Delete(JournalPath, recursive: true);
        }
    }
}
