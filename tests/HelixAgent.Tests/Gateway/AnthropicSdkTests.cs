using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Anthropic;
using Anthropic.Core;
using Anthropic.Exceptions;
using Anthropic.Models.Messages;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// Anthropic's official .NET SDK, unmodified, as the gateway's client on <c>/v1/messages</c>: against the simulator,
/// and against fake upstreams of each protocol (Anthropic passed through, OpenAI-compatible and Gemini translated).
/// </summary>
public sealed class AnthropicSdkTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    internal static AnthropicClient Sdk(GatewayHarness gw, string? key = null) => new(new ClientOptions
    {
        ApiKey = key ?? gw.ClientKey,
        BaseUrl = gw.Client.BaseAddress!.ToString().TrimEnd('/'),
        HttpClient = gw.Factory.CreateClient(),
        MaxRetries = 0,
        Timeout = TimeSpan.FromSeconds(30),
    });

    /// <summary>Parameters from a JSON body, for requests the typed builders make long-winded (the SDK sends them as they are).</summary>
    internal static MessageCreateParams Params(JsonObject body) => MessageCreateParams.FromRawUnchecked(
        new Dictionary<string, JsonElement>(), new Dictionary<string, JsonElement>(),
        JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(body.ToJsonString())!);

    private static MessageCreateParams Ask(string model, string text, long maxTokens = 256) => new()
    {
        Model = model,
        MaxTokens = maxTokens,
        Messages = [new UserMessageParam(text)],
    };

    private Task<GatewayHarness> OverAsync(params FakeUpstream[] upstreams) =>
        GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver(upstreams));

    private static string TextOf(Message message) =>
        string.Concat(message.Content.Select(b => b.TryPickText(out var t) ? t.Text : ""));

    private static async Task<string> StreamedTextAsync(IAsyncEnumerable<RawMessageStreamEvent> events, List<string>? types = null)
    {
        var text = new StringBuilder();
        await foreach (var e in events)
        {
            types?.Add(e.Json.GetProperty("type").GetString()!);
            if (e.TryPickContentBlockDelta(out var delta) && delta.Delta.TryPickText(out var t))
            {
                text.Append(t.Text);
            }
        }
        return text.ToString();
    }

    [Fact]
    public async Task The_anthropic_sdk_gets_a_message_from_the_simulator()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var message = await Sdk(gw).Messages.Create(Ask("sim-small", "hello claude"));

        Assert.Equal("Simulated answer to: hello claude", TextOf(message));
        Assert.Equal("end_turn", message.StopReason!.Raw());
        Assert.StartsWith("msg_", message.ID);
        Assert.Equal(2, message.Usage.InputTokens);
        Assert.Equal(5, message.Usage.OutputTokens);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(("messages", (short)200, 2, 5), (row.Endpoint, row.Status, row.PromptTokens, row.CompletionTokens));
    }

    [Fact]
    public async Task The_anthropic_sdk_streams_a_message_from_the_simulator_in_anthropic_event_order()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var types = new List<string>();

        var text = await StreamedTextAsync(Sdk(gw).Messages.CreateStreaming(Ask("sim-small", "stream to me please")), types);

        Assert.Equal("Simulated answer to: stream to me please", text);
        Assert.Equal(["message_start", "content_block_start"], types.Take(2));
        Assert.Equal(["content_block_stop", "message_delta", "message_stop"], types.TakeLast(3));
        Assert.All(types.Skip(2).SkipLast(3), t => Assert.Contains(t, new[] { "ping", "content_block_delta" }));
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(("messages", true, (short)200), (row.Endpoint, row.Stream, row.Status));
    }

    [Fact]
    public async Task A_streamed_message_from_a_translated_target_carries_stop_reason_and_usage_in_message_delta()
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        openai.Reply = "one two three";
        await using var gw = await OverAsync(openai);
        var body = new JsonObject
        {
            ["model"] = "m",
            ["max_tokens"] = 64,
            ["stream"] = true,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "count" }),
        };

        var events = await Sse.ReadNamedAsync(await gw.PostJsonAsync("/v1/messages", body));

        Assert.Equal("one two three", Sse.Text(events));
        Assert.Equal(["message_start", "content_block_start", "ping"], events.Take(3).Select(e => e.Name));
        var delta = events[^2];
        Assert.Equal("message_delta", delta.Name);
        Assert.Equal("end_turn", delta.Data.GetProperty("delta").GetProperty("stop_reason").GetString());
        Assert.Equal(3, delta.Data.GetProperty("usage").GetProperty("output_tokens").GetInt32());
        Assert.Equal("message_stop", events[^1].Name);
        Assert.Equal(0, events.Single(e => e.Name == "content_block_start").Data.GetProperty("index").GetInt32());
    }

    [Theory]
    [InlineData(FakeProtocol.OpenAI)]
    [InlineData(FakeProtocol.Gemini)]
    public async Task A_tool_loop_runs_through_a_translated_target(FakeProtocol protocol)
    {
        await using var upstream = await FakeUpstream.StartAsync(protocol);
        upstream.NextToolCall = new FakeToolCall("get_weather", """{"city":"Paris"}""", "call_weather_1");
        await using var gw = await OverAsync(upstream);
        var sdk = Sdk(gw);
        var tools = new JsonArray(new JsonObject
        {
            ["name"] = "get_weather",
            ["description"] = "Weather of a city",
            ["input_schema"] = new JsonObject
            {
                ["type"] = "object",
                ["properties"] = new JsonObject { ["city"] = new JsonObject { ["type"] = "string" } },
                ["required"] = new JsonArray("city"),
            },
        });
        var ask = new JsonObject
        {
            ["model"] = "m",
            ["max_tokens"] = 200,
            ["tools"] = tools.DeepClone(),
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "What is the weather in Paris?" }),
        };

        var first = await sdk.Messages.Create(Params(ask));

        Assert.Equal("tool_use", first.StopReason!.Raw());
        Assert.True(first.Content.Single().TryPickToolUse(out var call));
        Assert.Equal("get_weather", call!.Name);
        Assert.Equal("Paris", call.Input["city"].GetString());

        upstream.Reply = "It is sunny in Paris.";
        var loop = (JsonObject)ask.DeepClone();
        var messages = (JsonArray)loop["messages"]!;
        messages.Add(new JsonObject
        {
            ["role"] = "assistant",
            ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_use", ["id"] = call.ID, ["name"] = call.Name, ["input"] = new JsonObject { ["city"] = "Paris" } }),
        });
        messages.Add(new JsonObject
        {
            ["role"] = "user",
            ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = call.ID, ["content"] = "sunny, 21 C" }),
        });

        var final = await sdk.Messages.Create(Params(loop));

        Assert.Equal("It is sunny in Paris.", TextOf(final));
        Assert.Equal("end_turn", final.StopReason!.Raw());
        var sent = upstream.Requests[^1].Body;
        Assert.Contains("sunny, 21 C", sent);
        if (protocol == FakeProtocol.OpenAI)
        {
            var upstreamMessages = JsonNode.Parse(sent)!["messages"]!.AsArray();
            Assert.Equal(["user", "assistant", "tool"], upstreamMessages.Select(m => m!["role"]!.GetValue<string>()));
            Assert.Equal(call.ID, upstreamMessages[2]!["tool_call_id"]!.GetValue<string>());
            Assert.Equal("get_weather", upstreamMessages[1]!["tool_calls"]![0]!["function"]!["name"]!.GetValue<string>());
        }
        else
        {
            Assert.Contains("functionResponse", sent);
        }
    }

    [Fact]
    public async Task An_image_block_reaches_an_openai_compatible_target_as_an_image_url_part()
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var gw = await OverAsync(openai);
        var png = Convert.ToBase64String([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);

        var message = await Sdk(gw).Messages.Create(new MessageCreateParams
        {
            Model = "m",
            MaxTokens = 100,
            Messages = [new UserMessageParam(new List<ContentBlockParam>
            {
                new ImageBlockParam(new Base64ImageSource { Data = png, MediaType = MediaType.ImagePng }),
                new TextBlockParam("What is in this picture?"),
            })],
        });

        Assert.NotEmpty(TextOf(message));
        var parts = JsonNode.Parse(openai.Requests[^1].Body)!["messages"]![0]!["content"]!.AsArray();
        Assert.Equal("image_url", parts[0]!["type"]!.GetValue<string>());
        Assert.Equal($"data:image/png;base64,{png}", parts[0]!["image_url"]!["url"]!.GetValue<string>());
        Assert.Equal("What is in this picture?", parts[1]!["text"]!.GetValue<string>());
    }

    [Fact]
    public async Task An_image_to_the_simulator_is_refused_with_a_400_naming_the_block()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var ex = await Assert.ThrowsAsync<AnthropicBadRequestException>(() => Sdk(gw).Messages.Create(new MessageCreateParams
        {
            Model = "sim-small",
            MaxTokens = 100,
            Messages = [new UserMessageParam(new List<ContentBlockParam>
            {
                new ImageBlockParam(new Base64ImageSource { Data = "iVBORw0KGgo=", MediaType = MediaType.ImagePng }),
            })],
        }));

        Assert.Contains("messages.0.content.0", ex.Message);
        Assert.Empty(await gw.LedgerRowsAsync(0));
    }

    [Fact]
    public async Task Gateway_errors_reach_the_sdk_as_its_typed_exceptions()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var unauthorized = await Assert.ThrowsAsync<AnthropicUnauthorizedException>(() => Sdk(gw, "hx-not-a-real-key").Messages.Create(Ask("sim-small", "x")));
        Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.StatusCode);
        Assert.False(string.IsNullOrEmpty(unauthorized.RequestID));

        var notFound = await Assert.ThrowsAsync<AnthropicNotFoundException>(() => Sdk(gw).Messages.Create(Ask("claude-no-such-model", "x")));
        Assert.Contains("claude-no-such-model", notFound.Message);

        var created = await gw.WithKey(gw.AdminKey).PostAsync("/admin/keys",
            new StringContent("""{"name":"narrow","allowed_models":["sim-error"]}""", Encoding.UTF8, "application/json"));
        var narrowKey = JsonNode.Parse(await created.Content.ReadAsStringAsync())!["key"]!.GetValue<string>();
        await Assert.ThrowsAsync<AnthropicForbiddenException>(() => Sdk(gw, narrowKey).Messages.Create(Ask("sim-small", "x")));

        var huge = new string('a', 5 * 1024 * 1024);
        await Assert.ThrowsAsync<AnthropicContentTooLargeException>(() => Sdk(gw).Messages.Create(Ask("sim-small", huge)));

        await Assert.ThrowsAsync<AnthropicBadRequestException>(() => Sdk(gw).Messages.Create(Ask("sim-badrequest", "x")));
        Assert.Equal(1, (await gw.LedgerRowsAsync(1)).Count(r => r.Status == 400));
    }

    [Fact]
    public async Task Over_the_rate_limit_the_sdk_raises_its_rate_limit_exception_and_the_answer_says_when_to_retry()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var created = await gw.WithKey(gw.AdminKey).PostAsync("/admin/keys",
            new StringContent("""{"name":"slow","rpm_limit":1}""", Encoding.UTF8, "application/json"));
        var slowKey = JsonNode.Parse(await created.Content.ReadAsStringAsync())!["key"]!.GetValue<string>();
        var sdk = Sdk(gw, slowKey);
        await sdk.Messages.Create(Ask("sim-small", "first"));

        var limited = await Assert.ThrowsAsync<AnthropicRateLimitException>(() => sdk.Messages.Create(Ask("sim-small", "second")));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Contains("rate_limit_error", limited.ResponseBody);

        var raw = await gw.WithKey(slowKey).PostAsync("/v1/messages", new StringContent(
            """{"model":"sim-small","max_tokens":5,"messages":[{"role":"user","content":"third"}]}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.TooManyRequests, raw.StatusCode);
        Assert.True(int.Parse(raw.Headers.RetryAfter!.ToString(), System.Globalization.CultureInfo.InvariantCulture) >= 1);
        var error = JsonNode.Parse(await raw.Content.ReadAsStringAsync())!;
        Assert.Equal(("error", "rate_limit_error"), (error["type"]!.GetValue<string>(), error["error"]!["type"]!.GetValue<string>()));
    }

    [Theory]
    [InlineData(FakeFault.Status500)]
    [InlineData(FakeFault.Status429)]
    [InlineData(FakeFault.Overloaded529)]
    [InlineData(FakeFault.StallBeforeFirstByte)]
    [InlineData(FakeFault.ResetConnection)]
    public async Task A_stream_fails_over_before_its_first_content_event_and_the_client_sees_one_clean_stream(FakeFault fault)
    {
        await using var primary = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        await using var backup = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        primary.Fail(fault);
        backup.Reply = "answer from the backup";
        await using var gw = await OverAsync(primary, backup);
        var types = new List<string>();

        var text = await StreamedTextAsync(Sdk(gw).Messages.CreateStreaming(Ask("m", "hi")), types);

        Assert.Equal("answer from the backup", text);
        Assert.Equal(1, types.Count(t => t == "message_start"));
        Assert.Equal((1, 1), (primary.RequestCount, backup.RequestCount));
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(((short)200, (short)2, "p1", "messages"), (row.Status, row.Attempts, row.Provider, row.Endpoint));
    }

    [Theory]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.OpenAI)]
    public async Task A_stream_cut_after_content_ends_with_an_anthropic_error_event_and_no_failover(FakeProtocol protocol)
    {
        await using var primary = await FakeUpstream.StartAsync(protocol);
        await using var backup = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        primary.Reply = "one two three four five six seven eight";
        primary.Fail(FakeFault.CutMidStream);
        await using var gw = await OverAsync(primary, backup);
        var body = new JsonObject
        {
            ["model"] = "m",
            ["max_tokens"] = 64,
            ["stream"] = true,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }),
        };

        var events = await Sse.ReadNamedAsync(await gw.PostJsonAsync("/v1/messages", body));

        Assert.NotEmpty(Sse.Text(events));
        Assert.Equal("error", events[^1].Name);
        Assert.Equal("api_error", events[^1].Data.GetProperty("error").GetProperty("type").GetString());
        Assert.DoesNotContain(events, e => e.Name == "message_stop");
        Assert.Equal(0, backup.RequestCount);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(((short)502, "stream_interrupted"), (row.Status, row.ErrorType));
    }

    [Fact]
    public async Task The_sdk_sees_a_cut_after_content_as_an_error_not_a_complete_message()
    {
        await using var primary = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        primary.Reply = "one two three four five six seven eight";
        primary.Fail(FakeFault.CutMidStream);
        await using var gw = await OverAsync(primary);

        await Assert.ThrowsAnyAsync<AnthropicException>(() => StreamedTextAsync(Sdk(gw).Messages.CreateStreaming(Ask("m", "hi"))));
    }

    [Fact]
    public async Task Count_tokens_passes_through_to_an_anthropic_target_and_is_an_estimate_elsewhere()
    {
        await using var anthropic = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        await using var gw = await OverAsync(anthropic);

        var counted = await Sdk(gw).Messages.CountTokens(new MessageCountTokensParams
        {
            Model = "m",
            Messages = [new UserMessageParam("one two three four")],
        });

        Assert.Equal(4, counted.InputTokens);
        Assert.Equal("/v1/messages/count_tokens", anthropic.Requests[^1].Path);

        await using var sim = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var estimate = await sim.PostJsonAsync("/v1/messages/count_tokens", new JsonObject
        {
            ["model"] = "sim-small",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "one two three four" }),
        });
        Assert.Equal(HttpStatusCode.OK, estimate.StatusCode);
        Assert.Equal("true", estimate.Headers.GetValues("x-helixagent-estimate").Single());
        Assert.InRange(JsonNode.Parse(await estimate.Content.ReadAsStringAsync())!["input_tokens"]!.GetValue<int>(), 4, 40);
        Assert.Equal("messages.count_tokens", Assert.Single(await sim.LedgerRowsAsync(1)).Endpoint);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_anthropic_target_gets_the_body_untouched_and_its_answer_comes_back_byte_for_byte(bool stream)
    {
        await using var anthropic = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        anthropic.Strict = true;
        await using var gw = await OverAsync(anthropic);
        var body = JsonNode.Parse("""
            {"model":"m","max_tokens":2048,"stream":false,
             "system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}],
             "thinking":{"type":"enabled","budget_tokens":1024},
             "messages":[{"role":"user","content":[{"type":"text","text":"Why is the sky blue?","cache_control":{"type":"ephemeral","ttl":"1h"}}]}],
             "context_management":{"edits":[{"type":"clear_tool_uses_20250919"}]},
             "some_future_field":{"kept":true}}
            """)!.AsObject();
        body["stream"] = stream;
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/messages?beta=true")
        {
            Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("anthropic-version", "2023-06-01");
        request.Headers.Add("anthropic-beta", "interleaved-thinking-2025-05-14,context-management-2025-06-27");

        var response = await gw.Client.SendAsync(request);
        var answer = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var sent = anthropic.Requests.Single();
        Assert.Equal(body.ToJsonString(), sent.Body);
        Assert.Equal("interleaved-thinking-2025-05-14,context-management-2025-06-27", sent.Headers["anthropic-beta"]);
        Assert.Equal("upstream-key-0", sent.Headers["x-api-key"]);
        Assert.False(response.Headers.Contains("x-helixagent-dropped"));
        Assert.Contains($"\"signature\":\"{FakeUpstream.ThinkingSignature}\"", answer);
        Assert.Contains(stream ? $"\"thinking\":\"{FakeUpstream.ThinkingText}\"" : $"\"thinking\":\"{FakeUpstream.ThinkingText}\"", answer);
        if (stream)
        {
            var events = answer.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.StartsWith("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_fake", events[0]);
            Assert.Contains(events, e => e.StartsWith("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\"", StringComparison.Ordinal));
            Assert.Equal("event: message_stop\ndata: {\"type\":\"message_stop\"}", events[^1]);
        }
        else
        {
            var message = JsonNode.Parse(answer)!;
            Assert.Equal("thinking", message["content"]![0]!["type"]!.GetValue<string>());
            Assert.Equal(FakeUpstream.ThinkingSignature, message["content"]![0]!["signature"]!.GetValue<string>());
        }
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.True(row.PromptTokens > 0 && row.CompletionTokens > 0, $"tokens {row.PromptTokens}/{row.CompletionTokens}");
    }
}
