using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using static HelixAgent.Api.Gateway.Providers.OpenAiShapes;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>
/// Anthropic Messages API (<c>POST /v1/messages</c>): translated to and from OpenAI chat completions for the OpenAI
/// dialects, and passed through as it is (<see cref="IMessagesPassThrough"/>) for Messages clients.
/// </summary>
public sealed class AnthropicProvider : IChatProvider, IMessagesPassThrough
{
    public const string DefaultBaseUrl = "https://api.anthropic.com";
    public const string ApiVersion = "2023-06-01";

    /// <summary>Anthropic requires <c>max_tokens</c>; this is sent when the client gave none.</summary>
    public const int DefaultMaxTokens = 4096;

    private readonly ProviderOptions _options;
    private readonly HttpClient _http;
    private readonly string _apiRoot;

    public AnthropicProvider(string name, ProviderOptions options, HttpClient http)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(http);
        Name = name;
        _options = options;
        _http = http;
        var baseUrl = ProviderSupport.BaseUrl(options, DefaultBaseUrl);
        _apiRoot = baseUrl.EndsWith("/v1", StringComparison.OrdinalIgnoreCase) ? baseUrl : baseUrl + "/v1";
    }

    public string Name { get; }

    public string Type => "anthropic";

    public bool SupportsEmbeddings => false;

    public async Task<ChatResult> CompleteAsync(ChatCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NewRequest(HttpMethod.Post, _apiRoot + "/messages", BuildRequest(call.Request, call.UpstreamModel, stream: false));
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        var body = await ProviderSupport.ReadObjectAsync(response, Name, cancellationToken);
        return TranslateResponse(body, call.UpstreamModel, call.RequestId, JsonByTool(call.Request));
    }

    public async IAsyncEnumerable<ChatChunk> StreamAsync(ChatCall call, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NewRequest(HttpMethod.Post, _apiRoot + "/messages", BuildRequest(call.Request, call.UpstreamModel, stream: true));
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        await using var stream = await ProviderSupport.OpenStreamAsync(response, Name, cancellationToken);
        var translator = new StreamTranslator(Name, call.UpstreamModel, call.RequestId, JsonByTool(call.Request));
        await foreach (var sse in UpstreamHttp.ReadSseAsync(stream, Name, cancellationToken))
        {
            foreach (var chunk in translator.Translate(sse))
            {
                yield return chunk;
            }
            if (translator.Stopped)
            {
                yield break;
            }
        }
        throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: stream ended early (no message_stop)");
    }

    public Task<EmbeddingResult> EmbedAsync(EmbeddingCall call, CancellationToken cancellationToken) =>
        Task.FromException<EmbeddingResult>(new UpstreamException(UpstreamFailure.BadRequest, "anthropic does not serve embeddings", 400));

    public Task ProbeAsync(CancellationToken cancellationToken) =>
        ProviderSupport.ProbeAsync(_http, NewRequest(HttpMethod.Get, _apiRoot + "/models?limit=1", null), Name, cancellationToken);

    // ---- pass-through (a Messages client) ----

    public async Task<ChatResult> MessagesAsync(NativeCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NativeRequest("/messages", call);
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        var bytes = await UpstreamHttp.ReadBytesAsync(response, Name, cancellationToken);
        try
        {
            using var doc = JsonDocument.Parse(bytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("content", out _))
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered something that is not a message");
            }
            return ChatResult.PassedThrough(bytes, NativeUsage(doc.RootElement, default));
        }
        catch (JsonException ex)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered invalid JSON: {ex.Message}", inner: ex);
        }
    }

    public async IAsyncEnumerable<NativeEvent> StreamMessagesAsync(NativeCall call, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NativeRequest("/messages", call);
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        await using var stream = await ProviderSupport.OpenStreamAsync(response, Name, cancellationToken);
        TokenUsage usage = default;
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
                    case "message_start":
                        usage = root.TryGetProperty("message", out var message) ? NativeUsage(message, usage) : usage;
                        yield return new NativeEvent(sse.Event, sse.Data, false, usage, false, 0);
                        break;
                    case "content_block_delta":
                        yield return new NativeEvent(sse.Event, sse.Data, true, null, false, DeltaChars(root));
                        break;
                    case "message_delta":
                        usage = NativeUsage(root, usage);
                        yield return new NativeEvent(sse.Event, sse.Data, false, usage, true, 0);
                        break;
                    case "message_stop":
                        yield return new NativeEvent(sse.Event, sse.Data, false, null, false, 0);
                        yield break;
                    case "error":
                        var error = root.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.Object ? e : default;
                        var errorType = error.ValueKind == JsonValueKind.Object && error.TryGetProperty("type", out var et) ? et.GetString() : "error";
                        var errorMessage = error.ValueKind == JsonValueKind.Object && error.TryGetProperty("message", out var em) ? em.GetString() : "unknown";
                        throw new UpstreamException(UpstreamFailure.ServerError, $"{Name}: stream error {errorType}: {errorMessage}",
                            errorType == "overloaded_error" ? 529 : null);
                    default:
                        yield return new NativeEvent(sse.Event, sse.Data, false, null, false, 0);
                        break;
                }
            }
        }
        throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: stream ended early (no message_stop)");
    }

    public async Task<ReadOnlyMemory<byte>> CountTokensAsync(NativeCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NativeRequest("/messages/count_tokens", call);
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        return await UpstreamHttp.ReadBytesAsync(response, Name, cancellationToken);
    }

    /// <summary>The client's body with only <c>model</c> replaced, written straight to UTF-8; the client's version and betas.</summary>
    private HttpRequestMessage NativeRequest(string path, NativeCall call)
    {
        var request = ProviderSupport.PassThroughRequest(_apiRoot + path, call.Request, call.UpstreamModel);
        if (!string.IsNullOrEmpty(_options.ApiKey))
        {
            ProviderSupport.SetHeader(request, "x-api-key", _options.ApiKey);
        }
        ProviderSupport.SetHeader(request, "anthropic-version", ApiVersion);
        foreach (var (name, value) in call.Headers)
        {
            if (value.Length > 0)
            {
                ProviderSupport.SetHeader(request, name, value);
            }
        }
        ProviderSupport.AddConfiguredHeaders(request, _options);
        return request;
    }

    /// <summary>The <c>usage</c> of a message or <c>message_delta</c>, over what was known (cache reads and writes are prompt).</summary>
    private static TokenUsage NativeUsage(JsonElement owner, TokenUsage known)
    {
        if (!owner.TryGetProperty("usage", out var usage) || usage.ValueKind != JsonValueKind.Object)
        {
            return known;
        }
        static int? Int(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : null;
        if (Int(usage, "input_tokens") is not { } input)
        {
            return known with { CompletionTokens = Int(usage, "output_tokens") ?? known.CompletionTokens };
        }
        var write = Int(usage, "cache_creation_input_tokens") ?? 0;
        var read = Int(usage, "cache_read_input_tokens") ?? 0;
        return new TokenUsage(input + write + read, Int(usage, "output_tokens") ?? known.CompletionTokens, read, write);
    }

    private static int DeltaChars(JsonElement root)
    {
        if (!root.TryGetProperty("delta", out var delta) || delta.ValueKind != JsonValueKind.Object)
        {
            return 0;
        }
        foreach (var name in (ReadOnlySpan<string>)["text", "partial_json", "thinking"])
        {
            if (delta.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String)
            {
                return v.GetString()!.Length;
            }
        }
        return 0;
    }

    private HttpRequestMessage NewRequest(HttpMethod method, string url, JsonObject? body)
    {
        var request = ProviderSupport.JsonRequest(method, url, body);
        if (!string.IsNullOrEmpty(_options.ApiKey))
        {
            ProviderSupport.SetHeader(request, "x-api-key", _options.ApiKey);
        }
        ProviderSupport.SetHeader(request, "anthropic-version", ApiVersion);
        ProviderSupport.AddConfiguredHeaders(request, _options);
        return request;
    }

    // ---- request translation ----

    /// <summary>The Anthropic Messages request for an OpenAI chat request (which is left untouched).</summary>
    internal static JsonObject BuildRequest(JsonObject request, string model, bool stream)
    {
        var system = new List<string>();
        var messages = new JsonArray();
        JsonObject? toolResultTurn = null; // the user turn that consecutive tool results (and a following user message) join
        foreach (var message in ProviderSupport.Objects(ProviderSupport.Messages(request)))
        {
            var role = StringOf(message["role"]);
            switch (role)
            {
                case "system" or "developer":
                    var text = TextOf(message["content"]);
                    if (text.Length > 0)
                    {
                        system.Add(text);
                    }
                    break;
                case "user":
                    var blocks = UserBlocks(message["content"]);
                    if (toolResultTurn is not null)
                    {
                        var content = (JsonArray)toolResultTurn["content"]!;
                        foreach (var block in blocks.ToList())
                        {
                            blocks.Remove(block);
                            content.Add(block);
                        }
                        toolResultTurn = null;
                    }
                    else
                    {
                        messages.Add(new JsonObject { ["role"] = "user", ["content"] = blocks });
                    }
                    break;
                case "assistant":
                    toolResultTurn = null;
                    var assistant = AssistantBlocks(message);
                    if (assistant.Count > 0)
                    {
                        messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = assistant });
                    }
                    break;
                case "tool":
                    var result = new JsonObject
                    {
                        ["type"] = "tool_result",
                        ["tool_use_id"] = StringOf(message["tool_call_id"]) ?? throw ProviderSupport.BadRequest("tool messages need a tool_call_id"),
                        ["content"] = TextOf(message["content"]),
                    };
                    if (toolResultTurn is null)
                    {
                        toolResultTurn = new JsonObject { ["role"] = "user", ["content"] = new JsonArray() };
                        messages.Add(toolResultTurn);
                    }
                    ((JsonArray)toolResultTurn["content"]!).Add(result);
                    break;
                default:
                    throw ProviderSupport.BadRequest($"anthropic: unsupported message role '{role}'");
            }
        }

        var body = new JsonObject
        {
            ["model"] = model,
            ["max_tokens"] = MaxTokens(request) ?? DefaultMaxTokens,
        };
        if (system.Count > 0)
        {
            body["system"] = string.Join("\n\n", system);
        }
        body["messages"] = messages;

        var stops = StopSequences(request);
        if (stops.Count > 0)
        {
            body["stop_sequences"] = new JsonArray(stops.Select(s => (JsonNode?)s).ToArray());
        }
        if (NumberOf(request["temperature"]) is { } temperature)
        {
            // OpenAI's range is 0 to 2, Anthropic's 0 to 1: the hottest OpenAI setting is Anthropic's hottest.
            body["temperature"] = temperature.GetValue<double>() > 1 ? 1 : temperature;
        }
        if (NumberOf(request["top_p"]) is { } topP)
        {
            body["top_p"] = topP;
        }
        if (StringOf(request["user"]) is { Length: > 0 } user)
        {
            body["metadata"] = new JsonObject { ["user_id"] = user };
        }

        var tools = new JsonArray();
        foreach (var tool in ProviderSupport.Objects(request["tools"]))
        {
            if (StringOf(tool["type"]) is not (null or "function") || tool["function"] is not JsonObject function)
            {
                continue;
            }
            var translated = new JsonObject { ["name"] = StringOf(function["name"]) ?? throw ProviderSupport.BadRequest("tools[].function.name is required") };
            if (StringOf(function["description"]) is { } description)
            {
                translated["description"] = description;
            }
            translated["input_schema"] = function["parameters"] is JsonObject parameters
                ? parameters.DeepClone()
                : new JsonObject { ["type"] = "object", ["properties"] = new JsonObject() };
            tools.Add(translated);
        }
        if (tools.Count == 0 && JsonByTool(request))
        {
            // Anthropic's answer to "reply in JSON (of this schema)": a tool whose input is the answer, forced.
            tools.Add(new JsonObject
            {
                ["name"] = JsonToolName,
                ["description"] = "Give the answer as this tool's input: a JSON value of its schema.",
                ["input_schema"] = ResponseSchema(request)?.DeepClone() ?? new JsonObject { ["type"] = "object" },
            });
            body["tools"] = tools;
            body["tool_choice"] = new JsonObject { ["type"] = "tool", ["name"] = JsonToolName };
        }
        else if (tools.Count > 0)
        {
            body["tools"] = tools;
            var choice = ToolChoice(request["tool_choice"]);
            if (IsBool(request["parallel_tool_calls"], false) && StringOf(choice?["type"]) != "none")
            {
                choice ??= new JsonObject { ["type"] = "auto" };
                choice["disable_parallel_tool_use"] = true;
            }
            if (choice is not null)
            {
                body["tool_choice"] = choice;
            }
        }
        if (stream)
        {
            body["stream"] = true;
        }
        return body;
    }

    /// <summary>The tool that carries a JSON answer (<c>response_format</c> <c>json_object</c> or <c>json_schema</c> without other tools).</summary>
    internal const string JsonToolName = "json_response";

    /// <summary>Whether the request asks for a JSON answer, and has no tools of its own (so the JSON tool may be forced).</summary>
    internal static bool JsonByTool(JsonObject request) =>
        ResponseFormatType(request) is "json_object" or "json_schema" && request["tools"] is not JsonArray { Count: > 0 };

    private static JsonObject? ToolChoice(JsonNode? choice)
    {
        if (StringOf(choice) is { } mode)
        {
            return mode switch
            {
                "auto" => new JsonObject { ["type"] = "auto" },
                "required" => new JsonObject { ["type"] = "any" },
                "none" => new JsonObject { ["type"] = "none" },
                _ => throw ProviderSupport.BadRequest($"unsupported tool_choice '{mode}'"),
            };
        }
        if (choice is JsonObject obj && obj["function"] is JsonObject function && StringOf(function["name"]) is { } name)
        {
            return new JsonObject { ["type"] = "tool", ["name"] = name };
        }
        return null;
    }

    private static JsonArray UserBlocks(JsonNode? content)
    {
        var blocks = new JsonArray();
        if (StringOf(content) is { } text)
        {
            blocks.Add(TextBlock(text));
            return blocks;
        }
        foreach (var part in ProviderSupport.Items(content))
        {
            if (StringOf(part) is { } s)
            {
                blocks.Add(TextBlock(s));
                continue;
            }
            if (part is not JsonObject p)
            {
                continue;
            }
            switch (StringOf(p["type"]))
            {
                case "text":
                    var partText = StringOf(p["text"]) ?? "";
                    if (partText.Length > 0)
                    {
                        blocks.Add(TextBlock(partText));
                    }
                    break;
                case "image_url":
                    blocks.Add(ImageBlock(ImageUrlOf(p) ?? throw ProviderSupport.BadRequest("image_url parts need a url")));
                    break;
                default:
                    throw ProviderSupport.BadRequest($"anthropic: unsupported content part type '{StringOf(p["type"])}'");
            }
        }
        return blocks;
    }

    private static JsonObject TextBlock(string text) => new() { ["type"] = "text", ["text"] = text };

    private static JsonObject ImageBlock(string url)
    {
        if (TryParseDataUrl(url, out var mediaType, out var data))
        {
            return new JsonObject
            {
                ["type"] = "image",
                ["source"] = new JsonObject { ["type"] = "base64", ["media_type"] = mediaType, ["data"] = data },
            };
        }
        return new JsonObject { ["type"] = "image", ["source"] = new JsonObject { ["type"] = "url", ["url"] = url } };
    }

    private static JsonArray AssistantBlocks(JsonObject message)
    {
        var blocks = new JsonArray();
        var text = TextOf(message["content"]);
        if (text.Length > 0)
        {
            blocks.Add(TextBlock(text));
        }
        foreach (var call in ProviderSupport.Objects(message["tool_calls"]))
        {
            var function = call["function"] as JsonObject ?? throw ProviderSupport.BadRequest("tool_calls[].function is required");
            blocks.Add(new JsonObject
            {
                ["type"] = "tool_use",
                ["id"] = StringOf(call["id"]) ?? throw ProviderSupport.BadRequest("tool_calls[].id is required"),
                ["name"] = StringOf(function["name"]) ?? throw ProviderSupport.BadRequest("tool_calls[].function.name is required"),
                ["input"] = ParseArguments(StringOf(function["arguments"])),
            });
        }
        return blocks;
    }

    // ---- response translation ----

    internal static ChatResult TranslateResponse(JsonObject response, string fallbackModel, string requestId, bool jsonByTool = false)
    {
        var text = new StringBuilder();
        var toolCalls = new JsonArray();
        foreach (var block in ProviderSupport.Objects(response["content"]))
        {
            switch (StringOf(block["type"]))
            {
                case "text":
                    text.Append(StringOf(block["text"]));
                    break;
                case "tool_use" when jsonByTool && StringOf(block["name"]) == JsonToolName:
                    text.Append(block["input"]?.ToJsonString() ?? "{}");
                    break;
                case "tool_use":
                    toolCalls.Add(ToolCall(
                        StringOf(block["id"]) ?? NewToolCallId(),
                        StringOf(block["name"]) ?? "",
                        block["input"]?.ToJsonString() ?? "{}"));
                    break;
            }
        }
        var usage = Usage(response["usage"] as JsonObject, 0, 0);
        var completion = Completion(
            CompletionId(StringOf(response["id"]), requestId),
            StringOf(response["model"]) ?? fallbackModel,
            UnixNow(),
            AssistantMessage(text.ToString(), toolCalls),
            toolCalls.Count == 0 && jsonByTool && StringOf(response["stop_reason"]) == "tool_use" ? "stop" : FinishReason(StringOf(response["stop_reason"])),
            usage);
        return new ChatResult(completion, usage);
    }

    private static string CompletionId(string? upstreamId, string requestId) =>
        "chatcmpl-" + (string.IsNullOrEmpty(upstreamId) ? requestId : upstreamId);

    /// <summary>Anthropic usage: cache reads and writes are part of the prompt OpenAI-style.</summary>
    private static TokenUsage Usage(JsonObject? usage, int prompt, int completion)
    {
        if (usage is null)
        {
            return new TokenUsage(prompt, completion);
        }
        int read = 0, write = 0;
        if (IntOf(usage["input_tokens"]) is { } input)
        {
            write = IntOf(usage["cache_creation_input_tokens"]) ?? 0;
            read = IntOf(usage["cache_read_input_tokens"]) ?? 0;
            prompt = input + write + read;
        }
        return new TokenUsage(prompt, IntOf(usage["output_tokens"]) ?? completion, read, write);
    }

    internal static string FinishReason(string? stopReason) => stopReason switch
    {
        "max_tokens" or "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    };

    /// <summary>Turns Anthropic stream events into OpenAI chunks.</summary>
    private sealed class StreamTranslator(string provider, string model, string requestId, bool jsonByTool)
    {
        private int _jsonBlock = -1;
        private readonly long _created = UnixNow();
        private readonly Dictionary<int, int> _toolIndexByBlock = [];
        private string _id = "chatcmpl-" + requestId;
        private string _model = model;
        private TokenUsage _usage;

        public bool Stopped { get; private set; }

        public List<ChatChunk> Translate(UpstreamHttp.SseEvent sse)
        {
            var chunks = new List<ChatChunk>();
            if (string.IsNullOrWhiteSpace(sse.Data))
            {
                return chunks;
            }
            var data = ProviderSupport.ParseObject(sse.Data, provider);
            switch (StringOf(data["type"]) ?? sse.Event)
            {
                case "message_start":
                    var message = data["message"] as JsonObject;
                    _id = CompletionId(StringOf(message?["id"]), requestId);
                    _model = StringOf(message?["model"]) ?? _model;
                    _usage = Usage(message?["usage"] as JsonObject, 0, 0);
                    chunks.Add(Emit(new JsonObject { ["role"] = "assistant", ["content"] = "" }, null));
                    break;
                case "content_block_start":
                    if (data["content_block"] is JsonObject block)
                    {
                        var blockIndex = IntOf(data["index"]) ?? 0;
                        if (StringOf(block["type"]) == "tool_use" && jsonByTool && StringOf(block["name"]) == JsonToolName)
                        {
                            _jsonBlock = blockIndex; // its input is the answer: streamed as content
                        }
                        else if (StringOf(block["type"]) == "tool_use")
                        {
                            var toolIndex = _toolIndexByBlock.Count;
                            _toolIndexByBlock[blockIndex] = toolIndex;
                            chunks.Add(Emit(ToolDelta(ToolCallDelta(toolIndex, StringOf(block["id"]) ?? NewToolCallId(), StringOf(block["name"]) ?? "", "")), null));
                        }
                        else if (StringOf(block["type"]) == "text" && StringOf(block["text"]) is { Length: > 0 } initial)
                        {
                            chunks.Add(Emit(new JsonObject { ["content"] = initial }, null));
                        }
                    }
                    break;
                case "content_block_delta":
                    if (data["delta"] is JsonObject delta)
                    {
                        switch (StringOf(delta["type"]))
                        {
                            case "text_delta" when StringOf(delta["text"]) is { Length: > 0 } text:
                                chunks.Add(Emit(new JsonObject { ["content"] = text }, null));
                                break;
                            case "input_json_delta" when StringOf(delta["partial_json"]) is { Length: > 0 } answer && _jsonBlock == (IntOf(data["index"]) ?? 0):
                                chunks.Add(Emit(new JsonObject { ["content"] = answer }, null));
                                break;
                            case "input_json_delta" when StringOf(delta["partial_json"]) is { Length: > 0 } json &&
                                                         _toolIndexByBlock.TryGetValue(IntOf(data["index"]) ?? 0, out var toolIndex):
                                chunks.Add(Emit(ToolDelta(ToolCallDelta(toolIndex, null, null, json)), null));
                                break;
                        }
                    }
                    break;
                case "message_delta":
                    var reported = Usage(data["usage"] as JsonObject, _usage.PromptTokens, _usage.CompletionTokens);
                    // A delta without input_tokens keeps the cache reads and writes message_start reported.
                    _usage = IntOf(data["usage"]?["input_tokens"]) is null ? reported with { CachedTokens = _usage.CachedTokens, CacheWriteTokens = _usage.CacheWriteTokens } : reported;
                    if (data["delta"] is JsonObject messageDelta && messageDelta["stop_reason"] is not null)
                    {
                        var stop = StringOf(messageDelta["stop_reason"]);
                        chunks.Add(Emit([], stop == "tool_use" && _jsonBlock >= 0 && _toolIndexByBlock.Count == 0 ? "stop" : FinishReason(stop)));
                    }
                    break;
                case "message_stop":
                    Stopped = true;
                    chunks.Add(new ChatChunk(UsageChunk(_id, _model, _created, _usage), false, _usage));
                    break;
                case "error":
                    var error = data["error"] as JsonObject;
                    var type = StringOf(error?["type"]) ?? "error";
                    throw new UpstreamException(UpstreamFailure.ServerError,
                        $"{provider}: stream error {type}: {StringOf(error?["message"]) ?? "unknown"}",
                        type == "overloaded_error" ? 529 : null);
                default:
                    break; // ping, content_block_stop, unknown future events
            }
            return chunks;
        }

        private static JsonObject ToolDelta(JsonObject toolCall) => new() { ["tool_calls"] = new JsonArray(toolCall) };

        private ChatChunk Emit(JsonObject delta, string? finishReason) =>
            new(Chunk(_id, _model, _created, delta, finishReason), HasContent(delta));
    }
}
