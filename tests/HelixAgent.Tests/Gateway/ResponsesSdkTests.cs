using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using OpenAI.Responses;

#pragma warning disable OPENAI001 // the Responses client is marked experimental in the SDK

namespace HelixAgent.Tests.Gateway;

/// <summary>The OpenAI .NET SDK's Responses client, unchanged, on <c>/v1/responses</c> over the simulator and translated targets.</summary>
public sealed class ResponsesSdkTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    internal static ResponsesClient Sdk(GatewayHarness gw) => OpenAiSdkTests.Sdk(gw).GetResponsesClient();

    private Task<GatewayHarness> OverAsync(params FakeUpstream[] upstreams) =>
        GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver(upstreams));

    private static CreateResponseOptions Ask(string model, string text, bool store = false, bool stream = false) =>
        new(model, [ResponseItem.CreateUserMessageItem(text)]) { StoredOutputEnabled = store, StreamingEnabled = stream ? true : null };

    [Fact]
    public async Task The_openai_sdk_gets_a_response_from_the_simulator()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        ResponseResult response = await Sdk(gw).CreateResponseAsync(Ask("sim-small", "hello responses"));

        Assert.StartsWith("resp_", response.Id, StringComparison.Ordinal);
        Assert.Equal(ResponseStatus.Completed, response.Status);
        Assert.Equal("Simulated answer to: hello responses", response.GetOutputText());
        Assert.True(response.Usage.InputTokenCount > 0 && response.Usage.OutputTokenCount > 0);
        Assert.Equal(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal("responses", row.Endpoint);
        Assert.Equal(response.Usage.OutputTokenCount, row.CompletionTokens);
    }

    [Fact]
    public async Task A_streamed_response_has_the_semantic_events_in_order_with_consecutive_sequence_numbers()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var kinds = new List<string>();
        var sequence = new List<int>();
        var text = new StringBuilder();
        ResponseResult? completed = null;
        await foreach (var update in await Sdk(gw).CreateResponseStreamingAsync(Ask("sim-small", "stream these words", stream: true)))
        {
            kinds.Add(update.GetType().Name.Replace("StreamingResponse", "").Replace("Update", ""));
            sequence.Add(update.SequenceNumber);
            if (update is StreamingResponseOutputTextDeltaUpdate delta)
            {
                text.Append(delta.Delta);
            }
            if (update is StreamingResponseCompletedUpdate done)
            {
                completed = done.Response;
            }
        }

        Assert.Equal(["Created", "InProgress", "OutputItemAdded", "ContentPartAdded"], kinds.Take(4));
        Assert.Equal(["OutputTextDone", "ContentPartDone", "OutputItemDone", "Completed"], kinds.TakeLast(4));
        Assert.All(kinds.Skip(4).SkipLast(4), k => Assert.Equal("OutputTextDelta", k));
        Assert.Equal(Enumerable.Range(0, sequence.Count), sequence);
        Assert.Equal("Simulated answer to: stream these words", text.ToString());
        Assert.NotNull(completed);
        Assert.Equal(text.ToString(), completed.GetOutputText());
        Assert.True(completed.Usage.OutputTokenCount > 0);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.True(row.Stream && row.Endpoint == "responses" && row.Status == 200);
    }

    [Theory]
    [InlineData(FakeProtocol.OpenAI)]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.Gemini)]
    public async Task A_function_calling_loop_runs_through_a_translated_target(FakeProtocol protocol)
    {
        await using var upstream = await FakeUpstream.StartAsync(protocol);
        upstream.NextToolCall = new FakeToolCall("get_weather", """{"city":"Paris"}""", "call_weather_1");
        await using var gw = await OverAsync(upstream);
        var sdk = Sdk(gw);
        var weather = ResponseTool.CreateFunctionTool("get_weather",
            BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"""),
            strictModeEnabled: false, functionDescription: "Weather of a city");
        var ask = Ask("m", "What is the weather in Paris?");
        ask.Tools.Add(weather);

        ResponseResult first = await sdk.CreateResponseAsync(ask);

        var call = Assert.IsType<FunctionCallResponseItem>(Assert.Single(first.OutputItems));
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal("Paris", JsonNode.Parse(call.FunctionArguments.ToString())!["city"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(call.CallId));

        upstream.Reply = "It is sunny in Paris.";
        var loop = Ask("m", "What is the weather in Paris?");
        loop.Tools.Add(weather);
        loop.InputItems.Add(call);
        loop.InputItems.Add(ResponseItem.CreateFunctionCallOutputItem(call.CallId, "sunny, 21 C"));

        ResponseResult final = await sdk.CreateResponseAsync(loop);

        Assert.Equal("It is sunny in Paris.", final.GetOutputText());
        var sent = upstream.Requests[^1].Body;
        Assert.Contains("sunny, 21 C", sent);
        if (protocol == FakeProtocol.OpenAI)
        {
            var messages = JsonNode.Parse(sent)!["messages"]!.AsArray();
            Assert.Equal(["user", "assistant", "tool"], messages.Select(m => m!["role"]!.GetValue<string>()));
            Assert.Equal(call.CallId, messages[2]!["tool_call_id"]!.GetValue<string>());
        }
        Assert.Equal(2, (await gw.LedgerRowsAsync(2)).Count(r => r.Endpoint == "responses" && r.Status == 200));
    }

    [Fact]
    public async Task A_function_call_streams_as_arguments_deltas_and_a_done_item()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        upstream.NextToolCall = new FakeToolCall("get_weather", """{"city":"Paris"}""", "call_weather_2");
        await using var gw = await OverAsync(upstream);
        var ask = Ask("m", "weather?", stream: true);
        ask.Tools.Add(ResponseTool.CreateFunctionTool("get_weather", BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}}}"""), false));

        var arguments = new StringBuilder();
        FunctionCallResponseItem? done = null;
        await foreach (var update in await Sdk(gw).CreateResponseStreamingAsync(ask))
        {
            if (update is StreamingResponseFunctionCallArgumentsDeltaUpdate delta)
            {
                arguments.Append(delta.Delta.ToString());
            }
            if (update is StreamingResponseOutputItemDoneUpdate { Item: FunctionCallResponseItem item })
            {
                done = item;
            }
        }

        Assert.Equal("""{"city":"Paris"}""", arguments.ToString());
        Assert.NotNull(done);
        Assert.Equal("get_weather", done.FunctionName);
        Assert.Equal("call_weather_2", done.CallId);
    }

    [Theory]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.Gemini)]
    public async Task A_json_schema_format_reaches_the_target_as_its_structured_output(FakeProtocol protocol)
    {
        await using var upstream = await FakeUpstream.StartAsync(protocol);
        upstream.Reply = """{"city":"Paris","celsius":21}""";
        await using var gw = await OverAsync(upstream);
        var body = new JsonObject
        {
            ["model"] = "m",
            ["store"] = false,
            ["input"] = "weather as JSON",
            ["text"] = new JsonObject
            {
                ["format"] = new JsonObject
                {
                    ["type"] = "json_schema",
                    ["name"] = "weather",
                    ["strict"] = true,
                    ["schema"] = JsonNode.Parse("""{"type":"object","properties":{"city":{"type":"string"},"celsius":{"type":"number"}},"required":["city","celsius"],"additionalProperties":false}"""),
                },
            },
        };

        using var response = await gw.PostJsonAsync("/v1/responses", body);
        var answer = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("json_schema", answer["text"]!["format"]!["type"]!.GetValue<string>());
        Assert.Equal(21, JsonNode.Parse(answer["output"]![0]!["content"]![0]!["text"]!.GetValue<string>())!["celsius"]!.GetValue<int>());
        var sent = upstream.Requests.Single().Body;
        var upstreamBody = JsonNode.Parse(sent)!;
        if (protocol == FakeProtocol.Gemini)
        {
            Assert.Equal("application/json", upstreamBody["generationConfig"]!["responseMimeType"]!.GetValue<string>());
            Assert.NotNull(upstreamBody["generationConfig"]!["responseJsonSchema"]!["properties"]!["celsius"]);
        }
        else
        {
            // Anthropic's JSON answer: a forced tool whose input schema is the format's.
            Assert.Equal("tool", upstreamBody["tool_choice"]!["type"]!.GetValue<string>());
            Assert.NotNull(upstreamBody["tools"]![0]!["input_schema"]!["properties"]!["celsius"]);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_native_responses_target_gets_the_body_untouched_and_its_answer_comes_back_byte_for_byte(bool stream)
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        openai.Strict = true;
        var settings = GatewayHarness.RouteOver([openai]);
        settings["Providers:p0:Responses"] = "native";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        var body = JsonNode.Parse("""
            {"model":"m","store":false,"input":[{"role":"user","content":[{"type":"input_text","text":"hello native"}]}],
             "reasoning":{"effort":"high","summary":"auto"},"include":["reasoning.encrypted_content"],"prompt_cache_key":"k1",
             "tools":[{"type":"web_search"}],"some_future_field":{"kept":true}}
            """)!.AsObject();
        body["stream"] = stream;

        using var response = await gw.PostJsonAsync("/v1/responses", body);
        var answer = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(body.ToJsonString(), openai.Requests.Single().Body);
        Assert.Equal("/v1/responses", openai.Requests.Single().Path);
        Assert.False(response.Headers.Contains("x-helixagent-dropped"));
        if (stream)
        {
            var events = answer.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.StartsWith("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_fake", events[0]);
            Assert.StartsWith("event: response.completed\n", events[^1]);
        }
        else
        {
            Assert.StartsWith("resp_fake", JsonNode.Parse(answer)!["id"]!.GetValue<string>());
        }
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.True(row.PromptTokens > 0 && row.CompletionTokens > 0, $"tokens {row.PromptTokens}/{row.CompletionTokens}");
    }

    [Fact]
    public async Task A_stored_conversation_on_a_native_target_is_sent_whole_without_our_previous_response_id()
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var settings = GatewayHarness.RouteOver([openai]);
        settings["Providers:p0:Responses"] = "native";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        openai.Reply = "Hello Ada.";

        ResponseResult first = await Sdk(gw).CreateResponseAsync(Ask("m", "I am Ada.", store: true));
        openai.Reply = "You are Ada.";
        ResponseResult second = await Sdk(gw).CreateResponseAsync(new CreateResponseOptions("m", [ResponseItem.CreateUserMessageItem("Who am I?")])
        {
            PreviousResponseId = first.Id,
        });

        Assert.StartsWith("resp_fake", first.Id, StringComparison.Ordinal); // the upstream's own id, byte for byte
        Assert.Equal("You are Ada.", second.GetOutputText());
        var sent = JsonNode.Parse(openai.Requests[^1].Body)!;
        Assert.Null(sent["previous_response_id"]);
        Assert.Equal(3, sent["input"]!.AsArray().Count); // I am Ada., Hello Ada., Who am I?
        Assert.Contains("Hello Ada.", sent["input"]!.ToJsonString());
    }

    [Fact]
    public async Task The_ensemble_answers_a_responses_request_in_responses_shape_and_it_is_stored()
    {
        var settings = GatewayHarness.SimulatorSettings();
        settings["Ensemble:Members:0"] = "sim/sim-small";
        settings["Ensemble:Members:1"] = "sim/sim-cut";
        settings["Ensemble:MinProviders"] = "1";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);

        using var response = await gw.PostJsonAsync("/v1/responses", new JsonObject { ["model"] = "helixagent-ensemble", ["input"] = "ask both" });
        var answer = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("response", answer["object"]!.GetValue<string>());
        Assert.Equal("Simulated answer to: ask both", answer["output"]![0]!["content"]![0]!["text"]!.GetValue<string>());
        Assert.Equal("sim/sim-small", answer["ensemble"]!["selected"]!.GetValue<string>());
        ResponseResult stored = await Sdk(gw).GetResponseAsync(answer["id"]!.GetValue<string>());
        Assert.Equal("Simulated answer to: ask both", stored.GetOutputText());
    }

    [Fact]
    public async Task A_deterministic_store_false_request_is_answered_from_the_cache_the_second_time_and_a_stored_one_never_is()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var body = new JsonObject { ["model"] = "sim-small", ["input"] = "cache me", ["temperature"] = 0, ["store"] = false };

        using var miss = await gw.PostJsonAsync("/v1/responses", body);
        await Eventually.TrueAsync(async () =>
        {
            using var again = await gw.PostJsonAsync("/v1/responses", body);
            return again.Headers.GetValues("x-helixagent-cache").Single() == "hit";
        }, "the second identical store:false request to be a cache hit");
        body["store"] = true;
        using var stored = await gw.PostJsonAsync("/v1/responses", body);

        Assert.Equal("miss", miss.Headers.GetValues("x-helixagent-cache").Single());
        Assert.Equal("bypass", stored.Headers.GetValues("x-helixagent-cache").Single());
    }

    [Fact]
    public async Task The_simulator_answers_a_json_schema_format_with_an_instance_of_the_schema()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var body = JsonNode.Parse("""
            {"model":"sim-small","input":"weather","store":false,"text":{"format":{"type":"json_schema","name":"w","strict":true,
             "schema":{"type":"object","properties":{"city":{"type":"string"},"celsius":{"type":"number"}},"required":["city","celsius"],"additionalProperties":false}}}}
            """)!.AsObject();

        using var response = await gw.PostJsonAsync("/v1/responses", body);
        var text = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["output"]![0]!["content"]![0]!["text"]!.GetValue<string>();

        var json = JsonNode.Parse(text)!.AsObject();
        Assert.Equal(["celsius", "city"], json.Select(p => p.Key).Order());
        Assert.Equal(System.Text.Json.JsonValueKind.Number, json["celsius"]!.GetValueKind());
    }

    [Fact]
    public async Task Gateway_errors_reach_the_sdk_as_client_result_exceptions_with_the_status()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var unknown = await Assert.ThrowsAsync<ClientResultException>(() => Sdk(gw).CreateResponseAsync(Ask("no-such-model", "hi")));
        Assert.Equal(404, unknown.Status);
        var failed = await Assert.ThrowsAsync<ClientResultException>(() => Sdk(gw).CreateResponseAsync(Ask("sim-error", "hi")));
        Assert.Equal(502, failed.Status);

        using var bad = await gw.PostJsonAsync("/v1/responses", JsonNode.Parse("""{"model":"sim-small","input":[{"type":"function_call_output","output":"x"}]}""")!.AsObject());
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        var error = JsonNode.Parse(await bad.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("input[0].call_id", error["param"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_stream_fails_over_before_its_first_delta_and_a_cut_after_it_ends_with_response_failed_and_error()
    {
        await using var broken = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        broken.Fail(FakeFault.Status500);
        await using var good = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        good.Reply = "from the second target";
        await using (var gw = await OverAsync(broken, good))
        {
            var text = new StringBuilder();
            await foreach (var update in await Sdk(gw).CreateResponseStreamingAsync(Ask("m", "fail over", stream: true)))
            {
                if (update is StreamingResponseOutputTextDeltaUpdate delta)
                {
                    text.Append(delta.Delta);
                }
            }
            Assert.Equal("from the second target", text.ToString());
        }

        await using var cut = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        cut.Reply = "one two three four five six seven eight";
        cut.Fail(FakeFault.CutMidStream);
        await using var never = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var gw2 = await OverAsync(cut, never);
        var body = new JsonObject { ["model"] = "m", ["stream"] = true, ["store"] = false, ["input"] = "cut me" };

        using var response = await gw2.PostJsonAsync("/v1/responses", body);
        var events = (await Sse.ReadNamedAsync(response)).Select(e => e.Name).ToList();

        Assert.Equal(["response.failed", "error"], events.TakeLast(2));
        Assert.Contains("response.output_text.delta", events);
        Assert.Equal(0, never.RequestCount);
        var row = Assert.Single(await gw2.LedgerRowsAsync(1));
        Assert.Equal(502, row.Status);
    }
}
