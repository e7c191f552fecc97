using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Observability;

/// <summary>deploy/prometheus/helixagent-rules.yml is valid and its unit tests (each alert fires and stays silent) pass.</summary>
public sealed class PrometheusRulesTests
{
    private static readonly string RulesDir = Path.Combine(RepoPaths.Root, "deploy", "prometheus");

    [Fact]
    public async Task Promtool_check_rules_accepts_the_rules_file()
    {
        var (exit, output) = await Promtool.RunAsync(RulesDir, null, "check", "rules", "helixagent-rules.yml");
        Assert.True(exit == 0, output);
        Assert.Contains("SUCCESS", output);
    }

    [Fact]
    public async Task Promtool_test_rules_passes_for_every_alert_and_recording_rule()
    {
        var (exit, output) = await Promtool.RunAsync(RulesDir, null, "test", "rules", "helixagent-rules.test.yml");
        Assert.True(exit == 0, output);
        Assert.Contains("SUCCESS", output);
    }

    [Fact]
    public async Task Every_alert_of_the_runbook_and_key_metrics_table_is_defined_and_tested()
    {
        var rules = await File.ReadAllTextAsync(Path.Combine(RulesDir, "helixagent-rules.yml"));
        var tests = await File.ReadAllTextAsync(Path.Combine(RulesDir, "helixagent-rules.test.yml"));
        foreach (var alert in new[] { "HighErrorRate", "HighLatency", "ProviderUnhealthy", "LowCacheHitRate", "DbPoolContention", "WorkerJobFailing", "LedgerBacklog", "BudgetNearlySpent" })
        {
            Assert.Contains($"- alert: {alert}", rules);
            Assert.Contains($"alertname: {alert}", tests);
        }
        foreach (var record in new[] { "helixagent_request_duration_p99", "helixagent_error_rate", "helixagent_cache_hit_rate_5m", "helixagent_provider_availability" })
        {
            Assert.Contains($"- record: {record}", rules);
        }
    }
}
