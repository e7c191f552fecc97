using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway.Providers;
using HelixAgent.Data;

namespace HelixAgent.Api.Gateway.Dialects;

/// <summary>
/// Anthropic Messages (<c>/v1/messages</c>): validated here; passed through as it is to Anthropic targets; translated
/// to the canonical form for every other target (<see cref="MessagesTranslation"/>), answers and streams translated
/// back; errors in Anthropic's shape (<c>{"type":"error","error":{"type","message"}}</c>) with a <c>request-id</c>.
/// </summary>
internal sealed class AnthropicMessagesDialect : IDialect
{
    public static readonly AnthropicMessagesDialect Instance = new();

    public string Endpoint => "messages";

    public string? RequestIdHeader => "request-id";

    public ValidationError? Validate(JsonObject body) => MessagesValidation.Messages(body, requireMaxTokens: true);

    public bool IsStream(JsonObject body) => OpenAiChatDialect.IsStreamBody(body);

    public Prepared Prepare(JsonObject body, RouteTarget target, bool allowPassThrough, GatewayOptions options) =>
        allowPassThrough && target.Provider.Adapter is IMessagesPassThrough
            ? new Prepared(null, PassThrough: true, [], [])
            : MessagesTranslation.ToCanonical(body, target.Provider.Adapter, rejectHints: options.UnsupportedHints == "reject");

    public Task<ChatResult> PassThroughAsync(IChatProvider adapter, NativeCall call, CancellationToken cancellationToken) =>
        ((IMessagesPassThrough)adapter).MessagesAsync(call, cancellationToken);

    public IAsyncEnumerable<NativeEvent> PassThroughStreamAsync(IChatProvider adapter, NativeCall call, CancellationToken cancellationToken) =>
        ((IMessagesPassThrough)adapter).StreamMessagesAsync(call, cancellationToken);

    public JsonObject RenderObject(JsonObject completion, JsonObject body, RequestTrace trace) => MessagesTranslation.ToMessage(completion, trace);

    public IStreamRenderer NewStream(JsonObject body, RequestTrace trace) => new MessagesTranslation.MessagesStream(trace, TokenEstimate.Prompt(body));

    public Task WriteErrorAsync(HttpContext ctx, int status, string message, string type, string? code, string? param)
    {
        var headers = ctx.Response.Headers;
        if (string.IsNullOrEmpty(headers["request-id"]))
        {
            var id = headers["x-request-id"] is { Count: > 0 } existing ? existing.ToString() : Guid.CreateVersion7().ToString("N");
            headers["x-request-id"] = id;
            headers["request-id"] = id;
        }
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        // Put in the response pipe, not flushed: it leaves after the request's ledger row is in the journal.
        using var writer = new Utf8JsonWriter(ctx.Response.BodyWriter);
        writer.WriteStartObject();
        writer.WriteString("type", "error");
        writer.WriteStartObject("error");
        writer.WriteString("type", ErrorType(status));
        writer.WriteString("message", message);
        writer.WriteEndObject();
        writer.WriteString("request_id", headers["request-id"].ToString());
        writer.WriteEndObject();
        writer.Flush();
        return Task.CompletedTask;
    }

    /// <summary>Anthropic's error type for a status (its SDKs raise their typed errors by status).</summary>
    internal static string ErrorType(int status) => status switch
    {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        >= 500 => "api_error",
        _ => "invalid_request_error",
    };
}

/// <summary>Checks of Messages bodies before any provider is asked: every 400 names the field, Anthropic-style (<c>messages.0.content</c>).</summary>
internal static class MessagesValidation
{
    private static readonly HashSet<string> ToolChoiceTypes = ["auto", "any", "tool", "none"];

    public static ValidationError? Messages(JsonObject body, bool requireMaxTokens)
    {
        if (body["model"] is not JsonValue mv || !mv.TryGetValue<string>(out var model) || model.Length == 0)
        {
            return Error("model", body.ContainsKey("model") ? "Input should be a non-empty string." : "Field required.");
        }
        if (body["max_tokens"] is null ? requireMaxTokens : !IsInt(body["max_tokens"], 1))
        {
            return Error("max_tokens", body.ContainsKey("max_tokens") ? "Input should be an integer of at least 1." : "Field required.");
        }
        if (body["messages"] is not JsonArray messages)
        {
            return Error("messages", body.ContainsKey("messages") ? "Input should be a valid list." : "Field required.");
        }
        if (messages.Count == 0)
        {
            return Error("messages", "At least one message is required.");
        }
        for (var i = 0; i < messages.Count; i++)
        {
            if (messages[i] is not JsonObject m)
            {
                return Error($"messages.{i}", "Input should be an object.");
            }
            if (Str(m["role"]) is not ("user" or "assistant"))
            {
                return Error($"messages.{i}.role", "Input should be 'user' or 'assistant'.");
            }
            if (Content(m["content"], $"messages.{i}.content") is { } contentError)
            {
                return contentError;
            }
        }
        switch (body["system"])
        {
            case null:
            case JsonValue sv when sv.TryGetValue<string>(out _):
                break;
            case JsonArray blocks:
                for (var j = 0; j < blocks.Count; j++)
                {
                    if (blocks[j] is not JsonObject b || Str(b["type"]) != "text" || Str(b["text"]) is null)
                    {
                        return Error($"system.{j}", "Input should be a text block ({\"type\":\"text\",\"text\":...}).");
                    }
                }
                break;
            default:
                return Error("system", "Input should be a string or a list of text blocks.");
        }
        return Number(body, "temperature", 0, 1)
            ?? Number(body, "top_p", 0, 1)
            ?? (body["top_k"] is { } tk && !IsInt(tk, 0) ? Error("top_k", "Input should be a non-negative integer.") : null)
            ?? (body["stream"] is { } st && (st is not JsonValue sv2 || !sv2.TryGetValue<bool>(out _)) ? Error("stream", "Input should be a valid boolean.") : null)
            ?? StopSequences(body)
            ?? Metadata(body)
            ?? Tools(body)
            ?? Thinking(body);
    }

    private static ValidationError? Content(JsonNode? content, string path)
    {
        switch (content)
        {
            case JsonValue v when v.TryGetValue<string>(out _):
                return null;
            case JsonArray blocks:
                for (var j = 0; j < blocks.Count; j++)
                {
                    var at = $"{path}.{j}";
                    if (blocks[j] is not JsonObject b || Str(b["type"]) is not { } type)
                    {
                        return Error(at, "Input should be a content block with a 'type'.");
                    }
                    var bad = type switch
                    {
                        "text" => Str(b["text"]) is null ? Error($"{at}.text", "Field required.") : null,
                        "image" or "document" => b["source"] is JsonObject src && Str(src["type"]) is not null ? null : Error($"{at}.source", "Field required."),
                        "tool_use" => Str(b["id"]) is null ? Error($"{at}.id", "Field required.")
                            : Str(b["name"]) is null ? Error($"{at}.name", "Field required.")
                            : b["input"] is not JsonObject ? Error($"{at}.input", "Input should be an object.") : null,
                        "tool_result" => Str(b["tool_use_id"]) is null ? Error($"{at}.tool_use_id", "Field required.")
                            : b["content"] is null or JsonArray || Str(b["content"]) is not null ? null : Error($"{at}.content", "Input should be a string or a list of blocks."),
                        _ => null,
                    };
                    if (bad is not null)
                    {
                        return bad;
                    }
                }
                return null;
            default:
                return Error(path, content is null ? "Field required." : "Input should be a string or a list of content blocks.");
        }
    }

    private static ValidationError? StopSequences(JsonObject body) => body["stop_sequences"] switch
    {
        null => null,
        JsonArray a when a.All(x => x is JsonValue xv && xv.TryGetValue<string>(out _)) => null,
        _ => Error("stop_sequences", "Input should be a list of strings."),
    };

    private static ValidationError? Metadata(JsonObject body) => body["metadata"] switch
    {
        null => null,
        JsonObject m when m["user_id"] is null || Str(m["user_id"]) is not null => null,
        JsonObject => Error("metadata.user_id", "Input should be a string."),
        _ => Error("metadata", "Input should be an object."),
    };

    private static ValidationError? Tools(JsonObject body)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        if (body["tools"] is { } toolsNode)
        {
            if (toolsNode is not JsonArray tools)
            {
                return Error("tools", "Input should be a valid list.");
            }
            for (var i = 0; i < tools.Count; i++)
            {
                if (tools[i] is not JsonObject tool || Str(tool["name"]) is not { Length: > 0 } name)
                {
                    return Error($"tools.{i}.name", "Field required.");
                }
                if (MessagesTranslation.IsCustomTool(tool) && tool["input_schema"] is not JsonObject)
                {
                    return Error($"tools.{i}.input_schema", "Field required (an object).");
                }
                names.Add(name);
            }
        }
        switch (body["tool_choice"])
        {
            case null:
                return null;
            case JsonObject choice when Str(choice["type"]) is { } type && ToolChoiceTypes.Contains(type):
                if (type == "tool" && Str(choice["name"]) is not { } chosen)
                {
                    return Error("tool_choice.name", "Field required.");
                }
                if (type == "tool" && !names.Contains(Str(choice["name"])!))
                {
                    return Error("tool_choice.name", $"No tool named '{Echo.Clip(Str(choice["name"]))}' in 'tools'.");
                }
                if (choice["disable_parallel_tool_use"] is { } dp && (dp is not JsonValue dv || !dv.TryGetValue<bool>(out _)))
                {
                    return Error("tool_choice.disable_parallel_tool_use", "Input should be a valid boolean.");
                }
                return null;
            default:
                return Error("tool_choice", "Input should be an object with 'type' auto, any, tool or none.");
        }
    }

    private static ValidationError? Thinking(JsonObject body)
    {
        if (body["thinking"] is not { } node)
        {
            return null;
        }
        if (node is not JsonObject thinking || Str(thinking["type"]) is not ("enabled" or "disabled" or "adaptive"))
        {
            return Error("thinking.type", "Input should be 'enabled', 'disabled' or 'adaptive'.");
        }
        return Str(thinking["type"]) == "enabled" && !IsInt(thinking["budget_tokens"], 1) ? Error("thinking.budget_tokens", "Field required (a positive integer).") : null;
    }

    private static ValidationError? Number(JsonObject body, string name, double min, double max)
    {
        if (body[name] is not { } node)
        {
            return null;
        }
        if (node is not JsonValue v || !v.TryGetValue<double>(out var d))
        {
            return Error(name, "Input should be a valid number.");
        }
        return d < min || d > max ? Error(name, $"Input should be between {min} and {max}.") : null;
    }

    private static bool IsInt(JsonNode? node, long min) => node is JsonValue v && v.TryGetValue<long>(out var n) && n >= min;

    private static string? Str(JsonNode? node) => OpenAiShapes.StringOf(node);

    private static ValidationError Error(string field, string message) => new($"{field}: {message}", field);
}
