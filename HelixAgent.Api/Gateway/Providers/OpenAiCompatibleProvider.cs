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
public sealed class OpenAiCompatibleProvider(string name, ProviderOptions options, HttpClient http) : IChatProvider
{
    private readonly string _baseUrl = (options.BaseUrl ?? "https://api.openai.com/v1").TrimEnd('/');

    public string Name { get; } = name;
    public string Type => "openai";
    public bool SupportsEmbeddings => true;

    public async Task<ChatResult> CompleteAsync(ChatCall call, CancellationToken cancellationToken)
    {
        var body = Clone(call.Request, call.UpstreamModel);
        body["stream"] = false;
        body.Remove("stream_options");
        using var response = await UpstreamHttp.SendAsync(http, Post("/chat/completions", body), Name, cancellationToken);
        using var doc = await UpstreamHttp.ReadJsonAsync(response, Name, cancellationToken);
        var json = JsonObject.Create(doc.RootElement.Clone())
            ?? throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered a non-object");
        if (json["choices"] is not JsonArray)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answer has no choices");
        }
        return new ChatResult(json, UsageOf(json));
    }

    public async IAsyncEnumerable<ChatChunk> StreamAsync(ChatCall call, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var body = Clone(call.Request, call.UpstreamModel);
        body["stream"] = true;
        var streamOptions = body["stream_options"] as JsonObject ?? [];
        streamOptions["include_usage"] = true;
        body["stream_options"] = streamOptions;

        using var response = await UpstreamHttp.SendAsync(http, Post("/chat/completions", body), Name, cancellationToken);
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
        var body = Clone(call.Request, call.UpstreamModel);
        using var response = await UpstreamHttp.SendAsync(http, Post("/embeddings", body), Name, cancellationToken);
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

    internal static TokenUsage UsageOf(JsonObject json)
    {
        if (json["usage"] is not JsonObject usage)
        {
            return default;
        }
        static int Int(JsonNode? n) => n is JsonValue v && v.TryGetValue<int>(out var i) ? i : 0;
        return new TokenUsage(Int(usage["prompt_tokens"]), Int(usage["completion_tokens"]));
    }

    private static JsonObject Clone(JsonObject request, string model)
    {
        var body = (JsonObject)request.DeepClone();
        body["model"] = model;
        return body;
    }

    private HttpRequestMessage Post(string path, JsonObject body)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, _baseUrl + path)
        {
            Content = new StringContent(body.ToJsonString(), Encoding.UTF8, UpstreamHttp.JsonMediaType),
        };
        Authorize(request);
        return request;
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
