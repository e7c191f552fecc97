using System.Globalization;
using System.Net;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Observability;

/// <summary><c>GET /metrics</c> after real traffic: the runbook's names, verbatim, with bounded labels.</summary>
public sealed class MetricsEndpointTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
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
        var samples = ScrapedMetrics.Parse(text).Samples;
        Assert.Equal(0, Assert.Single(samples, s => s.Name == "helixagent_ledger_rows_lost_total").Value);
        Assert.Equal(0, Assert.Single(samples, s => s.Name == "helixagent_cache_hit_rate").Value);
        Assert.Equal(1, Assert.Single(samples, s => s.Name == "helixagent_provider_health" && s.Has(("provider", "sim")) && s.Labels.Count == 1).Value);
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

        var samples = ScrapedMetrics.Parse((await ScrapeAsync(gw)).Text).Samples;
        double Rejected(string reason) =>
            Assert.Single(samples, s => s.Name == "helixagent_auth_rejected_total" && s.Has(("reason", reason)) && s.Labels.Count == 1).Value;
        Assert.Equal((1, 3, 1), (Rejected("missing_api_key"), Rejected("invalid_api_key"), Rejected("insufficient_scope")));
        // the client key, and the three made-up ones (remembered as unknown for Auth:NegativeCacheSeconds)
        Assert.Equal(4, Assert.Single(samples, s => s.Name == "helixagent_auth_cache_entries").Value);
    }

    [Fact]
    public async Task Anthropic_messages_and_openai_responses_requests_count_under_their_own_route_labels()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var message = System.Text.Json.Nodes.JsonNode.Parse("""{"model":"sim-small","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}""")!.AsObject();

        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/messages", message)).StatusCode);
        message["stream"] = true;
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/messages", message)).StatusCode);
        message["model"] = "sim-error";
        message["stream"] = false;
        Assert.Equal(HttpStatusCode.BadGateway, (await gw.PostJsonAsync("/v1/messages", message)).StatusCode);
        message.Remove("max_tokens");
        message["model"] = "sim-small";
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/messages/count_tokens", message)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/responses",
            System.Text.Json.Nodes.JsonNode.Parse("""{"model":"sim-small","input":"hi","store":false}""")!.AsObject())).StatusCode);
        await gw.LedgerRowsAsync(5);

        var samples = ScrapedMetrics.Parse((await ScrapeAsync(gw)).Text).Samples;
        double Sum(string name, string route, string? statusClass = null) => samples
            .Where(s => s.Name == name && s.Has(("route", route)) && (statusClass is null || s.Has(("status_class", statusClass))))
            .Sum(s => s.Value);
        Assert.Equal(3, Sum("helixagent_requests_total", "/v1/messages"));
        Assert.Equal(2, Sum("helixagent_requests_total", "/v1/messages", "2xx"));
        Assert.Equal(1, Sum("helixagent_errors_total", "/v1/messages", "5xx"));
        Assert.Equal(3, Sum("helixagent_request_duration_count", "/v1/messages"));
        Assert.Equal(1, Sum("helixagent_requests_total", "/v1/messages/count_tokens"));
        Assert.Equal(1, Sum("helixagent_requests_total", "/v1/responses", "2xx"));
        Assert.Equal(1, Sum("helixagent_request_duration_count", "/v1/responses"));
        Assert.DoesNotContain(samples, s => s.Has(("route", "other")));
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
        var greps = RunbookMetricGreps();
        Assert.True(greps.Count >= 4, $"the runbook greps /metrics for only: {string.Join(", ", greps)}");
        foreach (var grep in greps)
        {
            Assert.Contains(lines, l => l.Contains(grep, StringComparison.Ordinal) && !l.StartsWith('#'));
        }
        var samples = ScrapedMetrics.Parse(text).Samples;
        var runbook = RunbookMetricNames();
        Assert.True(runbook.Count >= 5, $"the runbook names only {runbook.Count} metrics: {string.Join(", ", runbook)}");
        foreach (var name in runbook)
        {
            // A histogram is named by its family in the runbook's queries (helixagent_request_duration_bucket) or tables.
            Assert.True(samples.Any(s => s.Name == name || s.Name == name + "_bucket"), $"/metrics has no series named {name}, which docs/runbook.md uses");
        }
        // Beyond the runbook: the rest of docs/operations.md's table that this traffic produces.
        foreach (var name in new[]
                 {
                     "helixagent_request_duration_sum", "helixagent_cache_hits_total", "helixagent_cache_misses_total",
                     "helixagent_db_pool_idle", "helixagent_db_pool_used", "helixagent_db_pool_max",
                     "helixagent_db_query_duration_seconds_count", "helixagent_rate_limit_rejected_total", "helixagent_rate_limit_degraded",
                     "helixagent_provider_requests_total", "helixagent_provider_latency_seconds_bucket", "helixagent_fallbacks_total",
                     "helixagent_tokens_total", "helixagent_time_to_first_token_seconds_count", "helixagent_ledger_rows_lost_total",
                 })
        {
            Assert.Contains(samples, s => s.Name == name);
        }

        double Sum(string name, Func<ScrapedMetrics.Sample, bool>? where = null) => samples.Where(s => s.Name == name && (where?.Invoke(s) ?? true)).Sum(s => s.Value);

        Assert.Equal(statuses.Count, Sum("helixagent_request_duration_count"));
        Assert.Equal(statuses.Count, Sum("helixagent_requests_total"));
        Assert.Equal(2, Sum("helixagent_errors_total"));
        Assert.Equal(2, Sum("helixagent_errors_total", s => s.Has(("status_class", "5xx"))));
        Assert.Equal(5, Sum("helixagent_requests_total", s => s.Has(("status_class", "2xx"))));
        Assert.Contains(samples, s => s.Name == "helixagent_requests_total" &&
            s.Labels.Count == 4 && s.Has(("route", "/v1/chat/completions"), ("model", "sim-small"), ("provider", "sim"), ("status_class", "2xx")) && s.Value == 4);
        Assert.Equal(1, Sum("helixagent_fallbacks_total", s => s.Labels.Count == 1 && s.Has(("model", "flaky"))));
        Assert.Equal(1, Sum("helixagent_time_to_first_token_seconds_count"));
        Assert.True(Sum("helixagent_tokens_total", s => s.Has(("direction", "completion"))) > 0);
        // 3 + 1 + 1 successes; the failover's first attempt and 2 × 3 attempts for sim-error are server errors
        Assert.Equal(5, Sum("helixagent_provider_requests_total", s => s.Has(("outcome", "success"))));
        Assert.True(Sum("helixagent_provider_requests_total", s => s.Has(("outcome", "server_error"))) >= 3);
        Assert.True(Sum("helixagent_db_query_duration_seconds_count", s => s.Labels.Count == 1 && s.Has(("operation", "ledger_insert"))) >= 1);
        Assert.True(Sum("helixagent_db_query_duration_seconds_count", s => s.Labels.Count == 1 && s.Has(("operation", "health_probe"))) >= 1);
        Assert.Equal(statuses.Count, Sum("helixagent_rate_limit_admitted_total"));
        Assert.Equal(0, Sum("helixagent_ledger_rows_lost_total"));
        Assert.True(Sum("helixagent_db_pool_max") > 0);

        // Histogram buckets are cumulative and end in +Inf = count.
        var inf = Sum("helixagent_request_duration_bucket", s => s.Has(("le", "+Inf")));
        Assert.Equal(statuses.Count, inf);
        Assert.Contains(samples, s => s.Name == "helixagent_request_duration_bucket" && s.Has(("le", "0.005")));
        Assert.Contains(samples, s => s.Name == "helixagent_request_duration_bucket" && s.Has(("le", "60")));

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

    /// <summary>
    /// Every <c>helixagent_*</c> name the shipped runbook (docs/runbook.md, below its status table) uses, except the
    /// database's name (<c>helixagent_db</c>) and the recording rules that deploy/prometheus/helixagent-rules.yml defines.
    /// </summary>
    private static SortedSet<string> RunbookMetricNames()
    {
        var runbook = Runbook();
        var rules = File.ReadAllText(Path.Combine(RepoPaths.Root, "deploy", "prometheus", "helixagent-rules.yml"));
        var recorded = System.Text.RegularExpressions.Regex.Matches(rules, @"record:\s*(\S+)").Select(m => m.Groups[1].Value).ToHashSet();
        return new SortedSet<string>(System.Text.RegularExpressions.Regex.Matches(runbook, @"\bhelixagent_[a-z0-9_]*[a-z0-9]\b")
            .Select(m => m.Value).Where(n => n != "helixagent_db" && !recorded.Contains(n)), StringComparer.Ordinal);
    }

    /// <summary>What the runbook's <c>curl .../metrics | grep X</c> lines grep for.</summary>
    private static SortedSet<string> RunbookMetricGreps() => new(System.Text.RegularExpressions.Regex.Matches(Runbook(), @"/metrics \| grep (\w+)")
        .Select(m => m.Groups[1].Value), StringComparer.Ordinal);

    private static string Runbook()
    {
        var runbook = File.ReadAllText(Path.Combine(RepoPaths.Root, "docs", "runbook.md"));
        return runbook[runbook.IndexOf("# HelixAgent Operations Runbook", StringComparison.Ordinal)..];
    }
}
