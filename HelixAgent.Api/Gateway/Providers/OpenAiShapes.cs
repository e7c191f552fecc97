using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>
/// Building and reading the OpenAI Chat Completions wire format (the gateway's canonical format): response, chunk and
/// usage objects, tool calls, and the request fields every adapter has to translate.
/// </summary>
public static class OpenAiShapes
{
    public static long UnixNow() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>A <c>chat.completion.chunk</c> with one choice carrying <paramref name="delta"/>.</summary>
    public static JsonObject Chunk(string id, string model, long created, JsonObject delta, string? finishReason, int index = 0) => new()
    {
        ["id"] = id,
        ["object"] = "chat.completion.chunk",
        ["created"] = created,
        ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject
        {
            ["index"] = index,
            ["delta"] = delta,
            ["finish_reason"] = finishReason,
        }),
    };

    /// <summary>The final usage chunk of a stream: <c>choices: []</c> and <c>usage</c>.</summary>
    public static JsonObject UsageChunk(string id, string model, long created, TokenUsage usage) => new()
    {
        ["id"] = id,
        ["object"] = "chat.completion.chunk",
        ["created"] = created,
        ["model"] = model,
        ["choices"] = new JsonArray(),
        ["usage"] = UsageObject(usage),
    };

    /// <summary>One <c>choices[]</c> entry of a <c>chat.completion</c>.</summary>
    public static JsonObject Choice(int index, JsonObject message, string finishReason) => new()
    {
        ["index"] = index,
        ["message"] = message,
        ["logprobs"] = null,
        ["finish_reason"] = finishReason,
    };

    /// <summary>A <c>chat.completion</c> with a single choice.</summary>
    public static JsonObject Completion(string id, string model, long created, JsonObject message, string finishReason, TokenUsage usage) =>
        Completion(id, model, created, new JsonArray(Choice(0, message, finishReason)), usage);

    /// <summary>A <c>chat.completion</c> with the given <c>choices</c> (see <see cref="Choice"/>).</summary>
    public static JsonObject Completion(string id, string model, long created, JsonArray choices, TokenUsage usage) => new()
    {
        ["id"] = id,
        ["object"] = "chat.completion",
        ["created"] = created,
        ["model"] = model,
        ["choices"] = choices,
        ["usage"] = UsageObject(usage),
    };

    public static JsonObject UsageObject(TokenUsage usage) => new()
    {
        ["prompt_tokens"] = usage.PromptTokens,
        ["completion_tokens"] = usage.CompletionTokens,
        ["total_tokens"] = usage.TotalTokens,
    };

    /// <summary>An assistant message: <c>content</c> is null when there is no text, <c>tool_calls</c> only when non-empty.</summary>
    public static JsonObject AssistantMessage(string? content, JsonArray? toolCalls)
    {
        var message = new JsonObject
        {
            ["role"] = "assistant",
            ["content"] = string.IsNullOrEmpty(content) && toolCalls is { Count: > 0 } ? null : content ?? "",
        };
        if (toolCalls is { Count: > 0 })
        {
            message["tool_calls"] = toolCalls;
        }
        return message;
    }

    /// <summary>A complete tool call of a <c>chat.completion</c> message; <paramref name="arguments"/> is a JSON string.</summary>
    public static JsonObject ToolCall(string id, string name, string arguments) => new()
    {
        ["id"] = id,
        ["type"] = "function",
        ["function"] = new JsonObject { ["name"] = name, ["arguments"] = arguments },
    };

    /// <summary>
    /// A tool-call delta of a chunk: the first delta of a call carries <paramref name="id"/> and <paramref name="name"/>,
    /// later ones only argument fragments.
    /// </summary>
    public static JsonObject ToolCallDelta(int index, string? id, string? name, string arguments)
    {
        var function = new JsonObject();
        if (name is not null)
        {
            function["name"] = name;
        }
        function["arguments"] = arguments;
        var call = new JsonObject { ["index"] = index };
        if (id is not null)
        {
            call["id"] = id;
            call["type"] = "function";
        }
        call["function"] = function;
        return call;
    }

    /// <summary>A fresh OpenAI-style tool call id for upstreams that do not name their calls.</summary>
    public static string NewToolCallId() => "call_" + Guid.NewGuid().ToString("N")[..24];

    /// <summary>True when a chunk delta carries something the client sees: non-empty content, a refusal or tool-call deltas.</summary>
    public static bool HasContent(JsonObject delta) =>
        (delta["content"] is JsonValue c && c.TryGetValue<string>(out var text) && text.Length > 0) ||
        delta["tool_calls"] is JsonArray { Count: > 0 } ||
        delta["refusal"] is JsonValue;

    /// <summary>Wraps a chunk object, deriving <see cref="ChatChunk.HasContent"/> from its first choice's delta.</summary>
    public static ChatChunk ToChatChunk(JsonObject chunk, TokenUsage? usage = null)
    {
        var hasContent = chunk["choices"] is JsonArray choices &&
            choices.Any(c => c is JsonObject choice && choice["delta"] is JsonObject delta && HasContent(delta));
        return new ChatChunk(chunk, hasContent, usage);
    }

    /// <summary><c>max_completion_tokens</c>, else <c>max_tokens</c>; null when neither is a positive integer.</summary>
    public static int? MaxTokens(JsonObject request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var value = IntOf(request["max_completion_tokens"]) ?? IntOf(request["max_tokens"]);
        return value is > 0 ? value : null;
    }

    /// <summary><c>stop</c> as a list: a string becomes one entry, an array its non-empty strings; absent is empty.</summary>
    public static List<string> StopSequences(JsonObject request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var result = new List<string>();
        switch (request["stop"])
        {
            case JsonValue v when v.TryGetValue<string>(out var s) && s.Length > 0:
                result.Add(s);
                break;
            case JsonArray a:
                foreach (var item in a)
                {
                    if (StringOf(item) is { Length: > 0 } stop)
                    {
                        result.Add(stop);
                    }
                }
                break;
        }
        return result;
    }

    /// <summary>
    /// The text of a message <c>content</c>: the string itself, or the concatenated <c>text</c> of its text parts
    /// (other parts are ignored); null/absent is the empty string.
    /// </summary>
    public static string TextOf(JsonNode? content)
    {
        switch (content)
        {
            case JsonValue v when v.TryGetValue<string>(out var s):
                return s;
            case JsonArray parts:
                var text = new StringBuilder();
                foreach (var part in parts)
                {
                    if (part is JsonValue pv && pv.TryGetValue<string>(out var ps))
                    {
                        text.Append(ps);
                    }
                    else if (part is JsonObject po && StringOf(po["type"]) is null or "text" or "input_text" && StringOf(po["text"]) is { } t)
                    {
                        text.Append(t);
                    }
                }
                return text.ToString();
            default:
                return "";
        }
    }

    /// <summary>The string value of <paramref name="node"/>, null when it is absent or not a string.</summary>
    public static string? StringOf(JsonNode? node) =>
        node is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    /// <summary>The integer value of <paramref name="node"/> (whole-valued numbers only), else null.</summary>
    public static int? IntOf(JsonNode? node)
    {
        if (node is not JsonValue v)
        {
            return null;
        }
        if (v.TryGetValue<int>(out var i))
        {
            return i;
        }
        if (v.TryGetValue<long>(out var l))
        {
            return l > int.MaxValue ? int.MaxValue : l < int.MinValue ? int.MinValue : (int)l;
        }
        if (v.TryGetValue<double>(out var d) && d == Math.Floor(d) && !double.IsInfinity(d))
        {
            return d > int.MaxValue ? int.MaxValue : d < int.MinValue ? int.MinValue : (int)d;
        }
        if (v.TryGetValue<JsonElement>(out var e) && e.ValueKind == JsonValueKind.Number)
        {
            if (e.TryGetInt32(out var ei))
            {
                return ei;
            }
            if (e.TryGetDouble(out var ed) && ed == Math.Floor(ed))
            {
                return ed > int.MaxValue ? int.MaxValue : ed < int.MinValue ? int.MinValue : (int)ed;
            }
        }
        return null;
    }

    /// <summary>True when <paramref name="node"/> is the JSON literal <c>true</c>/<c>false</c> equal to <paramref name="value"/>.</summary>
    public static bool IsBool(JsonNode? node, bool value) =>
        node is JsonValue v && v.GetValueKind() == (value ? JsonValueKind.True : JsonValueKind.False);

    /// <summary>A copy of <paramref name="node"/> when it is a JSON number, else null (for passing sampling parameters on).</summary>
    public static JsonNode? NumberOf(JsonNode? node) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? v.DeepClone() : null;

    /// <summary>
    /// A tool call's <c>arguments</c> JSON string as an object (empty or absent is <c>{}</c>). Anything else is the
    /// client's error: an <see cref="UpstreamException"/> of kind <see cref="UpstreamFailure.BadRequest"/>.
    /// </summary>
    public static JsonObject ParseArguments(string? arguments)
    {
        if (string.IsNullOrWhiteSpace(arguments))
        {
            return [];
        }
        try
        {
            if (JsonNode.Parse(arguments) is JsonObject obj)
            {
                return obj;
            }
        }
        catch (JsonException)
        {
            // reported below
        }
        throw new UpstreamException(UpstreamFailure.BadRequest, "tool_calls[].function.arguments must be a JSON object", 400);
    }

    /// <summary><c>response_format.type</c> (<c>text</c>, <c>json_object</c>, <c>json_schema</c>), or null when absent.</summary>
    public static string? ResponseFormatType(JsonObject request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request["response_format"] is JsonObject format ? StringOf(format["type"]) : null;
    }

    /// <summary>The <c>response_format.json_schema.schema</c> object, when the request asks for a JSON schema.</summary>
    public static JsonObject? ResponseSchema(JsonObject request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request["response_format"] is JsonObject { } format && StringOf(format["type"]) == "json_schema" &&
            format["json_schema"] is JsonObject schema && schema["schema"] is JsonObject s ? s : null;
    }

    /// <summary>The URL of an <c>image_url</c> content part (<c>{"image_url":{"url":...}}</c> or <c>{"image_url":"..."}</c>).</summary>
    public static string? ImageUrlOf(JsonObject part)
    {
        ArgumentNullException.ThrowIfNull(part);
        return part["image_url"] switch
        {
            JsonObject o => StringOf(o["url"]),
            JsonValue v => StringOf(v),
            _ => null,
        };
    }

    /// <summary>Splits a <c>data:&lt;media type&gt;;base64,&lt;data&gt;</c> URL.</summary>
    public static bool TryParseDataUrl(string url, out string mediaType, out string base64Data)
    {
        ArgumentNullException.ThrowIfNull(url);
        mediaType = "";
        base64Data = "";
        if (!url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        var comma = url.IndexOf(',', StringComparison.Ordinal);
        if (comma < 0)
        {
            return false;
        }
        var header = url[5..comma];
        if (!header.EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        mediaType = header[..^7];
        if (mediaType.Length == 0)
        {
            mediaType = "application/octet-stream";
        }
        base64Data = url[(comma + 1)..];
        return true;
    }

    /// <summary>
    /// The texts of an embeddings <c>input</c> (a string or an array of strings). Token arrays and anything else are
    /// the client's error (<see cref="UpstreamFailure.BadRequest"/>).
    /// </summary>
    public static List<string> EmbeddingInputs(JsonObject request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var input = request["input"];
        if (StringOf(input) is { } single)
        {
            return [single];
        }
        if (input is JsonArray array && array.Count > 0)
        {
            var texts = new List<string>(array.Count);
            foreach (var item in array)
            {
                texts.Add(StringOf(item) ?? throw new UpstreamException(UpstreamFailure.BadRequest, "input must be a string or an array of strings", 400));
            }
            return texts;
        }
        throw new UpstreamException(UpstreamFailure.BadRequest, "input must be a string or a non-empty array of strings", 400);
    }

    /// <summary>
    /// One <c>data[]</c> entry of an embeddings list. With <paramref name="base64"/> (<c>encoding_format: base64</c>)
    /// the vector is little-endian float32 in base64, as OpenAI sends it.
    /// </summary>
    public static JsonObject Embedding(int index, JsonArray vector, bool base64)
    {
        ArgumentNullException.ThrowIfNull(vector);
        JsonNode embedding;
        if (base64)
        {
            var bytes = new byte[vector.Count * 4];
            for (var i = 0; i < vector.Count; i++)
            {
                var value = vector[i] is JsonValue v && v.TryGetValue<double>(out var d) ? (float)d : 0f;
                BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), value);
            }
            embedding = Convert.ToBase64String(bytes);
        }
        else
        {
            embedding = vector.DeepClone();
        }
        return new JsonObject { ["object"] = "embedding", ["index"] = index, ["embedding"] = embedding };
    }

    /// <summary>An OpenAI embeddings <c>list</c> object.</summary>
    public static JsonObject EmbeddingList(JsonArray data, string model, int promptTokens) => new()
    {
        ["object"] = "list",
        ["data"] = data,
        ["model"] = model,
        ["usage"] = new JsonObject { ["prompt_tokens"] = promptTokens, ["total_tokens"] = promptTokens },
    };

    /// <summary>True when the embeddings request asks for <c>encoding_format: base64</c>.</summary>
    public static bool WantsBase64(JsonObject request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return StringOf(request["encoding_format"]) == "base64";
    }
}
