using System.Buffers;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>
/// Any OpenAI-compatible server (OpenAI, DeepSeek, Mistral, Groq, OpenRouter, Together, vLLM, LM Studio, Ollama's
/// /v1): the request is passed through with only <c>model</c> (and for streams <c>stream_options.include_usage</c>,
/// so usage is always known) changed; responses and chunks are already in the canonical shape.
/// </summary>
public sealed class OpenAiCompatibleProvider(string name, ProviderOptions options, HttpClient http) : IChatProvider, IResponsesPassThrough
{
    private readonly string _baseUrl = (options.BaseUrl ?? "https://api.openai.com/v1").TrimEnd('/');

    public string Name { get; } = name;
    public string Type => "openai";
    public bool SupportsEmbeddings => true;

    public async Task<ChatResult> CompleteAsync(ChatCall call, CancellationToken cancellationToken)
    {
        using var response = await UpstreamHttp.SendAsync(http, Post("/chat/completions", call.Request, call.UpstreamModel, RequestMode.Complete), Name, cancellationToken);
        var bytes = await UpstreamHttp.ReadBytesAsync(response, Name, cancellationToken);
        // The answer is already in the canonical shape: check it and read its usage, then serve the upstream's bytes.
        try
        {
            using var doc = JsonDocument.Parse(bytes);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered a non-object");
            }
            if (!root.TryGetProperty("choices", out var choices) || choices.ValueKind != JsonValueKind.Array)
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answer has no choices");
            }
            return ChatResult.FromUtf8(bytes, UsageOf(root));
        }
        catch (JsonException ex)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered invalid JSON: {ex.Message}", inner: ex);
        }
    }

    public async IAsyncEnumerable<ChatChunk> StreamAsync(ChatCall call, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var response = await UpstreamHttp.SendAsync(http, Post("/chat/completions", call.Request, call.UpstreamModel, RequestMode.Stream), Name, cancellationToken);
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
        var done = false;
        await foreach (var sse in UpstreamHttp.ReadSseAsync(stream, Name, cancellationToken))
        {
            if (sse.Data == "[DONE]")
            {
                done = true;
                break;
            }
            JsonObject? chunk;
            try
            {
                chunk = JsonNode.Parse(sse.Data) as JsonObject;
            }
            catch (JsonException ex)
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: invalid chunk: {ex.Message}", inner: ex);
            }
            if (chunk is null)
            {
                continue;
            }
            if (chunk["error"] is JsonNode error)
            {
                throw new UpstreamException(UpstreamFailure.ServerError, $"{Name}: error in stream: {error["message"]?.ToString() ?? error.ToJsonString()}");
            }
            var usage = chunk["usage"] is JsonObject ? UsageOf(chunk) : (TokenUsage?)null;
            yield return new ChatChunk(chunk, HasContent(chunk), usage);
        }
        if (!done)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: stream ended before [DONE]");
        }
    }

    public async Task<EmbeddingResult> EmbedAsync(EmbeddingCall call, CancellationToken cancellationToken)
    {
        using var response = await UpstreamHttp.SendAsync(http, Post("/embeddings", call.Request, call.UpstreamModel, RequestMode.Embed), Name, cancellationToken);
        using var doc = await UpstreamHttp.ReadJsonAsync(response, Name, cancellationToken);
        var json = JsonObject.Create(doc.RootElement.Clone())
            ?? throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered a non-object");
        return new EmbeddingResult(json, UsageOf(json));
    }

    public async Task ProbeAsync(CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, _baseUrl + "/models");
        Authorize(request);
        using var response = await UpstreamHttp.SendAsync(http, request, Name, cancellationToken);
    }

    internal static bool HasContent(JsonObject chunk)
    {
        if (chunk["choices"] is not JsonArray choices)
        {
            return false;
        }
        foreach (var choice in choices)
        {
            if (choice?["delta"] is JsonObject delta && OpenAiShapes.HasContent(delta))
            {
                return true;
            }
        }
        return false;
    }

    internal static TokenUsage UsageOf(JsonElement json)
    {
        if (!json.TryGetProperty("usage", out var usage) || usage.ValueKind != JsonValueKind.Object)
        {
            return default;
        }
        static int Int(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : 0;
        var cached = usage.TryGetProperty("prompt_tokens_details", out var details) && details.ValueKind == JsonValueKind.Object ? Int(details, "cached_tokens") : 0;
        return new TokenUsage(Int(usage, "prompt_tokens"), Int(usage, "completion_tokens"), cached);
    }

    internal static TokenUsage UsageOf(JsonObject json)
    {
        if (json["usage"] is not JsonObject usage)
        {
            return default;
        }
        static int Int(JsonNode? n) => n is JsonValue v && v.TryGetValue<int>(out var i) ? i : 0;
        return new TokenUsage(Int(usage["prompt_tokens"]), Int(usage["completion_tokens"]), Int(usage["prompt_tokens_details"]?["cached_tokens"]));
    }

    private enum RequestMode { Complete, Stream, Embed }

    /// <summary>
    /// The client's body as the upstream gets it, written straight to UTF-8 (no copy of the tree): <c>model</c> is
    /// the upstream model; a completion has <c>stream: false</c> and no <c>stream_options</c>; a stream has
    /// <c>stream: true</c> and <c>stream_options.include_usage: true</c> (so usage is always known).
    /// </summary>
    // ---- pass-through (a Responses client, Responses: native) ----

    public bool NativeResponses => string.Equals(options.Responses, "native", StringComparison.OrdinalIgnoreCase);

    public async Task<ChatResult> ResponsesAsync(NativeCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var response = await UpstreamHttp.SendAsync(http, Native("/responses", call), Name, cancellationToken);
        var bytes = await UpstreamHttp.ReadBytesAsync(response, Name, cancellationToken);
        try
        {
            using var doc = JsonDocument.Parse(bytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("output", out _))
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered something that is not a response");
            }
            return ChatResult.PassedThrough(bytes, ResponsesUsage(doc.RootElement));
        }
        catch (JsonException ex)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered invalid JSON: {ex.Message}", inner: ex);
        }
    }

    public async IAsyncEnumerable<NativeEvent> StreamResponsesAsync(NativeCall call, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var response = await UpstreamHttp.SendAsync(http, Native("/responses", call), Name, cancellationToken);
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
        await foreach (var sse in UpstreamHttp.ReadSseAsync(stream, Name, cancellationToken))
        {
            if (string.IsNullOrWhiteSpace(sse.Data))
            {
                continue;
            }
            using (var doc = ProviderSupport.ParseEvent(sse.Data, Name))
            {
                var root = doc.RootElement;
                var type = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : sse.Event;
                switch (type)
                {
                    case "response.output_text.delta" or "response.function_call_arguments.delta" or "response.refusal.delta"
                        or "response.reasoning_summary_text.delta" or "response.reasoning_text.delta" or "response.custom_tool_call_input.delta":
                        var chars = root.TryGetProperty("delta", out var d) && d.ValueKind == JsonValueKind.String ? d.GetString()!.Length : 0;
                        yield return new NativeEvent(sse.Event, sse.Data, true, null, false, chars);
                        break;
                    case "response.completed" or "response.incomplete":
                        yield return new NativeEvent(sse.Event, sse.Data, false,
                            root.TryGetProperty("response", out var done) ? ResponsesUsage(done) : null, true, 0);
                        yield break;
                    case "response.failed" or "error":
                        var message = root.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString()
                            : root.TryGetProperty("response", out var failed) && failed.TryGetProperty("error", out var fe) && fe.ValueKind == JsonValueKind.Object
                              && fe.TryGetProperty("message", out var fm) ? fm.GetString() : "unknown";
                        throw new UpstreamException(UpstreamFailure.ServerError, $"{Name}: stream {type}: {message}");
                    default:
                        yield return new NativeEvent(sse.Event, sse.Data, false, null, false, 0);
                        break;
                }
            }
        }
        throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: stream ended early (no response.completed)");
    }

    /// <summary>A Responses <c>usage</c> (<c>input_tokens</c>, <c>output_tokens</c>) as token counts.</summary>
    private static TokenUsage ResponsesUsage(JsonElement response)
    {
        if (!response.TryGetProperty("usage", out var usage) || usage.ValueKind != JsonValueKind.Object)
        {
            return default;
        }
        static int Int(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : 0;
        var cached = usage.TryGetProperty("input_tokens_details", out var details) && details.ValueKind == JsonValueKind.Object ? Int(details, "cached_tokens") : 0;
        return new TokenUsage(Int(usage, "input_tokens"), Int(usage, "output_tokens"), cached);
    }

    /// <summary>The client's body with only <c>model</c> replaced.</summary>
    private HttpRequestMessage Native(string path, NativeCall call)
    {
        var message = ProviderSupport.PassThroughRequest(_baseUrl + path, call.Request, call.UpstreamModel);
        Authorize(message);
        return message;
    }

    private HttpRequestMessage Post(string path, JsonObject request, string model, RequestMode mode)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("model", model);
            JsonBytes.WritePropertiesExcept(writer, request, mode == RequestMode.Embed ? static n => n == "model" : static n => n is "model" or "stream" or "stream_options");
            if (mode == RequestMode.Complete)
            {
                writer.WriteBoolean("stream", false);
            }
            else if (mode == RequestMode.Stream)
            {
                writer.WriteBoolean("stream", true);
                writer.WriteStartObject("stream_options");
                if (request["stream_options"] is JsonObject options)
                {
                    JsonBytes.WritePropertiesExcept(writer, options, static n => n == "include_usage");
                }
                writer.WriteBoolean("include_usage", true);
                writer.WriteEndObject();
            }
            writer.WriteEndObject();
        }
        var content = new ReadOnlyMemoryContent(buffer.WrittenMemory);
        content.Headers.ContentType = new MediaTypeHeaderValue(UpstreamHttp.JsonMediaType);
        var message = new HttpRequestMessage(HttpMethod.Post, _baseUrl + path) { Content = content };
        Authorize(message);
        return message;
    }

    private void Authorize(HttpRequestMessage request)
    {
        if (!string.IsNullOrEmpty(options.ApiKey))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", options.ApiKey);
        }
        foreach (var (key, value) in options.Headers)
        {
            request.Headers.TryAddWithoutValidation(key, value);
        }
    }
}
