using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway;
using HelixAgent.Api.Gateway.Providers;
using static HelixAgent.Tests.Gateway.Providers.ProviderTestHelpers;

namespace HelixAgent.Tests.Gateway.Providers;

public sealed class OllamaProviderTests
{
    private const string Model = "llama3.2";

    private static OllamaProvider Provider(CapturingHandler upstream, string? apiKey = null) => new("local", new ProviderOptions
    {
        Type = "ollama",
        BaseUrl = "http://ollama.internal:11434/",
        ApiKey = apiKey,
    }, upstream.Client());

    // Shapes of https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
    private const string TextResponse = """
        {"model":"llama3.2","created_at":"2023-12-12T14:13:43.416799Z","message":{"role":"assistant","content":"Hello! How are you today?"},
         "done":true,"done_reason":"stop","total_duration":5191566416,"load_duration":2154458,"prompt_eval_count":26,
         "prompt_eval_duration":383809000,"eval_count":298,"eval_duration":4799921000}
        """;

    private const string ToolCallResponse = """
        {"model":"llama3.2","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":"assistant","content":"",
         "tool_calls":[{"function":{"name":"get_current_weather","arguments":{"format":"celsius","location":"Paris, FR"}}}]},
         "done_reason":"stop","done":true,"total_duration":885095291,"load_duration":3753500,"prompt_eval_count":122,
         "prompt_eval_duration":328493000,"eval_count":33,"eval_duration":552222000}
        """;

    private const string TextStream = """
        {"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406Z","message":{"role":"assistant","content":"The"},"done":false}
        {"model":"llama3.2","created_at":"2023-08-04T08:52:19.485406Z","message":{"role":"assistant","content":" sky"},"done":false}
        {"model":"llama3.2","created_at":"2023-08-04T08:52:19.585406Z","message":{"role":"assistant","content":" is"},"done":false}
        {"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}

        """;

    private const string ToolCallStream = """
        {"model":"llama3.2","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_current_weather","arguments":{"location":"Paris, FR"}}}]},"done":false}
        {"model":"llama3.2","created_at":"2024-07-22T20:33:28.223648Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":122,"eval_count":33}

        """;

    [Fact]
    public async Task Ollama_request_translates_messages_images_tool_calls_options_format_and_tools()
    {
        var upstream = CapturingHandler.Json(TextResponse);
        var call = Call("""
            {
              "model": "llama3.2",
              "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": "Use metric."},
                {"role": "user", "content": [
                  {"type": "text", "text": "What is this?"},
                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                  {"id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Paris, FR\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "22C"}
              ],
              "tools": [{"type": "function", "function": {"name": "get_current_weather", "description": "Weather",
                         "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
              "temperature": 0.1,
              "top_p": 0.5,
              "max_tokens": 128,
              "stop": "\n\n",
              "seed": 42,
              "response_format": {"type": "json_object"},
              "stream": false
            }
            """, Model);
        var before = call.Request.ToJsonString();

        await Provider(upstream).CompleteAsync(call, CancellationToken.None);

        Assert.Equal(before, call.Request.ToJsonString());
        var sent = upstream.Last;
        Assert.Equal("http://ollama.internal:11434/api/chat", sent.Uri.ToString());
        Assert.Null(sent.Header("Authorization"));
        Assert.Equal(JsonNode.Parse("""
            {
              "model": "llama3.2",
              "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "system", "content": "Use metric."},
                {"role": "user", "content": "What is this?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_current_weather", "arguments": {"location": "Paris, FR"}}}]},
                {"role": "tool", "content": "22C", "tool_name": "get_current_weather"}
              ],
              "stream": false,
              "options": {"temperature": 0.1, "top_p": 0.5, "num_predict": 128, "stop": ["\n\n"], "seed": 42},
              "format": "json",
              "tools": [{"type": "function", "function": {"name": "get_current_weather", "description": "Weather",
                         "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
            }
            """), sent.Json, JsonNode.DeepEquals);
    }

    [Fact]
    public async Task Ollama_json_schema_response_format_is_sent_as_the_format_schema_and_streams_say_stream_true()
    {
        var upstream = CapturingHandler.Ndjson(TextStream);
        await CollectAsync(Provider(upstream).StreamAsync(Call("""
            {"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":9,"stream":true,
             "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"type":"integer"}}}}}}
            """, Model), CancellationToken.None));
        var body = upstream.Last.Json;
        Assert.True((bool)body["stream"]!);
        Assert.Equal(9, (int)body["options"]!["num_predict"]!);
        Assert.Equal(JsonNode.Parse("""{"type":"object","properties":{"a":{"type":"integer"}}}"""), body["format"], JsonNode.DeepEquals);
    }

    [Fact]
    public async Task Ollama_http_image_urls_are_a_bad_request_because_ollama_fetches_no_urls()
    {
        var upstream = CapturingHandler.Json(TextResponse);
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => Provider(upstream).CompleteAsync(Call("""
            {"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}
            """, Model), CancellationToken.None));
        Assert.Equal(UpstreamFailure.BadRequest, ex.Kind);
        Assert.Empty(upstream.Requests);
    }

    [Fact]
    public async Task Ollama_response_becomes_an_openai_completion_with_usage_and_created_time()
    {
        var result = await Provider(CapturingHandler.Json(TextResponse)).CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None);
        var r = result.Response;
        Assert.Equal("chat.completion", (string?)r["object"]);
        Assert.Equal("chatcmpl-req1", (string?)r["id"]);
        Assert.Equal("llama3.2", (string?)r["model"]);
        Assert.Equal(new DateTimeOffset(2023, 12, 12, 14, 13, 43, TimeSpan.Zero).ToUnixTimeSeconds(), (long)r["created"]!);
        Assert.Equal("Hello! How are you today?", (string?)r["choices"]![0]!["message"]!["content"]);
        Assert.Equal("stop", (string?)r["choices"]![0]!["finish_reason"]);
        Assert.Equal(new TokenUsage(26, 298), result.Usage);
        Assert.Equal(324, (int)r["usage"]!["total_tokens"]!);
    }

    [Fact]
    public async Task Ollama_tool_calls_get_ids_and_json_string_arguments_with_finish_reason_tool_calls()
    {
        var result = await Provider(CapturingHandler.Json(ToolCallResponse)).CompleteAsync(Call("""{"messages":[{"role":"user","content":"weather?"}]}""", Model), CancellationToken.None);
        var choice = result.Response["choices"]![0]!;
        Assert.Equal("tool_calls", (string?)choice["finish_reason"]);
        Assert.Null(choice["message"]!["content"]);
        var call = choice["message"]!["tool_calls"]![0]!;
        Assert.StartsWith("call_", (string)call["id"]!, StringComparison.Ordinal);
        Assert.Equal("function", (string?)call["type"]);
        Assert.Equal("get_current_weather", (string?)call["function"]!["name"]);
        Assert.Equal(JsonNode.Parse("""{"format":"celsius","location":"Paris, FR"}"""), JsonNode.Parse((string)call["function"]!["arguments"]!), JsonNode.DeepEquals);
    }

    [Fact]
    public async Task Ollama_done_reason_length_maps_to_finish_reason_length()
    {
        var body = TextResponse.Replace("\"done_reason\":\"stop\"", "\"done_reason\":\"length\"", StringComparison.Ordinal);
        var result = await Provider(CapturingHandler.Json(body)).CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None);
        Assert.Equal("length", (string?)result.Response["choices"]![0]!["finish_reason"]);
    }

    [Fact]
    public async Task Ollama_ndjson_stream_becomes_role_chunk_then_content_deltas_then_finish_and_usage_chunks()
    {
        var chunks = await CollectAsync(Provider(CapturingHandler.Ndjson(TextStream)).StreamAsync(Call("""{"messages":[{"role":"user","content":"sky?"}],"stream":true}""", Model), CancellationToken.None));

        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string?)c.Chunk["object"]));
        Assert.All(chunks, c => Assert.Equal("chatcmpl-req1", (string?)c.Chunk["id"]));
        Assert.Equal("assistant", (string?)Delta(chunks[0])["role"]);
        Assert.False(chunks[0].HasContent);
        Assert.Equal(3, chunks.Count(c => c.HasContent));
        Assert.Equal("The sky is", Text(chunks));
        Assert.Equal("length", Finish(chunks[^2]));
        Assert.False(chunks[^2].HasContent);
        Assert.Empty(chunks[^1].Chunk["choices"]!.AsArray());
        Assert.Equal(new TokenUsage(26, 282), chunks[^1].Usage);
        Assert.Equal(308, (int)chunks[^1].Chunk["usage"]!["total_tokens"]!);
    }

    [Fact]
    public async Task Ollama_stream_tool_call_becomes_a_tool_call_delta_and_finish_reason_tool_calls()
    {
        var chunks = await CollectAsync(Provider(CapturingHandler.Ndjson(ToolCallStream)).StreamAsync(Call("""{"messages":[{"role":"user","content":"weather?"}]}""", Model), CancellationToken.None));
        var tool = chunks.Single(c => c.Chunk["choices"]!.AsArray().Count > 0 && Delta(c)["tool_calls"] is not null);
        Assert.True(tool.HasContent);
        var call = Delta(tool)["tool_calls"]![0]!;
        Assert.Equal(0, (int)call["index"]!);
        Assert.StartsWith("call_", (string)call["id"]!, StringComparison.Ordinal);
        Assert.Equal("get_current_weather", (string?)call["function"]!["name"]);
        Assert.Equal("""{"location":"Paris, FR"}""", ToolArguments(chunks, 0));
        Assert.Equal("tool_calls", Finish(chunks[^2]));
        Assert.Equal(new TokenUsage(122, 33), chunks[^1].Usage);
    }

    [Fact]
    public async Task Ollama_stream_that_ends_without_done_true_is_a_protocol_failure()
    {
        var cut = string.Join('\n', TextStream.Split('\n').Take(2));
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => CollectAsync(Provider(CapturingHandler.Ndjson(cut))
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None)));
        Assert.Equal(UpstreamFailure.Protocol, ex.Kind);
    }

    [Fact]
    public async Task Ollama_error_line_mid_stream_is_a_retryable_server_error()
    {
        var stream = TextStream.Split('\n')[0] + "\n" + """{"error":"an error was encountered while running the model: unexpected EOF"}""" + "\n";
        var chunks = new List<ChatChunk>();
        var ex = await Assert.ThrowsAsync<UpstreamException>(async () =>
        {
            await foreach (var chunk in Provider(CapturingHandler.Ndjson(stream)).StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None))
            {
                chunks.Add(chunk);
            }
        });
        Assert.Equal(UpstreamFailure.ServerError, ex.Kind);
        Assert.True(ex.IsRetryable);
        Assert.Contains("unexpected EOF", ex.Message, StringComparison.Ordinal);
        Assert.Equal("The", Text(chunks));
    }

    [Fact]
    public async Task Ollama_404_model_not_found_is_a_bad_request_that_is_not_retried()
    {
        var upstream = CapturingHandler.Json("""{"error":"model \"llama9\" not found, try pulling it first"}""", HttpStatusCode.NotFound);
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => Provider(upstream)
            .CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", "llama9"), CancellationToken.None));
        Assert.Equal(UpstreamFailure.BadRequest, ex.Kind);
        Assert.False(ex.IsRetryable);
        Assert.Contains("try pulling it first", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Ollama_refused_connection_is_a_connect_failure()
    {
        var upstream = new CapturingHandler(() => throw new HttpRequestException("Connection refused (ollama.internal:11434)"));
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => CollectAsync(Provider(upstream)
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None)));
        Assert.Equal(UpstreamFailure.Connect, ex.Kind);
        Assert.True(ex.IsRetryable);
    }

    [Fact]
    public async Task Ollama_embeddings_use_api_embed_and_report_prompt_eval_count()
    {
        var upstream = CapturingHandler.Json("""
            {"model":"all-minilm","embeddings":[[0.010071029,-0.0017594862,0.05007221],[-0.0098027075,0.06042469,0.025104341]],
             "total_duration":14143917,"load_duration":1019500,"prompt_eval_count":8}
            """);
        var provider = Provider(upstream, apiKey: "proxy-key");
        Assert.True(provider.SupportsEmbeddings);
        var result = await provider.EmbedAsync(new EmbeddingCall(Request("""{"model":"all-minilm","input":["Why is the sky blue?","Why is the grass green?"]}"""), "all-minilm", "req1"), CancellationToken.None);

        Assert.Equal("http://ollama.internal:11434/api/embed", upstream.Last.Uri.ToString());
        Assert.Equal("Bearer proxy-key", upstream.Last.Header("Authorization"));
        Assert.Equal(JsonNode.Parse("""{"model":"all-minilm","input":["Why is the sky blue?","Why is the grass green?"]}"""), upstream.Last.Json, JsonNode.DeepEquals);
        var r = result.Response;
        Assert.Equal("list", (string?)r["object"]);
        Assert.Equal(2, r["data"]!.AsArray().Count);
        Assert.Equal(1, (int)r["data"]![1]!["index"]!);
        Assert.Equal(-0.0098027075, (double)r["data"]![1]!["embedding"]![0]!);
        Assert.Equal(new TokenUsage(8, 0), result.Usage);
        Assert.Equal(8, (int)r["usage"]!["prompt_tokens"]!);
    }

    [Fact]
    public async Task Ollama_probe_lists_tags()
    {
        var upstream = CapturingHandler.Json("""{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","size":2019393189}]}""");
        var provider = Provider(upstream);
        await provider.ProbeAsync(CancellationToken.None);
        Assert.Equal(HttpMethod.Get, upstream.Last.Method);
        Assert.Equal("http://ollama.internal:11434/api/tags", upstream.Last.Uri.ToString());
        Assert.Equal("ollama", provider.Type);
        Assert.Equal("local", provider.Name);
    }
}
