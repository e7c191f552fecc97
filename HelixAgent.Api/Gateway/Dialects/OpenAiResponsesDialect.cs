using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway.Providers;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Data;

namespace HelixAgent.Api.Gateway.Dialects;

/// <summary>
/// OpenAI Responses (<c>/v1/responses</c>): validated here, translated to the canonical form for every target
/// (<see cref="ResponsesTranslation"/>), answers rendered as <c>response</c> objects and streams as the semantic
/// events; errors in OpenAI's shape, as on the other <c>/v1</c> routes.
/// </summary>
internal sealed class OpenAiResponsesDialect : IDialect
{
    public static readonly OpenAiResponsesDialect Instance = new();

    public string Endpoint => "responses";

    public ValidationError? Validate(JsonObject body) => ResponsesValidation.Responses(body);

    public bool IsStream(JsonObject body) => OpenAiChatDialect.IsStreamBody(body);

    /// <summary>A stored response is a new one each time (its own id, its own row): only <c>store: false</c> answers are cached.</summary>
    public bool Cacheable(JsonObject body) => !ResponsesValidation.Stores(body);

    public Prepared Prepare(JsonObject body, RouteTarget target, bool allowPassThrough, GatewayOptions options) =>
        allowPassThrough && target.Provider.Adapter is IResponsesPassThrough { NativeResponses: true }
            ? new Prepared(null, PassThrough: true, [], [])
            : ResponsesTranslation.ToCanonical(body, target.Provider.Adapter, rejectHints: options.UnsupportedHints == "reject");

    /// <summary>
    /// The client's body; for a stored conversation, the whole of it: the earlier turns' items before the request's own
    /// input and no <c>previous_response_id</c> (the upstream never saw our ids).
    /// </summary>
    public JsonObject PassThroughBody(JsonObject body)
    {
        if (body[ResponsesTranslation.HistoryField] is not JsonArray history)
        {
            return body;
        }
        var whole = new JsonObject();
        foreach (var (name, value) in body)
        {
            if (name is not (ResponsesTranslation.HistoryField or "previous_response_id" or "input"))
            {
                whole[name] = value?.DeepClone();
            }
        }
        var input = (JsonArray)history.DeepClone();
        foreach (var item in ResponsesTranslation.InputItems(body))
        {
            input.Add(item?.DeepClone());
        }
        whole["input"] = input;
        return whole;
    }

    public Task<ChatResult> PassThroughAsync(IChatProvider adapter, NativeCall call, CancellationToken cancellationToken) =>
        ((IResponsesPassThrough)adapter).ResponsesAsync(call, cancellationToken);

    public IAsyncEnumerable<NativeEvent> PassThroughStreamAsync(IChatProvider adapter, NativeCall call, CancellationToken cancellationToken) =>
        ((IResponsesPassThrough)adapter).StreamResponsesAsync(call, cancellationToken);

    public JsonObject RenderObject(JsonObject completion, JsonObject body, RequestTrace trace) => ResponsesTranslation.ToResponse(completion, body, trace);

    public IStreamRenderer NewStream(JsonObject body, RequestTrace trace) => new ResponsesTranslation.ResponsesStream(body, trace);

    public Task WriteErrorAsync(HttpContext ctx, int status, string message, string type, string? code, string? param) =>
        OpenAiErrors.WriteAsync(ctx, status, message, type, code, param);
}

/// <summary>Checks of Responses bodies before any provider is asked: every 400 names the field (<c>input[2].call_id</c>).</summary>
internal static class ResponsesValidation
{
    private static readonly HashSet<string> Roles = ["user", "assistant", "system", "developer"];
    private static readonly HashSet<string> ToolChoiceModes = ["auto", "none", "required"];

    /// <summary><c>store</c>, which defaults to true as at OpenAI.</summary>
    public static bool Stores(JsonObject body) => body["store"] is not JsonValue v || !v.TryGetValue<bool>(out var b) || b;

    public static ValidationError? Responses(JsonObject body)
    {
        if (body.ContainsKey(ResponsesTranslation.HistoryField))
        {
            return Error(ResponsesTranslation.HistoryField, "is the gateway's own field, not a parameter.");
        }
        if (body["model"] is not JsonValue mv || !mv.TryGetValue<string>(out var model) || model.Length == 0)
        {
            return Error("model", body.ContainsKey("model") ? "must be a non-empty string." : "Missing required parameter: 'model'.");
        }
        switch (body["input"])
        {
            case null when body["previous_response_id"] is not null:
                break;
            case null:
                return Error("input", "Missing required parameter: 'input'.");
            case JsonValue v when v.TryGetValue<string>(out _):
                break;
            case JsonArray items:
                for (var i = 0; i < items.Count; i++)
                {
                    if (Item(items[i], $"input[{i}]") is { } itemError)
                    {
                        return itemError;
                    }
                }
                break;
            default:
                return Error("input", "must be a string or an array of input items.");
        }
        if (body["instructions"] is { } instructions && Str(instructions) is null)
        {
            return Error("instructions", "must be a string.");
        }
        if (body["max_output_tokens"] is { } max && (max is not JsonValue maxv || !maxv.TryGetValue<long>(out var maxTokens) || maxTokens < 16))
        {
            return Error("max_output_tokens", "must be an integer of at least 16.");
        }
        foreach (var name in (ReadOnlySpan<string>)["stream", "store", "parallel_tool_calls", "background"])
        {
            if (body[name] is { } flag && (flag is not JsonValue fv || !fv.TryGetValue<bool>(out _)))
            {
                return Error(name, "must be a boolean.");
            }
        }
        if (body["previous_response_id"] is { } previous && Str(previous) is not { Length: > 0 })
        {
            return Error("previous_response_id", "must be a response id (resp_...).");
        }
        if (body["metadata"] is { } metadata && (metadata is not JsonObject m || m.Any(p => Str(p.Value) is null)))
        {
            return Error("metadata", "must be an object of string values.");
        }
        if (body["include"] is { } include && (include is not JsonArray includes || includes.Any(x => Str(x) is null)))
        {
            return Error("include", "must be an array of strings.");
        }
        return Number(body, "temperature", 0, 2)
            ?? Number(body, "top_p", 0, 1)
            ?? Tools(body)
            ?? Text(body)
            ?? Reasoning(body);
    }

    private static ValidationError? Item(JsonNode? node, string at)
    {
        if (node is not JsonObject item)
        {
            return Error(at, "must be an input item object.");
        }
        var type = item["type"] is null ? "message" : Str(item["type"]);
        switch (type)
        {
            case "message":
                if (Str(item["role"]) is not { } role || !Roles.Contains(role))
                {
                    return Error($"{at}.role", "must be one of 'user', 'assistant', 'system', 'developer'.");
                }
                switch (item["content"])
                {
                    case JsonValue cv when cv.TryGetValue<string>(out _):
                        return null;
                    case JsonArray parts:
                        for (var j = 0; j < parts.Count; j++)
                        {
                            var partAt = $"{at}.content[{j}]";
                            if (parts[j] is not JsonObject part || Str(part["type"]) is not { } partType)
                            {
                                return Error(partAt, "must be a content part with a 'type'.");
                            }
                            var bad = partType switch
                            {
                                "input_text" or "output_text" => Str(part["text"]) is null ? Error($"{partAt}.text", "Missing required parameter.") : null,
                                "input_image" => Str(part["image_url"]) is null && Str(part["file_id"]) is null
                                    ? Error($"{partAt}.image_url", "Missing required parameter (image_url or file_id).") : null,
                                "input_file" => Str(part["file_data"]) is null && Str(part["file_id"]) is null && Str(part["file_url"]) is null
                                    ? Error($"{partAt}.file_data", "Missing required parameter (file_data, file_url or file_id).") : null,
                                "refusal" => null,
                                _ => Error($"{partAt}.type", $"'{Echo.Clip(partType)}' is not a content part type (input_text, input_image, input_file, output_text)."),
                            };
                            if (bad is not null)
                            {
                                return bad;
                            }
                        }
                        return null;
                    default:
                        return Error($"{at}.content", "must be a string or an array of content parts.");
                }
            case "function_call":
                return Str(item["call_id"]) is not { Length: > 0 } ? Error($"{at}.call_id", "Missing required parameter.")
                    : Str(item["name"]) is not { Length: > 0 } ? Error($"{at}.name", "Missing required parameter.")
                    : Str(item["arguments"]) is null ? Error($"{at}.arguments", "must be a string of JSON.")
                    : null;
            case "function_call_output":
                return Str(item["call_id"]) is not { Length: > 0 } ? Error($"{at}.call_id", "Missing required parameter.")
                    : item["output"] is null or JsonArray || Str(item["output"]) is not null ? null
                    : Error($"{at}.output", "must be a string or an array of content parts.");
            case null:
                return Error($"{at}.type", "must be a string.");
            default:
                return null; // reasoning, item_reference and built-in tool items: the target decides
        }
    }

    private static ValidationError? Tools(JsonObject body)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        if (body["tools"] is { } toolsNode)
        {
            if (toolsNode is not JsonArray tools)
            {
                return Error("tools", "must be an array.");
            }
            for (var i = 0; i < tools.Count; i++)
            {
                if (tools[i] is not JsonObject tool || Str(tool["type"]) is not { } type)
                {
                    return Error($"tools[{i}].type", "Missing required parameter.");
                }
                if (type == "function")
                {
                    if (Str(tool["name"]) is not { Length: > 0 } name)
                    {
                        return Error($"tools[{i}].name", "Missing required parameter.");
                    }
                    if (tool["parameters"] is { } p && p is not JsonObject)
                    {
                        return Error($"tools[{i}].parameters", "must be a JSON schema object.");
                    }
                    names.Add(name);
                }
                else if (type == "namespace")
                {
                    if (Str(tool["name"]) is not { Length: > 0 } ns)
                    {
                        return Error($"tools[{i}].name", "Missing required parameter.");
                    }
                    if (tool["tools"] is not JsonArray inner)
                    {
                        return Error($"tools[{i}].tools", "must be an array of function tools.");
                    }
                    for (var j = 0; j < inner.Count; j++)
                    {
                        if (inner[j] is not JsonObject fn || Str(fn["name"]) is not { Length: > 0 } fnName)
                        {
                            return Error($"tools[{i}].tools[{j}].name", "Missing required parameter.");
                        }
                        names.Add(ns + ResponsesTranslation.NamespaceSeparator + fnName);
                    }
                }
            }
        }
        switch (body["tool_choice"])
        {
            case null:
                return null;
            case JsonValue v when Str(v) is { } mode:
                return ToolChoiceModes.Contains(mode) ? null : Error("tool_choice", "must be 'auto', 'none', 'required' or a tool choice object.");
            case JsonObject choice when Str(choice["type"]) is { } type:
                if (type == "function" && Str(choice["name"]) is not { } chosen)
                {
                    return Error("tool_choice.name", "Missing required parameter.");
                }
                if (type == "function" && !names.Contains(Str(choice["name"])!))
                {
                    return Error("tool_choice.name", $"No function tool named '{Echo.Clip(Str(choice["name"]))}' in 'tools'.");
                }
                return null;
            default:
                return Error("tool_choice", "must be 'auto', 'none', 'required' or a tool choice object.");
        }
    }

    private static ValidationError? Text(JsonObject body)
    {
        if (body["text"] is not { } textNode)
        {
            return null;
        }
        if (textNode is not JsonObject text)
        {
            return Error("text", "must be an object.");
        }
        if (text["format"] is not { } formatNode)
        {
            return null;
        }
        if (formatNode is not JsonObject format || Str(format["type"]) is not ("text" or "json_object" or "json_schema"))
        {
            return Error("text.format.type", "must be 'text', 'json_object' or 'json_schema'.");
        }
        if (Str(format["type"]) == "json_schema")
        {
            if (Str(format["name"]) is not { Length: > 0 })
            {
                return Error("text.format.name", "Missing required parameter.");
            }
            if (format["schema"] is not JsonObject)
            {
                return Error("text.format.schema", "Missing required parameter (a JSON schema object).");
            }
        }
        return null;
    }

    private static ValidationError? Reasoning(JsonObject body)
    {
        if (body["reasoning"] is not { } node)
        {
            return null;
        }
        if (node is not JsonObject reasoning)
        {
            return Error("reasoning", "must be an object.");
        }
        return reasoning["effort"] is { } effort && Str(effort) is not ("none" or "minimal" or "low" or "medium" or "high" or "xhigh")
            ? Error("reasoning.effort", "must be one of 'none', 'minimal', 'low', 'medium', 'high', 'xhigh'.")
            : null;
    }

    private static ValidationError? Number(JsonObject body, string name, double min, double max)
    {
        if (body[name] is not { } node)
        {
            return null;
        }
        if (node is not JsonValue v || !v.TryGetValue<double>(out var d))
        {
            return Error(name, "must be a number.");
        }
        return d < min || d > max ? Error(name, $"must be between {min} and {max}.") : null;
    }

    private static string? Str(JsonNode? node) => OpenAiShapes.StringOf(node);

    private static ValidationError Error(string field, string message) =>
        new(message.StartsWith("Missing required parameter: ", StringComparison.Ordinal) ? message : $"Invalid '{field}': {message}", field);
}
