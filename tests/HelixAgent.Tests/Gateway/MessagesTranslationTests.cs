using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Anthropic.Models.Messages;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// What <c>/v1/messages</c> does with what a target cannot take: hints (thinking, effort, cache_control,
/// context_management, betas...) translated or dropped and named; requirements (documents, images, forced server
/// tools) refused with a 400 naming the field, or routed to a target that can meet them; and the simulator's tools.
/// </summary>
public sealed class MessagesTranslationTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static readonly string[] Betas =
    [
        "claude-code-20250219", "interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14", "context-management-2025-06-27",
        "prompt-caching-scope-2026-01-05", "effort-2025-11-24", "context-1m-2025-08-07",
    ];

    /// <summary>A request shaped like a coding agent's: every hint it sends, twelve tools (one a server tool), seven betas.</summary>
    private static JsonObject CodingAgentRequest(string model, bool stream)
    {
        var tools = new JsonArray();
        foreach (var name in new[] { "Bash", "Read", "Edit", "Write", "Glob", "Grep", "LS", "WebFetch", "TodoWrite", "Task", "NotebookEdit" })
        {
            tools.Add(new JsonObject
            {
                ["name"] = name,
                ["description"] = $"The {name} tool.",
                ["input_schema"] = new JsonObject
                {
                    ["type"] = "object",
                    ["properties"] = new JsonObject { ["path"] = new JsonObject { ["type"] = "string" } },
                    ["required"] = new JsonArray("path"),
                },
            });
        }
        ((JsonObject)tools[^1]!)["cache_control"] = new JsonObject { ["type"] = "ephemeral" };
        tools.Add(new JsonObject { ["type"] = "web_search_20250305", ["name"] = "web_search", ["max_uses"] = 5 });
        return new JsonObject
        {
            ["model"] = model,
            ["max_tokens"] = 32000,
            ["stream"] = stream,
            ["thinking"] = new JsonObject { ["type"] = "adaptive" },
            ["output_config"] = new JsonObject { ["effort"] = "high" },
            ["context_management"] = new JsonObject { ["edits"] = new JsonArray(new JsonObject { ["type"] = "clear_thinking_20251015", ["keep"] = "all" }) },
            ["metadata"] = new JsonObject { ["user_id"] = "user_abc_account_123_session_456" },
            ["system"] = new JsonArray(
                new JsonObject { ["type"] = "text", ["text"] = "You are a coding agent.", ["cache_control"] = new JsonObject { ["type"] = "ephemeral" } },
                new JsonObject { ["type"] = "text", ["text"] = "Work in /repo.", ["cache_control"] = new JsonObject { ["type"] = "ephemeral" } }),
            ["tools"] = tools,
            ["messages"] = new JsonArray(new JsonObject
            {
                ["role"] = "user",
                ["content"] = new JsonArray(new JsonObject
                {
                    ["type"] = "text",
                    ["text"] = "the unit test in src/app.test.ts fails, fix it",
                    ["cache_control"] = new JsonObject { ["type"] = "ephemeral" },
                }),
            }),
        };
    }

    private static HttpRequestMessage Post(JsonObject body, string path = "/v1/messages", bool betas = true)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        request.Headers.Add("anthropic-version", "2023-06-01");
        if (betas)
        {
            request.Headers.Add("anthropic-beta", string.Join(',', Betas));
        }
        return request;
    }

    private static async Task<List<string?>> DroppedHintsAsync(GatewayHarness gw, int rows)
    {
        await gw.LedgerRowsAsync(rows);
        await using var conn = new NpgsqlConnection(gw.DatabaseConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT dropped_hints FROM completions ORDER BY id", conn);
        await using var r = await cmd.ExecuteReaderAsync();
        var hints = new List<string?>();
        while (await r.ReadAsync())
        {
            hints.Add(r.IsDBNull(0) ? null : r.GetString(0));
        }
        return hints;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_coding_agent_request_to_an_openai_compatible_target_is_answered_with_its_hints_translated_or_named_as_dropped(bool stream)
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        openai.Reply = "I fixed the test.";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver([openai], "claude-sonnet-4-5"));

        var response = await gw.Client.SendAsync(Post(CodingAgentRequest("claude-sonnet-4-5", stream)));
        var text = stream ? Sse.Text(await Sse.ReadNamedAsync(response)) : MessageText(JsonNode.Parse(await response.Content.ReadAsStringAsync())!);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("I fixed the test.", text);
        var dropped = response.Headers.GetValues("x-helixagent-dropped").Single().Split(',');
        Assert.Equal(["anthropic-beta", "cache_control", "context_management", "server_tools"], dropped.Order());
        Assert.Equal("metadata.user_id=user,thinking=reasoning_effort,output_config.effort=reasoning_effort", response.Headers.GetValues("x-helixagent-translated").Single());
        var sent = JsonNode.Parse(openai.Requests.Single().Body)!;
        Assert.Equal("high", sent["reasoning_effort"]!.GetValue<string>());
        Assert.Equal("user_abc_account_123_session_456", sent["user"]!.GetValue<string>());
        Assert.Equal(32000, sent["max_tokens"]!.GetValue<int>());
        Assert.Equal(11, sent["tools"]!.AsArray().Count);
        Assert.Equal("You are a coding agent.\n\nWork in /repo.", sent["messages"]![0]!["content"]!.GetValue<string>());
        Assert.Null(sent["context_management"]);
        Assert.DoesNotContain("cache_control", openai.Requests.Single().Body);
        Assert.Equal(string.Join(',', dropped), Assert.Single(await DroppedHintsAsync(gw, 1)));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_coding_agent_request_to_the_simulator_is_answered_with_every_hint_named_as_dropped(bool stream)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var response = await gw.Client.SendAsync(Post(CodingAgentRequest("sim-small", stream)));
        var text = stream ? Sse.Text(await Sse.ReadNamedAsync(response)) : MessageText(JsonNode.Parse(await response.Content.ReadAsStringAsync())!);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("Simulated answer to: the unit test", text);
        Assert.Equal(["anthropic-beta", "cache_control", "context_management", "metadata", "output_config", "server_tools", "thinking"],
            response.Headers.GetValues("x-helixagent-dropped").Single().Split(',').Order());
        Assert.False(response.Headers.Contains("x-helixagent-translated"));
    }

    private static string MessageText(JsonNode message) =>
        string.Concat(message["content"]!.AsArray().Where(b => b!["type"]!.GetValue<string>() == "text").Select(b => b!["text"]!.GetValue<string>()));

    [Fact]
    public async Task With_unsupported_hints_rejected_a_hint_the_target_cannot_carry_is_a_400_naming_it_and_an_anthropic_target_still_serves()
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var anthropic = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        var settings = GatewayHarness.RouteOver([openai]);
        settings["Gateway:UnsupportedHints"] = "reject";
        settings["Providers:claude:Type"] = "anthropic";
        settings["Providers:claude:BaseUrl"] = anthropic.BaseUrl.ToString();
        settings["Providers:claude:Models:0"] = "claude-fake";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        var body = new JsonObject
        {
            ["model"] = "m",
            ["max_tokens"] = 100,
            ["context_management"] = new JsonObject { ["edits"] = new JsonArray() },
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }),
        };

        var refused = await gw.Client.SendAsync(Post(body, betas: false));

        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        var error = JsonNode.Parse(await refused.Content.ReadAsStringAsync())!;
        Assert.Equal("invalid_request_error", error["error"]!["type"]!.GetValue<string>());
        Assert.StartsWith("context_management:", error["error"]!["message"]!.GetValue<string>());
        Assert.Equal(0, openai.RequestCount);

        body["model"] = "claude-fake";
        Assert.Equal(HttpStatusCode.OK, (await gw.Client.SendAsync(Post(body, betas: false))).StatusCode);
        Assert.Equal(1, anthropic.RequestCount);
    }

    [Fact]
    public async Task A_pdf_document_is_refused_on_an_openai_target_and_served_by_the_routes_anthropic_target()
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var anthropic = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        var body = new JsonObject
        {
            ["model"] = "m",
            ["max_tokens"] = 100,
            ["messages"] = new JsonArray(new JsonObject
            {
                ["role"] = "user",
                ["content"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "document",
                        ["source"] = new JsonObject { ["type"] = "base64", ["media_type"] = "application/pdf", ["data"] = "JVBERi0xLjQK" },
                    },
                    new JsonObject { ["type"] = "text", ["text"] = "Summarise this." }),
            }),
        };

        await using (var openaiOnly = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver([openai])))
        {
            var refused = await openaiOnly.Client.SendAsync(Post(body, betas: false));
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            var message = JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>();
            Assert.StartsWith("messages.0.content.0: p0 (openai) cannot take a document", message);
            Assert.Equal(0, openai.RequestCount);
        }

        await using var both = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver([openai, anthropic]));
        var served = await both.Client.SendAsync(Post(body, betas: false));
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        Assert.Equal("p1", served.Headers.GetValues("x-helixagent-provider").Single());
        Assert.Equal((0, 1), (openai.RequestCount, anthropic.RequestCount));
    }

    [Fact]
    public async Task A_forced_server_tool_is_refused_on_an_openai_target_naming_tool_choice()
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver([openai]));
        var body = new JsonObject
        {
            ["model"] = "m",
            ["max_tokens"] = 100,
            ["tools"] = new JsonArray(new JsonObject { ["type"] = "web_search_20250305", ["name"] = "web_search" }),
            ["tool_choice"] = new JsonObject { ["type"] = "tool", ["name"] = "web_search" },
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "search the web" }),
        };

        var refused = await gw.Client.SendAsync(Post(body, betas: false));

        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.StartsWith("tool_choice.name:", JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>());
        Assert.Equal(0, openai.RequestCount);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task The_simulator_calls_a_forced_tool_with_input_valid_against_its_schema(bool stream)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var body = new JsonObject
        {
            ["model"] = "sim-small",
            ["max_tokens"] = 100,
            ["stream"] = stream,
            ["tools"] = new JsonArray(new JsonObject
            {
                ["name"] = "get_weather",
                ["input_schema"] = new JsonObject
                {
                    ["type"] = "object",
                    ["properties"] = new JsonObject
                    {
                        ["city"] = new JsonObject { ["type"] = "string" },
                        ["days"] = new JsonObject { ["type"] = "integer", ["minimum"] = 1, ["maximum"] = 7 },
                    },
                    ["required"] = new JsonArray("city", "days"),
                },
            }),
            ["tool_choice"] = new JsonObject { ["type"] = "any" },
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "weather please" }),
        };

        var response = await gw.Client.SendAsync(Post(body, betas: false));

        JsonNode input;
        if (stream)
        {
            var events = await Sse.ReadNamedAsync(response);
            var start = events.Single(e => e.Name == "content_block_start").Data.GetProperty("content_block");
            Assert.Equal(("tool_use", "get_weather"), (start.GetProperty("type").GetString(), start.GetProperty("name").GetString()));
            input = JsonNode.Parse(string.Concat(events.Where(e => e.Name == "content_block_delta")
                .Select(e => e.Data.GetProperty("delta").GetProperty("partial_json").GetString())))!;
            Assert.Equal("tool_use", events.Single(e => e.Name == "message_delta").Data.GetProperty("delta").GetProperty("stop_reason").GetString());
        }
        else
        {
            var message = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            Assert.Equal("tool_use", message["stop_reason"]!.GetValue<string>());
            var block = message["content"]!.AsArray().Single()!;
            Assert.Equal(("tool_use", "get_weather"), (block["type"]!.GetValue<string>(), block["name"]!.GetValue<string>()));
            Assert.StartsWith("call_", block["id"]!.GetValue<string>());
            input = block["input"]!;
        }
        Assert.IsType<string>(input["city"]!.GetValue<string>());
        Assert.InRange(input["days"]!.GetValue<int>(), 1, 7);
    }

    [Fact]
    public async Task The_simulator_calls_a_tool_the_last_user_message_asks_for_by_name_and_answers_in_text_after_its_result()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var sdk = AnthropicSdkTests.Sdk(gw);
        var ask = new JsonObject
        {
            ["model"] = "sim-small",
            ["max_tokens"] = 100,
            ["tools"] = new JsonArray(new JsonObject { ["name"] = "lookup_order", ["input_schema"] = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["id"] = new JsonObject { ["type"] = "string" } } } }),
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "please use lookup_order for my order" }),
        };

        var first = await sdk.Messages.Create(AnthropicSdkTests.Params(ask));
        Assert.True(first.Content.Single().TryPickToolUse(out var call));
        Assert.Equal("lookup_order", call!.Name);

        var messages = (JsonArray)ask["messages"]!;
        messages.Add(new JsonObject
        {
            ["role"] = "assistant",
            ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_use", ["id"] = call.ID, ["name"] = call.Name, ["input"] = new JsonObject() }),
        });
        messages.Add(new JsonObject
        {
            ["role"] = "user",
            ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = call.ID, ["content"] = "shipped" }),
        });
        var final = await sdk.Messages.Create(AnthropicSdkTests.Params(ask));

        Assert.Equal("end_turn", final.StopReason!.Raw());
        Assert.True(final.Content.Single().TryPickText(out TextBlock? text));
        Assert.StartsWith("Simulated answer to:", text!.Text);
    }

    [Fact]
    public async Task A_messages_client_reaches_a_gemini_model_through_an_alias_named_like_a_claude_model()
    {
        await using var gemini = await FakeUpstream.StartAsync(FakeProtocol.Gemini);
        gemini.Reply = "hello from gemini";
        var settings = GatewayHarness.RouteOver([gemini], "gemini-2.5-flash");
        settings["Routes:gemini-2.5-flash:Aliases:0"] = "claude-sonnet-4-5";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);

        var message = await AnthropicSdkTests.Sdk(gw).Messages.Create(new MessageCreateParams
        {
            Model = "claude-sonnet-4-5",
            MaxTokens = 50,
            Messages = [new UserMessageParam("hi")],
        });

        Assert.Equal("hello from gemini", string.Concat(message.Content.Select(b => b.TryPickText(out var t) ? t.Text : "")));
        Assert.Contains("gemini-2.5-flash", gemini.Requests.Single().Path);
        var models = JsonNode.Parse(await gw.Client.GetStringAsync("/v1/models"))!["data"]!.AsArray();
        Assert.Contains(models, m => m!["id"]!.GetValue<string>() == "claude-sonnet-4-5");
        Assert.Equal("claude-sonnet-4-5", Assert.Single(await gw.LedgerRowsAsync(1)).Model);
    }
}
