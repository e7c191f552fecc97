using System.Diagnostics.Metrics;
using HelixAgent.Api.Observability;
using HelixAgent.Observability;
using Microsoft.Extensions.DependencyInjection;

namespace HelixAgent.Tests.Observability;

/// <summary>The exposition writer alone: names verbatim, escaping, histogram shape, one host's meters only.</summary>
public sealed class PrometheusExpositionTests
{
    private static ServiceProvider Services() => new ServiceCollection().AddMetrics().BuildServiceProvider();

    [Fact]
    public void Writes_names_verbatim_escapes_label_values_and_ignores_other_hosts_meters()
    {
        using var services = Services();
        using var other = Services();
        var factory = services.GetRequiredService<IMeterFactory>();
        using var exposition = new PrometheusExposition(factory, GatewayMetrics.MeterName);
        var meter = factory.Create(GatewayMetrics.MeterName);
        var counter = meter.CreateCounter<long>("helixagent_requests_total", description: "Requests.");
        var histogram = meter.CreateHistogram("helixagent_request_duration", unit: "s", description: null, tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.1, 1] });
        meter.CreateObservableGauge("helixagent_provider_health", () => 0.5);
        other.GetRequiredService<IMeterFactory>().Create(GatewayMetrics.MeterName).CreateCounter<long>("helixagent_requests_total").Add(100);
        factory.Create("SomethingElse").CreateCounter<long>("not_exported_total").Add(1);

        counter.Add(2, new KeyValuePair<string, object?>("model", "a\"b\\c\nd"));
        counter.Add(3, new KeyValuePair<string, object?>("model", "a\"b\\c\nd"));
        histogram.Record(0.05, new KeyValuePair<string, object?>("route", "/v1/chat/completions"));
        histogram.Record(0.5, new KeyValuePair<string, object?>("route", "/v1/chat/completions"));
        histogram.Record(7, new KeyValuePair<string, object?>("route", "/v1/chat/completions"));

        var lines = exposition.Scrape().Split('\n');

        Assert.Contains("# TYPE helixagent_requests_total counter", lines);
        Assert.Contains("helixagent_requests_total{model=\"a\\\"b\\\\c\\nd\"} 5", lines);
        Assert.DoesNotContain(lines, l => l.Contains("100", StringComparison.Ordinal) || l.Contains("not_exported", StringComparison.Ordinal));
        Assert.Contains("# TYPE helixagent_request_duration histogram", lines);
        Assert.Contains("helixagent_request_duration_bucket{route=\"/v1/chat/completions\",le=\"0.1\"} 1", lines);
        Assert.Contains("helixagent_request_duration_bucket{route=\"/v1/chat/completions\",le=\"1\"} 2", lines);
        Assert.Contains("helixagent_request_duration_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"} 3", lines);
        Assert.Contains("helixagent_request_duration_sum{route=\"/v1/chat/completions\"} 7.55", lines);
        Assert.Contains("helixagent_request_duration_count{route=\"/v1/chat/completions\"} 3", lines);
        Assert.Contains("# TYPE helixagent_provider_health gauge", lines);
        Assert.Contains("helixagent_provider_health 0.5", lines);
    }
}
