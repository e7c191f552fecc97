using System.Net;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Hosting;

/// <summary>
/// What the API logs when it stops after Redis did (Ctrl-C on the AppHost stops Redis first): the lost connection at
/// most once, at Information, and the ledger's flush as the last line.
/// </summary>
public sealed class ShutdownLogTests(PostgresServer postgres, Xunit.Abstractions.ITestOutputHelper output) : IClassFixture<PostgresServer>
{
    [Fact]
    public async Task Stopping_after_redis_stopped_logs_no_error_and_ends_with_the_ledger_flushed_line()
    {
        var db = await TestDatabase.CreateAsync(postgres, "stoplog");
        var key = await db.CreateKeyAsync("stoplog");
        var redis = new OwnRedisServer();
        await redis.InitializeAsync();
        await using var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = db.ConnectionString,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Providers__sim__Type"] = "simulator",
            ["Providers__sim__Models__0"] = "sim-small",
            ["Shutdown__DrainDelaySeconds"] = "0",
        });
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        http.DefaultRequestHeaders.Add("X-API-Key", key);
        for (var i = 0; i < 3; i++)
        {
            var ok = await http.PostAsync("/v1/chat/completions",
                new StringContent(GatewayHarness.Chat("sim-small", $"hello {i}").ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }

        try
        {
            await StopAfterRedisAsync(api, redis);
        }
        finally
        {
            output.WriteLine(api.Log.ToString());
        }

        var lines = api.Log.ToString().Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(0, api.ExitCode);
        Assert.DoesNotContain(lines, l => l.Contains(" ERROR ", StringComparison.Ordinal) || l.Contains(" CRIT ", StringComparison.Ordinal));
        Assert.Single(lines, l => l.Contains("Redis connection lost", StringComparison.Ordinal));
        Assert.Contains(" INFO ", lines.Single(l => l.Contains("Redis connection lost", StringComparison.Ordinal)));
        Assert.Matches(@"stopped; ledger flushed \(3 rows\)$", lines[^1]);
    }

    private static async Task StopAfterRedisAsync(ApiProcess api, RedisServer redis)
    {
        await redis.StopAsync();
        // The AppHost stops the API a moment after Redis, once the client has seen the connection fail (before, the
        // failure and every reconnect after it were StackExchange.Redis ERROR lines, twice a second).
        await api.WaitForLogAsync("Redis connection lost", TimeSpan.FromSeconds(15));
        api.Signal("TERM");
        await api.WaitForExitAsync(TimeSpan.FromSeconds(30));
    }
}
