using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;

namespace HelixAgent.Tests.Fakes;

using HelixAgent.Fakes;

public sealed class FakeUpstreamTests
{
    private static readonly HttpClient Http = new(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromSeconds(30) })
    {
        Timeout = TimeSpan.FromSeconds(30),
    };

    // ------------------------------------------------------------ requests per protocol

    private static readonly JsonArray Conversation = new(
        new JsonObject { ["role"] = "system", ["content"] = "Be brief." },
        new JsonObject { ["role"] = "user", ["content"] = "What is the capital of France?" });

    /// <summary>"Be brief." + "What is the capital of France?" = 2 + 6 words.</summary>
    private const int ConversationWords = 8;

    private static HttpRequestMessage Chat(FakeUpstream fake, bool stream)
    {
        var baseUrl = fake.BaseUrl.ToString().TrimEnd('/');
        HttpRequestMessage Post(string url, JsonObject body) =>
            new(HttpMethod.Post, url) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        switch (fake.Protocol)
        {
            case FakeProtocol.OpenAI:
                return Post(baseUrl + "/chat/completions", new JsonObject
                {
                    ["model"] = "gpt-4o-mini",
                    ["messages"] = Conversation.DeepClone(),
                    ["stream"] = stream,
                    ["stream_options"] = stream ? new JsonObject { ["include_usage"] = true } : null,
                });
            case FakeProtocol.Anthropic:
                var a = Post(baseUrl + "/v1/messages", new JsonObject
                {
                    ["model"] = "claude-sonnet-4-5",
                    ["max_tokens"] = 100,
                    ["system"] = "Be brief.",
                    ["messages"] = new JsonArray(new JsonObject
                    {
                        ["role"] = "user",
                        ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "What is the capital of France?" }),
                    }),
                    ["stream"] = stream,
                });
                a.Headers.Add("anthropic-version", "2023-06-01");
                a.Headers.Add("x-api-key", "test-key");
                return a;
            case FakeProtocol.Gemini:
                return Post(baseUrl + "/models/gemini-2.0-flash:" + (stream ? "streamGenerateContent?alt=sse" : "generateContent"), new JsonObject
                {
                    ["systemInstruction"] = new JsonObject { ["parts"] = new JsonArray(new JsonObject { ["text"] = "Be brief." }) },
                    ["contents"] = new JsonArray(new JsonObject
                    {
                        ["role"] = "user",
                        ["parts"] = new JsonArray(new JsonObject { ["text"] = "What is the capital of France?" }),
                    }),
                });
            default:
                return Post(baseUrl + "/api/chat", new JsonObject
                {
                    ["model"] = "llama3.2",
                    ["messages"] = Conversation.DeepClone(),
                    ["stream"] = stream,
                });
        }
    }

    private static async Task<(HttpResponseMessage Response, JsonObject Json)> SendJsonAsync(HttpRequestMessage request)
    {
        var response = await Http.SendAsync(request);
        var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
        return (response, json);
    }

    private readonly record struct Sse(string? Event, string Data);

    private static List<Sse> ParseSse(string text)
    {
        var events = new List<Sse>();
        foreach (var block in text.Replace("\r\n", "\n").Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            string? name = null;
            var data = new List<string>();
            foreach (var line in block.Split('\n'))
            {
                if (line.StartsWith("event: ", StringComparison.Ordinal))
                {
                    name = line["event: ".Length..];
                }
                else if (line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    data.Add(line["data: ".Length..]);
                }
            }
            events.Add(new Sse(name, string.Join("\n", data)));
        }
        return events;
    }

    // ------------------------------------------------------------ native shapes

    [Fact]
    public async Task OpenAI_non_stream_answers_a_chat_completion_with_the_reply_and_word_count_usage()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        Assert.Equal($"http://127.0.0.1:{fake.Port}/v1", fake.BaseUrl.ToString().TrimEnd('/'));
        var (response, json) = await SendJsonAsync(Chat(fake, stream: false));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("chat.completion", (string?)json["object"]);
        Assert.Equal("gpt-4o-mini", (string?)json["model"]);
        Assert.Equal("assistant", (string?)json["choices"]![0]!["message"]!["role"]);
        Assert.Equal("Hello from OpenAI", (string?)json["choices"]![0]!["message"]!["content"]);
        Assert.Equal("stop", (string?)json["choices"]![0]!["finish_reason"]);
        Assert.Equal(ConversationWords, (int)json["usage"]!["prompt_tokens"]!);
        Assert.Equal(3, (int)json["usage"]!["completion_tokens"]!);
        Assert.Equal(ConversationWords + 3, (int)json["usage"]!["total_tokens"]!);
    }

    [Fact]
    public async Task OpenAI_stream_sends_role_then_word_deltas_then_finish_then_usage_chunk_then_DONE()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.Reply = "The capital is Paris.";
        var response = await Http.SendAsync(Chat(fake, stream: true));
        Assert.StartsWith("text/event-stream", response.Content.Headers.ContentType!.ToString());
        var events = ParseSse(await response.Content.ReadAsStringAsync());

        Assert.Equal("[DONE]", events[^1].Data);
        var chunks = events[..^1].Select(e => JsonNode.Parse(e.Data)!).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string?)c["object"]));
        Assert.Equal("assistant", (string?)chunks[0]["choices"]![0]!["delta"]!["role"]);
        var deltas = chunks.Skip(1).TakeWhile(c => c["choices"]!.AsArray().Count > 0 && c["choices"]![0]!["finish_reason"] is null)
            .Select(c => (string?)c["choices"]![0]!["delta"]!["content"]).ToList();
        Assert.Equal(["The", " capital", " is", " Paris."], deltas);
        var finish = chunks[^2];
        Assert.Equal("stop", (string?)finish["choices"]![0]!["finish_reason"]);
        var usage = chunks[^1];
        Assert.Empty(usage["choices"]!.AsArray());
        Assert.Equal(ConversationWords, (int)usage["usage"]!["prompt_tokens"]!);
        Assert.Equal(4, (int)usage["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task OpenAI_stream_without_include_usage_has_no_usage_chunk()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var request = new HttpRequestMessage(HttpMethod.Post, fake.BaseUrl + "/chat/completions")
        {
            Content = new StringContent("""{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}""", Encoding.UTF8, "application/json"),
        };
        var events = ParseSse(await (await Http.SendAsync(request)).Content.ReadAsStringAsync());
        Assert.Equal("[DONE]", events[^1].Data);
        Assert.All(events[..^1], e => Assert.NotEmpty(JsonNode.Parse(e.Data)!["choices"]!.AsArray()));
    }

    [Fact]
    public async Task Anthropic_non_stream_answers_a_message_with_a_text_block_and_usage()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        Assert.Equal($"http://127.0.0.1:{fake.Port}/", fake.BaseUrl.ToString());
        var (response, json) = await SendJsonAsync(Chat(fake, stream: false));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("message", (string?)json["type"]);
        Assert.Equal("text", (string?)json["content"]![0]!["type"]);
        Assert.Equal("Hello from Anthropic", (string?)json["content"]![0]!["text"]);
        Assert.Equal("end_turn", (string?)json["stop_reason"]);
        Assert.Equal(ConversationWords, (int)json["usage"]!["input_tokens"]!);
        Assert.Equal(3, (int)json["usage"]!["output_tokens"]!);
    }

    [Fact]
    public async Task Anthropic_stream_sends_the_real_event_sequence_with_text_deltas_and_final_usage()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        var response = await Http.SendAsync(Chat(fake, stream: true));
        var events = ParseSse(await response.Content.ReadAsStringAsync());

        Assert.Equal(
            ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta", "content_block_delta",
             "content_block_stop", "message_delta", "message_stop"],
            events.Select(e => e.Event));
        Assert.All(events, e => Assert.Equal(e.Event, (string?)JsonNode.Parse(e.Data)!["type"]));
        var start = JsonNode.Parse(events[0].Data)!;
        Assert.Equal(ConversationWords, (int)start["message"]!["usage"]!["input_tokens"]!);
        var text = string.Concat(events.Where(e => e.Event == "content_block_delta").Select(e =>
        {
            var delta = JsonNode.Parse(e.Data)!["delta"]!;
            Assert.Equal("text_delta", (string?)delta["type"]);
            return (string?)delta["text"];
        }));
        Assert.Equal("Hello from Anthropic", text);
        var messageDelta = JsonNode.Parse(events[^2].Data)!;
        Assert.Equal("end_turn", (string?)messageDelta["delta"]!["stop_reason"]);
        Assert.Equal(3, (int)messageDelta["usage"]!["output_tokens"]!);
    }

    [Fact]
    public async Task Gemini_generateContent_answers_candidates_with_text_parts_and_usageMetadata()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Gemini);
        Assert.Equal($"http://127.0.0.1:{fake.Port}/v1beta", fake.BaseUrl.ToString().TrimEnd('/'));
        var (response, json) = await SendJsonAsync(Chat(fake, stream: false));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var candidate = json["candidates"]![0]!;
        Assert.Equal("model", (string?)candidate["content"]!["role"]);
        Assert.Equal("Hello from Gemini", (string?)candidate["content"]!["parts"]![0]!["text"]);
        Assert.Equal("STOP", (string?)candidate["finishReason"]);
        Assert.Equal(ConversationWords, (int)json["usageMetadata"]!["promptTokenCount"]!);
        Assert.Equal(3, (int)json["usageMetadata"]!["candidatesTokenCount"]!);
        Assert.Equal(ConversationWords + 3, (int)json["usageMetadata"]!["totalTokenCount"]!);
    }

    [Fact]
    public async Task Gemini_streamGenerateContent_sse_sends_one_GenerateContentResponse_per_word_with_finishReason_on_the_last()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Gemini);
        var response = await Http.SendAsync(Chat(fake, stream: true));
        Assert.StartsWith("text/event-stream", response.Content.Headers.ContentType!.ToString());
        var chunks = ParseSse(await response.Content.ReadAsStringAsync()).Select(e => JsonNode.Parse(e.Data)!).ToList();

        Assert.Equal(3, chunks.Count);
        Assert.Equal("Hello from Gemini", string.Concat(chunks.Select(c => (string?)c["candidates"]![0]!["content"]!["parts"]![0]!["text"])));
        Assert.All(chunks[..^1], c => Assert.Null(c["candidates"]![0]!["finishReason"]));
        Assert.Equal("STOP", (string?)chunks[^1]["candidates"]![0]!["finishReason"]);
        Assert.Equal(ConversationWords, (int)chunks[^1]["usageMetadata"]!["promptTokenCount"]!);
        Assert.Equal(3, (int)chunks[^1]["usageMetadata"]!["candidatesTokenCount"]!);
    }

    [Fact]
    public async Task Gemini_streamGenerateContent_without_alt_sse_streams_a_json_array_of_responses()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Gemini);
        var request = new HttpRequestMessage(HttpMethod.Post, fake.BaseUrl + "/models/gemini-2.0-flash:streamGenerateContent")
        {
            Content = new StringContent("""{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}""", Encoding.UTF8, "application/json"),
        };
        var array = JsonNode.Parse(await (await Http.SendAsync(request)).Content.ReadAsStringAsync())!.AsArray();
        Assert.Equal(3, array.Count);
        Assert.Equal("STOP", (string?)array[^1]!["candidates"]![0]!["finishReason"]);
        Assert.Empty(fake.Errors);
    }

    [Fact]
    public async Task Ollama_chat_with_stream_false_answers_one_done_object_with_eval_counts()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Ollama);
        Assert.Equal($"http://127.0.0.1:{fake.Port}/", fake.BaseUrl.ToString());
        var (response, json) = await SendJsonAsync(Chat(fake, stream: false));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("Hello from Ollama", (string?)json["message"]!["content"]);
        Assert.True((bool)json["done"]!);
        Assert.Equal("stop", (string?)json["done_reason"]);
        Assert.Equal(ConversationWords, (int)json["prompt_eval_count"]!);
        Assert.Equal(3, (int)json["eval_count"]!);
    }

    [Fact]
    public async Task Ollama_chat_streams_ndjson_by_default_ending_with_a_done_line()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Ollama);
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(fake.BaseUrl, "/api/chat"))
        {
            Content = new StringContent("""{"model":"llama3.2","messages":[{"role":"user","content":"hi there"}]}""", Encoding.UTF8, "application/json"),
        };
        var response = await Http.SendAsync(request);
        Assert.Equal("application/x-ndjson", response.Content.Headers.ContentType!.MediaType);
        var lines = (await response.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToList();

        Assert.Equal(4, lines.Count);
        Assert.All(lines[..^1], l => Assert.False((bool)l["done"]!));
        Assert.Equal("Hello from Ollama", string.Concat(lines[..^1].Select(l => (string?)l["message"]!["content"])));
        Assert.True((bool)lines[^1]["done"]!);
        Assert.Equal("stop", (string?)lines[^1]["done_reason"]);
        Assert.Equal(2, (int)lines[^1]["prompt_eval_count"]!);
        Assert.Equal(3, (int)lines[^1]["eval_count"]!);
    }

    [Fact]
    public async Task Embeddings_are_deterministic_in_each_protocols_native_shape()
    {
        await using var openai = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var gemini = await FakeUpstream.StartAsync(FakeProtocol.Gemini);
        await using var ollama = await FakeUpstream.StartAsync(FakeProtocol.Ollama);
        var expected = FakeText.Embed("hello world", 8);

        var (_, o) = await SendJsonAsync(new HttpRequestMessage(HttpMethod.Post, openai.BaseUrl + "/embeddings")
        {
            Content = new StringContent("""{"model":"text-embedding-3-small","input":["hello world","other"]}""", Encoding.UTF8, "application/json"),
        });
        Assert.Equal("list", (string?)o["object"]);
        Assert.Equal(2, o["data"]!.AsArray().Count);
        Assert.Equal(expected, o["data"]![0]!["embedding"]!.AsArray().Select(x => (float)x!));
        Assert.Equal(3, (int)o["usage"]!["prompt_tokens"]!);

        var (_, g) = await SendJsonAsync(new HttpRequestMessage(HttpMethod.Post, gemini.BaseUrl + "/models/text-embedding-004:batchEmbedContents")
        {
            Content = new StringContent("""{"requests":[{"model":"models/text-embedding-004","content":{"parts":[{"text":"hello world"}]}}]}""", Encoding.UTF8, "application/json"),
        });
        Assert.Equal(expected, g["embeddings"]![0]!["values"]!.AsArray().Select(x => (float)x!));

        var (_, l) = await SendJsonAsync(new HttpRequestMessage(HttpMethod.Post, new Uri(ollama.BaseUrl, "/api/embed"))
        {
            Content = new StringContent("""{"model":"nomic-embed-text","input":"hello world"}""", Encoding.UTF8, "application/json"),
        });
        Assert.Equal(expected, l["embeddings"]![0]!.AsArray().Select(x => (float)x!));
    }

    [Theory]
    [InlineData(FakeProtocol.OpenAI, "/v1/models", "data", "id")]
    [InlineData(FakeProtocol.Anthropic, "/v1/models", "data", "id")]
    [InlineData(FakeProtocol.Gemini, "/v1beta/models", "models", "name")]
    [InlineData(FakeProtocol.Ollama, "/api/tags", "models", "name")]
    public async Task Model_listing_reports_the_configured_models(FakeProtocol protocol, string path, string list, string field)
    {
        await using var fake = await FakeUpstream.StartAsync(protocol);
        fake.Models = ["m-one", "m-two"];
        var (response, json) = await SendJsonAsync(new HttpRequestMessage(HttpMethod.Get, new Uri(fake.Root, path)));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(["m-one", "m-two"], json[list]!.AsArray().Select(m => ((string?)m![field])!.Replace("models/", "")));
    }

    // ------------------------------------------------------------ tool calls

    private static readonly FakeToolCall Weather = new("get_weather", """{"city":"Paris","unit":"celsius"}""", "call_abc");

    [Fact]
    public async Task Tool_calls_come_back_in_each_protocols_native_non_stream_shape()
    {
        foreach (var protocol in Enum.GetValues<FakeProtocol>())
        {
            await using var fake = await FakeUpstream.StartAsync(protocol);
            fake.NextToolCall = Weather;
            var (_, json) = await SendJsonAsync(Chat(fake, stream: false));
            JsonNode args;
            switch (protocol)
            {
                case FakeProtocol.OpenAI:
                    var call = json["choices"]![0]!["message"]!["tool_calls"]![0]!;
                    Assert.Equal("tool_calls", (string?)json["choices"]![0]!["finish_reason"]);
                    Assert.Equal("call_abc", (string?)call["id"]);
                    Assert.Equal("get_weather", (string?)call["function"]!["name"]);
                    args = JsonNode.Parse((string)call["function"]!["arguments"]!)!;
                    break;
                case FakeProtocol.Anthropic:
                    var block = json["content"]![0]!;
                    Assert.Equal("tool_use", (string?)block["type"]);
                    Assert.Equal("tool_use", (string?)json["stop_reason"]);
                    Assert.StartsWith("toolu_", (string?)block["id"]);
                    Assert.Equal("get_weather", (string?)block["name"]);
                    args = block["input"]!;
                    break;
                case FakeProtocol.Gemini:
                    var fc = json["candidates"]![0]!["content"]!["parts"]![0]!["functionCall"]!;
                    Assert.Equal("get_weather", (string?)fc["name"]);
                    args = fc["args"]!;
                    break;
                default:
                    var tc = json["message"]!["tool_calls"]![0]!["function"]!;
                    Assert.Equal("get_weather", (string?)tc["name"]);
                    args = tc["arguments"]!;
                    break;
            }
            Assert.Equal("Paris", (string?)args["city"]);
            Assert.Null(fake.NextToolCall);

            var (_, second) = await SendJsonAsync(Chat(fake, stream: false));
            Assert.Contains("Hello from", second.ToJsonString());
        }
    }

    [Fact]
    public async Task OpenAI_streamed_tool_call_sends_id_and_name_first_then_argument_fragments()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.NextToolCall = Weather;
        var events = ParseSse(await (await Http.SendAsync(Chat(fake, stream: true))).Content.ReadAsStringAsync());
        var chunks = events[..^1].Select(e => JsonNode.Parse(e.Data)!).Where(c => c["choices"]!.AsArray().Count > 0).ToList();

        var first = chunks[0]["choices"]![0]!["delta"]!["tool_calls"]![0]!;
        Assert.Equal("call_abc", (string?)first["id"]);
        Assert.Equal("get_weather", (string?)first["function"]!["name"]);
        var arguments = string.Concat(chunks.Select(c => (string?)c["choices"]![0]!["delta"]!["tool_calls"]?[0]?["function"]?["arguments"]));
        Assert.Equal(Weather.ArgumentsJson, arguments);
        Assert.Equal("tool_calls", (string?)chunks[^1]["choices"]![0]!["finish_reason"]);
    }

    [Fact]
    public async Task Anthropic_streamed_tool_call_sends_a_tool_use_block_and_input_json_deltas()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        fake.NextToolCall = Weather;
        var events = ParseSse(await (await Http.SendAsync(Chat(fake, stream: true))).Content.ReadAsStringAsync());

        var blockStart = JsonNode.Parse(events.Single(e => e.Event == "content_block_start").Data)!["content_block"]!;
        Assert.Equal("tool_use", (string?)blockStart["type"]);
        Assert.Equal("get_weather", (string?)blockStart["name"]);
        var json = string.Concat(events.Where(e => e.Event == "content_block_delta").Select(e =>
        {
            var delta = JsonNode.Parse(e.Data)!["delta"]!;
            Assert.Equal("input_json_delta", (string?)delta["type"]);
            return (string?)delta["partial_json"];
        }));
        Assert.Equal(Weather.ArgumentsJson, json);
        Assert.Equal("tool_use", (string?)JsonNode.Parse(events.Single(e => e.Event == "message_delta").Data)!["delta"]!["stop_reason"]);
    }

    // ------------------------------------------------------------ failures

    [Theory]
    [InlineData(FakeProtocol.OpenAI)]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.Gemini)]
    [InlineData(FakeProtocol.Ollama)]
    public async Task Status429_carries_Retry_After_and_the_protocols_rate_limit_error_body(FakeProtocol protocol)
    {
        await using var fake = await FakeUpstream.StartAsync(protocol);
        fake.RetryAfterSeconds = 7;
        fake.Fail(FakeFault.Status429);
        var (response, json) = await SendJsonAsync(Chat(fake, stream: false));

        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(7), response.Headers.RetryAfter?.Delta);
        switch (protocol)
        {
            case FakeProtocol.OpenAI:
                Assert.Equal("rate_limit_exceeded", (string?)json["error"]!["code"]);
                Assert.NotNull((string?)json["error"]!["message"]);
                Assert.NotNull((string?)json["error"]!["type"]);
                break;
            case FakeProtocol.Anthropic:
                Assert.Equal("error", (string?)json["type"]);
                Assert.Equal("rate_limit_error", (string?)json["error"]!["type"]);
                break;
            case FakeProtocol.Gemini:
                Assert.Equal(429, (int)json["error"]!["code"]!);
                Assert.Equal("RESOURCE_EXHAUSTED", (string?)json["error"]!["status"]);
                break;
            default:
                Assert.IsType<string>((string?)json["error"]);
                break;
        }
    }

    [Theory]
    [InlineData(FakeFault.Status500, 500, "api_error")]
    [InlineData(FakeFault.Status503, 503, "api_error")]
    [InlineData(FakeFault.Status400, 400, "invalid_request_error")]
    [InlineData(FakeFault.Status401, 401, "authentication_error")]
    [InlineData(FakeFault.Overloaded529, 529, "overloaded_error")]
    public async Task Anthropic_status_faults_answer_the_status_with_the_matching_error_type(FakeFault fault, int status, string type)
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        fake.Fail(fault);
        var (response, json) = await SendJsonAsync(Chat(fake, stream: true));
        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("error", (string?)json["type"]);
        Assert.Equal(type, (string?)json["error"]!["type"]);
        Assert.False(string.IsNullOrEmpty((string?)json["error"]!["message"]));
    }

    [Theory]
    [InlineData(FakeFault.Status500, 500, "INTERNAL")]
    [InlineData(FakeFault.Status503, 503, "UNAVAILABLE")]
    [InlineData(FakeFault.Status400, 400, "INVALID_ARGUMENT")]
    [InlineData(FakeFault.Status401, 401, "UNAUTHENTICATED")]
    public async Task Gemini_status_faults_answer_the_google_rpc_status(FakeFault fault, int status, string rpcStatus)
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Gemini);
        fake.Fail(fault);
        var (response, json) = await SendJsonAsync(Chat(fake, stream: false));
        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal(status, (int)json["error"]!["code"]!);
        Assert.Equal(rpcStatus, (string?)json["error"]!["status"]);
    }

    [Theory]
    [InlineData(FakeProtocol.OpenAI)]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.Gemini)]
    [InlineData(FakeProtocol.Ollama)]
    public async Task ResetConnection_makes_HttpClient_throw_HttpRequestException(FakeProtocol protocol)
    {
        await using var fake = await FakeUpstream.StartAsync(protocol);
        fake.Fail(FakeFault.ResetConnection);
        await Assert.ThrowsAsync<HttpRequestException>(() => Http.SendAsync(Chat(fake, stream: false)));
        Assert.Equal(1, fake.RequestCount);
        Assert.Equal(0, fake.CancelledCount);
    }

    [Theory]
    [InlineData(FakeProtocol.OpenAI)]
    [InlineData(FakeProtocol.Anthropic)]
    [InlineData(FakeProtocol.Gemini)]
    [InlineData(FakeProtocol.Ollama)]
    public async Task CutMidStream_delivers_the_first_chunks_then_the_read_fails(FakeProtocol protocol)
    {
        await using var fake = await FakeUpstream.StartAsync(protocol);
        fake.Reply = "one two three four five six";
        fake.Fail(FakeFault.CutMidStream);
        using var response = await Http.SendAsync(Chat(fake, stream: true), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        var received = new MemoryStream();
        var stream = await response.Content.ReadAsStreamAsync();
        var error = await Record.ExceptionAsync(async () =>
        {
            var buffer = new byte[1024];
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0)
            {
                received.Write(buffer, 0, n);
            }
        });

        Assert.True(error is IOException or HttpRequestException, $"expected a broken read, got {error?.GetType().Name ?? "a clean end"}");
        var text = Encoding.UTF8.GetString(received.ToArray());
        Assert.Contains("two", text);
        Assert.DoesNotContain("three", text);
        Assert.Equal(0, fake.CancelledCount);
    }

    [Fact]
    public async Task CutMidStream_on_a_non_stream_request_truncates_the_json_body()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.Fail(FakeFault.CutMidStream);
        using var response = await Http.SendAsync(Chat(fake, stream: false), HttpCompletionOption.ResponseHeadersRead);
        var error = await Record.ExceptionAsync(() => response.Content.ReadAsStringAsync());
        Assert.True(error is IOException or HttpRequestException, $"got {error?.GetType().Name ?? "the whole body"}");
    }

    [Fact]
    public async Task StallBeforeFirstByte_counts_a_cancellation_when_the_client_gives_up()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.Fail(FakeFault.StallBeforeFirstByte);
        using var cts = new CancellationTokenSource();
        var send = Http.SendAsync(Chat(fake, stream: true), HttpCompletionOption.ResponseHeadersRead, cts.Token);
        await fake.WaitForStallAsync(1); // the fake is hanging before its first byte
        Assert.False(send.IsCompleted);
        Assert.Equal(0, fake.CancelledCount);

        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => send);
        await fake.WaitForCancellationAsync();
        Assert.Equal(1, fake.CancelledCount);
    }

    [Fact]
    public async Task StallMidStream_sends_first_chunks_then_hangs_until_the_client_cancels()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        fake.Reply = "one two three four";
        fake.Fail(FakeFault.StallMidStream);
        using var cts = new CancellationTokenSource();
        using var response = await Http.SendAsync(Chat(fake, stream: true), HttpCompletionOption.ResponseHeadersRead, cts.Token);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
        string? line;
        do
        {
            line = await reader.ReadLineAsync(cts.Token);
        }
        while (line is not null && !line.Contains("\" two\"", StringComparison.Ordinal));
        Assert.NotNull(line);
        Assert.Equal("", await reader.ReadLineAsync(cts.Token)); // end of the "two" event

        var next = reader.ReadLineAsync(cts.Token).AsTask();
        await fake.WaitForStallAsync(1); // the fake is hanging after the second chunk
        Assert.False(next.IsCompleted, "the fake should hang after the second chunk");
        Assert.Equal(0, fake.CancelledCount);

        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => next);
        await fake.WaitForCancellationAsync();
        Assert.Equal(1, fake.CancelledCount);
    }

    [Fact]
    public async Task A_client_cancelling_a_slow_stream_is_counted_as_cancelled()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Ollama);
        fake.ChunkDelay = TimeSpan.FromSeconds(2);
        using var cts = new CancellationTokenSource();
        var response = await Http.SendAsync(Chat(fake, stream: true), HttpCompletionOption.ResponseHeadersRead, cts.Token);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
        Assert.Contains("Hello", await reader.ReadLineAsync(cts.Token));
        var next = reader.ReadLineAsync(cts.Token).AsTask();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => next);
        await fake.WaitForCancellationAsync();
        Assert.Equal(1, fake.CancelledCount);
        response.Dispose();
    }

    [Fact]
    public async Task Fail_with_times_1_affects_only_the_next_request()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.Fail(FakeFault.Status503, times: 1);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
        Assert.Equal(3, fake.RequestCount);
    }

    [Fact]
    public async Task Fail_without_times_affects_every_request_until_Reset()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Gemini);
        fake.Fail(FakeFault.Status500);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.InternalServerError, (await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
        }
        fake.Reset();
        Assert.Equal(HttpStatusCode.OK, (await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
    }

    [Fact]
    public async Task FailSequence_applies_each_fault_once_in_order()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        fake.FailSequence(FakeFault.Overloaded529, FakeFault.Status429);
        Assert.Equal(529, (int)(await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
        Assert.Equal(429, (int)(await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
        Assert.Equal(200, (int)(await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
    }

    [Fact]
    public async Task Fail_with_a_filter_spares_requests_that_do_not_match()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.Fail(FakeFault.Status500, times: 1, when: r => r.Method == "POST");
        Assert.Equal(HttpStatusCode.OK, (await Http.GetAsync(fake.BaseUrl + "/models")).StatusCode);
        Assert.Equal(HttpStatusCode.InternalServerError, (await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
    }

    [Fact]
    public async Task FailEach_gives_every_request_the_fault_its_own_body_asks_for_under_concurrency_until_Reset()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.FailEach(r => r.Body.Contains("please fail", StringComparison.Ordinal) ? FakeFault.Status500 : FakeFault.None);
        HttpRequestMessage Ask(string text) => new(HttpMethod.Post, fake.BaseUrl + "/chat/completions")
        {
            Content = new StringContent(new JsonObject
            {
                ["model"] = "gpt-4o-mini",
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
            }.ToJsonString(), Encoding.UTF8, "application/json"),
        };

        var statuses = await Task.WhenAll(Enumerable.Range(0, 40).Select(async i =>
            (i, (int)(await Http.SendAsync(Ask(i % 4 == 0 ? $"please fail {i}" : $"answer {i}"))).StatusCode)));

        Assert.All(statuses, s => Assert.Equal(s.i % 4 == 0 ? 500 : 200, s.Item2));
        fake.Reset();
        Assert.Equal(HttpStatusCode.OK, (await Http.SendAsync(Ask("please fail again"))).StatusCode);
    }

    [Fact]
    public async Task MalformedJson_answers_200_with_a_body_that_does_not_parse()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.Fail(FakeFault.MalformedJson);
        var response = await Http.SendAsync(Chat(fake, stream: false));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadAsStringAsync();
        Assert.ThrowsAny<System.Text.Json.JsonException>(() => JsonNode.Parse(body));

        var events = ParseSse(await (await Http.SendAsync(Chat(fake, stream: true))).Content.ReadAsStringAsync());
        Assert.ThrowsAny<System.Text.Json.JsonException>(() => JsonNode.Parse(events[0].Data));
        Assert.Equal("[DONE]", events[^1].Data);
    }

    // ------------------------------------------------------------ streaming, recording, concurrency, validation

    [Fact]
    public async Task Stream_frames_are_flushed_one_by_one_with_ChunkDelay_between_them()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.ChunkDelay = TimeSpan.FromMilliseconds(150);
        var clock = Stopwatch.StartNew();
        using var response = await Http.SendAsync(Chat(fake, stream: true), HttpCompletionOption.ResponseHeadersRead);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var first = await reader.ReadLineAsync();
        var firstAt = clock.Elapsed;
        Assert.StartsWith("data: {", first);
        await reader.ReadToEndAsync();
        var total = clock.Elapsed;
        // 7 frames (role, 3 words, finish, usage, [DONE]) → 6 pauses of 150 ms after the first frame.
        Assert.True(total >= TimeSpan.FromMilliseconds(850), $"total {total}");
        Assert.True(total - firstAt >= TimeSpan.FromMilliseconds(600), $"first frame at {firstAt}, end at {total}");
    }

    [Fact]
    public async Task Latency_delays_every_answer_before_its_first_byte()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await (await Http.SendAsync(Chat(fake, stream: false))).Content.ReadAsStringAsync(); // connection and JIT warm
        fake.Latency = TimeSpan.FromMilliseconds(200);
        // Task.Delay's timer ticks in whole milliseconds and may fire a little before the Stopwatch says 200 ms.
        var atLeast = TimeSpan.FromMilliseconds(190);

        var clock = Stopwatch.StartNew();
        var body = await (await Http.SendAsync(Chat(fake, stream: false))).Content.ReadAsStringAsync();
        Assert.True(clock.Elapsed >= atLeast, $"non-streaming answer after {clock.Elapsed}");
        Assert.Contains("OpenAI", body);

        clock.Restart();
        using var response = await Http.SendAsync(Chat(fake, stream: true), HttpCompletionOption.ResponseHeadersRead);
        Assert.True(clock.Elapsed >= atLeast, $"stream headers after {clock.Elapsed}");
        Assert.Equal("[DONE]", ParseSse(await response.Content.ReadAsStringAsync())[^1].Data);
    }

    [Fact]
    public async Task Requests_are_recorded_with_method_path_query_headers_and_body()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Gemini);
        var request = Chat(fake, stream: true);
        request.Headers.Add("x-goog-api-key", "secret");
        await (await Http.SendAsync(request)).Content.ReadAsStringAsync();

        var recorded = Assert.Single(fake.Requests);
        Assert.Equal("POST", recorded.Method);
        Assert.Equal("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", recorded.PathAndQuery);
        Assert.Equal("secret", recorded.Header("X-Goog-Api-Key"));
        Assert.Equal("What is the capital of France?", (string?)recorded.Json!["contents"]![0]!["parts"]![0]!["text"]);
        Assert.True(recorded.Timestamp <= DateTimeOffset.UtcNow);
    }

    [Fact]
    public async Task Concurrent_requests_are_all_answered_and_recorded()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fake.ChunkDelay = TimeSpan.FromMilliseconds(10);
        var bodies = await Task.WhenAll(Enumerable.Range(0, 24).Select(async i =>
            await (await Http.SendAsync(Chat(fake, stream: i % 2 == 0))).Content.ReadAsStringAsync()));
        Assert.All(bodies, b => Assert.Contains("OpenAI", b));
        Assert.Equal(24, fake.RequestCount);
        Assert.Equal(24, fake.Requests.Count);
        Assert.Equal(0, fake.CancelledCount);
    }

    [Fact]
    public async Task ExpectedApiKey_rejects_requests_without_the_key_the_protocols_way()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        fake.ExpectedApiKey = "right";
        var (wrong, json) = await SendJsonAsync(Chat(fake, stream: false)); // sends x-api-key: test-key
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Equal("authentication_error", (string?)json["error"]!["type"]);

        fake.ExpectedApiKey = "test-key";
        Assert.Equal(HttpStatusCode.OK, (await Http.SendAsync(Chat(fake, stream: false))).StatusCode);
    }

    [Fact]
    public async Task Strict_Anthropic_rejects_a_request_without_anthropic_version_like_the_real_api()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(fake.BaseUrl, "/v1/messages"))
        {
            Content = new StringContent("""{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}""", Encoding.UTF8, "application/json"),
        };
        var (response, json) = await SendJsonAsync(request);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request_error", (string?)json["error"]!["type"]);
    }

    [Fact]
    public async Task Unknown_paths_answer_404_in_the_protocols_error_shape()
    {
        await using var fake = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var (response, json) = await SendJsonAsync(new HttpRequestMessage(HttpMethod.Get, fake.BaseUrl + "/nope"));
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("invalid_request_error", (string?)json["error"]!["type"]);
    }

    [Fact]
    public void Prompt_token_rule_counts_whitespace_separated_words()
    {
        Assert.Equal(0, FakeText.CountWords(""));
        Assert.Equal(6, FakeText.CountWords("What is the capital of France?"));
        Assert.Equal(2, FakeText.CountWords("  a\n\tb  "));
        Assert.Equal(["Hello", " from", " X "], FakeText.SplitIntoChunks("Hello from X "));
    }
}
