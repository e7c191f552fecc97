using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway;
using HelixAgent.Api.Gateway.Providers;
using static HelixAgent.Tests.Gateway.Providers.ProviderTestHelpers;

namespace HelixAgent.Tests.Gateway.Providers;

public sealed class AnthropicProviderTests
{
    private const string Model = "claude-sonnet-4-5";

    private static AnthropicProvider Provider(CapturingHandler upstream, string? baseUrl = null) => new("claude", new ProviderOptions
    {
        Type = "anthropic",
        ApiKey = "sk-ant-test",
        BaseUrl = baseUrl,
        Headers = { ["anthropic-beta"] = "tools-2024-05-16" },
    }, upstream.Client());

    // Shape of https://docs.anthropic.com/en/api/messages (response with a tool call).
    private const string ToolUseResponse = """
        {
          "id": "msg_01Aq9w938a90dw8q",
          "type": "message",
          "role": "assistant",
          "model": "claude-sonnet-4-5-20250929",
          "content": [
            {"type": "text", "text": "I'll check the weather."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
          ],
          "stop_reason": "tool_use",
          "stop_sequence": null,
          "usage": {"input_tokens": 472, "output_tokens": 89}
        }
        """;

    private const string TextResponse = """
        {"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
         "content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,
         "usage":{"input_tokens":2095,"output_tokens":503}}
        """;

    // Shape of https://docs.anthropic.com/en/docs/build-with-claude/streaming (text then tool use).
    private const string ToolUseStream = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather for San Francisco, CA:"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: content_block_start
        data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":1}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

        event: message_stop
        data: {"type":"message_stop"}


        """;

    private const string TextStreamStart = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}


        """;

    private const string TextStreamEnd = """
        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":15}}

        event: message_stop
        data: {"type":"message_stop"}


        """;

    private const string ConversationRequest = """
        {
          "model": "claude-sonnet-4-5",
          "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
              {"type": "text", "text": "Weather here and in Paris?"},
              {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
              {"type": "image_url", "image_url": {"url": "https://example.com/map.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
              {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"SF\"}"}},
              {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "21C"}]},
            {"role": "user", "content": "Thanks"}
          ],
          "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}],
          "tool_choice": "required",
          "stop": "END",
          "temperature": 0.2,
          "top_p": 0.9,
          "user": "user-42",
          "stream": false
        }
        """;

    [Fact]
    public async Task Anthropic_request_moves_system_to_top_level_and_translates_images_tools_tool_calls_and_merged_tool_results()
    {
        var upstream = CapturingHandler.Json(TextResponse);
        var call = Call(ConversationRequest, Model);
        var before = call.Request.ToJsonString();

        await Provider(upstream).CompleteAsync(call, CancellationToken.None);

        Assert.Equal(before, call.Request.ToJsonString()); // the client's request is not mutated
        var sent = upstream.Last;
        Assert.Equal(HttpMethod.Post, sent.Method);
        Assert.Equal("https://api.anthropic.com/v1/messages", sent.Uri.ToString());
        Assert.Equal("application/json", sent.ContentType);
        Assert.Equal("sk-ant-test", sent.Header("x-api-key"));
        Assert.Equal("2023-06-01", sent.Header("anthropic-version"));
        Assert.Equal("tools-2024-05-16", sent.Header("anthropic-beta"));

        var body = sent.Json;
        Assert.Equal(Model, (string?)body["model"]);
        Assert.Equal("You are terse.\n\nUse metric units.", (string?)body["system"]);
        Assert.Equal(4096, (int)body["max_tokens"]!); // Anthropic requires it: default when the client gave none
        Assert.Equal(["END"], body["stop_sequences"]!.AsArray().Select(s => (string?)s));
        Assert.Equal(0.2, (double)body["temperature"]!);
        Assert.Equal(0.9, (double)body["top_p"]!);
        Assert.Equal("user-42", (string?)body["metadata"]!["user_id"]);
        Assert.Null(body["stream"]);

        var messages = body["messages"]!.AsArray();
        Assert.Equal(3, messages.Count); // user, assistant, user(tool results + "Thanks")
        var user = messages[0]!;
        Assert.Equal("user", (string?)user["role"]);
        Assert.Equal("Weather here and in Paris?", (string?)user["content"]![0]!["text"]);
        Assert.Equal(JsonNode.Parse("""{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}"""),
            user["content"]![1], JsonNode.DeepEquals);
        Assert.Equal(JsonNode.Parse("""{"type":"image","source":{"type":"url","url":"https://example.com/map.jpg"}}"""),
            user["content"]![2], JsonNode.DeepEquals);

        var assistant = messages[1]!;
        Assert.Equal("assistant", (string?)assistant["role"]);
        Assert.Equal(JsonNode.Parse("""
            [{"type":"tool_use","id":"call_a","name":"get_weather","input":{"location":"SF"}},
             {"type":"tool_use","id":"call_b","name":"get_weather","input":{"location":"Paris"}}]
            """), assistant["content"], JsonNode.DeepEquals);

        var results = messages[2]!;
        Assert.Equal("user", (string?)results["role"]);
        Assert.Equal(JsonNode.Parse("""
            [{"type":"tool_result","tool_use_id":"call_a","content":"18C"},
             {"type":"tool_result","tool_use_id":"call_b","content":"21C"},
             {"type":"text","text":"Thanks"}]
            """), results["content"], JsonNode.DeepEquals);

        Assert.Equal(JsonNode.Parse("""
            [{"name":"get_weather","description":"Current weather",
              "input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}]
            """), body["tools"], JsonNode.DeepEquals);
        Assert.Equal("any", (string?)body["tool_choice"]!["type"]);
    }

    [Theory]
    [InlineData("\"auto\"", """{"type":"auto"}""")]
    [InlineData("\"required\"", """{"type":"any"}""")]
    [InlineData("\"none\"", """{"type":"none"}""")]
    [InlineData("""{"type":"function","function":{"name":"get_weather"}}""", """{"type":"tool","name":"get_weather"}""")]
    public async Task Anthropic_tool_choice_maps_to_anthropic_tool_choice(string openAi, string anthropic)
    {
        var upstream = CapturingHandler.Json(TextResponse);
        await Provider(upstream).CompleteAsync(Call($$"""
            {"messages":[{"role":"user","content":"hi"}],
             "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{} } } }],
             "tool_choice": {{openAi}} }
            """, Model), CancellationToken.None);
        Assert.Equal(JsonNode.Parse(anthropic), upstream.Last.Json["tool_choice"], JsonNode.DeepEquals);
    }

    [Fact]
    public async Task Anthropic_max_completion_tokens_and_stop_array_are_translated_and_stream_flag_is_set_for_streams()
    {
        var upstream = CapturingHandler.Sse(ToolUseStream);
        await CollectAsync(Provider(upstream).StreamAsync(Call("""
            {"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":256,"stop":["a","b"],"stream":true}
            """, Model), CancellationToken.None));
        var body = upstream.Last.Json;
        Assert.Equal(256, (int)body["max_tokens"]!);
        Assert.Equal(["a", "b"], body["stop_sequences"]!.AsArray().Select(s => (string?)s));
        Assert.True((bool)body["stream"]!);
    }

    [Theory]
    [InlineData("https://proxy.example/anthropic/v1/", "https://proxy.example/anthropic/v1/messages")]
    [InlineData("https://proxy.example/anthropic/", "https://proxy.example/anthropic/v1/messages")]
    public async Task Anthropic_base_url_gets_v1_once(string baseUrl, string expected)
    {
        var upstream = CapturingHandler.Json(TextResponse);
        await Provider(upstream, baseUrl).CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None);
        Assert.Equal(expected, upstream.Last.Uri.ToString());
    }

    [Fact]
    public async Task Anthropic_response_text_and_tool_use_become_an_openai_message_with_tool_calls()
    {
        var result = await Provider(CapturingHandler.Json(ToolUseResponse)).CompleteAsync(Call("""{"messages":[{"role":"user","content":"weather?"}]}""", Model), CancellationToken.None);

        var r = result.Response;
        Assert.Equal("chat.completion", (string?)r["object"]);
        Assert.Equal("chatcmpl-msg_01Aq9w938a90dw8q", (string?)r["id"]);
        Assert.Equal("claude-sonnet-4-5-20250929", (string?)r["model"]);
        Assert.True((long)r["created"]! > 1_600_000_000);
        var choice = r["choices"]![0]!;
        Assert.Equal("tool_calls", (string?)choice["finish_reason"]);
        var message = choice["message"]!;
        Assert.Equal("assistant", (string?)message["role"]);
        Assert.Equal("I'll check the weather.", (string?)message["content"]);
        var toolCall = message["tool_calls"]![0]!;
        Assert.Equal("toolu_01A09q90qw90lq917835lq9", (string?)toolCall["id"]);
        Assert.Equal("function", (string?)toolCall["type"]);
        Assert.Equal("get_weather", (string?)toolCall["function"]!["name"]);
        Assert.Equal(JsonNode.Parse("""{"location":"San Francisco, CA","unit":"celsius"}"""),
            JsonNode.Parse((string)toolCall["function"]!["arguments"]!), JsonNode.DeepEquals);
        Assert.Equal(new TokenUsage(472, 89), result.Usage);
        Assert.Equal(561, (int)r["usage"]!["total_tokens"]!);
    }

    [Theory]
    [InlineData("end_turn", "stop")]
    [InlineData("stop_sequence", "stop")]
    [InlineData("max_tokens", "length")]
    [InlineData("tool_use", "tool_calls")]
    public async Task Anthropic_stop_reason_maps_to_openai_finish_reason(string stopReason, string finishReason)
    {
        var body = TextResponse.Replace("\"end_turn\"", $"\"{stopReason}\"", StringComparison.Ordinal);
        var result = await Provider(CapturingHandler.Json(body)).CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None);
        Assert.Equal(finishReason, (string?)result.Response["choices"]![0]!["finish_reason"]);
        Assert.Equal("Hi! My name is Claude.", (string?)result.Response["choices"]![0]!["message"]!["content"]);
    }

    [Fact]
    public async Task Anthropic_stream_text_becomes_role_chunk_then_content_deltas_then_finish_and_usage_chunks()
    {
        var chunks = await CollectAsync(Provider(CapturingHandler.Sse(TextStreamStart + TextStreamEnd))
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}],"stream":true}""", Model), CancellationToken.None));

        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string?)c.Chunk["object"]));
        Assert.All(chunks, c => Assert.Equal("chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", (string?)c.Chunk["id"]));
        Assert.All(chunks, c => Assert.Equal("claude-sonnet-4-5-20250929", (string?)c.Chunk["model"]));

        var first = chunks[0];
        Assert.Equal("assistant", (string?)Delta(first)["role"]);
        Assert.False(first.HasContent);
        Assert.Equal("Hello!", Text(chunks));
        Assert.True(chunks[1].HasContent);
        Assert.Equal("Hello", (string?)Delta(chunks[1])["content"]);

        var finish = chunks[^2];
        Assert.Equal("length", Finish(finish));
        Assert.False(finish.HasContent);
        Assert.Empty(Delta(finish));

        var usage = chunks[^1];
        Assert.Empty(usage.Chunk["choices"]!.AsArray());
        Assert.Equal(new TokenUsage(25, 15), usage.Usage);
        Assert.Equal(40, (int)usage.Chunk["usage"]!["total_tokens"]!);
        Assert.False(usage.HasContent);
        Assert.Single(chunks, c => c.Usage is not null);
    }

    [Fact]
    public async Task Anthropic_stream_tool_use_becomes_openai_tool_call_deltas()
    {
        var chunks = await CollectAsync(Provider(CapturingHandler.Sse(ToolUseStream))
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"weather?"}],"stream":true}""", Model), CancellationToken.None));

        var toolStart = chunks.Single(c => c.Chunk["choices"]!.AsArray().Count > 0 && Delta(c)["tool_calls"]?[0]?["id"] is not null);
        Assert.True(toolStart.HasContent);
        var call = Delta(toolStart)["tool_calls"]![0]!;
        Assert.Equal(0, (int)call["index"]!); // the first tool call, although it is content block 1
        Assert.Equal("toolu_01T1x1fJ34qAmk2tNTrN7Up6", (string?)call["id"]);
        Assert.Equal("function", (string?)call["type"]);
        Assert.Equal("get_weather", (string?)call["function"]!["name"]);
        Assert.Equal("", (string?)call["function"]!["arguments"]);

        Assert.Equal("""{"location": "San Francisco, CA"}""", ToolArguments(chunks, 0));
        Assert.All(chunks.Where(c => c.Chunk["choices"]!.AsArray().Count > 0 && Delta(c)["tool_calls"] is not null), c => Assert.True(c.HasContent));
        Assert.Equal("Okay, let's check the weather for San Francisco, CA:", Text(chunks));
        Assert.Equal("tool_calls", Finish(chunks[^2]));
        Assert.Equal(new TokenUsage(472, 89), chunks[^1].Usage);
    }

    [Fact]
    public async Task Anthropic_stream_that_ends_without_message_stop_is_a_protocol_failure()
    {
        var chunks = new List<ChatChunk>();
        var ex = await Assert.ThrowsAsync<UpstreamException>(async () =>
        {
            await foreach (var chunk in Provider(CapturingHandler.Sse(TextStreamStart))
                .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None))
            {
                chunks.Add(chunk);
            }
        });
        Assert.Equal(UpstreamFailure.Protocol, ex.Kind);
        Assert.Contains("ended early", ex.Message, StringComparison.Ordinal);
        Assert.True(ex.IsRetryable);
        Assert.Equal("Hello", Text(chunks)); // what came before the cut was delivered
    }

    [Fact]
    public async Task Anthropic_stream_cut_by_a_connection_reset_is_a_protocol_failure()
    {
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => CollectAsync(Provider(CapturingHandler.Broken(TextStreamStart, "text/event-stream"))
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None)));
        Assert.Equal(UpstreamFailure.Protocol, ex.Kind);
    }

    [Fact]
    public async Task Anthropic_overloaded_error_event_mid_stream_is_a_retryable_server_error()
    {
        var stream = TextStreamStart + """
            event: error
            data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


            """;
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => CollectAsync(Provider(CapturingHandler.Sse(stream))
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None)));
        Assert.Equal(UpstreamFailure.ServerError, ex.Kind);
        Assert.True(ex.IsRetryable);
        Assert.Contains("Overloaded", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Anthropic_429_with_retry_after_is_rate_limited_with_its_retry_after()
    {
        var upstream = CapturingHandler.Json("""{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}""",
            HttpStatusCode.TooManyRequests, r => r.Headers.Add("Retry-After", "17"));
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => Provider(upstream)
            .CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None));
        Assert.Equal(UpstreamFailure.RateLimited, ex.Kind);
        Assert.Equal(TimeSpan.FromSeconds(17), ex.RetryAfter);
        Assert.Equal(429, ex.StatusCode);
        Assert.Contains("per-minute rate limit", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Anthropic_429_on_a_stream_surfaces_on_the_first_move_next()
    {
        var upstream = CapturingHandler.Json("""{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}""",
            HttpStatusCode.TooManyRequests, r => r.Headers.Add("Retry-After", "3"));
        await using var enumerator = Provider(upstream)
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None).GetAsyncEnumerator();
        Assert.Empty(upstream.Requests); // nothing sent before the first MoveNextAsync
        var ex = await Assert.ThrowsAsync<UpstreamException>(async () => await enumerator.MoveNextAsync());
        Assert.Equal(UpstreamFailure.RateLimited, ex.Kind);
        Assert.Equal(TimeSpan.FromSeconds(3), ex.RetryAfter);
    }

    [Fact]
    public async Task Anthropic_529_overloaded_is_a_retryable_server_error()
    {
        var upstream = CapturingHandler.Json("""{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}""", (HttpStatusCode)529);
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => Provider(upstream)
            .CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None));
        Assert.Equal(UpstreamFailure.ServerError, ex.Kind);
        Assert.Equal(529, ex.StatusCode);
        Assert.True(ex.IsRetryable);
    }

    [Fact]
    public async Task Anthropic_400_is_a_bad_request_that_is_not_retried()
    {
        var upstream = CapturingHandler.Json("""{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}""", HttpStatusCode.BadRequest);
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => Provider(upstream)
            .CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None));
        Assert.Equal(UpstreamFailure.BadRequest, ex.Kind);
        Assert.False(ex.IsRetryable);
        Assert.Contains("max_tokens: Field required", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Anthropic_cancellation_propagates_as_operation_canceled()
    {
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Provider(CapturingHandler.Json(TextResponse))
            .CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), cts.Token));
    }

    [Fact]
    public async Task Anthropic_embeddings_are_refused_as_a_bad_request()
    {
        var provider = Provider(CapturingHandler.Json("{}"));
        Assert.False(provider.SupportsEmbeddings);
        Assert.Equal("anthropic", provider.Type);
        Assert.Equal("claude", provider.Name);
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => provider.EmbedAsync(
            new EmbeddingCall(Request("""{"input":"x"}"""), Model, "req1"), CancellationToken.None));
        Assert.Equal(UpstreamFailure.BadRequest, ex.Kind);
        Assert.Equal(400, ex.StatusCode);
    }

    [Fact]
    public async Task Anthropic_probe_lists_one_model_with_the_api_key()
    {
        var upstream = CapturingHandler.Json("""{"data":[{"type":"model","id":"claude-sonnet-4-5-20250929"}],"has_more":true}""");
        await Provider(upstream).ProbeAsync(CancellationToken.None);
        Assert.Equal(HttpMethod.Get, upstream.Last.Method);
        Assert.Equal("https://api.anthropic.com/v1/models?limit=1", upstream.Last.Uri.ToString());
        Assert.Equal("sk-ant-test", upstream.Last.Header("x-api-key"));
    }

    [Fact]
    public async Task Anthropic_probe_with_a_bad_key_is_unauthorized()
    {
        var upstream = CapturingHandler.Json("""{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}""", HttpStatusCode.Unauthorized);
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => Provider(upstream).ProbeAsync(CancellationToken.None));
        Assert.Equal(UpstreamFailure.Unauthorized, ex.Kind);
    }
}
