using System.Text;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Hosting;

/// <summary>The optional log file the runbook greps: <c>grep "provider error" /var/log/helixagent/app.log</c>.</summary>
public sealed class FileLogTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Provider_failures_land_in_the_log_file_with_the_request_id_and_key_name_but_never_the_key()
    {
        var db = await TestDatabase.CreateAsync(postgres, "logs");
        var cs = db.ConnectionString;
        var key = await db.CreateKeyAsync("billing-app");
        var logFile = Path.Combine(ServerProcess.TempDir("helixagent-logs"), "app.log");
        string requestId;
        await using (var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Providers__sim__Type"] = "simulator",
            ["Providers__sim__Models__0"] = "sim-small",
            ["Routes__flaky__Targets__0"] = "sim/sim-error",
            ["Routes__flaky__Targets__1"] = "sim/sim-small",
            ["Logging__File__Path"] = logFile,
        }))
        {
            using var http = new HttpClient { BaseAddress = api.BaseAddress };
            http.DefaultRequestHeaders.Add("X-API-Key", key);
            var response = await http.PostAsync("/v1/chat/completions",
                new StringContent(GatewayHarness.Chat("flaky").ToJsonString(), Encoding.UTF8, "application/json"));
            requestId = response.Headers.GetValues("x-request-id").Single();
            api.Signal("TERM");
            await api.WaitForExitAsync(TimeSpan.FromSeconds(30));
        }

        var lines = await File.ReadAllLinesAsync(logFile);
        var providerError = Assert.Single(lines, l => l.Contains("provider error", StringComparison.Ordinal));
        Assert.Contains(requestId, providerError);
        Assert.Contains("\"KeyName\":\"billing-app\"", providerError);
        Assert.Contains("\"Model\":\"flaky\"", providerError);
        Assert.DoesNotContain(lines, l => l.Contains(key, StringComparison.Ordinal));
    }
}
