using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>The real API (<c>Program</c>) in-process, pointed at real PostgreSQL and Redis servers.</summary>
public sealed class GatewayFactory(
    string databaseConnectionString,
    string redisConnectionString,
    IDictionary<string, string?>? settings = null,
    Action<IServiceCollection>? services = null)
    : WebApplicationFactory<Program>
{
    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
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
}
