using System.Net;
using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Functional;

/// <summary>SIGTERM on the real <c>helixagent</c> process: readiness flips at once, the process exits 0.</summary>
public sealed class GracefulShutdownTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Sigterm_turns_ready_503_immediately_while_still_serving_then_exits_zero()
    {
        var cs = await postgres.CreateDatabaseAsync("drain");
        await using (var ds = NpgsqlDataSource.Create(cs))
        {
            await new SchemaMigrator(ds).UpAsync();
        }
        await using var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Shutdown__DrainDelaySeconds"] = "3",
        });
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(5) };
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/ready")).StatusCode);

        api.Signal("TERM");
        await Task.Delay(300);

        var ready = await http.GetAsync("/ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.Contains("\"draining\":true", await ready.Content.ReadAsStringAsync());
        Assert.True(ready.Headers.Contains("Retry-After"));
        // Liveness and health keep answering during the drain.
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/alive")).StatusCode);

        await api.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, api.ExitCode);
        Assert.Contains("Shutdown started", api.Log.ToString());
    }
}
