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
