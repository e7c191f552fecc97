using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using static HelixAgent.Api.Gateway.Providers.OpenAiShapes;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>Google Gemini API (<c>generateContent</c>, <c>streamGenerateContent</c>, <c>batchEmbedContents</c>).</summary>
public sealed class GeminiProvider : IChatProvider
{
    public const string DefaultBaseUrl = "https://generativelanguage.googleapis.com/v1beta";

    private readonly ProviderOptions _options;
    private readonly HttpClient _http;
    private readonly string _baseUrl;

    public GeminiProvider(string name, ProviderOptions options, HttpClient http)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(http);
        Name = name;
        _options = options;
        _http = http;
        _baseUrl = ProviderSupport.BaseUrl(options, DefaultBaseUrl);
    }

    public string Name { get; }

    public string Type => "gemini";

    public bool SupportsEmbeddings => true;

    public async Task<ChatResult> CompleteAsync(ChatCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NewRequest(HttpMethod.Post, $"{ModelUrl(call.UpstreamModel)}:generateContent", BuildRequest(call.Request));
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        var body = await ProviderSupport.ReadObjectAsync(response, Name, cancellationToken);
        ThrowIfError(body, Name);
        return TranslateResponse(body, call.UpstreamModel, call.RequestId);
    }

    public async IAsyncEnumerable<ChatChunk> StreamAsync(ChatCall call, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        using var request = NewRequest(HttpMethod.Post, $"{ModelUrl(call.UpstreamModel)}:streamGenerateContent?alt=sse", BuildRequest(call.Request));
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        await using var stream = await ProviderSupport.OpenStreamAsync(response, Name, cancellationToken);
        var translator = new StreamTranslator(Name, call.UpstreamModel, call.RequestId);
        await foreach (var sse in UpstreamHttp.ReadSseAsync(stream, Name, cancellationToken))
        {
            if (string.IsNullOrWhiteSpace(sse.Data) || sse.Data.Trim() == "[DONE]")
            {
                continue;
            }
            foreach (var chunk in translator.Translate(ProviderSupport.ParseObject(sse.Data, Name)))
            {
                yield return chunk;
            }
        }
        yield return translator.Finish();
    }

    public async Task<EmbeddingResult> EmbedAsync(EmbeddingCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        var inputs = EmbeddingInputs(call.Request);
        var model = "models/" + BareModel(call.UpstreamModel);
        var dimensions = IntOf(call.Request["dimensions"]);
        var requests = new JsonArray();
        foreach (var text in inputs)
        {
            var item = new JsonObject
            {
                ["model"] = model,
                ["content"] = new JsonObject { ["parts"] = new JsonArray(new JsonObject { ["text"] = text }) },
            };
            if (dimensions is > 0)
            {
                item["outputDimensionality"] = dimensions;
            }
            requests.Add(item);
        }
        using var request = NewRequest(HttpMethod.Post, $"{ModelUrl(call.UpstreamModel)}:batchEmbedContents", new JsonObject { ["requests"] = requests });
        using var response = await UpstreamHttp.SendAsync(_http, request, Name, cancellationToken);
        var body = await ProviderSupport.ReadObjectAsync(response, Name, cancellationToken);
        ThrowIfError(body, Name);

        var data = new JsonArray();
        var base64 = WantsBase64(call.Request);
        foreach (var embedding in ProviderSupport.Items(body["embeddings"]))
        {
            if (embedding is not JsonObject { } e || e["values"] is not JsonArray values)
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: embedding without values");
            }
            data.Add(Embedding(data.Count, values, base64));
        }
        if (data.Count != inputs.Count)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: answered {data.Count} embeddings for {inputs.Count} inputs");
        }
        // Gemini does not report embedding tokens: estimate about four characters a token.
        var characters = inputs.Sum(t => (long)t.Length);
        var tokens = (int)Math.Min(int.MaxValue, (characters + 3) / 4);
        var usage = new TokenUsage(tokens, 0);
        return new EmbeddingResult(EmbeddingList(data, call.UpstreamModel, tokens), usage);
    }

    public Task ProbeAsync(CancellationToken cancellationToken) =>
        ProviderSupport.ProbeAsync(_http, NewRequest(HttpMethod.Get, _baseUrl + "/models?pageSize=1", null), Name, cancellationToken);

    private string ModelUrl(string model) => $"{_baseUrl}/models/{BareModel(model)}";

    /// <summary>The model id without a <c>models/</c> prefix.</summary>
    private static string BareModel(string model) =>
        model.StartsWith("models/", StringComparison.Ordinal) ? model["models/".Length..] : model;

    private HttpRequestMessage NewRequest(HttpMethod method, string url, JsonObject? body)
    {
        var request = ProviderSupport.JsonRequest(method, url, body);
        if (!string.IsNullOrEmpty(_options.ApiKey))
        {
            ProviderSupport.SetHeader(request, "x-goog-api-key", _options.ApiKey);
        }
        ProviderSupport.AddConfiguredHeaders(request, _options);
        return request;
    }

    /// <summary>A 200 body (or stream item) carrying <c>error</c>: 429/RESOURCE_EXHAUSTED is rate limiting, else a server error.</summary>
    private static void ThrowIfError(JsonObject body, string provider)
    {
        if (body["error"] is not JsonObject error)
        {
            return;
        }
        var code = IntOf(error["code"]);
        var status = StringOf(error["status"]);
        var kind = code == 429 || status == "RESOURCE_EXHAUSTED" ? UpstreamFailure.RateLimited : UpstreamFailure.ServerError;
        throw new UpstreamException(kind, $"{provider}: {status ?? "error"}: {StringOf(error["message"]) ?? "unknown"}", code);
    }

    // ---- request translation ----

    internal static JsonObject BuildRequest(JsonObject request)
    {
        var system = new List<string>();
        var contents = new JsonArray();
        var toolNames = new Dictionary<string, string>(StringComparer.Ordinal);
        JsonArray? toolResponseParts = null; // consecutive tool results share one user turn
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
                    toolResponseParts = null;
                    contents.Add(new JsonObject { ["role"] = "user", ["parts"] = UserParts(message["content"]) });
                    break;
                case "assistant":
                    toolResponseParts = null;
                    var parts = AssistantParts(message, toolNames);
                    if (parts.Count > 0)
                    {
                        contents.Add(new JsonObject { ["role"] = "model", ["parts"] = parts });
                    }
                    break;
                case "tool":
                    var id = StringOf(message["tool_call_id"]);
                    var name = (id is not null && toolNames.TryGetValue(id, out var known) ? known : null)
                        ?? StringOf(message["name"])
                        ?? throw ProviderSupport.BadRequest("gemini: a tool message answers no earlier assistant tool call");
                    var part = new JsonObject
                    {
                        ["functionResponse"] = new JsonObject
                        {
                            ["name"] = name,
                            ["response"] = new JsonObject { ["content"] = ToolResultContent(TextOf(message["content"])) },
                        },
                    };
                    if (toolResponseParts is null)
                    {
                        toolResponseParts = [];
                        contents.Add(new JsonObject { ["role"] = "user", ["parts"] = toolResponseParts });
                    }
                    toolResponseParts.Add(part);
                    break;
                default:
                    throw ProviderSupport.BadRequest($"gemini: unsupported message role '{role}'");
            }
        }

        var body = new JsonObject();
        if (system.Count > 0)
        {
            body["systemInstruction"] = new JsonObject { ["parts"] = new JsonArray(new JsonObject { ["text"] = string.Join("\n\n", system) }) };
        }
        body["contents"] = contents;

        var config = new JsonObject();
        if (NumberOf(request["temperature"]) is { } temperature)
        {
            config["temperature"] = temperature;
        }
        if (NumberOf(request["top_p"]) is { } topP)
        {
            config["topP"] = topP;
        }
        if (IntOf(request["top_k"]) is { } topK)
        {
            config["topK"] = topK;
        }
        if (MaxTokens(request) is { } maxTokens)
        {
            config["maxOutputTokens"] = maxTokens;
        }
        if (StringOf(request["reasoning_effort"]) is { } effort)
        {
            config["thinkingConfig"] = new JsonObject { ["thinkingBudget"] = ThinkingBudget(effort) };
        }
        var stops = StopSequences(request);
        if (stops.Count > 0)
        {
            config["stopSequences"] = new JsonArray(stops.Select(s => (JsonNode?)s).ToArray());
        }
        if (IntOf(request["n"]) is > 1 and var n)
        {
            config["candidateCount"] = n;
        }
        if (NumberOf(request["seed"]) is { } seed)
        {
            config["seed"] = seed;
        }
        if (NumberOf(request["presence_penalty"]) is { } presence)
        {
            config["presencePenalty"] = presence;
        }
        if (NumberOf(request["frequency_penalty"]) is { } frequency)
        {
            config["frequencyPenalty"] = frequency;
        }
        if (ResponseFormatType(request) is "json_object" or "json_schema")
        {
            config["responseMimeType"] = "application/json";
        }
        if (ResponseSchema(request) is { } jsonSchema)
        {
            config["responseJsonSchema"] = jsonSchema.DeepClone();
        }
        if (config.Count > 0)
        {
            body["generationConfig"] = config;
        }

        var declarations = new JsonArray();
        foreach (var tool in ProviderSupport.Objects(request["tools"]))
        {
            if (StringOf(tool["type"]) is not (null or "function") || tool["function"] is not JsonObject function)
            {
                continue;
            }
            var declaration = new JsonObject { ["name"] = StringOf(function["name"]) ?? throw ProviderSupport.BadRequest("tools[].function.name is required") };
            if (StringOf(function["description"]) is { } description)
            {
                declaration["description"] = description;
            }
            if (function["parameters"] is JsonObject parameters && SchemaForGemini(parameters) is { } schema)
            {
                declaration["parameters"] = schema;
            }
            declarations.Add(declaration);
        }
        if (declarations.Count > 0)
        {
            body["tools"] = new JsonArray(new JsonObject { ["functionDeclarations"] = declarations });
            if (ToolConfig(request["tool_choice"]) is { } toolConfig)
            {
                body["toolConfig"] = toolConfig;
            }
        }
        return body;
    }

    /// <summary>A tool result as JSON when it is JSON, else <c>{"result": text}</c>.</summary>
    private static JsonNode ToolResultContent(string text)
    {
        var trimmed = text.TrimStart();
        if (trimmed.StartsWith('{') || trimmed.StartsWith('['))
        {
            try
            {
                if (JsonNode.Parse(text) is { } parsed)
                {
                    return parsed;
                }
            }
            catch (JsonException)
            {
                // plain text after all
            }
        }
        return new JsonObject { ["result"] = text };
    }

    private static readonly HashSet<string> UnsupportedSchemaKeys = new(StringComparer.Ordinal)
    {
        "$schema", "$id", "$comment", "additionalProperties", "strict",
    };

    /// <summary>
    /// An OpenAI JSON schema for Gemini's OpenAPI-subset <c>parameters</c>: drops the keywords Gemini rejects, and
    /// null for an object schema without properties (Gemini refuses empty OBJECT properties).
    /// </summary>
    private static JsonObject? SchemaForGemini(JsonObject parameters)
    {
        var schema = (JsonObject)Sanitize(parameters, propertyMap: false);
        if (StringOf(schema["type"]) == "object" && schema["properties"] is not JsonObject { Count: > 0 })
        {
            return null;
        }
        return schema;
    }

    private static JsonNode Sanitize(JsonNode node, bool propertyMap)
    {
        switch (node)
        {
            case JsonObject obj:
                var copy = new JsonObject();
                foreach (var (key, value) in obj)
                {
                    if (!propertyMap && UnsupportedSchemaKeys.Contains(key))
                    {
                        continue;
                    }
                    copy[key] = value is null ? null : Sanitize(value, propertyMap: !propertyMap && key == "properties");
                }
                return copy;
            case JsonArray array:
                var items = new JsonArray();
                foreach (var item in array)
                {
                    items.Add(item is null ? null : Sanitize(item, propertyMap: false));
                }
                return items;
            default:
                return node.DeepClone();
        }
    }

    private static JsonObject? ToolConfig(JsonNode? choice)
    {
        string? mode = StringOf(choice) switch
        {
            "auto" => "AUTO",
            "required" => "ANY",
            "none" => "NONE",
            null => null,
            var other => throw ProviderSupport.BadRequest($"unsupported tool_choice '{other}'"),
        };
        var config = new JsonObject();
        if (choice is JsonObject obj && obj["function"] is JsonObject function && StringOf(function["name"]) is { } name)
        {
            mode = "ANY";
            config["allowedFunctionNames"] = new JsonArray(name);
        }
        if (mode is null)
        {
            return null;
        }
        config["mode"] = mode;
        return new JsonObject { ["functionCallingConfig"] = config };
    }

    private static JsonArray UserParts(JsonNode? content)
    {
        var parts = new JsonArray();
        if (StringOf(content) is { } text)
        {
            parts.Add(new JsonObject { ["text"] = text });
            return parts;
        }
        foreach (var part in ProviderSupport.Items(content))
        {
            if (StringOf(part) is { } s)
            {
                parts.Add(new JsonObject { ["text"] = s });
                continue;
            }
            if (part is not JsonObject p)
            {
                continue;
            }
            switch (StringOf(p["type"]))
            {
                case "text":
                    parts.Add(new JsonObject { ["text"] = StringOf(p["text"]) ?? "" });
                    break;
                case "image_url":
                    var url = ImageUrlOf(p) ?? throw ProviderSupport.BadRequest("image_url parts need a url");
                    parts.Add(TryParseDataUrl(url, out var mediaType, out var data)
                        ? new JsonObject { ["inlineData"] = new JsonObject { ["mimeType"] = mediaType, ["data"] = data } }
                        : new JsonObject { ["fileData"] = new JsonObject { ["mimeType"] = GuessImageType(url), ["fileUri"] = url } });
                    break;
                default:
                    throw ProviderSupport.BadRequest($"gemini: unsupported content part type '{StringOf(p["type"])}'");
            }
        }
        if (parts.Count == 0)
        {
            parts.Add(new JsonObject { ["text"] = "" });
        }
        return parts;
    }

    private static string GuessImageType(string url)
    {
        var path = Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri.AbsolutePath : url;
        return Path.GetExtension(path).ToUpperInvariant() switch
        {
            ".PNG" => "image/png",
            ".GIF" => "image/gif",
            ".WEBP" => "image/webp",
            ".HEIC" => "image/heic",
            _ => "image/jpeg",
        };
    }

    private static JsonArray AssistantParts(JsonObject message, Dictionary<string, string> toolNames)
    {
        var parts = new JsonArray();
        var text = TextOf(message["content"]);
        if (text.Length > 0)
        {
            parts.Add(new JsonObject { ["text"] = text });
        }
        foreach (var call in ProviderSupport.Objects(message["tool_calls"]))
        {
            var function = call["function"] as JsonObject ?? throw ProviderSupport.BadRequest("tool_calls[].function is required");
            var name = StringOf(function["name"]) ?? throw ProviderSupport.BadRequest("tool_calls[].function.name is required");
            if (StringOf(call["id"]) is { } id)
            {
                toolNames[id] = name;
            }
            parts.Add(new JsonObject
            {
                ["functionCall"] = new JsonObject { ["name"] = name, ["args"] = ParseArguments(StringOf(function["arguments"])) },
            });
        }
        return parts;
    }

    // ---- response translation ----

    internal static string FinishReason(string? finishReason, bool hasToolCalls) =>
        hasToolCalls ? "tool_calls" : finishReason switch
        {
            "MAX_TOKENS" => "length",
            "SAFETY" or "RECITATION" or "BLOCKLIST" or "PROHIBITED_CONTENT" or "SPII" or "IMAGE_SAFETY" => "content_filter",
            _ => "stop",
        };

    /// <summary>OpenAI's <c>reasoning_effort</c> as a Gemini thinking budget in tokens (-1: the model decides).</summary>
    internal static int ThinkingBudget(string effort) => effort switch
    {
        "none" or "minimal" => 0,
        "low" => 1024,
        "medium" => 8192,
        "high" => 24576,
        _ => -1,
    };

    /// <summary>Gemini usage; thinking tokens are billed as output, so they count as completion tokens.</summary>
    private static TokenUsage Usage(JsonObject? usage) => usage is null
        ? default
        : new TokenUsage(
            IntOf(usage["promptTokenCount"]) ?? 0,
            (IntOf(usage["candidatesTokenCount"]) ?? 0) + (IntOf(usage["thoughtsTokenCount"]) ?? 0),
            IntOf(usage["cachedContentTokenCount"]) ?? 0);

    private static string CompletionId(JsonObject response, string requestId) =>
        "chatcmpl-" + (StringOf(response["responseId"]) is { Length: > 0 } id ? id : requestId);

    internal static ChatResult TranslateResponse(JsonObject response, string fallbackModel, string requestId)
    {
        var choices = new JsonArray();
        var position = 0;
        foreach (var candidate in ProviderSupport.Objects(response["candidates"]))
        {
            var index = IntOf(candidate["index"]) ?? position;
            position++;
            var text = new StringBuilder();
            var toolCalls = new JsonArray();
            foreach (var part in ProviderSupport.Objects((candidate["content"] as JsonObject)?["parts"]))
            {
                if (part["functionCall"] is JsonObject call)
                {
                    toolCalls.Add(ToolCall(NewToolCallId(), StringOf(call["name"]) ?? "", call["args"]?.ToJsonString() ?? "{}"));
                }
                else if (!IsBool(part["thought"], true) && StringOf(part["text"]) is { } partText)
                {
                    text.Append(partText);
                }
            }
            choices.Add(Choice(index, AssistantMessage(text.ToString(), toolCalls), FinishReason(StringOf(candidate["finishReason"]), toolCalls.Count > 0)));
        }
        if (choices.Count == 0)
        {
            // The prompt itself was blocked (promptFeedback.blockReason): no candidates at all.
            var blocked = (response["promptFeedback"] as JsonObject)?["blockReason"] is not null;
            if (!blocked)
            {
                throw new UpstreamException(UpstreamFailure.Protocol, "gemini: answered no candidates");
            }
            choices.Add(Choice(0, AssistantMessage("", null), "content_filter"));
        }
        var usage = Usage(response["usageMetadata"] as JsonObject);
        var completion = Completion(CompletionId(response, requestId), StringOf(response["modelVersion"]) ?? fallbackModel, UnixNow(), choices, usage);
        return new ChatResult(completion, usage);
    }

    /// <summary>Turns the stream of GenerateContentResponse items into OpenAI chunks.</summary>
    private sealed class StreamTranslator(string provider, string model, string requestId)
    {
        private readonly long _created = UnixNow();
        private readonly HashSet<int> _started = [];
        private readonly Dictionary<int, int> _toolCount = [];
        private string? _id;
        private string _model = model;
        private TokenUsage _usage;
        private bool _finished;

        private string Id => _id ?? "chatcmpl-" + requestId;

        public List<ChatChunk> Translate(JsonObject item)
        {
            ThrowIfError(item, provider);
            _id ??= CompletionId(item, requestId);
            _model = StringOf(item["modelVersion"]) ?? _model;
            if (item["usageMetadata"] is JsonObject usage)
            {
                _usage = Usage(usage);
            }
            var chunks = new List<ChatChunk>();
            if (_started.Count == 0)
            {
                Start(0, chunks);
            }
            var position = 0;
            foreach (var candidate in ProviderSupport.Objects(item["candidates"]))
            {
                var index = IntOf(candidate["index"]) ?? position;
                position++;
                Start(index, chunks);
                foreach (var part in ProviderSupport.Objects((candidate["content"] as JsonObject)?["parts"]))
                {
                    if (part["functionCall"] is JsonObject call)
                    {
                        var toolIndex = _toolCount.GetValueOrDefault(index);
                        _toolCount[index] = toolIndex + 1;
                        var delta = ToolCallDelta(toolIndex, NewToolCallId(), StringOf(call["name"]) ?? "", call["args"]?.ToJsonString() ?? "{}");
                        chunks.Add(Emit(new JsonObject { ["tool_calls"] = new JsonArray(delta) }, null, index));
                    }
                    else if (!IsBool(part["thought"], true) && StringOf(part["text"]) is { Length: > 0 } text)
                    {
                        chunks.Add(Emit(new JsonObject { ["content"] = text }, null, index));
                    }
                }
                if (StringOf(candidate["finishReason"]) is { } finishReason)
                {
                    _finished = true;
                    chunks.Add(Emit([], FinishReason(finishReason, _toolCount.GetValueOrDefault(index) > 0), index));
                }
            }
            if (position == 0 && (item["promptFeedback"] as JsonObject)?["blockReason"] is not null)
            {
                _finished = true;
                chunks.Add(Emit([], "content_filter", 0));
            }
            return chunks;
        }

        /// <summary>The closing usage chunk; a stream that never gave a finish reason broke off.</summary>
        public ChatChunk Finish()
        {
            if (!_finished)
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: stream ended early (no finishReason)");
            }
            return new ChatChunk(UsageChunk(Id, _model, _created, _usage), false, _usage);
        }

        private void Start(int index, List<ChatChunk> chunks)
        {
            if (_started.Add(index))
            {
                chunks.Add(Emit(new JsonObject { ["role"] = "assistant", ["content"] = "" }, null, index));
            }
        }

        private ChatChunk Emit(JsonObject delta, string? finishReason, int index) =>
            new(Chunk(Id, _model, _created, delta, finishReason, index), HasContent(delta));
    }
}
