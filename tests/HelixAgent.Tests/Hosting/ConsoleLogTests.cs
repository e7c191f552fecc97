using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Hosting;

/// <summary>
/// What <c>kubectl logs</c> / <c>docker logs</c> show: the runbook's P1 step
/// <c>kubectl logs -l app=helixagent --since=10m | grep ERROR</c> must find the requests the gateway failed, and only them.
/// </summary>
public sealed partial class ConsoleLogTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Grep_ERROR_on_the_console_log_finds_each_failed_request_with_its_id_and_key_name_and_nothing_for_a_failover_that_worked()
    {
        var db = await TestDatabase.CreateAsync(postgres, "console");
        var cs = db.ConnectionString;
        var key = await db.CreateKeyAsync("billing-app");
        string log, flakyId, brokenId;
        await using (var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Providers__sim__Type"] = "simulator",
            ["Providers__sim__Models__0"] = "sim-small",
            // The circuit must not open between the two requests: each must reach sim-error.
            ["Gateway__CircuitFailureThreshold"] = "100",
            ["Routes__flaky__Targets__0"] = "sim/sim-error",
            ["Routes__flaky__Targets__1"] = "sim/sim-small",
            ["Routes__broken__Targets__0"] = "sim/sim-error",
        }))
        {
            using var http = new HttpClient { BaseAddress = api.BaseAddress };
            http.DefaultRequestHeaders.Add("X-API-Key", key);
            var flaky = await http.PostAsync("/v1/chat/completions",
                new StringContent(GatewayHarness.Chat("flaky").ToJsonString(), Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, flaky.StatusCode);
            flakyId = flaky.Headers.GetValues("x-request-id").Single();
            var broken = await http.PostAsync("/v1/chat/completions",
                new StringContent(GatewayHarness.Chat("broken").ToJsonString(), Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.BadGateway, broken.StatusCode);
            brokenId = broken.Headers.GetValues("x-request-id").Single();
            api.Signal("TERM");
            await api.WaitForExitAsync(TimeSpan.FromSeconds(30));
            lock (api.Log)
            {
                log = api.Log.ToString();
            }
        }

        var lines = log.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        // One entry, one line: every line is an entry (timestamp, level in capitals, category and event id), or the
        // indented text of the exception that ends the entry above it.
        Assert.All(lines, l => Assert.Matches(EntryLine(), l));
        Assert.Matches(EntryLine(), lines[0]);

        var errors = lines.Where(l => l.Contains("ERROR", StringComparison.Ordinal)).ToList();
        var failed = Assert.Single(errors);
        Assert.Contains(" ERROR HelixAgent.Api.Gateway.GatewayRouter[30] request failed: chat.completions for model broken answered 502 (upstream_unavailable)", failed);
        Assert.Contains("All providers for model 'broken' failed", failed);
        Assert.Contains($"RequestId={brokenId}", failed);
        Assert.Contains("Model=broken, KeyName=billing-app", failed);

        // The failover that worked is a warning, found by the runbook's "provider error" grep, not by grep ERROR.
        var warned = Assert.Single(lines, l => l.Contains(flakyId, StringComparison.Ordinal));
        Assert.Contains(" WARN HelixAgent.Api.Gateway.GatewayRouter[10] provider error: sim for model flaky", warned);
        Assert.DoesNotContain(key, log);
    }

    [GeneratedRegex(@"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (TRACE|DEBUG|INFO|WARN|ERROR|CRIT) [^\s\[]+\[\d+\] |    )")]
    private static partial Regex EntryLine();
}
