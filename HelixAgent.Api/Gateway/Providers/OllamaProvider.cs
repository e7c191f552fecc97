using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using static HelixAgent.Api.Gateway.Providers.OpenAiShapes;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>Ollama's native API (<c>/api/chat</c> with NDJSON streaming, <c>/api/embed</c>, <c>/api/tags</c>).</summary>
public sealed class OllamaProvider : IChatProvider
{
    public const string DefaultBaseUrl = "http://localhost:11434";

    private readonly ProviderOptions _options;
    private readonly HttpClient _http;
    private readonly string _baseUrl;

    public OllamaProvider(string name, ProviderOptions options, HttpClient http)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(http);
        Name = name;
        _options = options;
        _http = http;
        _baseUrl = ProviderSupport.BaseUrl(options, DefaultBaseUrl);
    }

    public string Name { get; }

    public string Type => "ollama";

    public bool SupportsEmbeddings => true;

    public async Task<ChatResult> CompleteAsync(ChatCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NewRequest(HttpMethod.Post, _baseUrl + "/api/chat", BuildRequest(call.Request, call.UpstreamModel, stream: false));
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        var body = await ProviderSupport.ReadObjectAsync(response, Name, cancellationToken);
        ThrowIfError(body, Name);
        return TranslateResponse(body, call.UpstreamModel, call.RequestId);
    }

    public async IAsyncEnumerable<ChatChunk> StreamAsync(ChatCall call, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NewRequest(HttpMethod.Post, _baseUrl + "/api/chat", BuildRequest(call.Request, call.UpstreamModel, stream: true));
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        await using var stream = await ProviderSupport.OpenStreamAsync(response, Name, cancellationToken);
        var id = "chatcmpl-" + call.RequestId;
        var created = UnixNow();
        var model = call.UpstreamModel;
        var started = false;
        var toolCalls = 0;
        await foreach (var line in UpstreamHttp.ReadLinesAsync(stream, Name, cancellationToken))
        {
            var item = ProviderSupport.ParseObject(line, Name);
            ThrowIfError(item, Name);
            model = StringOf(item["model"]) ?? model;
            if (!started)
            {
                started = true;
                created = CreatedOf(item);
                yield return Emit(new JsonObject { ["role"] = "assistant", ["content"] = "" }, null);
            }
            var message = item["message"] as JsonObject;
            if (StringOf(message?["content"]) is { Length: > 0 } content)
            {
                yield return Emit(new JsonObject { ["content"] = content }, null);
            }
            var calls = new JsonArray();
            foreach (var toolCall in ProviderSupport.Objects(message?["tool_calls"]))
            {
                var (callId, name, arguments) = ReadToolCall(toolCall);
                calls.Add(ToolCallDelta(toolCalls++, callId, name, arguments));
            }
            if (calls.Count > 0)
            {
                yield return Emit(new JsonObject { ["tool_calls"] = calls }, null);
            }
            if (IsBool(item["done"], true))
            {
                var usage = UsageOf(item);
                yield return Emit([], FinishReason(StringOf(item["done_reason"]), toolCalls > 0));
                yield return new ChatChunk(UsageChunk(id, model, created, usage), false, usage);
                yield break;
            }
        }
        throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: stream ended early (no done:true)");

        ChatChunk Emit(JsonObject delta, string? finishReason) => new(Chunk(id, model, created, delta, finishReason), HasContent(delta));
    }

    public async Task<EmbeddingResult> EmbedAsync(EmbeddingCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        var inputs = EmbeddingInputs(call.Request);
        var body = new JsonObject
        {
            ["model"] = call.UpstreamModel,
            ["input"] = new JsonArray(inputs.Select(s => (JsonNode?)s).ToArray()),
        };
        if (IntOf(call.Request["dimensions"]) is > 0 and var dimensions)
        {
            body["dimensions"] = dimensions;
        }
        using var request = NewRequest(HttpMethod.Post, _baseUrl + "/api/embed", body);
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        var result = await ProviderSupport.ReadObjectAsync(response, Name, cancellationToken);
        ThrowIfError(result, Name);
        var data = new JsonArray();
        var base64 = WantsBase64(call.Request);
        foreach (var vector in ProviderSupport.Items(result["embeddings"]))
        {
            data.Add(Embedding(data.Count, vector as JsonArray ?? throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: embedding is not an array"), base64));
        }
        if (data.Count != inputs.Count)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered {data.Count} embeddings for {inputs.Count} inputs");
        }
        var tokens = IntOf(result["prompt_eval_count"]) ?? 0;
        return new EmbeddingResult(EmbeddingList(data, call.UpstreamModel, tokens), new TokenUsage(tokens, 0));
    }

    public Task ProbeAsync(CancellationToken cancellationToken) =>
        ProviderSupport.ProbeAsync(_http, NewRequest(HttpMethod.Get, _baseUrl + "/api/tags", null), Name, cancellationToken);

    private HttpRequestMessage NewRequest(HttpMethod method, string url, JsonObject? body)
    {
        var request = ProviderSupport.JsonRequest(method, url, body);
        if (!string.IsNullOrEmpty(_options.ApiKey))
        {
            // Plain Ollama needs no key; a key is for Ollama behind an authenticating proxy or ollama.com.
            ProviderSupport.SetHeader(request, "Authorization", "Bearer " + _options.ApiKey);
        }
        ProviderSupport.AddConfiguredHeaders(request, _options);
        return request;
    }

    /// <summary>Ollama reports failures as <c>{"error": "..."}</c>, also as a line in the middle of a stream.</summary>
    private static void ThrowIfError(JsonObject body, string provider)
    {
        if (body["error"] is { } error)
        {
            var message = StringOf(error) ?? StringOf((error as JsonObject)?["message"]) ?? error.ToJsonString();
            throw new UpstreamException(UpstreamFailure.ServerError, $"{provider}: {message}");
        }
    }

    // ---- request translation ----

    internal static JsonObject BuildRequest(JsonObject request, string model, bool stream)
    {
        var messages = new JsonArray();
        var toolNames = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var message in ProviderSupport.Objects(ProviderSupport.Messages(request)))
        {
            var role = StringOf(message["role"]);
            switch (role)
            {
                case "system" or "developer":
                    messages.Add(new JsonObject { ["role"] = "system", ["content"] = TextOf(message["content"]) });
                    break;
                case "user":
                    var user = new JsonObject { ["role"] = "user", ["content"] = TextOf(message["content"]) };
                    var images = Images(message["content"]);
                    if (images.Count > 0)
                    {
                        user["images"] = images;
                    }
                    messages.Add(user);
                    break;
                case "assistant":
                    var assistant = new JsonObject { ["role"] = "assistant", ["content"] = TextOf(message["content"]) };
                    var calls = new JsonArray();
                    foreach (var call in ProviderSupport.Objects(message["tool_calls"]))
                    {
                        var function = call["function"] as JsonObject ?? throw ProviderSupport.BadRequest("tool_calls[].function is required");
                        var name = StringOf(function["name"]) ?? throw ProviderSupport.BadRequest("tool_calls[].function.name is required");
                        if (StringOf(call["id"]) is { } callId)
                        {
                            toolNames[callId] = name;
                        }
                        calls.Add(new JsonObject
                        {
                            ["function"] = new JsonObject { ["name"] = name, ["arguments"] = ParseArguments(StringOf(function["arguments"])) },
                        });
                    }
                    if (calls.Count > 0)
                    {
                        assistant["tool_calls"] = calls;
                    }
                    messages.Add(assistant);
                    break;
                case "tool":
                    var tool = new JsonObject { ["role"] = "tool", ["content"] = TextOf(message["content"]) };
                    if (StringOf(message["tool_call_id"]) is { } id && toolNames.TryGetValue(id, out var toolName))
                    {
                        tool["tool_name"] = toolName;
                    }
                    messages.Add(tool);
                    break;
                default:
                    throw ProviderSupport.BadRequest($"ollama: unsupported message role '{role}'");
            }
        }

        var body = new JsonObject
        {
            ["model"] = model,
            ["messages"] = messages,
            ["stream"] = stream, // Ollama streams unless told not to
        };
        var options = new JsonObject();
        if (NumberOf(request["temperature"]) is { } temperature)
        {
            options["temperature"] = temperature;
        }
        if (NumberOf(request["top_p"]) is { } topP)
        {
            options["top_p"] = topP;
        }
        if (IntOf(request["top_k"]) is { } topK)
        {
            options["top_k"] = topK;
        }
        if (MaxTokens(request) is { } maxTokens)
        {
            options["num_predict"] = maxTokens;
        }
        var stops = StopSequences(request);
        if (stops.Count > 0)
        {
            options["stop"] = new JsonArray(stops.Select(s => (JsonNode?)s).ToArray());
        }
        if (NumberOf(request["seed"]) is { } seed)
        {
            options["seed"] = seed;
        }
        if (NumberOf(request["presence_penalty"]) is { } presence)
        {
            options["presence_penalty"] = presence;
        }
        if (NumberOf(request["frequency_penalty"]) is { } frequency)
        {
            options["frequency_penalty"] = frequency;
        }
        if (options.Count > 0)
        {
            body["options"] = options;
        }
        if (ResponseFormatType(request) == "json_object")
        {
            body["format"] = "json";
        }
        else if (ResponseSchema(request) is { } schema)
        {
            body["format"] = schema.DeepClone(); // Ollama's structured outputs take the schema itself
        }
        var tools = new JsonArray();
        foreach (var tool in ProviderSupport.Objects(request["tools"]))
        {
            if (StringOf(tool["type"]) is null or "function" && tool["function"] is JsonObject)
            {
                tools.Add(tool.DeepClone()); // Ollama takes OpenAI's tool shape as is
            }
        }
        if (tools.Count > 0 && StringOf(request["tool_choice"]) != "none")
        {
            body["tools"] = tools;
        }
        return body;
    }

    /// <summary>Base64 images of the <c>image_url</c> parts; Ollama fetches no URLs, so only data URLs are accepted.</summary>
    private static JsonArray Images(JsonNode? content)
    {
        var images = new JsonArray();
        foreach (var part in ProviderSupport.Objects(content))
        {
            if (StringOf(part["type"]) != "image_url")
            {
                continue;
            }
            var url = ImageUrlOf(part) ?? throw ProviderSupport.BadRequest("image_url parts need a url");
            if (!TryParseDataUrl(url, out _, out var data))
            {
                throw ProviderSupport.BadRequest("ollama: images must be data: URLs (base64)");
            }
            images.Add(data);
        }
        return images;
    }

    // ---- response translation ----

    internal static string FinishReason(string? doneReason, bool hasToolCalls) =>
        hasToolCalls ? "tool_calls" : doneReason == "length" ? "length" : "stop";

    private static TokenUsage UsageOf(JsonObject item) =>
        new(IntOf(item["prompt_eval_count"]) ?? 0, IntOf(item["eval_count"]) ?? 0);

    private static long CreatedOf(JsonObject item) =>
        StringOf(item["created_at"]) is { } createdAt &&
        DateTimeOffset.TryParse(createdAt, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var when)
            ? when.ToUnixTimeSeconds()
            : UnixNow();

    private static (string Id, string Name, string Arguments) ReadToolCall(JsonObject toolCall)
    {
        var function = toolCall["function"] as JsonObject;
        var arguments = function?["arguments"] switch
        {
            null => "{}",
            JsonValue v when StringOf(v) is { } s => s,
            var node => node.ToJsonString(),
        };
        return (StringOf(toolCall["id"]) ?? NewToolCallId(), StringOf(function?["name"]) ?? "", arguments);
    }

    internal static ChatResult TranslateResponse(JsonObject response, string fallbackModel, string requestId)
    {
        var message = response["message"] as JsonObject;
        var toolCalls = new JsonArray();
        foreach (var toolCall in ProviderSupport.Objects(message?["tool_calls"]))
        {
            var (id, name, arguments) = ReadToolCall(toolCall);
            toolCalls.Add(ToolCall(id, name, arguments));
        }
        var usage = UsageOf(response);
        var completion = Completion(
            "chatcmpl-" + requestId,
            StringOf(response["model"]) ?? fallbackModel,
            CreatedOf(response),
            AssistantMessage(StringOf(message?["content"]) ?? "", toolCalls),
            FinishReason(StringOf(response["done_reason"]), toolCalls.Count > 0),
            usage);
        return new ChatResult(completion, usage);
    }
}
