using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway;
using HelixAgent.Api.Gateway.Providers;
using static HelixAgent.Tests.Gateway.Providers.ProviderTestHelpers;

namespace HelixAgent.Tests.Gateway.Providers;

public sealed class GeminiProviderTests
{
    private const string Model = "gemini-2.0-flash";

    private static GeminiProvider Provider(CapturingHandler upstream) => new("gemini", new ProviderOptions
    {
        Type = "gemini",
        ApiKey = "AIza-test",
    }, upstream.Client());

    // Shape of https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse
    private const string TextResponse = """
        {
          "candidates": [
            {
              "content": {"parts": [{"text": "Hello! "}, {"text": "How can I help?"}], "role": "model"},
              "finishReason": "STOP",
              "avgLogprobs": -0.05
            }
          ],
          "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 8, "totalTokenCount": 13,
                            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5}]},
          "modelVersion": "gemini-2.0-flash",
          "responseId": "mkN0aJ-5EoOqnvgPv8ncoAM"
        }
        """;

    private const string FunctionCallResponse = """
        {
          "candidates": [{
            "content": {"role": "model", "parts": [
              {"functionCall": {"name": "get_weather", "args": {"location": "Boston", "unit": "celsius"}}},
              {"functionCall": {"name": "get_time", "args": {"tz": "America/New_York"}}}
            ]},
            "finishReason": "STOP",
            "index": 0
          }],
          "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 5, "totalTokenCount": 45},
          "modelVersion": "gemini-2.0-flash"
        }
        """;

    // streamGenerateContent?alt=sse sends CRLF-separated events, each a GenerateContentResponse.
    private const string TextStream =
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 8},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"Yz1oaKXvL\"}\r\n\r\n" +
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" sky is blue\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 8},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"Yz1oaKXvL\"}\r\n\r\n" +
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \".\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 6,\"totalTokenCount\": 14},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"Yz1oaKXvL\"}\r\n\r\n";

    private const string FunctionCallStream = """
        data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"location": "Boston"}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 30,"candidatesTokenCount": 6,"totalTokenCount": 36},"modelVersion": "gemini-2.0-flash"}


        """;

    private const string ConversationRequest = """
        {
          "model": "gemini-2.0-flash",
          "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
              {"type": "text", "text": "What is in this picture, and the weather?"},
              {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
            ]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
              {"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Boston\"}"}},
              {"id": "call_t", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_w", "content": "{\"temp\": 21}"},
            {"role": "tool", "tool_call_id": "call_t", "content": "10:42"}
          ],
          "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
              "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
                             "properties": {"location": {"type": "string"}, "additionalProperties": {"type": "string"}}, "required": ["location"]}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
          ],
          "tool_choice": "required",
          "temperature": 0.5,
          "top_p": 0.8,
          "max_tokens": 300,
          "stop": ["###"],
          "n": 2,
          "seed": 7,
          "response_format": {"type": "json_object"}
        }
        """;

    [Fact]
    public async Task Gemini_request_puts_system_in_systemInstruction_and_maps_roles_images_tool_calls_and_function_responses()
    {
        var upstream = CapturingHandler.Json(TextResponse);
        var call = Call(ConversationRequest, Model);
        var before = call.Request.ToJsonString();

        await Provider(upstream).CompleteAsync(call, CancellationToken.None);

        Assert.Equal(before, call.Request.ToJsonString());
        var sent = upstream.Last;
        Assert.Equal("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent", sent.Uri.ToString());
        Assert.Equal("AIza-test", sent.Header("x-goog-api-key"));
        Assert.DoesNotContain("key=", sent.Uri.Query, StringComparison.Ordinal);

        var body = sent.Json;
        Assert.Equal(JsonNode.Parse("""{"parts":[{"text":"You are terse."}]}"""), body["systemInstruction"], JsonNode.DeepEquals);
        Assert.Equal(JsonNode.Parse("""
            [
              {"role":"user","parts":[{"text":"What is in this picture, and the weather?"},{"inlineData":{"mimeType":"image/jpeg","data":"/9j/4AAQ"}}]},
              {"role":"model","parts":[{"text":"Let me look."},
                                       {"functionCall":{"name":"get_weather","args":{"location":"Boston"}}},
                                       {"functionCall":{"name":"get_time","args":{}}}]},
              {"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"content":{"temp":21}}}},
                                      {"functionResponse":{"name":"get_time","response":{"content":{"result":"10:42"}}}}]}
            ]
            """), body["contents"], JsonNode.DeepEquals);
        Assert.Equal(JsonNode.Parse("""
            {"temperature":0.5,"topP":0.8,"maxOutputTokens":300,"stopSequences":["###"],"candidateCount":2,"seed":7,
             "responseMimeType":"application/json"}
            """), body["generationConfig"], JsonNode.DeepEquals);
        // $schema / additionalProperties are dropped (Gemini rejects them) but a property of that name is kept; a
        // parameterless object schema is omitted (Gemini rejects empty OBJECT properties).
        Assert.Equal(JsonNode.Parse("""
            [{"functionDeclarations":[
              {"name":"get_weather","description":"Current weather",
               "parameters":{"type":"object","properties":{"location":{"type":"string"},"additionalProperties":{"type":"string"}},"required":["location"]}},
              {"name":"get_time"}
            ]}]
            """), body["tools"], JsonNode.DeepEquals);
        Assert.Equal(JsonNode.Parse("""{"functionCallingConfig":{"mode":"ANY"}}"""), body["toolConfig"], JsonNode.DeepEquals);
    }

    [Fact]
    public async Task Gemini_max_completion_tokens_becomes_maxOutputTokens_and_a_single_stop_string_a_list()
    {
        var upstream = CapturingHandler.Json(TextResponse);
        await Provider(upstream).CompleteAsync(Call("""
            {"messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":"hi"}],"max_completion_tokens":64,"stop":"END"}
            """, Model), CancellationToken.None);
        var body = upstream.Last.Json;
        Assert.Equal(64, (int)body["generationConfig"]!["maxOutputTokens"]!);
        Assert.Equal(["END"], body["generationConfig"]!["stopSequences"]!.AsArray().Select(s => (string?)s));
        Assert.Equal("Be brief.", (string?)body["systemInstruction"]!["parts"]![0]!["text"]);
        Assert.Equal(JsonNode.Parse("""[{"role":"user","parts":[{"text":"hi"}]}]"""), body["contents"], JsonNode.DeepEquals);
    }

    [Fact]
    public async Task Gemini_response_text_parts_become_openai_message_content_with_usage()
    {
        var result = await Provider(CapturingHandler.Json(TextResponse)).CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None);
        var r = result.Response;
        Assert.Equal("chat.completion", (string?)r["object"]);
        Assert.Equal("chatcmpl-mkN0aJ-5EoOqnvgPv8ncoAM", (string?)r["id"]);
        Assert.Equal("gemini-2.0-flash", (string?)r["model"]);
        Assert.Equal("Hello! How can I help?", (string?)r["choices"]![0]!["message"]!["content"]);
        Assert.Equal("assistant", (string?)r["choices"]![0]!["message"]!["role"]);
        Assert.Equal("stop", (string?)r["choices"]![0]!["finish_reason"]);
        Assert.Equal(new TokenUsage(5, 8), result.Usage);
        Assert.Equal(13, (int)r["usage"]!["total_tokens"]!);
    }

    [Fact]
    public async Task Gemini_function_calls_become_openai_tool_calls_with_finish_reason_tool_calls()
    {
        var result = await Provider(CapturingHandler.Json(FunctionCallResponse)).CompleteAsync(Call("""{"messages":[{"role":"user","content":"weather?"}]}""", Model), CancellationToken.None);
        var choice = result.Response["choices"]![0]!;
        Assert.Equal("tool_calls", (string?)choice["finish_reason"]);
        Assert.Null(choice["message"]!["content"]);
        var calls = choice["message"]!["tool_calls"]!.AsArray();
        Assert.Equal(2, calls.Count);
        Assert.All(calls, c => Assert.StartsWith("call_", (string)c!["id"]!, StringComparison.Ordinal));
        Assert.NotEqual((string?)calls[0]!["id"], (string?)calls[1]!["id"]);
        Assert.Equal("function", (string?)calls[0]!["type"]);
        Assert.Equal("get_weather", (string?)calls[0]!["function"]!["name"]);
        Assert.Equal(JsonNode.Parse("""{"location":"Boston","unit":"celsius"}"""), JsonNode.Parse((string)calls[0]!["function"]!["arguments"]!), JsonNode.DeepEquals);
        Assert.Equal("get_time", (string?)calls[1]!["function"]!["name"]);
        Assert.Equal(new TokenUsage(40, 5), result.Usage);
    }

    [Theory]
    [InlineData("STOP", "stop")]
    [InlineData("MAX_TOKENS", "length")]
    [InlineData("SAFETY", "content_filter")]
    [InlineData("RECITATION", "content_filter")]
    public async Task Gemini_finish_reason_maps_to_openai_finish_reason(string gemini, string openAi)
    {
        var body = TextResponse.Replace("\"STOP\"", $"\"{gemini}\"", StringComparison.Ordinal);
        var result = await Provider(CapturingHandler.Json(body)).CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None);
        Assert.Equal(openAi, (string?)result.Response["choices"]![0]!["finish_reason"]);
    }

    [Fact]
    public async Task Gemini_stream_becomes_role_chunk_then_text_deltas_then_finish_and_usage_chunks()
    {
        var upstream = CapturingHandler.Sse(TextStream);
        var chunks = await CollectAsync(Provider(upstream).StreamAsync(Call("""{"messages":[{"role":"user","content":"sky?"}],"stream":true}""", Model), CancellationToken.None));

        Assert.Equal("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", upstream.Last.Uri.ToString());
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string?)c.Chunk["object"]));
        Assert.All(chunks, c => Assert.Equal("chatcmpl-Yz1oaKXvL", (string?)c.Chunk["id"]));
        Assert.Equal("assistant", (string?)Delta(chunks[0])["role"]);
        Assert.False(chunks[0].HasContent);
        Assert.Equal("The sky is blue.", Text(chunks));
        Assert.All(chunks.Where(c => (string?)Delta2(c)?["content"] is { Length: > 0 }), c => Assert.True(c.HasContent));
        Assert.Equal("stop", Finish(chunks[^2]));
        Assert.False(chunks[^2].HasContent);
        Assert.Empty(chunks[^1].Chunk["choices"]!.AsArray());
        Assert.Equal(new TokenUsage(8, 6), chunks[^1].Usage);
        Assert.Single(chunks, c => c.Usage is not null);
    }

    private static JsonObject? Delta2(ChatChunk chunk) =>
        chunk.Chunk["choices"] is JsonArray { Count: > 0 } ? Delta(chunk) : null;

    [Fact]
    public async Task Gemini_stream_function_call_becomes_a_complete_tool_call_delta()
    {
        var chunks = await CollectAsync(Provider(CapturingHandler.Sse(FunctionCallStream)).StreamAsync(Call("""{"messages":[{"role":"user","content":"weather?"}]}""", Model), CancellationToken.None));
        var tool = chunks.Single(c => Delta2(c)?["tool_calls"] is not null);
        Assert.True(tool.HasContent);
        var call = Delta(tool)["tool_calls"]![0]!;
        Assert.Equal(0, (int)call["index"]!);
        Assert.StartsWith("call_", (string)call["id"]!, StringComparison.Ordinal);
        Assert.Equal("get_weather", (string?)call["function"]!["name"]);
        Assert.Equal("""{"location":"Boston"}""", ToolArguments(chunks, 0));
        Assert.Equal("tool_calls", Finish(chunks[^2]));
        Assert.Equal(new TokenUsage(30, 6), chunks[^1].Usage);
    }

    [Fact]
    public async Task Gemini_stream_that_ends_without_a_finish_reason_is_a_protocol_failure()
    {
        var cut = TextStream[..TextStream.LastIndexOf("data:", StringComparison.Ordinal)];
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => CollectAsync(Provider(CapturingHandler.Sse(cut))
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None)));
        Assert.Equal(UpstreamFailure.Protocol, ex.Kind);
        Assert.True(ex.IsRetryable);
    }

    [Fact]
    public async Task Gemini_429_resource_exhausted_is_rate_limited_with_retry_after()
    {
        var upstream = CapturingHandler.Json("""
            {"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}
            """, HttpStatusCode.TooManyRequests, r => r.Headers.Add("Retry-After", "30"));
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => CollectAsync(Provider(upstream)
            .StreamAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None)));
        Assert.Equal(UpstreamFailure.RateLimited, ex.Kind);
        Assert.Equal(TimeSpan.FromSeconds(30), ex.RetryAfter);
        Assert.Contains("Resource has been exhausted", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Gemini_503_unavailable_is_a_retryable_server_error()
    {
        var upstream = CapturingHandler.Json("""{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}""", HttpStatusCode.ServiceUnavailable);
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => Provider(upstream)
            .CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None));
        Assert.Equal(UpstreamFailure.ServerError, ex.Kind);
        Assert.True(ex.IsRetryable);
    }

    [Fact]
    public async Task Gemini_400_invalid_argument_is_a_bad_request_that_is_not_retried()
    {
        var upstream = CapturingHandler.Json("""{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}""", HttpStatusCode.BadRequest);
        var ex = await Assert.ThrowsAsync<UpstreamException>(() => Provider(upstream)
            .CompleteAsync(Call("""{"messages":[{"role":"user","content":"hi"}]}""", Model), CancellationToken.None));
        Assert.Equal(UpstreamFailure.BadRequest, ex.Kind);
        Assert.False(ex.IsRetryable);
    }

    [Fact]
    public async Task Gemini_embeddings_use_batchEmbedContents_and_return_an_openai_list_with_estimated_tokens()
    {
        var upstream = CapturingHandler.Json("""{"embeddings":[{"values":[0.1,-0.2,0.3]},{"values":[0.4,0.5,-0.6]}]}""");
        var provider = Provider(upstream);
        Assert.True(provider.SupportsEmbeddings);

        var result = await provider.EmbedAsync(new EmbeddingCall(Request("""{"model":"text-embedding-004","input":["hello world","abc"]}"""), "text-embedding-004", "req1"), CancellationToken.None);

        Assert.Equal("https://generativelanguage.googleapis.com/v1beta/models/text-embedding-004:batchEmbedContents", upstream.Last.Uri.ToString());
        Assert.Equal("AIza-test", upstream.Last.Header("x-goog-api-key"));
        Assert.Equal(JsonNode.Parse("""
            {"requests":[{"model":"models/text-embedding-004","content":{"parts":[{"text":"hello world"}]}},
                         {"model":"models/text-embedding-004","content":{"parts":[{"text":"abc"}]}}]}
            """), upstream.Last.Json, JsonNode.DeepEquals);

        var r = result.Response;
        Assert.Equal("list", (string?)r["object"]);
        Assert.Equal("text-embedding-004", (string?)r["model"]);
        var data = r["data"]!.AsArray();
        Assert.Equal(2, data.Count);
        Assert.Equal("embedding", (string?)data[1]!["object"]);
        Assert.Equal(1, (int)data[1]!["index"]!);
        Assert.Equal([0.4, 0.5, -0.6], data[1]!["embedding"]!.AsArray().Select(v => (double)v!));
        Assert.Equal(4, result.Usage.PromptTokens); // 14 characters / 4, rounded up
        Assert.Equal(4, (int)r["usage"]!["prompt_tokens"]!);
        Assert.Equal(4, (int)r["usage"]!["total_tokens"]!);
    }

    [Fact]
    public async Task Gemini_embedding_of_a_single_string_sends_one_request()
    {
        var upstream = CapturingHandler.Json("""{"embeddings":[{"values":[1.0,2.0]}]}""");
        var result = await Provider(upstream).EmbedAsync(new EmbeddingCall(Request("""{"input":"hi"}"""), "gemini-embedding-001", "req1"), CancellationToken.None);
        Assert.Single(upstream.Last.Json["requests"]!.AsArray());
        Assert.Single(result.Response["data"]!.AsArray());
        Assert.Equal(1, result.Usage.PromptTokens);
    }

    [Fact]
    public async Task Gemini_probe_lists_one_model()
    {
        var upstream = CapturingHandler.Json("""{"models":[{"name":"models/gemini-2.0-flash"}],"nextPageToken":"x"}""");
        await Provider(upstream).ProbeAsync(CancellationToken.None);
        Assert.Equal(HttpMethod.Get, upstream.Last.Method);
        Assert.Equal("https://generativelanguage.googleapis.com/v1beta/models?pageSize=1", upstream.Last.Uri.ToString());
        Assert.Equal("AIza-test", upstream.Last.Header("x-goog-api-key"));
    }
}
