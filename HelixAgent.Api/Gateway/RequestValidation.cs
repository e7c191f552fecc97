using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway;

/// <summary>A request the gateway refuses, with the field it names (OpenAI's <c>param</c>).</summary>
public sealed record ValidationError(string Message, string? Param, int Status = 400, string Code = "invalid_request_error");

/// <summary>Checks of OpenAI request bodies before any provider is asked: every 400 names the bad field.</summary>
public static class RequestValidation
{
    private static readonly HashSet<string> Roles = ["system", "developer", "user", "assistant", "tool", "function"];

    public static ValidationError? Chat(JsonObject body)
    {
        if (Model(body) is { } modelError)
        {
            return modelError;
        }
        if (body["messages"] is not JsonArray messages)
        {
            return body.ContainsKey("messages")
                ? new ValidationError("'messages' must be an array of message objects.", "messages")
                : new ValidationError("Missing required parameter: 'messages'.", "messages");
        }
        if (messages.Count == 0)
        {
            return new ValidationError("'messages' must contain at least one message.", "messages");
        }
        for (var i = 0; i < messages.Count; i++)
        {
            if (messages[i] is not JsonObject m)
            {
                return new ValidationError($"'messages[{i}]' must be an object.", $"messages[{i}]");
            }
            var role = m["role"] is JsonValue rv && rv.TryGetValue<string>(out var r) ? r : null;
            if (role is null || !Roles.Contains(role))
            {
                return new ValidationError(
                    $"Invalid value for 'messages[{i}].role': expected one of system, developer, user, assistant, tool.", $"messages[{i}].role");
            }
            var content = m["content"];
            var contentOk = content switch
            {
                null => role == "assistant" && (m["tool_calls"] is JsonArray || m.ContainsKey("content") || m["function_call"] is JsonObject),
                JsonValue v => v.TryGetValue<string>(out _),
                JsonArray parts => parts.All(p => p is JsonObject po && po["type"] is JsonValue),
                _ => false,
            };
            if (!contentOk)
            {
                return new ValidationError(
                    $"Invalid value for 'messages[{i}].content': expected a string or an array of content parts.", $"messages[{i}].content");
            }
            if (role == "tool" && m["tool_call_id"] is not JsonValue)
            {
                return new ValidationError($"Missing required parameter: 'messages[{i}].tool_call_id'.", $"messages[{i}].tool_call_id");
            }
        }
        if (body["tools"] is JsonNode toolsNode)
        {
            if (toolsNode is not JsonArray tools)
            {
                return new ValidationError("'tools' must be an array.", "tools");
            }
            for (var i = 0; i < tools.Count; i++)
            {
                if (tools[i] is not JsonObject tool || tool["function"] is not JsonObject function || function["name"] is not JsonValue name || !name.TryGetValue<string>(out _))
                {
                    return new ValidationError($"Missing required parameter: 'tools[{i}].function.name'.", $"tools[{i}].function.name");
                }
            }
        }
        if (ToolChoice(body) is { } toolChoiceError)
        {
            return toolChoiceError;
        }
        if (body["response_format"] is JsonNode rf &&
            (rf is not JsonObject rfo || rfo["type"]?.ToString() is not ("text" or "json_object" or "json_schema")))
        {
            return new ValidationError("Invalid value for 'response_format.type': expected 'text', 'json_object' or 'json_schema'.", "response_format.type");
        }
        return Common(body);
    }

    public static ValidationError? Completion(JsonObject body)
    {
        if (Model(body) is { } modelError)
        {
            return modelError;
        }
        var promptOk = body["prompt"] switch
        {
            JsonValue v => v.TryGetValue<string>(out _),
            JsonArray a => a.Count == 1 && a[0] is JsonValue s && s.TryGetValue<string>(out _),
            _ => false,
        };
        if (!promptOk)
        {
            return body.ContainsKey("prompt")
                ? new ValidationError("Invalid value for 'prompt': expected a string (or an array with one string).", "prompt")
                : new ValidationError("Missing required parameter: 'prompt'.", "prompt");
        }
        return Common(body);
    }

    public static ValidationError? Embeddings(JsonObject body)
    {
        if (Model(body) is { } modelError)
        {
            return modelError;
        }
        var inputOk = body["input"] switch
        {
            JsonValue v => v.TryGetValue<string>(out var s) && s.Length > 0,
            JsonArray a => a.Count > 0 && a.Count <= 2048 && a.All(x => x is JsonValue || x is JsonArray),
            _ => false,
        };
        if (!inputOk)
        {
            return body.ContainsKey("input")
                ? new ValidationError("Invalid value for 'input': expected a non-empty string or array.", "input")
                : new ValidationError("Missing required parameter: 'input'.", "input");
        }
        if (body["encoding_format"] is JsonNode ef && ef.ToString() is not ("float" or "base64"))
        {
            return new ValidationError("Invalid value for 'encoding_format': expected 'float' or 'base64'.", "encoding_format");
        }
        return null;
    }

    /// <summary>
    /// <c>tool_choice</c>: <c>none</c>, <c>auto</c>, <c>required</c>, or an object with a <c>type</c>; a
    /// <c>function</c> choice names one of the request's tools.
    /// </summary>
    private static ValidationError? ToolChoice(JsonObject body)
    {
        switch (body["tool_choice"])
        {
            case null:
                return null;
            case JsonValue v when v.TryGetValue<string>(out var mode) && mode is "none" or "auto" or "required":
                return null;
            case JsonObject o when o["type"] is JsonValue tv && tv.TryGetValue<string>(out var type):
                if (type != "function")
                {
                    return null;
                }
                var name = o["function"] is JsonObject f && f["name"] is JsonValue nv && nv.TryGetValue<string>(out var n) ? n : null;
                if (name is null)
                {
                    return new ValidationError("Missing required parameter: 'tool_choice.function.name'.", "tool_choice.function.name");
                }
                var declared = body["tools"] is JsonArray tools && tools.Any(t => t?["function"]?["name"]?.GetValue<string>() == name);
                return declared ? null : new ValidationError($"Invalid value for 'tool_choice': no tool named '{HelixAgent.Data.Echo.Clip(name)}' in 'tools'.", "tool_choice");
            default:
                return new ValidationError("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an object naming a function.", "tool_choice");
        }
    }

    private static ValidationError? Model(JsonObject body) =>
        body["model"] is JsonValue mv && mv.TryGetValue<string>(out var model) && model.Length > 0
            ? null
            : new ValidationError(body.ContainsKey("model")
                ? "Invalid value for 'model': expected a non-empty string."
                : "Missing required parameter: 'model'.", "model");

    private static ValidationError? Common(JsonObject body)
    {
        if (body["stream"] is JsonNode s && (s is not JsonValue sv || !sv.TryGetValue<bool>(out _)))
        {
            return new ValidationError("Invalid type for 'stream': expected a boolean.", "stream");
        }
        if (body["stream_options"] is JsonNode so && so is not JsonObject)
        {
            return new ValidationError("Invalid type for 'stream_options': expected an object.", "stream_options");
        }
        return Number(body, "temperature", 0, 2)
            ?? Number(body, "top_p", 0, 1)
            ?? Number(body, "presence_penalty", -2, 2)
            ?? Number(body, "frequency_penalty", -2, 2)
            ?? Integer(body, "n", 1, 128)
            ?? Integer(body, "max_tokens", 1, int.MaxValue)
            ?? Integer(body, "max_completion_tokens", 1, int.MaxValue)
            ?? Integer(body, "seed", long.MinValue, long.MaxValue)
            ?? Stop(body)
            ?? (body["user"] is JsonNode u && (u is not JsonValue uv || !uv.TryGetValue<string>(out _))
                ? new ValidationError("Invalid type for 'user': expected a string.", "user") : null);
    }

    private static ValidationError? Number(JsonObject body, string name, double min, double max)
    {
        if (body[name] is not JsonNode node)
        {
            return null;
        }
        if (node is not JsonValue v || !v.TryGetValue<double>(out var d))
        {
            return new ValidationError($"Invalid type for '{name}': expected a number.", name);
        }
        return d < min || d > max ? new ValidationError($"Invalid value for '{name}': {d} is not between {min} and {max}.", name) : null;
    }

    private static ValidationError? Integer(JsonObject body, string name, long min, long max)
    {
        if (body[name] is not JsonNode node)
        {
            return null;
        }
        if (node is not JsonValue v || !v.TryGetValue<long>(out var n))
        {
            return new ValidationError($"Invalid type for '{name}': expected an integer.", name);
        }
        return n < min || n > max ? new ValidationError($"Invalid value for '{name}': {n} is not between {min} and {max}.", name) : null;
    }

    private static ValidationError? Stop(JsonObject body) => body["stop"] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<string>(out _) => null,
        JsonArray a when a.Count <= 4 && a.All(x => x is JsonValue xv && xv.TryGetValue<string>(out _)) => null,
        _ => new ValidationError("Invalid value for 'stop': expected a string or an array of up to 4 strings.", "stop"),
    };
}
