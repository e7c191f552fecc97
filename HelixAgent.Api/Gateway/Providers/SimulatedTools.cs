using System.Globalization;
using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>A tool call the simulator makes: the tool's name and arguments (a JSON text valid against its schema).</summary>
internal sealed record SimulatedToolCall(string Id, string Name, string Arguments)
{
    public JsonObject Json() => new()
    {
        ["id"] = Id,
        ["type"] = "function",
        ["function"] = new JsonObject { ["name"] = Name, ["arguments"] = Arguments },
    };
}

/// <summary>
/// What the simulator does with <c>tools</c> and <c>response_format</c>, as a model would: a forced or
/// <c>required</c> <c>tool_choice</c>, or (with <c>auto</c>) a last user message that names a tool, gets a call of that
/// tool with arguments that are an instance of its <c>parameters</c> schema; <c>json_object</c> gets a JSON object and
/// <c>json_schema</c> an instance of the schema. After a tool result, <c>auto</c> answers in text.
/// </summary>
internal static class SimulatedTools
{
    /// <summary>The tool call to make, given the text of the last user message (validation has checked the shapes).</summary>
    public static SimulatedToolCall? Call(JsonObject request, string lastUser)
    {
        if (request["tools"] is not JsonArray tools || tools.Count == 0)
        {
            return null;
        }
        var functions = tools.Select(t => t!["function"]!.AsObject()).ToList();
        var choice = request["tool_choice"];
        var last = (request["messages"] as JsonArray)?.LastOrDefault() as JsonObject;
        JsonObject? chosen;
        if (choice is JsonObject forced)
        {
            var name = forced["function"]?["name"]?.ToString();
            chosen = functions.FirstOrDefault(f => f["name"]!.ToString() == name);
        }
        else
        {
            var mode = choice?.ToString() ?? "auto";
            var named = functions.FirstOrDefault(f => NamesTool(lastUser, f["name"]!.ToString()));
            chosen = mode switch
            {
                "required" => named ?? functions[0],
                "auto" when last?["role"]?.ToString() != "tool" => named,
                _ => null,
            };
        }
        if (chosen is null)
        {
            return null;
        }
        var schema = chosen["parameters"] as JsonObject ?? new JsonObject { ["type"] = "object" };
        var arguments = Instance(schema, schema, "value", 0)?.ToJsonString() ?? "{}";
        return new SimulatedToolCall(OpenAiShapes.NewToolCallId(), chosen["name"]!.ToString(), arguments);
    }

    /// <summary>The text names the tool as a word of its own ("LS" in "list it with LS", not in "fails").</summary>
    private static bool NamesTool(string text, string name)
    {
        for (var at = text.IndexOf(name, StringComparison.OrdinalIgnoreCase); at >= 0; at = text.IndexOf(name, at + 1, StringComparison.OrdinalIgnoreCase))
        {
            var end = at + name.Length;
            if ((at == 0 || !IsWordChar(text[at - 1])) && (end == text.Length || !IsWordChar(text[end])))
            {
                return true;
            }
        }
        return false;

        static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
    }

    /// <summary>The message content in JSON mode, or null when the request asks for text.</summary>
    public static string? JsonContent(JsonObject request, string answer)
    {
        var format = request["response_format"] as JsonObject;
        return format?["type"]?.ToString() switch
        {
            "json_object" => new JsonObject { ["answer"] = answer }.ToJsonString(),
            "json_schema" when format["json_schema"]?["schema"] is JsonObject schema => Instance(schema, schema, "answer", 0)?.ToJsonString() ?? "null",
            _ => null,
        };
    }

    /// <summary>A text cut into the pieces a stream sends (joined, they are the text).</summary>
    public static List<string> Pieces(string text)
    {
        var pieces = new List<string>();
        for (var i = 0; i < text.Length; i += 12)
        {
            pieces.Add(text.Substring(i, Math.Min(12, text.Length - i)));
        }
        return pieces;
    }

    /// <summary>A value valid against <paramref name="schema"/> (the JSON Schema subset tools and structured outputs use).</summary>
    internal static JsonNode? Instance(JsonNode? schema, JsonObject root, string name, int depth)
    {
        if (schema is not JsonObject s || depth > 16)
        {
            return JsonValue.Create("simulated " + name);
        }
        if (s["$ref"]?.ToString() is { } reference && Resolve(root, reference) is { } target)
        {
            return Instance(target, root, name, depth + 1);
        }
        if (s.ContainsKey("const"))
        {
            return s["const"]?.DeepClone();
        }
        if (s["enum"] is JsonArray values && values.Count > 0)
        {
            return values[0]?.DeepClone();
        }
        foreach (var key in new[] { "anyOf", "oneOf", "allOf" })
        {
            if (s[key] is JsonArray options && options.FirstOrDefault(o => o?["type"]?.ToString() != "null") is { } option)
            {
                return Instance(option, root, name, depth + 1);
            }
        }
        var type = s["type"] switch
        {
            JsonArray types => types.Select(t => t?.ToString()).FirstOrDefault(t => t != "null") ?? "null",
            JsonNode t => t.ToString(),
            null => s.ContainsKey("properties") ? "object" : s.ContainsKey("items") ? "array" : "string",
        };
        switch (type)
        {
            case "object":
                var obj = new JsonObject();
                foreach (var (property, propertySchema) in s["properties"] as JsonObject ?? [])
                {
                    obj[property] = Instance(propertySchema, root, property, depth + 1);
                }
                return obj;
            case "array":
                var count = Math.Max(1, Number(s["minItems"]) is { } min ? (int)min : 1);
                if (Number(s["maxItems"]) is { } max)
                {
                    count = Math.Min(count, (int)max);
                }
                var array = new JsonArray();
                for (var i = 0; i < count; i++)
                {
                    array.Add(Instance(s["items"], root, name, depth + 1));
                }
                return array;
            case "integer":
            case "number":
                var value = Number(s["minimum"]) ?? (Number(s["exclusiveMinimum"]) is { } above ? Math.Floor(above) + 1 : (double?)null) ?? 1;
                if (Number(s["maximum"]) is { } most && value > most)
                {
                    value = most;
                }
                return type == "integer" ? JsonValue.Create((long)Math.Ceiling(value)) : JsonValue.Create(value);
            case "boolean":
                return JsonValue.Create(true);
            case "null":
                return null;
            default:
                return JsonValue.Create(Text(s, name));
        }
    }

    private static string Text(JsonObject s, string name)
    {
        var text = s["format"]?.ToString() switch
        {
            "date-time" => "2026-01-01T00:00:00Z",
            "date" => "2026-01-01",
            "time" => "00:00:00",
            "email" => "user@example.com",
            "uri" or "url" => "https://example.com/",
            "uuid" => "00000000-0000-4000-8000-000000000000",
            _ => "simulated " + name,
        };
        if (Number(s["minLength"]) is { } minLength && text.Length < minLength)
        {
            text = text.PadRight((int)minLength, 'x');
        }
        if (Number(s["maxLength"]) is { } maxLength && text.Length > maxLength)
        {
            text = text[..(int)maxLength];
        }
        return text;
    }

    private static double? Number(JsonNode? node) =>
        node is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;

    /// <summary><c>#/$defs/x</c> or <c>#/definitions/x</c> (and any other local JSON pointer).</summary>
    private static JsonNode? Resolve(JsonObject root, string reference)
    {
        if (!reference.StartsWith("#/", StringComparison.Ordinal))
        {
            return null;
        }
        JsonNode? node = root;
        foreach (var part in reference[2..].Split('/'))
        {
            node = node is JsonObject o ? o[part.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal)] : null;
        }
        return node;
    }
}
