using System.ClientModel;
using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;
using OpenAI.Chat;
using OpenAI.Embeddings;

namespace HelixAgent.Tests.Gateway;

/// <summary>The simulator (Development's default provider) answers the features official clients use, through the OpenAI .NET SDK.</summary>
public sealed class SimulatorSdkTests(PostgresServer postgres, RedisServer redis) : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Base64_embeddings_through_the_sdk_are_the_same_vector_as_float_ones()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var client = OpenAiSdkTests.Sdk(gw).GetEmbeddingClient("sim-small");

        // The SDK's default wire format is base64, which it decodes.
        OpenAIEmbedding viaBase64 = await client.GenerateEmbeddingAsync("the same text");
        var floats = JsonNode.Parse(await (await gw.PostJsonAsync("/v1/embeddings", new JsonObject
        {
            ["model"] = "sim-small",
            ["input"] = "the same text",
            ["encoding_format"] = "float",
        })).Content.ReadAsStringAsync())!["data"]![0]!["embedding"]!.AsArray().Select(v => (float)v!.GetValue<double>()).ToArray();

        var vector = viaBase64.ToFloats().ToArray();
        Assert.Equal(16, vector.Length);
        Assert.Contains(vector, v => v != 0);
        Assert.Equal(floats, vector);

        var raw = JsonNode.Parse(await (await gw.PostJsonAsync("/v1/embeddings", new JsonObject
        {
            ["model"] = "sim-small",
            ["input"] = "the same text",
            ["encoding_format"] = "base64",
        })).Content.ReadAsStringAsync())!["data"]![0]!["embedding"]!;
        Assert.Equal(16 * sizeof(float), Convert.FromBase64String(raw.GetValue<string>()).Length);
    }

    [Fact]
    public async Task N_choices_are_answered_through_the_sdk_plain_and_streamed()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var chat = OpenAiSdkTests.Sdk(gw).GetChatClient("sim-small");
        // The .NET SDK's typed options have no n; its protocol method sends the body as given and parses the answer.
        var body = BinaryContent.Create(BinaryData.FromString("""{"model":"sim-small","n":3,"messages":[{"role":"user","content":"three ways"}]}"""));
        var result = await chat.CompleteChatAsync(body);
        var choices = JsonNode.Parse(result.GetRawResponse().Content.ToString())!["choices"]!.AsArray();
        Assert.Equal([0, 1, 2], choices.Select(c => c!["index"]!.GetValue<int>()));
        Assert.All(choices, c => Assert.Equal("Simulated answer to: three ways", c!["message"]!["content"]!.GetValue<string>()));

        var streamed = await gw.PostJsonAsync("/v1/chat/completions", new JsonObject
        {
            ["model"] = "sim-small",
            ["n"] = 2,
            ["stream"] = true,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "two ways" }),
        });
        var texts = new Dictionary<int, string>();
        var finishes = new Dictionary<int, string>();
        foreach (var line in (await streamed.Content.ReadAsStringAsync()).Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal)))
        {
            foreach (var choice in JsonNode.Parse(line[6..])!["choices"]!.AsArray())
            {
                var index = choice!["index"]!.GetValue<int>();
                texts[index] = texts.GetValueOrDefault(index, "") + (choice["delta"]?["content"]?.GetValue<string>() ?? "");
                if (choice["finish_reason"]?.GetValue<string>() is { } finish)
                {
                    finishes[index] = finish;
                }
            }
        }
        Assert.Equal(["Simulated answer to: two ways", "Simulated answer to: two ways"], [texts[0], texts[1]]);
        Assert.Equal(["stop", "stop"], [finishes[0], finishes[1]]);
    }

    private static readonly BinaryData WeatherSchema = BinaryData.FromString("""
        {"type":"object","properties":{
          "city":{"type":"string","minLength":2},
          "unit":{"type":"string","enum":["celsius","fahrenheit"]},
          "days":{"type":"integer","minimum":1,"maximum":7},
          "hourly":{"type":"boolean"},
          "stations":{"type":"array","items":{"$ref":"#/$defs/station"},"minItems":2}},
         "required":["city","unit","days","hourly","stations"],"additionalProperties":false,
         "$defs":{"station":{"type":"object","properties":{"id":{"type":"string","format":"uuid"},"elevation_m":{"type":"number"}},
           "required":["id","elevation_m"],"additionalProperties":false}}}
        """);

    /// <summary>What the schema above requires, checked field by field.</summary>
    private static void AssertWeatherArguments(string json)
    {
        var args = JsonNode.Parse(json)!.AsObject();
        Assert.Equal(["city", "unit", "days", "hourly", "stations"], args.Select(p => p.Key));
        Assert.True(args["city"]!.GetValue<string>().Length >= 2);
        Assert.Contains(args["unit"]!.GetValue<string>(), new[] { "celsius", "fahrenheit" });
        Assert.InRange(args["days"]!.GetValue<long>(), 1, 7);
        Assert.Equal(System.Text.Json.JsonValueKind.True, args["hourly"]!.GetValueKind());
        var stations = args["stations"]!.AsArray();
        Assert.True(stations.Count >= 2);
        Assert.All(stations, st =>
        {
            Assert.True(Guid.TryParse(st!["id"]!.GetValue<string>(), out _));
            Assert.Equal(System.Text.Json.JsonValueKind.Number, st["elevation_m"]!.GetValueKind());
        });
    }

    [Fact]
    public async Task A_forced_tool_choice_gets_a_tool_call_with_arguments_valid_against_the_schema_plain_and_streamed()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var chat = OpenAiSdkTests.Sdk(gw).GetChatClient("sim-small");
        var options = new ChatCompletionOptions { ToolChoice = ChatToolChoice.CreateFunctionChoice("get_weather") };
        options.Tools.Add(ChatTool.CreateFunctionTool("get_time", "The time in a city"));
        options.Tools.Add(ChatTool.CreateFunctionTool("get_weather", "The forecast", WeatherSchema, functionSchemaIsStrict: true));

        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("Will it rain in Lisbon?")], options);

        Assert.Equal(ChatFinishReason.ToolCalls, completion.FinishReason);
        var call = Assert.Single(completion.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.StartsWith("call_", call.Id, StringComparison.Ordinal);
        AssertWeatherArguments(call.FunctionArguments.ToString());

        var arguments = new System.Text.StringBuilder();
        string? name = null;
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("Will it rain in Lisbon?")], options))
        {
            foreach (var part in update.ToolCallUpdates)
            {
                name ??= part.FunctionName;
                arguments.Append(part.FunctionArgumentsUpdate?.ToString());
            }
            finish ??= update.FinishReason;
        }
        Assert.Equal("get_weather", name);
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        AssertWeatherArguments(arguments.ToString());
    }

    [Fact]
    public async Task Required_or_a_prompt_naming_a_tool_calls_it_and_a_tool_result_gets_a_text_answer()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var chat = OpenAiSdkTests.Sdk(gw).GetChatClient("sim-small");
        var auto = new ChatCompletionOptions();
        auto.Tools.Add(ChatTool.CreateFunctionTool("get_time", "The time in a city"));
        auto.Tools.Add(ChatTool.CreateFunctionTool("get_weather", "The forecast", WeatherSchema));

        ChatCompletion named = await chat.CompleteChatAsync([new UserChatMessage("Use get_weather for Oslo")], auto);
        Assert.Equal("get_weather", Assert.Single(named.ToolCalls).FunctionName);
        AssertWeatherArguments(named.ToolCalls[0].FunctionArguments.ToString());

        ChatCompletion unnamed = await chat.CompleteChatAsync([new UserChatMessage("Hello there")], auto);
        Assert.Empty(unnamed.ToolCalls);
        Assert.Equal(ChatFinishReason.Stop, unnamed.FinishReason);

        var required = new ChatCompletionOptions { ToolChoice = ChatToolChoice.CreateRequiredChoice() };
        foreach (var tool in auto.Tools)
        {
            required.Tools.Add(tool);
        }
        ChatCompletion forced = await chat.CompleteChatAsync([new UserChatMessage("Hello there")], required);
        Assert.Equal(ChatFinishReason.ToolCalls, forced.FinishReason);
        Assert.Equal("get_time", Assert.Single(forced.ToolCalls).FunctionName);

        // The agent loop ends: after the tool's result, auto answers in text.
        ChatCompletion answer = await chat.CompleteChatAsync(
        [
            new UserChatMessage("Use get_weather for Oslo"),
            new AssistantChatMessage(named.ToolCalls),
            new ToolChatMessage(named.ToolCalls[0].Id, """{"rain":false}"""),
        ], auto);
        Assert.Equal(ChatFinishReason.Stop, answer.FinishReason);
        Assert.StartsWith("Simulated answer to:", answer.Content[0].Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Json_mode_answers_a_json_object_and_a_json_schema_an_instance_of_it_plain_and_streamed()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var chat = OpenAiSdkTests.Sdk(gw).GetChatClient("sim-small");

        ChatCompletion obj = await chat.CompleteChatAsync([new UserChatMessage("answer in JSON")],
            new ChatCompletionOptions { ResponseFormat = ChatResponseFormat.CreateJsonObjectFormat() });
        Assert.Equal("Simulated answer to: answer in JSON", JsonNode.Parse(obj.Content[0].Text)!.AsObject()["answer"]!.GetValue<string>());

        var schema = new ChatCompletionOptions { ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("forecast", WeatherSchema, jsonSchemaIsStrict: true) };
        ChatCompletion structured = await chat.CompleteChatAsync([new UserChatMessage("the forecast")], schema);
        AssertWeatherArguments(structured.Content[0].Text);

        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("the forecast")], schema))
        {
            foreach (var part in update.ContentUpdate)
            {
                streamed.Append(part.Text);
            }
        }
        AssertWeatherArguments(streamed.ToString());
    }
}
