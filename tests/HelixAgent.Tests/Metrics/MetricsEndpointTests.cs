using System.Globalization;
using System.Net;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Metrics;

/// <summary><c>GET /metrics</c> after real traffic: the runbook's names, verbatim, with bounded labels.</summary>
public sealed class MetricsEndpointTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private sealed record Sample(string Name, string Labels, double Value);

    private static List<Sample> Parse(string text)
    {
        var samples = new List<Sample>();
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }
            var brace = line.IndexOf('{');
            var space = line.LastIndexOf(' ');
            var name = brace >= 0 && brace < space ? line[..brace] : line[..space];
            var labels = brace >= 0 && brace < space ? line[brace..(line.LastIndexOf('}') + 1)] : "";
            var raw = line[(space + 1)..];
            samples.Add(new Sample(name, labels, raw == "+Inf" ? double.PositiveInfinity : double.Parse(raw, CultureInfo.InvariantCulture)));
        }
        return samples;
    }

    private static async Task<(HttpResponseMessage Response, string Text)> ScrapeAsync(GatewayHarness gw)
    {
        using var anonymous = gw.Anonymous();
        var response = await anonymous.GetAsync("/metrics");
        return (response, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Before_any_traffic_the_runbook_series_exist_and_nothing_is_lost()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var (response, text) = await ScrapeAsync(gw);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var samples = Parse(text);
        Assert.Equal(0, Assert.Single(samples, s => s.Name == "helixagent_ledger_rows_lost_total").Value);
        Assert.Equal(0, Assert.Single(samples, s => s.Name == "helixagent_cache_hit_rate").Value);
        Assert.Equal(1, Assert.Single(samples, s => s.Name == "helixagent_provider_health" && s.Labels == "{provider=\"sim\"}").Value);
        Assert.DoesNotContain(samples, s => s.Name == "helixagent_request_duration_count");
    }

    [Fact]
    public async Task Refused_keys_are_counted_by_reason_and_the_key_cache_shows_its_size()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        Assert.Equal(HttpStatusCode.Unauthorized, (await gw.Anonymous().PostAsync("/v1/chat/completions", null)).StatusCode);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await gw.WithKey(HelixAgent.Data.ApiKeyStore.NewSecret()).GetAsync("/v1/models")).StatusCode);
        }
        Assert.Equal(HttpStatusCode.Forbidden, (await gw.WithKey(gw.ClientKey).GetAsync("/admin/keys")).StatusCode);

        var samples = Parse((await ScrapeAsync(gw)).Text);
        double Rejected(string reason) =>
            Assert.Single(samples, s => s.Name == "helixagent_auth_rejected_total" && s.Labels == $"{{reason=\"{reason}\"}}").Value;
        Assert.Equal((1, 3, 1), (Rejected("missing_api_key"), Rejected("invalid_api_key"), Rejected("insufficient_scope")));
        // the client key, and the three made-up ones (remembered as unknown for Auth:NegativeCacheSeconds)
        Assert.Equal(4, Assert.Single(samples, s => s.Name == "helixagent_auth_cache_entries").Value);
    }

    [Fact]
    public async Task After_traffic_the_metrics_count_every_gateway_request_with_bounded_labels()
    {
        var settings = GatewayHarness.SimulatorSettings();
        settings["Routes:flaky:Targets:0"] = "sim/sim-error";
        settings["Routes:flaky:Targets:1"] = "sim/sim-small";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);

        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 3; i++)
        {
            statuses.Add((await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"))).StatusCode);
        }
        var stream = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small", "stream it", stream: true));
        Assert.True((await Sse.ReadAsync(stream)).Done);
        statuses.Add(stream.StatusCode);
        var failover = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("flaky"));
        Assert.Equal("2", failover.Headers.GetValues("x-helixagent-attempts").Single());
        statuses.Add(failover.StatusCode);
        for (var i = 0; i < 2; i++)
        {
            statuses.Add((await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-error"))).StatusCode);
        }
        Assert.Equal(5, statuses.Count(s => s == HttpStatusCode.OK));
        Assert.Equal(2, statuses.Count(s => s == HttpStatusCode.BadGateway));
        await gw.LedgerRowsAsync(statuses.Count); // the ledger's batch insert has run (db_query_duration)
        using (var anonymous = gw.Anonymous())
        {
            await anonymous.GetAsync("/health"); // the health probe's query
        }

        var (response, text) = await ScrapeAsync(gw);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("version=0.0.4", response.Content.Headers.ContentType?.ToString());
        var lines = text.Split('\n');
        foreach (var grep in new[] { "db_pool", "cache", "cache_hit", "rate_limit", "db_query_duration" })
        {
            Assert.Contains(lines, l => l.Contains(grep, StringComparison.Ordinal) && !l.StartsWith('#'));
        }
        var samples = Parse(text);
        foreach (var name in new[]
                 {
                     "helixagent_requests_total", "helixagent_errors_total", "helixagent_request_duration_bucket",
                     "helixagent_request_duration_sum", "helixagent_provider_health", "helixagent_cache_hit_rate",
                     "helixagent_cache_hits_total", "helixagent_cache_misses_total", "helixagent_db_pool_waiting",
                     "helixagent_db_pool_idle", "helixagent_db_pool_used", "helixagent_db_pool_max",
                     "helixagent_db_query_duration_seconds_count", "helixagent_rate_limit_admitted_total",
                     "helixagent_rate_limit_rejected_total", "helixagent_rate_limit_degraded", "helixagent_provider_requests_total",
                     "helixagent_provider_latency_seconds_bucket", "helixagent_fallbacks_total", "helixagent_tokens_total",
                     "helixagent_time_to_first_token_seconds_count", "helixagent_ledger_rows_lost_total",
                 })
        {
            Assert.Contains(samples, s => s.Name == name);
        }

        double Sum(string name, Func<Sample, bool>? where = null) => samples.Where(s => s.Name == name && (where?.Invoke(s) ?? true)).Sum(s => s.Value);

        Assert.Equal(statuses.Count, Sum("helixagent_request_duration_count"));
        Assert.Equal(statuses.Count, Sum("helixagent_requests_total"));
        Assert.Equal(2, Sum("helixagent_errors_total"));
        Assert.Equal(2, Sum("helixagent_errors_total", s => s.Labels.Contains("status_class=\"5xx\"", StringComparison.Ordinal)));
        Assert.Equal(5, Sum("helixagent_requests_total", s => s.Labels.Contains("status_class=\"2xx\"", StringComparison.Ordinal)));
        Assert.Contains(samples, s => s.Name == "helixagent_requests_total" &&
            s.Labels == "{route=\"/v1/chat/completions\",model=\"sim-small\",provider=\"sim\",status_class=\"2xx\"}" && s.Value == 4);
        Assert.Equal(1, Sum("helixagent_fallbacks_total", s => s.Labels == "{model=\"flaky\"}"));
        Assert.Equal(1, Sum("helixagent_time_to_first_token_seconds_count"));
        Assert.True(Sum("helixagent_tokens_total", s => s.Labels.Contains("direction=\"completion\"", StringComparison.Ordinal)) > 0);
        // 3 + 1 + 1 successes; the failover's first attempt and 2 × 3 attempts for sim-error are server errors
        Assert.Equal(5, Sum("helixagent_provider_requests_total", s => s.Labels.Contains("outcome=\"success\"", StringComparison.Ordinal)));
        Assert.True(Sum("helixagent_provider_requests_total", s => s.Labels.Contains("outcome=\"server_error\"", StringComparison.Ordinal)) >= 3);
        Assert.True(Sum("helixagent_db_query_duration_seconds_count", s => s.Labels == "{operation=\"ledger_insert\"}") >= 1);
        Assert.True(Sum("helixagent_db_query_duration_seconds_count", s => s.Labels == "{operation=\"health_probe\"}") >= 1);
        Assert.Equal(statuses.Count, Sum("helixagent_rate_limit_admitted_total"));
        Assert.Equal(0, Sum("helixagent_ledger_rows_lost_total"));
        Assert.True(Sum("helixagent_db_pool_max") > 0);

        // Histogram buckets are cumulative and end in +Inf = count.
        var inf = Sum("helixagent_request_duration_bucket", s => s.Labels.Contains("le=\"+Inf\"", StringComparison.Ordinal));
        Assert.Equal(statuses.Count, inf);
        Assert.Contains(samples, s => s.Name == "helixagent_request_duration_bucket" && s.Labels.Contains("le=\"0.005\"", StringComparison.Ordinal));
        Assert.Contains(samples, s => s.Name == "helixagent_request_duration_bucket" && s.Labels.Contains("le=\"60\"", StringComparison.Ordinal));

        // A valid exposition by Prometheus' own linter.
        var (exit, lint) = await Promtool.RunAsync(RepoPaths.Root, text, "check", "metrics");
        Assert.True(exit == 0, lint);

        // Bounded labels: no key, no Bearer, no request id.
        Assert.DoesNotContain(gw.ClientKey, text, StringComparison.Ordinal);
        Assert.DoesNotContain("Bearer", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("harness-client", text, StringComparison.Ordinal);
        var requestId = failover.Headers.GetValues("x-request-id").Single();
        Assert.DoesNotContain(requestId, text, StringComparison.Ordinal);
    }
}
