using System.Diagnostics;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Faults;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// The official npm clients (<c>@anthropic-ai/sdk</c> and <c>openai</c>, pinned in <c>tests/node/package.json</c>),
/// unchanged, run by node against the real <c>helixagent</c> binary over loopback: each script in <c>tests/node/</c>
/// prints what its SDK returned as one JSON object.
/// </summary>
public sealed class NodeClientTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static readonly string NodeDir = Path.Combine(RepoPaths.Root, "tests", "node");
    private static readonly string ExamplesDir = Path.Combine(RepoPaths.Root, "examples");

    [Fact]
    public async Task The_anthropic_npm_sdk_gets_an_answer_a_stream_a_tool_loop_a_token_count_a_signed_thinking_block_and_typed_errors()
    {
        await using var anthropic = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        var db = await TestDatabase.CreateAsync(postgres, "node");
        var key = await db.CreateKeyAsync("node-sdk");
        var env = FaultEnvironment.For(db, redis).WithProvider("claude", anthropic, "claude-fake");
        await using var api = await ApiProcess.StartAsync(WithSimulator(env, "sim"));

        var output = await RunNodeAsync("anthropic-sdk.mjs", new Dictionary<string, string>
        {
            ["HELIXAGENT_URL"] = api.BaseAddress.ToString().TrimEnd('/'),
            ["HELIXAGENT_KEY"] = key,
            ["SIM_MODEL"] = "sim-small",
            ["THINKING_MODEL"] = "claude-fake",
        });
        var result = JsonNode.Parse(output)!;

        var message = result["message"]!;
        Assert.StartsWith("msg_", message["id"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal("message", message["type"]!.GetValue<string>());
        Assert.Equal("assistant", message["role"]!.GetValue<string>());
        Assert.Equal("end_turn", message["stop_reason"]!.GetValue<string>());
        Assert.False(string.IsNullOrWhiteSpace(message["text"]!.GetValue<string>()));
        Assert.True(message["input_tokens"]!.GetValue<int>() > 0 && message["output_tokens"]!.GetValue<int>() > 0, message.ToJsonString());

        var stream = result["stream"]!;
        var events = stream["events"]!.AsArray().Select(e => e!.GetValue<string>()).ToList();
        Assert.Equal(["message_start", "content_block_start"], events.Take(2));
        Assert.Equal(["content_block_stop", "message_delta", "message_stop"], events.TakeLast(3));
        Assert.All(events.Skip(2).SkipLast(3), e => Assert.Contains(e, new[] { "ping", "content_block_delta" }));
        Assert.Contains("content_block_delta", events);
        Assert.False(string.IsNullOrWhiteSpace(stream["text"]!.GetValue<string>()));
        Assert.False(string.IsNullOrWhiteSpace(stream["helper_text"]!.GetValue<string>()));
        Assert.Equal("end_turn", stream["helper_stop_reason"]!.GetValue<string>());
        Assert.True(stream["helper_output_tokens"]!.GetValue<int>() > 0);

        var tools = result["tools"]!;
        Assert.Equal("tool_use", tools["stop_reason"]!.GetValue<string>());
        Assert.Equal("get_weather", tools["name"]!.GetValue<string>());
        Assert.Equal(System.Text.Json.JsonValueKind.String, tools["input"]!["city"]?.GetValueKind());
        // An id Anthropic itself would accept back in a later turn (its pattern), whichever target made the call.
        Assert.Matches("^[a-zA-Z0-9_-]+$", tools["id"]!.GetValue<string>());
        Assert.Equal("end_turn", tools["final_stop_reason"]!.GetValue<string>());
        Assert.False(string.IsNullOrWhiteSpace(tools["final_text"]!.GetValue<string>()));

        Assert.InRange(result["count_tokens"]!.GetValue<int>(), 3, 40);

        Assert.Equal(FakeUpstream.ThinkingText, result["thinking"]!["thinking"]!.GetValue<string>());
        Assert.Equal(FakeUpstream.ThinkingSignature, result["thinking"]!["signature"]!.GetValue<string>());

        var errors = result["errors"]!;
        AssertError(errors["bad_key"], "AuthenticationError", 401, "authentication_error");
        AssertError(errors["unknown_model"], "NotFoundError", 404, "not_found_error");
        AssertError(errors["no_max_tokens"], "BadRequestError", 400, "invalid_request_error");

        var rows = await db.WaitForRowsAsync(7, TimeSpan.FromSeconds(20), api);
        var answered = rows.Where(r => r.Status == 200).ToList();
        Assert.Equal(6, answered.Count(r => r.Endpoint == "messages"));
        Assert.Equal(1, answered.Count(r => r.Endpoint == "messages.count_tokens"));
        Assert.Equal(2, answered.Count(r => r.Stream));
        Assert.All(answered.Where(r => r.Endpoint == "messages"), r => Assert.True(r.PromptTokens > 0 && r.CompletionTokens > 0, $"{r.RequestId}: {r.PromptTokens}/{r.CompletionTokens}"));
        Assert.Equal(1, anthropic.RequestCount);
        var logged = api.LoggedErrors();
        Assert.True(logged.Length == 0, $"the node client's requests logged errors:\n{logged}");
    }

    [Fact]
    public async Task The_openai_npm_sdk_creates_streams_retrieves_and_continues_responses_and_runs_a_function_loop()
    {
        var db = await TestDatabase.CreateAsync(postgres, "node");
        var key = await db.CreateKeyAsync("node-openai");
        var env = FaultEnvironment.For(db, redis);
        await using var api = await ApiProcess.StartAsync(WithSimulator(env, "sim"));

        var result = JsonNode.Parse(await RunNodeAsync("openai-responses.mjs", new Dictionary<string, string>
        {
            ["HELIXAGENT_URL"] = api.BaseAddress.ToString().TrimEnd('/'),
            ["HELIXAGENT_KEY"] = key,
            ["SIM_MODEL"] = "sim-small",
        }))!;

        var create = result["create"]!;
        var id = create["id"]!.GetValue<string>();
        Assert.StartsWith("resp_", id, StringComparison.Ordinal);
        Assert.Equal(("completed", "Simulated answer to: My name is Ada."), (create["status"]!.GetValue<string>(), create["text"]!.GetValue<string>()));
        Assert.True(create["usage"]!["total_tokens"]!.GetValue<int>() > 0);
        Assert.Equal((id, "Simulated answer to: My name is Ada."), (result["retrieve"]!["id"]!.GetValue<string>(), result["retrieve"]!["text"]!.GetValue<string>()));
        Assert.Equal(id, result["continued"]!["previous"]!.GetValue<string>());
        Assert.Equal("Simulated answer to: What is my name?", result["continued"]!["text"]!.GetValue<string>());
        var item = Assert.Single(result["input_items"]!.AsArray());
        Assert.Equal(("message", "user"), (item!["type"]!.GetValue<string>(), item["role"]!.GetValue<string>()));

        var stream = result["stream"]!;
        var events = stream["events"]!.AsArray().Select(e => e!.GetValue<string>()).ToList();
        Assert.Equal(["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"], events.Take(4));
        Assert.Equal(["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"], events.TakeLast(4));
        Assert.Equal(Enumerable.Range(0, events.Count), stream["sequence"]!.AsArray().Select(n => n!.GetValue<int>()));
        Assert.Equal("Simulated answer to: stream these words", stream["deltas"]!.GetValue<string>());
        Assert.Equal((stream["deltas"]!.GetValue<string>(), "completed"), (stream["final_text"]!.GetValue<string>(), stream["final_status"]!.GetValue<string>()));

        var tools = result["tools"]!;
        Assert.Equal("get_weather", tools["name"]!.GetValue<string>());
        Assert.Equal(System.Text.Json.JsonValueKind.String, tools["arguments"]!["city"]?.GetValueKind());
        Assert.False(string.IsNullOrWhiteSpace(tools["final_text"]!.GetValue<string>()));

        var errors = result["errors"]!;
        Assert.Equal(("AuthenticationError", 401), (errors["bad_key"]!["class"]!.GetValue<string>(), errors["bad_key"]!["status"]!.GetValue<int>()));
        Assert.Equal(("NotFoundError", 404), (errors["unknown_model"]!["class"]!.GetValue<string>(), errors["unknown_model"]!["status"]!.GetValue<int>()));
        Assert.Equal(("NotFoundError", 404), (errors["unknown_response"]!["class"]!.GetValue<string>(), errors["unknown_response"]!["status"]!.GetValue<int>()));
        Assert.Equal(("NotFoundError", "previous_response_id"), (errors["bad_previous"]!["class"]!.GetValue<string>(), errors["bad_previous"]!["param"]!.GetValue<string>()));

        // create, continue, stream, the call and its answer: five answered requests, five rows (reads write none).
        var rows = await db.WaitForRowsAsync(5, TimeSpan.FromSeconds(20), api);
        Assert.Equal(5, rows.Count(r => r.Status == 200 && r.Endpoint == "responses"));
        var logged = api.LoggedErrors();
        Assert.True(logged.Length == 0, $"the node client's requests logged errors:\n{logged}");
    }

    [Fact]
    public async Task The_readme_examples_run_unchanged_against_the_simulator()
    {
        var db = await TestDatabase.CreateAsync(postgres, "node");
        var key = await db.CreateKeyAsync("readme");
        var env = FaultEnvironment.For(db, redis);
        await using var api = await ApiProcess.StartAsync(WithSimulator(env, "simulator"));
        var url = api.BaseAddress.ToString().TrimEnd('/');

        var anthropic = await RunNodeAsync("anthropic-messages.mjs", new Dictionary<string, string> { ["ANTHROPIC_BASE_URL"] = url, ["ANTHROPIC_API_KEY"] = key }, ExamplesDir);
        var openai = await RunNodeAsync("openai-responses.mjs", new Dictionary<string, string> { ["OPENAI_BASE_URL"] = url + "/v1", ["OPENAI_API_KEY"] = key }, ExamplesDir);

        var lines = anthropic.Split('\n');
        Assert.Equal("Simulated answer to: hello gateway", lines[0]);
        Assert.Equal("Simulated answer to: stream it | end_turn", lines[1]);
        Assert.StartsWith("tool_use {", lines[2], StringComparison.Ordinal);
        Assert.Contains("name: 'get_weather'", anthropic, StringComparison.Ordinal);
        lines = openai.Split('\n');
        Assert.Matches("^resp_[0-9a-f]{32} Simulated answer to: My name is Ada.$", lines[0]);
        Assert.Equal("Simulated answer to: What is my name?", lines[1]);
        Assert.Equal("Simulated answer to: stream it | completed", lines[2]);
        Assert.Contains("type: 'function_call'", openai, StringComparison.Ordinal);
        Assert.Contains("name: 'get_weather'", openai, StringComparison.Ordinal);
    }

    /// <summary>The simulator as provider <paramref name="name"/>, serving <c>sim-small</c> without pacing.</summary>
    private static Dictionary<string, string> WithSimulator(Dictionary<string, string> env, string name)
    {
        env[$"Providers__{name}__Type"] = "simulator";
        env[$"Providers__{name}__Models__0"] = "sim-small";
        env[$"Providers__{name}__LatencyMs"] = "1";
        env[$"Providers__{name}__TokensPerSecond"] = "0";
        return env;
    }

    private static void AssertError(JsonNode? error, string sdkClass, int status, string type)
    {
        Assert.NotNull(error);
        Assert.Equal(sdkClass, error["class"]!.GetValue<string>());
        Assert.Equal(status, error["status"]!.GetValue<int>());
        Assert.Equal(type, error["type"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(error["request_id"]?.GetValue<string>()), $"the SDK read no request-id: {error.ToJsonString()}");
    }

    /// <summary>Installs the pinned packages (<c>npm ci</c>) when they are missing or older than the lock file, then runs <paramref name="script"/> and returns its stdout.</summary>
    private static async Task<string> RunNodeAsync(string script, IDictionary<string, string> env, string? dir = null)
    {
        dir ??= NodeDir;
        var installed = Path.Combine(dir, "node_modules", ".package-lock.json");
        if (!File.Exists(installed) || File.GetLastWriteTimeUtc(installed) < File.GetLastWriteTimeUtc(Path.Combine(dir, "package-lock.json")))
        {
            await RunAsync(dir, "npm", ["ci", "--no-audit", "--no-fund"], new Dictionary<string, string>(), TimeSpan.FromMinutes(5));
        }
        return await RunAsync(dir, "node", [script], env, TimeSpan.FromMinutes(2));
    }

    private static async Task<string> RunAsync(string dir, string file, string[] args, IDictionary<string, string> env, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file)
        {
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        // The SDKs read these when set; the test's values are the only ones they may use.
        foreach (var name in (ReadOnlySpan<string>)["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"])
        {
            psi.Environment.Remove(name);
        }
        foreach (var (k, v) in env)
        {
            psi.Environment[k] = v;
        }
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"{file} did not start");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{file} {string.Join(' ', args)} ran over {timeout}: {await stderr}");
        }
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)} exited {p.ExitCode}:\n{await stderr}\n{await stdout}");
        return await stdout;
    }
}
