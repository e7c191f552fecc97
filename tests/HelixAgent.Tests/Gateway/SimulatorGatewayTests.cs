using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>The client API, routing, failover and ledger end to end over the built-in simulator provider.</summary>
public sealed class SimulatorGatewayTests(OwnPostgresServer postgres, RedisServer redis)
    : IClassFixture<OwnPostgresServer>, IClassFixture<RedisServer>
{
    private Task<GatewayHarness> StartAsync(Action<Dictionary<string, string?>>? configure = null)
    {
        var settings = GatewayHarness.SimulatorSettings();
        configure?.Invoke(settings);
        return GatewayHarness.StartAsync(postgres, redis, settings);
    }

    private static async Task<JsonElement> JsonAsync(HttpResponseMessage response)
    {
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.Clone();
    }

    [Fact]
    public async Task Non_streaming_chat_answers_in_the_openai_shape_with_usage_and_request_headers()
    {
        await using var gw = await StartAsync();
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small", "tell me a story"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await JsonAsync(response);
        Assert.Equal("chat.completion", body.GetProperty("object").GetString());
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal("Simulated answer to: tell me a story", choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(4, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(7, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("sim", response.Headers.GetValues("x-helixagent-provider").Single());
        var requestId = response.Headers.GetValues("x-request-id").Single();

        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal((requestId, "sim-small", "sim", "chat.completions", (short)200, 4, 7, false, (short)1),
            (row.RequestId, row.Model, row.Provider, row.Endpoint, row.Status, row.PromptTokens, row.CompletionTokens, row.Stream, row.Attempts));
    }

    [Fact]
    public async Task Streaming_chat_sends_role_first_content_deltas_finish_reason_and_done()
    {
        await using var gw = await StartAsync();
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small", "one two three", stream: true));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var frames = await Sse.ReadAsync(response);
        Assert.True(frames.Done);
        Assert.All(frames.Events, e => Assert.Equal("chat.completion.chunk", e.GetProperty("object").GetString()));
        Assert.Equal("assistant", frames.Events[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        Assert.Equal("Simulated answer to: one two three", frames.Content);
        Assert.Equal("stop", frames.Events[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.DoesNotContain(frames.Events, e => e.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object);

        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.True(row.Stream);
        Assert.Equal((3, 6), (row.PromptTokens, row.CompletionTokens));
        Assert.NotNull(row.TtftMs);
    }

    [Fact]
    public async Task Stream_options_include_usage_adds_a_usage_chunk_with_empty_choices_before_done()
    {
        await using var gw = await StartAsync();
        var body = GatewayHarness.Chat("sim-small", "count these words", stream: true);
        body["stream_options"] = new JsonObject { ["include_usage"] = true };
        var frames = await Sse.ReadAsync(await gw.PostJsonAsync("/v1/chat/completions", body));

        var usage = frames.Events[^1];
        Assert.Equal(0, usage.GetProperty("choices").GetArrayLength());
        Assert.Equal(3, usage.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(6, usage.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.True(frames.Done);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_5xx_from_the_first_provider_fails_over_to_the_next(bool stream)
    {
        await using var gw = await StartAsync(s =>
        {
            s["Routes:flaky:Targets:0"] = "sim/sim-error";
            s["Routes:flaky:Targets:1"] = "sim/sim-small";
        });
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("flaky", "hi", stream));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("2", response.Headers.GetValues("x-helixagent-attempts").Single());
        var text = stream ? (await Sse.ReadAsync(response)).Content
            : (await JsonAsync(response)).GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        Assert.Equal("Simulated answer to: hi", text);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(((short)200, (short)2, "flaky"), (row.Status, row.Attempts, row.Model));
    }

    [Fact]
    public async Task A_stream_that_stalls_before_its_first_token_fails_over_within_the_ttft_budget()
    {
        await using var gw = await StartAsync(s =>
        {
            s["Routes:slow:Targets:0"] = "sim/sim-stall";
            s["Routes:slow:Targets:1"] = "sim/sim-small";
        });
        var started = DateTime.UtcNow;
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("slow", "quick please", stream: true));
        var frames = await Sse.ReadAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("Simulated answer to: quick please", frames.Content);
        Assert.True(frames.Done);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5), "the 0.5 s TTFT budget should have moved on long before 5 s");
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal((short)2, row.Attempts);
    }

    [Fact]
    public async Task A_stream_cut_after_its_first_token_ends_with_an_error_event_not_a_silent_truncation()
    {
        await using var gw = await StartAsync(s =>
        {
            s["Routes:cut:Targets:0"] = "sim/sim-cut";
            s["Routes:cut:Targets:1"] = "sim/sim-small";
        });
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("cut", "a b c d e f g h", stream: true));
        var frames = await Sse.ReadAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(frames.Done);
        Assert.StartsWith("Simulated", frames.Content);
        var error = frames.Events[^1].GetProperty("error");
        Assert.Equal("stream_interrupted", error.GetProperty("code").GetString());
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(((short)502, "stream_interrupted", (short)1), (row.Status, row.ErrorType, row.Attempts));
    }

    [Fact]
    public async Task A_400_from_upstream_is_answered_at_once_without_trying_other_providers()
    {
        await using var gw = await StartAsync(s =>
        {
            s["Routes:strict:Targets:0"] = "sim/sim-badrequest";
            s["Routes:strict:Targets:1"] = "sim/sim-small";
        });
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("strict"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("1", response.Headers.GetValues("x-helixagent-attempts").Single());
        Assert.Equal("invalid_request_error", (await JsonAsync(response)).GetProperty("error").GetProperty("type").GetString());
    }

    [Fact]
    public async Task When_every_provider_is_rate_limited_the_client_gets_429_with_retry_after()
    {
        await using var gw = await StartAsync(s => s["Gateway:MaxRetryAfterWaitSeconds"] = "0");
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-ratelimit"));

        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        Assert.True(response.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
        Assert.Equal("upstream_rate_limited", (await JsonAsync(response)).GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task When_every_provider_fails_the_client_gets_a_502_and_the_ledger_a_failed_row()
    {
        await using var gw = await StartAsync(s => s["Gateway:MaxAttempts"] = "3");
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-error"));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        var error = (await JsonAsync(response)).GetProperty("error");
        Assert.Equal("upstream_unavailable", error.GetProperty("code").GetString());
        Assert.DoesNotContain("   at ", error.GetProperty("message").GetString());
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(((short)502, (short)3), (row.Status, row.Attempts));
    }

    [Theory]
    [InlineData("""{"messages":[{"role":"user","content":"x"}]}""", "model")]
    [InlineData("""{"model":"sim-small"}""", "messages")]
    [InlineData("""{"model":"sim-small","messages":[]}""", "messages")]
    [InlineData("""{"model":"sim-small","messages":[{"role":"wizard","content":"x"}]}""", "messages[0].role")]
    [InlineData("""{"model":"sim-small","messages":[{"role":"user","content":5}]}""", "messages[0].content")]
    [InlineData("""{"model":"sim-small","messages":[{"role":"user","content":"x"}],"temperature":5}""", "temperature")]
    [InlineData("""{"model":"sim-small","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}""", "max_tokens")]
    [InlineData("""{"model":"sim-small","messages":[{"role":"user","content":"x"}],"stream":"yes"}""", "stream")]
    [InlineData("""{"model":"sim-small","messages":[{"role":"user","content":"x"}],"stop":[1,2]}""", "stop")]
    public async Task Invalid_requests_get_a_400_naming_the_bad_field_and_write_nothing(string json, string param)
    {
        await using var gw = await StartAsync();
        var response = await gw.Client.PostAsync("/v1/chat/completions", new StringContent(json, Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var error = (await JsonAsync(response)).GetProperty("error");
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Empty(await gw.LedgerRowsAsync(0));
    }

    [Fact]
    public async Task Malformed_json_wrong_content_type_and_oversized_bodies_are_refused_cleanly()
    {
        await using var gw = await StartAsync(s => s["Gateway:MaxRequestBodyBytes"] = "2048");

        var malformed = await gw.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
        Assert.Equal("invalid_json", (await JsonAsync(malformed)).GetProperty("error").GetProperty("code").GetString());

        var form = await gw.Client.PostAsync("/v1/chat/completions", new StringContent("model=x", Encoding.UTF8, "application/x-www-form-urlencoded"));
        Assert.Equal(HttpStatusCode.BadRequest, form.StatusCode);

        var huge = GatewayHarness.Chat("sim-small", new string('x', 4096));
        var tooLarge = await gw.PostJsonAsync("/v1/chat/completions", huge);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        Assert.Equal("request_too_large", (await JsonAsync(tooLarge)).GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task An_unknown_model_gets_404_model_not_found()
    {
        await using var gw = await StartAsync();
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("gpt-9-ultra"));

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var error = (await JsonAsync(response)).GetProperty("error");
        Assert.Equal(("model_not_found", "model"), (error.GetProperty("code").GetString(), error.GetProperty("param").GetString()));
    }

    [Fact]
    public async Task Legacy_completions_turn_a_prompt_into_text_streaming_and_not()
    {
        await using var gw = await StartAsync();
        var plain = await gw.PostJsonAsync("/v1/completions", new JsonObject { ["model"] = "sim-small", ["prompt"] = "say this", ["max_tokens"] = 50 });
        var body = await JsonAsync(plain);
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.Equal("Simulated answer to: say this", body.GetProperty("choices")[0].GetProperty("text").GetString());

        var streamed = await gw.PostJsonAsync("/v1/completions", new JsonObject { ["model"] = "sim-small", ["prompt"] = "say this", ["stream"] = true, ["max_tokens"] = 50 });
        var frames = await Sse.ReadAsync(streamed);
        Assert.All(frames.Events, e => Assert.Equal("text_completion", e.GetProperty("object").GetString()));
        Assert.Equal("Simulated answer to: say this", frames.Content);
        Assert.True(frames.Done);

        var rows = await gw.LedgerRowsAsync(2);
        Assert.Equal(2, rows.Count);
        Assert.All(rows, r => Assert.Equal("completions", r.Endpoint));
    }

    [Fact]
    public async Task Embeddings_answer_one_vector_per_input_in_the_openai_list_shape()
    {
        await using var gw = await StartAsync();
        var response = await gw.PostJsonAsync("/v1/embeddings", new JsonObject { ["model"] = "sim-small", ["input"] = new JsonArray("alpha", "beta gamma") });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await JsonAsync(response);
        Assert.Equal("list", body.GetProperty("object").GetString());
        Assert.Equal(2, body.GetProperty("data").GetArrayLength());
        Assert.Equal(1, body.GetProperty("data")[1].GetProperty("index").GetInt32());
        Assert.Equal(3, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal("embeddings", Assert.Single(await gw.LedgerRowsAsync(1)).Endpoint);
    }

    [Fact]
    public async Task One_model_is_retrieved_by_name_alias_or_a_name_with_slashes_and_an_unknown_one_is_an_openai_404()
    {
        await using var gw = await StartAsync(s =>
        {
            s["Routes:team/smart:Targets:0"] = "sim/sim-small";
            s["Routes:team/smart:Aliases:0"] = "clever";
        });
        foreach (var id in new[] { "team/smart", "clever", "sim-small" })
        {
            var response = await gw.Client.GetAsync("/v1/models/" + id);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var model = await JsonAsync(response);
            Assert.Equal((id, "model"), (model.GetProperty("id").GetString(), model.GetProperty("object").GetString()));
        }

        var missing = await gw.Client.GetAsync("/v1/models/no-such-model");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        var error = (await JsonAsync(missing)).GetProperty("error");
        Assert.Equal(("invalid_request_error", "model_not_found", "model"),
            (error.GetProperty("type").GetString(), error.GetProperty("code").GetString(), error.GetProperty("param").GetString()));
        Assert.Contains("no-such-model", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task Models_and_providers_list_what_is_configured_and_label_the_simulator()
    {
        await using var gw = await StartAsync(s =>
        {
            s["Routes:smart:Targets:0"] = "sim/sim-small";
            s["Routes:smart:Aliases:0"] = "clever";
        });
        var models = await JsonAsync(await gw.Client.GetAsync("/v1/models"));
        Assert.Equal("list", models.GetProperty("object").GetString());
        var ids = models.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()).ToList();
        Assert.Contains("smart", ids);
        Assert.Contains("clever", ids);
        Assert.Contains("sim-small", ids);
        Assert.All(models.GetProperty("data").EnumerateArray(), m =>
        {
            Assert.Equal("model", m.GetProperty("object").GetString());
            Assert.True(m.GetProperty("helixagent").GetProperty("simulated").GetBoolean());
        });

        await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"));
        var providers = await JsonAsync(await gw.Client.GetAsync("/v1/providers"));
        var sim = Assert.Single(providers.EnumerateArray());
        Assert.Equal(("sim", "simulator", true, "healthy", "closed"),
            (sim.GetProperty("name").GetString(), sim.GetProperty("type").GetString(), sim.GetProperty("simulated").GetBoolean(),
             sim.GetProperty("status").GetString(), sim.GetProperty("circuit").GetString()));
        Assert.True(sim.GetProperty("latency_ms").GetDouble() > 0);

        Assert.Equal(HttpStatusCode.OK, (await gw.Client.GetAsync("/v1/providers/sim/health")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await gw.Client.GetAsync("/v1/providers/health")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await gw.Client.GetAsync("/v1/providers/claude/health")).StatusCode);
    }

    [Fact]
    public async Task Consecutive_failures_open_the_circuit_and_the_provider_reports_unhealthy()
    {
        await using var gw = await StartAsync(s =>
        {
            s["Gateway:CircuitFailureThreshold"] = "2";
            s["Gateway:CircuitBreakSeconds"] = "60";
            s["Gateway:MaxAttempts"] = "1";
        });
        Assert.Equal(HttpStatusCode.BadGateway, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-error"))).StatusCode);
        Assert.Equal(HttpStatusCode.BadGateway, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-error"))).StatusCode);

        // Open: the next request is refused without an upstream attempt, even for a model that would work.
        var refused = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"));
        Assert.Equal(HttpStatusCode.BadGateway, refused.StatusCode);
        Assert.Equal("0", refused.Headers.GetValues("x-helixagent-attempts").Single());
        Assert.Equal("no_provider_available", (await JsonAsync(refused)).GetProperty("error").GetProperty("code").GetString());

        var health = await gw.Client.GetAsync("/v1/providers/sim/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        Assert.Equal("open", (await JsonAsync(health)).GetProperty("circuit").GetString());
        var overall = await JsonAsync(await gw.Client.GetAsync("/health"));
        Assert.Equal(0, overall.GetProperty("components").GetProperty("providers").GetProperty("active").GetInt32());

        var rows = await gw.LedgerRowsAsync(3);
        Assert.Equal([(short)502, (short)502, (short)502], rows.Select(r => r.Status));

        // The contract's "provider circuit reset" for admins closes it at once.
        Assert.Equal(HttpStatusCode.Forbidden, (await gw.Client.PostAsync("/admin/providers/sim/reset", null)).StatusCode);
        var reset = await gw.WithKey(gw.AdminKey).PostAsync("/admin/providers/sim/reset", null);
        Assert.Equal(HttpStatusCode.OK, reset.StatusCode);
        Assert.Equal("closed", (await JsonAsync(reset)).GetProperty("circuit").GetString());
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await gw.WithKey(gw.AdminKey).PostAsync("/admin/providers/claude/reset", null)).StatusCode);
    }

    [Fact]
    public async Task A_burst_of_mixed_outcomes_leaves_exactly_one_ledger_row_per_request()
    {
        await using var gw = await StartAsync(s => s["Gateway:MaxRetryAfterWaitSeconds"] = "0");
        var models = new[] { "sim-small", "sim-error", "sim-ratelimit", "sim-cut", "sim-badrequest", "nope" };
        var requests = Enumerable.Range(0, 120).Select(i =>
            gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat(models[i % models.Length], $"request {i}", stream: i % 2 == 0)));
        var responses = await Task.WhenAll(requests);
        foreach (var r in responses)
        {
            await r.Content.ReadAsStringAsync();
        }
        var routed = responses.Count(r => r.StatusCode != HttpStatusCode.NotFound);

        var rows = await gw.LedgerRowsAsync(routed);
        Assert.Equal(routed, rows.Count);
        Assert.Equal(rows.Count, rows.Select(r => r.RequestId).Distinct().Count());
        Assert.Equal(responses.Where(r => r.StatusCode != HttpStatusCode.NotFound).Select(r => r.Headers.GetValues("x-request-id").Single()).Order(),
            rows.Select(r => r.RequestId).Order());
    }

    [Fact]
    public async Task Ledger_rows_written_during_a_postgres_outage_arrive_after_it_returns()
    {
        await using var gw = await StartAsync();
        // The key was checked once before the outage: it stays usable from the cache while PostgreSQL is down.
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"))).StatusCode);
        Assert.Single(await gw.LedgerRowsAsync(1)); // written before the outage
        await postgres.StopAsync();
        try
        {
            var responses = await Task.WhenAll(Enumerable.Range(0, 25).Select(i =>
                gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small", $"during outage {i}"))));
            Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
            // The writer holds all 25 rows (it cannot write them) and nothing is in flight.
            await Eventually.ValueAsync(() => Task.FromResult(gw.Activity()), a => a == new LedgerActivity(0, 25), "25 rows queued while PostgreSQL is down");
        }
        finally
        {
            await postgres.StartAsync();
        }
        var rows = await gw.LedgerRowsAsync(26, TimeSpan.FromSeconds(30));
        Assert.Equal(26, rows.Count);
    }
}
