using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>One trace per request with a span per upstream attempt, in OpenTelemetry's GenAI terms.</summary>
public sealed class TracingTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task A_failed_over_request_is_one_trace_with_a_span_for_each_attempt()
    {
        var route = "traced-" + Guid.NewGuid().ToString("N")[..8];
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, new Dictionary<string, string?>(GatewayHarness.SimulatorSettings())
        {
            [$"Routes:{route}:Targets:0"] = "sim/sim-error",
            [$"Routes:{route}:Targets:1"] = "sim/sim-small",
        });
        var spans = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name is "HelixAgent.Gateway" or "Microsoft.AspNetCore",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);

        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat(route));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var requestId = response.Headers.GetValues("x-request-id").Single();

        // The server's request span stops after the last response byte is written, which can be after the client has read
        // it: wait for it rather than race it.
        var request = await Eventually.ValueAsync(() => Task.FromResult(spans.SingleOrDefault(s => s.GetTagItem("helixagent.request_id") as string == requestId)),
            span => span is not null, "the request's server span to stop");
        var attempts = spans.Where(s => s.Source.Name == "HelixAgent.Gateway" && s.TraceId == request!.TraceId).OrderBy(s => s.StartTimeUtc).ToList();
        Assert.Equal(2, attempts.Count);
        Assert.All(attempts, a =>
        {
            Assert.Equal(request.SpanId, a.ParentSpanId);
            Assert.Equal("simulator", a.GetTagItem("gen_ai.system"));
            Assert.Equal(ActivityKind.Client, a.Kind);
        });
        Assert.Equal(("sim-error", ActivityStatusCode.Error, "server_error"), (attempts[0].GetTagItem("gen_ai.request.model"), attempts[0].Status, attempts[0].GetTagItem("error.type")));
        Assert.Equal(("sim-small", ActivityStatusCode.Ok), (attempts[1].GetTagItem("gen_ai.request.model"), attempts[1].Status));
        Assert.Equal(2, request.GetTagItem("helixagent.attempts"));
        Assert.Equal(6, request.GetTagItem("gen_ai.usage.output_tokens")); // "Simulated answer to: hello there gateway"
        Assert.DoesNotContain(request.TagObjects, t => t.Value is string v && v.Contains(gw.ClientKey, StringComparison.Ordinal));
    }
}
