using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using OpenAI.Chat;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// The gateway in front of real HTTP servers that speak each provider's wire protocol (OpenAI, Anthropic, Gemini,
/// Ollama), with the official OpenAI SDK as the client; and failover, breaker and cancellation against them.
/// </summary>
public sealed class UpstreamProtocolTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    /// <summary>Route <c>m</c>: the given fakes in order, each as provider <c>p0</c>, <c>p1</c>, ...</summary>
    private Task<GatewayHarness> GatewayAsync(FakeUpstream[] upstreams, Action<Dictionary<string, string?>>? configure = null, TimeProvider? clock = null)
    {
        var s = GatewayHarness.RouteOver(upstreams);
        configure?.Invoke(s);
        return GatewayHarness.StartAsync(postgres, redis, s,
            clock is null ? null : services => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton(services, clock));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_openai_compatible_upstream_gets_every_client_field_as_sent_with_only_model_and_stream_settings_rewritten(bool stream)
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var gw = await GatewayAsync([upstream], s => s["Routes:m:Targets:0"] = "p0/gpt-upstream");
        var body = GatewayHarness.Chat("m", stream: stream);
        body["x_vendor"] = new JsonObject { ["list"] = new JsonArray(1, null, "é"), ["nested"] = new JsonObject { ["k"] = true } };
        body["temperature"] = 0.25;
        body["stream_options"] = new JsonObject { ["include_usage"] = false, ["x_other"] = 7 };

        using var response = await gw.PostJsonAsync("/v1/chat/completions", body);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var answer = await response.Content.ReadAsStringAsync();
        Assert.Contains("chat.completion", answer);

        var sent = Assert.Single(upstream.Requests).Json!.AsObject();
        Assert.Equal("gpt-upstream", (string?)sent["model"]);
        Assert.Equal(stream, (bool?)sent["stream"]);
        Assert.True(JsonNode.DeepEquals(body["x_vendor"], sent["x_vendor"]), sent.ToJsonString());
        Assert.True(JsonNode.DeepEquals(body["messages"], sent["messages"]), sent.ToJsonString());
        Assert.Equal(0.25, (double?)sent["temperature"]);
        if (stream)
        {
            // Usage is always asked for (the ledger needs it); the client's other stream options pass through.
            Assert.True(JsonNode.DeepEquals(new JsonObject { ["x_other"] = 7, ["include_usage"] = true }, sent["stream_options"]), sent.ToJsonString());
            Assert.DoesNotContain("\"prompt_tokens\"", answer); // the client asked for no usage chunk
        }
        else
        {
            Assert.Null(sent["stream_options"]);
            Assert.Equal(answer.Length, response.Content.Headers.ContentLength);
        }
    }

    [Theory]
    [InlineData(1.6, 1.0)]
    [InlineData(0.4, 0.4)]
    public async Task A_chat_temperature_above_anthropics_range_reaches_an_anthropic_target_as_its_highest(double sent, double expected)
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        upstream.Strict = true;
        await using var gw = await GatewayAsync([upstream]);
        var body = GatewayHarness.Chat("m");
        body["temperature"] = sent;

        using var response = await gw.PostJsonAsync("/v1/chat/completions", body);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(expected, (double?)Assert.Single(upstream.Requests).Json!["temperature"]);
    }

    [Theory]
    [InlineData(FakeProtocol.OpenAI)]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.Gemini)]
    [InlineData(FakeProtocol.Ollama)]
    public async Task The_openai_sdk_gets_a_chat_completion_from_each_provider_protocol(FakeProtocol protocol)
    {
        await using var upstream = await FakeUpstream.StartAsync(protocol);
        upstream.Reply = "the answer is forty two";
        await using var gw = await GatewayAsync([upstream]);

        ChatCompletion completion = await OpenAiSdkTests.Sdk(gw).GetChatClient("m").CompleteChatAsync(
            [new SystemChatMessage("you are terse"), new UserChatMessage("what is the answer")]);

        Assert.Equal("the answer is forty two", completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
        Assert.Equal(5, completion.Usage.OutputTokenCount);
        Assert.True(completion.Usage.InputTokenCount > 0);
        Assert.Empty(upstream.Errors);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(("p0", 5), (row.Provider, row.CompletionTokens));
    }

    [Theory]
    [InlineData(FakeProtocol.OpenAI)]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.Gemini)]
    [InlineData(FakeProtocol.Ollama)]
    public async Task The_openai_sdk_streams_a_chat_completion_from_each_provider_protocol(FakeProtocol protocol)
    {
        await using var upstream = await FakeUpstream.StartAsync(protocol);
        upstream.Reply = "streaming words arrive one by one";
        await using var gw = await GatewayAsync([upstream]);

        var text = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        await foreach (var update in OpenAiSdkTests.Sdk(gw).GetChatClient("m").CompleteChatStreamingAsync([new UserChatMessage("go")]))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
            }
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }

        Assert.Equal("streaming words arrive one by one", text.ToString());
        Assert.Equal(ChatFinishReason.Stop, finish);
        Assert.Equal(6, usage?.OutputTokenCount);
        Assert.Empty(upstream.Errors);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.True(row.Stream);
        Assert.Equal(6, row.CompletionTokens);
    }

    [Fact]
    public async Task Anthropic_tool_use_reaches_the_client_as_openai_tool_calls()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        upstream.NextToolCall = new FakeToolCall("get_weather", """{"city":"Oslo"}""");
        await using var gw = await GatewayAsync([upstream]);
        var tool = ChatTool.CreateFunctionTool("get_weather", "weather", BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}}}"""));

        ChatCompletion completion = await OpenAiSdkTests.Sdk(gw).GetChatClient("m").CompleteChatAsync(
            [new UserChatMessage("weather in Oslo?")], new ChatCompletionOptions { Tools = { tool } });

        Assert.Equal(ChatFinishReason.ToolCalls, completion.FinishReason);
        var call = Assert.Single(completion.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal("Oslo", JsonDocument.Parse(call.FunctionArguments.ToString()).RootElement.GetProperty("city").GetString());
        var sent = upstream.Requests.Single(r => r.Path.EndsWith("/messages", StringComparison.Ordinal)).Json!;
        Assert.Equal("get_weather", sent["tools"]![0]!["name"]!.GetValue<string>());
    }

    public static TheoryData<FakeFault, bool> RetryableFaults()
    {
        var data = new TheoryData<FakeFault, bool>();
        foreach (var fault in new[] { FakeFault.Status500, FakeFault.Status503, FakeFault.Status429, FakeFault.ResetConnection, FakeFault.StallBeforeFirstByte, FakeFault.MalformedJson })
        {
            data.Add(fault, false);
            data.Add(fault, true);
        }
        data.Add(FakeFault.CutMidStream, false);
        return data;
    }

    [Theory]
    [MemberData(nameof(RetryableFaults))]
    public async Task A_failing_primary_fails_over_to_the_backup(FakeFault fault, bool stream)
    {
        await using var primary = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var backup = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        backup.Reply = "answer from the backup";
        primary.Fail(fault);
        await using var gw = await GatewayAsync([primary, backup]);

        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m", "hi", stream));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var text = stream ? (await Sse.ReadAsync(response)).Content
            : JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        Assert.Equal("answer from the backup", text);
        Assert.Equal("p1", response.Headers.GetValues("x-helixagent-provider").Single());
        Assert.Equal(1, primary.RequestCount);
        Assert.Equal(1, backup.RequestCount);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(((short)200, (short)2, "p1"), (row.Status, row.Attempts, row.Provider));
    }

    [Theory]
    [InlineData(FakeFault.Status400, false, HttpStatusCode.BadRequest)]
    [InlineData(FakeFault.Status400, true, HttpStatusCode.BadRequest)]
    [InlineData(FakeFault.Status401, false, HttpStatusCode.BadGateway)]
    [InlineData(FakeFault.Status401, true, HttpStatusCode.BadGateway)]
    public async Task A_client_error_from_upstream_is_not_retried_on_another_provider(FakeFault fault, bool stream, HttpStatusCode expected)
    {
        await using var primary = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var backup = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        primary.Fail(fault);
        await using var gw = await GatewayAsync([primary, backup]);

        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m", "hi", stream));

        Assert.Equal(expected, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(0, backup.RequestCount);
    }

    [Fact]
    public async Task The_weighted_strategy_splits_traffic_by_provider_weight_and_keeps_a_weight_0_provider_as_last_resort()
    {
        await using var heavy = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var light = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var spare = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var gw = await GatewayAsync([heavy, light, spare], s =>
        {
            s["Routes:m:Strategy"] = "weighted";
            s["Providers:p0:Weight"] = "3";
            s["Providers:p1:Weight"] = "1";
            s["Providers:p2:Weight"] = "0";
        });

        const int n = 400;
        for (var i = 0; i < n; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        }

        // 3:1 expects 300 of 400 on the heavy one (sd 8.7); 250-350 is more than 5 sd either way.
        Assert.InRange(heavy.RequestCount, 250, 350);
        Assert.Equal(n, heavy.RequestCount + light.RequestCount);
        Assert.Equal(0, spare.RequestCount);

        // With both weighted providers failing, the weight-0 one still answers.
        heavy.FailEach(_ => FakeFault.Status500);
        light.FailEach(_ => FakeFault.Status500);
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        Assert.Equal(1, spare.RequestCount);
    }

    [Fact]
    public async Task A_stream_cut_after_content_reached_the_client_ends_with_an_error_event_and_no_failover()
    {
        await using var primary = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var backup = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        primary.Reply = "one two three four five six seven eight";
        primary.Fail(FakeFault.CutMidStream);
        await using var gw = await GatewayAsync([primary, backup]);

        var frames = await Sse.ReadAsync(await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m", "hi", stream: true)));

        Assert.False(frames.Done);
        Assert.NotEmpty(frames.Content);
        Assert.Equal("stream_interrupted", frames.Events[^1].GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(0, backup.RequestCount);
    }

    [Fact]
    public async Task A_stream_that_stalls_after_its_first_token_is_ended_by_the_timeout_with_an_error_event()
    {
        await using var primary = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        primary.Reply = "one two three four five six";
        primary.Fail(FakeFault.StallMidStream);
        await using var gw = await GatewayAsync([primary]);

        var frames = await Sse.ReadAsync(await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m", "hi", stream: true)));

        Assert.False(frames.Done);
        Assert.Equal("upstream_timeout", frames.Events[^1].GetProperty("error").GetProperty("code").GetString());
        await primary.WaitForCancellationAsync();
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal((short)504, row.Status);
    }

    [Fact]
    public async Task Retry_after_from_a_429_keeps_later_requests_away_from_that_provider_until_it_expires()
    {
        await using var primary = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var backup = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        primary.RetryAfterSeconds = 30;
        primary.Fail(FakeFault.Status429, times: 1);
        await using var gw = await GatewayAsync([primary, backup]);

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        }

        Assert.Equal(1, primary.RequestCount);
        Assert.Equal(3, backup.RequestCount);
        var providers = JsonNode.Parse(await gw.Client.GetStringAsync("/v1/providers"))!.AsArray();
        Assert.NotNull(providers.Single(p => p!["name"]!.GetValue<string>() == "p0")!["cooling_until"]);
    }

    [Fact]
    public async Task The_circuit_opens_after_consecutive_failures_lets_one_probe_through_after_the_break_and_closes_on_success()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        upstream.Fail(FakeFault.Status500);
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await GatewayAsync([upstream], s =>
        {
            s["Gateway:CircuitFailureThreshold"] = "3";
            s["Gateway:CircuitBreakSeconds"] = "1";
            s["Gateway:MaxAttempts"] = "1";
        }, clock);
        async Task<string?> Circuit() =>
            JsonNode.Parse(await (await gw.Client.GetAsync("/v1/providers/p0/health")).Content.ReadAsStringAsync())!["circuit"]!.GetValue<string>();

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.BadGateway, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        }
        Assert.Equal("open", await Circuit());
        Assert.Equal(HttpStatusCode.BadGateway, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        Assert.Equal(3, upstream.RequestCount); // refused while open: the upstream was not called

        upstream.Reset();
        clock.Advance(TimeSpan.FromSeconds(0.9));
        Assert.Equal(HttpStatusCode.BadGateway, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        Assert.Equal(3, upstream.RequestCount); // still open before the break ends
        clock.Advance(TimeSpan.FromSeconds(0.2));
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        Assert.Equal("closed", await Circuit());
        Assert.Equal(4, upstream.RequestCount);
    }

    [Fact]
    public async Task A_client_disconnect_mid_stream_cancels_the_upstream_call_and_is_recorded()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        upstream.Reply = string.Join(' ', Enumerable.Range(0, 200).Select(i => $"w{i}"));
        upstream.ChunkDelay = TimeSpan.FromMilliseconds(50);
        await using var gw = await GatewayAsync([upstream]);

        using var cts = new CancellationTokenSource();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(GatewayHarness.Chat("m", "go", stream: true).ToJsonString(), System.Text.Encoding.UTF8, "application/json"),
        };
        var response = await gw.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        var stream = await response.Content.ReadAsStreamAsync(cts.Token);
        var buffer = new byte[256];
        Assert.True(await stream.ReadAsync(buffer, cts.Token) > 0);
        await cts.CancelAsync();
        try
        {
            while (await stream.ReadAsync(buffer, cts.Token) > 0)
            {
            }
        }
        catch (OperationCanceledException)
        {
            // the client gave up, as intended
        }
        response.Dispose();

        await upstream.WaitForCancellationAsync(timeout: TimeSpan.FromSeconds(5));
        Assert.Equal(1, upstream.CancelledCount);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(((short)499, "client_disconnected"), (row.Status, row.ErrorType));
    }
}
