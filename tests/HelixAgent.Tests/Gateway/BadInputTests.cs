using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// A newcomer's bad input: answered 400 (or 404) in the OpenAI error shape naming what is wrong, never a 500, and with
/// no more of the input echoed back than an error needs.
/// </summary>
public sealed class BadInputTests(PostgresServer postgres, RedisServer redis) : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static StringContent Raw(byte[] body) =>
        new(Encoding.UTF8.GetString(body)) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } };

    private static ByteArrayContent Bytes(byte[] body) =>
        new(body) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } };

    private static async Task<JsonObject> ErrorOf(HttpResponseMessage response, HttpStatusCode status)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        return (JsonNode.Parse(text)!["error"] as JsonObject)!;
    }

    [Theory]
    [InlineData("/v1/chat/completions", """{"model":"sim-small","model":"sim-error","messages":[{"role":"user","content":"hi"}]}""", "model")]
    [InlineData("/v1/chat/completions", """{"model":"sim-small","messages":[{"role":"user","role":"system","content":"hi"}]}""", "role")]
    [InlineData("/v1/completions", """{"model":"sim-small","prompt":"a","prompt":"b"}""", "prompt")]
    [InlineData("/v1/embeddings", """{"model":"sim-small","input":"a","input":"b"}""", "input")]
    public async Task Duplicate_json_keys_are_400_invalid_json_naming_the_key_and_write_no_row(string path, string body, string key)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var error = await ErrorOf(await gw.Client.PostAsync(path, Raw(Encoding.UTF8.GetBytes(body))), HttpStatusCode.BadRequest);
        Assert.Equal("invalid_json", error["code"]!.GetValue<string>());
        Assert.Contains($"'{key}'", error["message"]!.GetValue<string>());

        // A good request after it is served and is the only row.
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"))).StatusCode);
        var rows = await gw.LedgerRowsAsync(1);
        Assert.Single(rows);
        Assert.Equal((short)200, rows[0].Status);
    }

    [Fact]
    public async Task Duplicate_json_keys_on_admin_keys_are_400_invalid_json_and_create_no_key()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        using var admin = gw.WithKey(gw.AdminKey);
        var error = await ErrorOf(await admin.PostAsync("/admin/keys", Raw("""{"name":"dup-a","name":"dup-b"}"""u8.ToArray())), HttpStatusCode.BadRequest);
        Assert.Equal("invalid_json", error["code"]!.GetValue<string>());
        Assert.Contains("'name'", error["message"]!.GetValue<string>());
        await using var conn = new NpgsqlConnection(gw.DatabaseConnectionString + ";Pooling=false");
        await conn.OpenAsync();
        Assert.Equal(0L, await new NpgsqlCommand("SELECT count(*) FROM api_keys WHERE name LIKE 'dup-%'", conn).ExecuteScalarAsync());
    }

    public static TheoryData<string, byte[]> InvalidUtf8Bodies()
    {
        static byte[] With(string before, byte[] bad, string after) => [.. Encoding.UTF8.GetBytes(before), .. bad, .. Encoding.UTF8.GetBytes(after)];
        byte[] invalid = [0xC3, 0x28, 0xFF];
        return new()
        {
            { "/v1/chat/completions", With("""{"model":"sim-small","messages":[{"role":"user","content":"a""", invalid, "\"}]}") },
            { "/v1/chat/completions", With("""{"model":"sim-sm""", invalid, "\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}") },
            { "/v1/embeddings", With("""{"model":"sim-small","input":["ok",""", invalid, "\"]}") },
            // Valid UTF-8, but an escape that is no valid UTF-16: a lone surrogate.
            { "/v1/chat/completions", Encoding.UTF8.GetBytes("""{"model":"sim-small","messages":[{"role":"user","content":"\ud800 x"}]}""") },
        };
    }

    [Theory]
    [MemberData(nameof(InvalidUtf8Bodies))]
    public async Task Invalid_utf8_anywhere_in_the_body_is_400_invalid_json(string path, byte[] body)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var error = await ErrorOf(await gw.Client.PostAsync(path, Bytes(body)), HttpStatusCode.BadRequest);
        Assert.Equal("invalid_json", error["code"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", error["type"]!.GetValue<string>());
    }

    public static TheoryData<string, byte[], int, string, string> BadMessagesBodies()
    {
        static byte[] U(string s) => Encoding.UTF8.GetBytes(s);
        const string ok = """{"model":"sim-small","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}""";
        return new()
        {
            { "/v1/messages", U("""{"model":"sim-small","model":"sim-error","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"""), 400, "invalid_request_error", "'model'" },
            { "/v1/messages", [.. U("""{"model":"sim-small","max_tokens":10,"messages":[{"role":"user","content":"a"""), 0xC3, 0x28, .. U("\"}]}")], 400, "invalid_request_error", "UTF-8" },
            { "/v1/messages", U("""{"model":"sim-small","messages":[{"role":"user","content":"hi"}]}"""), 400, "invalid_request_error", "max_tokens: Field required" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":"ten","messages":[{"role":"user","content":"hi"}]}"""), 400, "invalid_request_error", "max_tokens" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":10,"messages":"hi"}"""), 400, "invalid_request_error", "messages" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":10,"messages":[{"role":"system","content":"hi"}]}"""), 400, "invalid_request_error", "messages.0.role" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text"}]}]}"""), 400, "invalid_request_error", "messages.0.content.0.text" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":10,"temperature":1.5,"messages":[{"role":"user","content":"hi"}]}"""), 400, "invalid_request_error", "temperature" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":10,"tools":[{"name":"f"}],"messages":[{"role":"user","content":"hi"}]}"""), 400, "invalid_request_error", "tools.0.input_schema" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":10,"tool_choice":{"type":"tool","name":"g"},"messages":[{"role":"user","content":"hi"}]}"""), 400, "invalid_request_error", "tool_choice.name" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":10,"thinking":{"type":"enabled"},"messages":[{"role":"user","content":"hi"}]}"""), 400, "invalid_request_error", "thinking.budget_tokens" },
            { "/v1/messages", U("""{"model":"sim-small","max_tokens":10,"system":7,"messages":[{"role":"user","content":"hi"}]}"""), 400, "invalid_request_error", "system" },
            { "/v1/messages", U("[1,2]"), 400, "invalid_request_error", "object" },
            { "/v1/messages", U(ok.Replace("\"hi\"", "\"" + new string('x', 5 * 1024 * 1024) + "\"", StringComparison.Ordinal)), 413, "request_too_large", "too large" },
            { "/v1/messages/count_tokens", U("""{"model":"sim-small","messages":[{"role":"user","content":7}]}"""), 400, "invalid_request_error", "messages.0.content" },
            { "/v1/messages", U(ok.Replace("sim-small", "claude-nope", StringComparison.Ordinal)), 404, "not_found_error", "claude-nope" },
        };
    }

    public static TheoryData<byte[], int, string> BadResponsesBodies()
    {
        static byte[] U(string s) => Encoding.UTF8.GetBytes(s);
        return new()
        {
            { U("""{"model":"sim-small","model":"sim-error","input":"hi"}"""), 400, "model" },
            { [.. U("""{"model":"sim-small","input":"a"""), 0xC3, 0x28, .. U("\"}")], 400, "UTF-8" },
            { U("""{"model":"sim-small"}"""), 400, "input" },
            { U("""{"model":"sim-small","input":7}"""), 400, "input" },
            { U("""{"model":"sim-small","input":[{"type":"message","role":"tool","content":"hi"}]}"""), 400, "input[0].role" },
            { U("""{"model":"sim-small","input":[{"role":"user","content":[{"type":"input_video","url":"x"}]}]}"""), 400, "input[0].content[0].type" },
            { U("""{"model":"sim-small","input":[{"type":"function_call","call_id":"c","name":"f","arguments":{}}]}"""), 400, "input[0].arguments" },
            { U("""{"model":"sim-small","input":"hi","max_output_tokens":"many"}"""), 400, "max_output_tokens" },
            { U("""{"model":"sim-small","input":"hi","temperature":3}"""), 400, "temperature" },
            { U("""{"model":"sim-small","input":"hi","tools":[{"type":"function"}]}"""), 400, "tools[0].name" },
            { U("""{"model":"sim-small","input":"hi","tool_choice":{"type":"function","name":"nope"}}"""), 400, "tool_choice.name" },
            { U("""{"model":"sim-small","input":"hi","text":{"format":{"type":"json_schema","name":"x"}}}"""), 400, "text.format.schema" },
            { U("""{"model":"sim-small","input":"hi","reasoning":{"effort":"maximal"}}"""), 400, "reasoning.effort" },
            { U("""{"model":"sim-small","input":"hi","store":"yes"}"""), 400, "store" },
            { U("""{"model":"sim-small","input":"hi","previous_response_id":"resp_0123456789abcdef0123456789abcdef"}"""), 404, "previous_response_id" },
            { U("""{"model":"no-such-model","input":"hi"}"""), 404, "model" },
            { U("[1,2]"), 400, "object" },
            { U("""{"model":"sim-small","input":"hi","__helixagent_history":[{"type":"message","role":"user","content":7}]}"""), 400, "__helixagent_history" },
        };
    }

    [Theory]
    [MemberData(nameof(BadResponsesBodies))]
    public async Task Bad_input_on_the_responses_route_is_a_4xx_naming_the_field_and_writes_no_row(byte[] body, int status, string param)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var response = await gw.Client.PostAsync("/v1/responses", Bytes(body));

        var text = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"expected {status}, got {(int)response.StatusCode}: {text}");
        var error = JsonNode.Parse(text)!["error"]!;
        Assert.Equal("invalid_request_error", error["type"]!.GetValue<string>());
        Assert.True(error["param"]?.GetValue<string>() == param || error["message"]!.GetValue<string>().Contains(param, StringComparison.Ordinal), text);
        Assert.Empty(await gw.LedgerRowsAsync(0));
    }

    [Theory]
    [MemberData(nameof(BadMessagesBodies))]
    public async Task Bad_input_on_the_messages_routes_is_a_4xx_in_anthropics_shape_naming_the_field_and_writes_no_row(
        string path, byte[] body, int status, string type, string named)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var response = await gw.Client.PostAsync(path, Bytes(body));

        var text = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"expected {status}, got {(int)response.StatusCode}: {text}");
        var error = JsonNode.Parse(text)!;
        Assert.Equal("error", error["type"]!.GetValue<string>());
        Assert.Equal(type, error["error"]!["type"]!.GetValue<string>());
        Assert.Contains(named, error["error"]!["message"]!.GetValue<string>(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal(response.Headers.GetValues("request-id").Single(), error["request_id"]!.GetValue<string>());
        Assert.Empty(await gw.LedgerRowsAsync(0));
    }

    [Fact]
    public async Task The_responses_routes_answer_wrong_methods_missing_keys_and_maintenance_in_openais_shape_and_messages_in_anthropics()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        using var made = await gw.PostJsonAsync("/v1/responses", JsonNode.Parse("""{"model":"sim-small","input":"hi"}""")!.AsObject());
        var id = JsonNode.Parse(await made.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();

        var wrongMethod = await gw.Client.PutAsync("/v1/responses", Raw("{}"u8.ToArray()));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, wrongMethod.StatusCode);
        Assert.NotNull(JsonNode.Parse(await wrongMethod.Content.ReadAsStringAsync())!["error"]!["message"]);
        foreach (var anonymous in new[] { await gw.Anonymous().PostAsync("/v1/responses", Raw("""{"model":"sim-small","input":"hi"}"""u8.ToArray())),
                     await gw.Anonymous().GetAsync($"/v1/responses/{id}") })
        {
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
            Assert.NotNull(JsonNode.Parse(await anonymous.Content.ReadAsStringAsync())!["error"]!["message"]);
        }

        using var admin = gw.WithKey(gw.AdminKey);
        Assert.Equal(HttpStatusCode.OK, (await admin.PostAsync("/admin/maintenance", Raw("""{"enabled":true}"""u8.ToArray()))).StatusCode);
        try
        {
            foreach (var during in new[] { await gw.PostJsonAsync("/v1/responses", JsonNode.Parse("""{"model":"sim-small","input":"hi"}""")!.AsObject()),
                         await gw.Client.GetAsync($"/v1/responses/{id}") })
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, during.StatusCode);
                Assert.NotNull(during.Headers.RetryAfter);
                Assert.Equal("maintenance_mode", JsonNode.Parse(await during.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
            }
            // The Messages route too, in Anthropic's shape.
            using var messages = await gw.PostJsonAsync("/v1/messages", JsonNode.Parse("""{"model":"sim-small","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}""")!.AsObject());
            Assert.Equal(HttpStatusCode.ServiceUnavailable, messages.StatusCode);
            Assert.NotNull(messages.Headers.RetryAfter);
            Assert.Equal("error", JsonNode.Parse(await messages.Content.ReadAsStringAsync())!["type"]!.GetValue<string>());
        }
        finally
        {
            Assert.Equal(HttpStatusCode.OK, (await admin.PostAsync("/admin/maintenance", Raw("""{"enabled":false}"""u8.ToArray()))).StatusCode);
        }
    }

    [Fact]
    public async Task The_messages_routes_answer_unknown_methods_and_missing_keys_in_anthropics_shape()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());

        var wrongMethod = await gw.Client.GetAsync("/v1/messages");
        Assert.Equal(HttpStatusCode.MethodNotAllowed, wrongMethod.StatusCode);
        Assert.Equal("invalid_request_error", JsonNode.Parse(await wrongMethod.Content.ReadAsStringAsync())!["error"]!["type"]!.GetValue<string>());

        var anonymous = await gw.Anonymous().PostAsync("/v1/messages", Raw("""{"model":"sim-small","max_tokens":5,"messages":[]}"""u8.ToArray()));
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        var error = JsonNode.Parse(await anonymous.Content.ReadAsStringAsync())!;
        Assert.Equal(("error", "authentication_error"), (error["type"]!.GetValue<string>(), error["error"]!["type"]!.GetValue<string>()));
    }

    [Fact]
    public async Task A_huge_model_name_or_key_name_is_echoed_clipped_to_200_characters()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var model = new string('m', 100_000);
        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat(model));
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.True(text.Length < 1000, $"the 404 body is {text.Length} characters");
        Assert.Contains(new string('m', 200) + "… (100000 characters)", JsonNode.Parse(text)!["error"]!["message"]!.GetValue<string>());

        using var admin = gw.WithKey(gw.AdminKey);
        var created = await admin.PostAsync("/admin/keys", Raw(Encoding.UTF8.GetBytes($$"""{"name":"{{new string('k', 5000)}}"}""")));
        var createdText = await created.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, created.StatusCode);
        Assert.True(createdText.Length < 1000, $"the 400 body is {createdText.Length} characters");
        Assert.Contains("(5000 characters)", createdText);
    }

    [Fact]
    public async Task Rotating_with_zero_grace_stops_the_previous_key_at_once_although_it_was_cached()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        using var admin = gw.WithKey(gw.AdminKey);
        var created = JsonNode.Parse(await (await admin.PostAsync("/admin/keys", Raw("""{"name":"rotate-now"}"""u8.ToArray()))).Content.ReadAsStringAsync())!;
        using var old = gw.WithKey(created["key"]!.GetValue<string>());
        var chat = new StringContent(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "application/json");
        Assert.Equal(HttpStatusCode.OK, (await old.PostAsync("/v1/chat/completions", chat)).StatusCode); // now in the key cache

        var rotated = await admin.PostAsync("/admin/keys/rotate-now/rotate", Raw("""{"grace_hours":0}"""u8.ToArray()));
        Assert.Equal(HttpStatusCode.Created, rotated.StatusCode);
        var json = JsonNode.Parse(await rotated.Content.ReadAsStringAsync())!;
        Assert.Equal("expired", json["retiring"]![0]!["status"]!.GetValue<string>());
        Assert.True(json["all_replicas_notified"]!.GetValue<bool>());

        Assert.Equal(HttpStatusCode.Unauthorized, (await old.PostAsync("/v1/chat/completions",
            new StringContent(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "application/json"))).StatusCode);
        using var fresh = gw.WithKey(json["key"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, (await fresh.PostAsync("/v1/chat/completions",
            new StringContent(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "application/json"))).StatusCode);
    }

    [Theory]
    [InlineData("""{"grace_hours":-1}""")]
    [InlineData("""{"grace_hours":1e300}""")]
    [InlineData("""{"grace_hours":"soon"}""")]
    public async Task A_bad_grace_is_400_naming_grace_hours_and_rotates_nothing(string body)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        using var admin = gw.WithKey(gw.AdminKey);
        var error = await ErrorOf(await admin.PostAsync("/admin/keys/harness-client/rotate", Raw(Encoding.UTF8.GetBytes(body))), HttpStatusCode.BadRequest);
        Assert.Equal("grace_hours", error["param"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"))).StatusCode);
    }

    [Fact]
    public async Task On_a_429_the_request_reset_header_names_the_same_moment_as_retry_after()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var db = await TestDatabase.OpenAsync(gw.DatabaseConnectionString);
        using var limited = gw.WithKey(await db.CreateKeyAsync("three-a-minute", requestsPerMinute: 3));
        HttpResponseMessage last;
        var i = 0;
        do
        {
            last = await limited.PostAsync("/v1/chat/completions", new StringContent(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "application/json"));
        }
        while (last.StatusCode == HttpStatusCode.OK && ++i < 10);
        Assert.Equal(HttpStatusCode.TooManyRequests, last.StatusCode);
        var retryAfter = int.Parse(last.Headers.GetValues("Retry-After").Single(), System.Globalization.CultureInfo.InvariantCulture);
        var reset = GoDuration(last.Headers.GetValues("x-ratelimit-reset-requests").Single());
        Assert.Equal(retryAfter, Math.Max(1, (int)Math.Ceiling(reset.TotalSeconds)));
    }

    /// <summary>OpenAI's (Go's) duration text: <c>12ms</c>, <c>8.64s</c>, <c>1m2.4s</c>, <c>1h2m3s</c>.</summary>
    private static TimeSpan GoDuration(string text)
    {
        var match = System.Text.RegularExpressions.Regex.Match(text, @"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?(?:(\d+)ms)?$");
        Assert.True(match.Success, $"'{text}' is not a Go duration");
        double Part(int g) => match.Groups[g].Success ? double.Parse(match.Groups[g].Value, System.Globalization.CultureInfo.InvariantCulture) : 0;
        return TimeSpan.FromHours(Part(1)) + TimeSpan.FromMinutes(Part(2)) + TimeSpan.FromSeconds(Part(3)) + TimeSpan.FromMilliseconds(Part(4));
    }

    // Found by RequestFuzzTests: a tools entry that is not an object made validation throw (500).
    [Theory]
    [InlineData("""{"model":"sim-small","messages":[{"role":"user","content":"hi"}],"tools":[1]}""")]
    [InlineData("""{"model":"sim-small","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":[]}]}""")]
    [InlineData("""{"model":"sim-small","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":7}}]}""")]
    public async Task A_tool_that_is_not_an_object_with_a_function_name_is_400_naming_it(string body)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var error = await ErrorOf(await gw.Client.PostAsync("/v1/chat/completions", Raw(Encoding.UTF8.GetBytes(body))), HttpStatusCode.BadRequest);
        Assert.Equal("tools[0].function.name", error["param"]!.GetValue<string>());
    }

    // Found by RequestFuzzTests: a forced tool_choice whose function is not an object made the simulator throw (500).
    [Theory]
    [InlineData("""{"type":"function","function":"f"}""", "tool_choice.function.name")]
    [InlineData("""{"type":"function","function":{"name":"g"}}""", "tool_choice")]
    [InlineData("""7""", "tool_choice")]
    [InlineData("\"sometimes\"", "tool_choice")]
    public async Task A_tool_choice_that_is_not_a_mode_or_a_declared_function_is_400_naming_it(string toolChoice, string param)
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var body = """{"model":"sim-small","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":""" + toolChoice + "}";
        var error = await ErrorOf(await gw.Client.PostAsync("/v1/chat/completions", Raw(Encoding.UTF8.GetBytes(body))), HttpStatusCode.BadRequest);
        Assert.Equal(param, error["param"]!.GetValue<string>());
        Assert.Empty(await gw.LedgerRowsAsync(0));
    }
}
