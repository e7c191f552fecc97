using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Hosting;

/// <summary>The real <c>helixagent</c> binary's garbage collector, as the memory diagnostics report it.</summary>
public sealed class GarbageCollectorTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Theory]
    [InlineData(null, false)]
    [InlineData("1", true)]
    public async Task The_gateway_runs_the_workstation_gc_unless_dotnet_gcserver_turns_server_gc_on(string? gcServer, bool expectServer)
    {
        var db = await TestDatabase.CreateAsync(postgres, "gcmode");
        var cs = db.ConnectionString;
        var admin = await db.CreateKeyAsync("ops", scope: "admin");
        var env = new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
        };
        if (gcServer is not null)
        {
            env["DOTNET_gcServer"] = gcServer;
        }
        await using var api = await ApiProcess.StartAsync(env);
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        http.DefaultRequestHeaders.Add("X-API-Key", admin);

        var memory = JsonNode.Parse(await http.GetStringAsync("/admin/diagnostics/memory"))!;

        Assert.Equal(expectServer, memory["server_gc"]!.GetValue<bool>());
    }
}
