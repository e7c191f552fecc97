using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// What <c>/v1/responses</c> does with what a target cannot take: hints (reasoning, include, prompt_cache_key,
/// client_metadata, built-in tools...) translated or dropped and named; tool namespaces flattened and mapped back;
/// requirements (a forced built-in tool, a file or image the target cannot read) refused with a 400 naming the field.
/// </summary>
public sealed class ResponsesTranslationTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static JsonObject Function(string name) => new()
    {
        ["type"] = "function",
        ["name"] = name,
        ["description"] = $"The {name} tool",
        ["strict"] = false,
        ["parameters"] = new JsonObject
        {
            ["type"] = "object",
            ["properties"] = new JsonObject { ["cmd"] = new JsonObject { ["type"] = "string" } },
            ["required"] = new JsonArray("cmd"),
        },
    };

    /// <summary>A request shaped like a coding agent's: streaming, store false, nine tools (one web_search, one namespace) and its hints.</summary>
    private static JsonObject CodingAgentRequest(string model, JsonArray? input = null)
    {
        var tools = new JsonArray();
        foreach (var name in new[] { "exec_command", "apply_patch", "read_file", "list_dir", "grep_files", "update_plan", "view_image" })
        {
            tools.Add(Function(name));
        }
        tools.Add(new JsonObject { ["type"] = "web_search" });
        tools.Add(new JsonObject
        {
            ["type"] = "namespace",
            ["name"] = "mcp_docs",
            ["description"] = "Documentation search",
            ["tools"] = new JsonArray(Function("search"), Function("fetch")),
        });
        return new JsonObject
        {
            ["model"] = model,
            ["instructions"] = "You are a coding agent working in /repo.",
            ["input"] = input ?? new JsonArray(new JsonObject
            {
                ["type"] = "message",
                ["role"] = "user",
                ["content"] = new JsonArray(new JsonObject { ["type"] = "input_text", ["text"] = "run the unit tests" }),
            }),
            ["tools"] = tools,
            ["tool_choice"] = "auto",
            ["parallel_tool_calls"] = false,
            ["reasoning"] = new JsonObject { ["effort"] = "medium", ["summary"] = "auto" },
            ["store"] = false,
            ["stream"] = true,
            ["include"] = new JsonArray("reasoning.encrypted_content"),
            ["prompt_cache_key"] = "session-0195",
            ["client_metadata"] = new JsonObject { ["session_id"] = "0195" },
        };
    }

    [Theory]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.OpenAI)]
    public async Task A_coding_agent_request_runs_a_function_call_round_trip_with_store_false_and_names_its_dropped_hints(FakeProtocol protocol)
    {
        await using var upstream = await FakeUpstream.StartAsync(protocol);
        upstream.NextToolCall = new FakeToolCall("exec_command", """{"cmd":"dotnet test"}""", "toolu_exec_1");
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver([upstream], "gpt-5-codex"));

        using var first = await gw.PostJsonAsync("/v1/responses", CodingAgentRequest("gpt-5-codex"));
        var events = await Sse.ReadNamedAsync(first);

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var dropped = first.Headers.GetValues("x-helixagent-dropped").Single().Split(',');
        Assert.Superset(new HashSet<string> { "web_search", "reasoning.summary", "include", "client_metadata" }, dropped.ToHashSet());
        if (protocol == FakeProtocol.Anthropic)
        {
            Assert.Contains("prompt_cache_key", dropped);
            Assert.Contains("reasoning", dropped);
        }
        else
        {
            Assert.Equal("reasoning.effort=reasoning_effort", first.Headers.GetValues("x-helixagent-translated").Single());
        }
        var sent = JsonNode.Parse(upstream.Requests[0].Body)!;
        var names = sent["tools"]!.AsArray().Select(t => (t!["name"] ?? t["function"]!["name"])!.GetValue<string>()).ToList();
        Assert.Equal(9, names.Count); // seven functions and the namespace's two, flattened; web_search dropped
        Assert.Contains("mcp_docs__search", names);
        var done = events.Single(e => e.Name == "response.output_item.done").Data.GetProperty("item");
        Assert.Equal("function_call", done.GetProperty("type").GetString());
        Assert.Equal("exec_command", done.GetProperty("name").GetString());
        var callId = done.GetProperty("call_id").GetString()!;
        Assert.Equal("response.completed", events[^1].Name);

        // The client resends the whole conversation (store: false): its input, the call, the call's output.
        upstream.Reply = "All 12 tests passed.";
        var input = (JsonArray)CodingAgentRequest("gpt-5-codex")["input"]!.DeepClone();
        input.Add(JsonNode.Parse(done.GetRawText()));
        input.Add(new JsonObject { ["type"] = "function_call_output", ["call_id"] = callId, ["output"] = "Passed! 12 tests" });
        using var second = await gw.PostJsonAsync("/v1/responses", CodingAgentRequest("gpt-5-codex", input));
        var text = string.Concat((await Sse.ReadNamedAsync(second)).Where(e => e.Name == "response.output_text.delta").Select(e => e.Data.GetProperty("delta").GetString()));

        Assert.Equal("All 12 tests passed.", text);
        Assert.Contains("Passed! 12 tests", upstream.Requests[^1].Body);
        var rows = await gw.LedgerRowsAsync(2);
        Assert.All(rows, r => Assert.Equal(("responses", (short)200), (r.Endpoint, r.Status)));
    }

    [Fact]
    public async Task A_coding_agent_request_to_the_simulator_is_answered_with_every_hint_named_and_runs_a_function_call_round_trip()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        using var response = await gw.PostJsonAsync("/v1/responses", CodingAgentRequest("sim-small"));
        var events = await Sse.ReadNamedAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("response.completed", events[^1].Name);
        Assert.Equal(["client_metadata", "include", "prompt_cache_key", "reasoning", "reasoning.summary", "web_search"],
            response.Headers.GetValues("x-helixagent-dropped").Single().Split(',').Order());
        Assert.StartsWith("Simulated answer to: run the unit tests",
            string.Concat(events.Where(e => e.Name == "response.output_text.delta").Select(e => e.Data.GetProperty("delta").GetString())));

        // Asked for a tool by name, the simulator calls it; given the call's output (the whole input resent), it answers.
        var ask = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "run the unit tests with exec_command" });
        using var calling = await gw.PostJsonAsync("/v1/responses", CodingAgentRequest("sim-small", ask));
        var call = (await Sse.ReadNamedAsync(calling)).Single(e => e.Name == "response.output_item.done").Data.GetProperty("item");
        Assert.Equal(("function_call", "exec_command"), (call.GetProperty("type").GetString(), call.GetProperty("name").GetString()));
        Assert.Equal(System.Text.Json.JsonValueKind.String, JsonNode.Parse(call.GetProperty("arguments").GetString()!)!["cmd"]!.GetValueKind());
        var input = (JsonArray)ask.DeepClone();
        input.Add(JsonNode.Parse(call.GetRawText()));
        input.Add(new JsonObject { ["type"] = "function_call_output", ["call_id"] = call.GetProperty("call_id").GetString(), ["output"] = "12 passed" });
        using var answered = await gw.PostJsonAsync("/v1/responses", CodingAgentRequest("sim-small", input));
        var final = await Sse.ReadNamedAsync(answered);
        Assert.Equal("response.completed", final[^1].Name);
        Assert.NotEmpty(string.Concat(final.Where(e => e.Name == "response.output_text.delta").Select(e => e.Data.GetProperty("delta").GetString())));
    }

    [Fact]
    public async Task A_call_of_a_namespaced_tool_comes_back_with_its_own_name_and_namespace()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        upstream.NextToolCall = new FakeToolCall("mcp_docs__search", """{"cmd":"retry policy"}""", "call_ns_1");
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver([upstream]));
        var body = CodingAgentRequest("m");
        body["stream"] = false;

        using var response = await gw.PostJsonAsync("/v1/responses", body);
        var call = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["output"]![0]!;

        Assert.Equal(("function_call", "search", "mcp_docs"), (call["type"]!.GetValue<string>(), call["name"]!.GetValue<string>(), call["namespace"]!.GetValue<string>()));

        // Sent back in the next turn, the call is the flattened name again.
        upstream.Reply = "Found it.";
        var input = (JsonArray)body["input"]!.DeepClone();
        input.Add(call.DeepClone());
        input.Add(new JsonObject { ["type"] = "function_call_output", ["call_id"] = "call_ns_1", ["output"] = "docs/retry.md" });
        body["input"] = input;
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/responses", body)).StatusCode);
        Assert.Equal("mcp_docs__search", JsonNode.Parse(upstream.Requests[^1].Body)!["messages"]![2]!["tool_calls"]![0]!["function"]!["name"]!.GetValue<string>());
    }

    [Fact]
    public async Task Requirements_a_target_cannot_meet_are_400s_naming_the_field_and_no_upstream_is_asked()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var settings = GatewayHarness.RouteOver([upstream]);
        foreach (var (k, v) in GatewayHarness.SimulatorSettings())
        {
            settings.TryAdd(k, v);
        }
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        var pdf = "data:application/pdf;base64," + Convert.ToBase64String(Encoding.ASCII.GetBytes("%PDF-1.7"));
        var cases = new (string Body, string Param)[]
        {
            ("""{"model":"m","input":"search the web","tools":[{"type":"web_search"}],"tool_choice":{"type":"web_search"}}""", "tool_choice"),
            ("""{"model":"m","input":"search","tools":[{"type":"web_search"}],"tool_choice":"required"}""", "tool_choice"),
            ($$"""{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"summarise"},{"type":"input_file","filename":"a.pdf","file_data":"{{pdf}}"}]}]}""", "input[0].content[1]"),
            ("""{"model":"sim-small","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://example.invalid/cat.png"}]}]}""", "input[0].content[0]"),
            ("""{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}""", "input[0]"),
        };
        foreach (var (body, param) in cases)
        {
            using var response = await gw.PostJsonAsync("/v1/responses", JsonNode.Parse(body)!.AsObject());
            var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{body}: {(int)response.StatusCode} {error}");
            Assert.Equal(param, error["param"]!.GetValue<string>());
        }
        Assert.Equal(0, upstream.RequestCount);

        // A text file sent as file_data is read as text.
        var text = "data:text/plain;base64," + Convert.ToBase64String(Encoding.UTF8.GetBytes("the build is green"));
        using var ok = await gw.PostJsonAsync("/v1/responses", JsonNode.Parse(
            $$"""{"model":"m","store":false,"input":[{"role":"user","content":[{"type":"input_file","filename":"notes.txt","file_data":"{{text}}"}]}]}""")!.AsObject());
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Contains("the build is green", upstream.Requests.Single().Body);
    }

    [Fact]
    public async Task With_unsupported_hints_rejected_a_reasoning_request_to_an_anthropic_target_is_a_400_naming_it()
    {
        await using var anthropic = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        var settings = GatewayHarness.RouteOver([anthropic]);
        settings["Gateway:UnsupportedHints"] = "reject";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);

        using var response = await gw.PostJsonAsync("/v1/responses", JsonNode.Parse(
            """{"model":"m","input":"think hard","reasoning":{"effort":"high"}}""")!.AsObject());

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("reasoning", JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["param"]!.GetValue<string>());
        Assert.Equal(0, anthropic.RequestCount);
    }
}
