using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway.Providers;
using static HelixAgent.Api.Gateway.Providers.OpenAiShapes;

namespace HelixAgent.Api.Gateway.Dialects;

/// <summary>
/// OpenAI Responses ⇄ the canonical chat form, for every target (none takes Responses natively yet).
/// <para>
/// As for Messages (<see cref="MessagesTranslation"/>), the client's fields are of two kinds. <b>Requirements</b> change
/// what the answer means: an <c>input_file</c> or <c>input_image</c> the target cannot read, a forced built-in tool, an
/// item this gateway cannot resolve (<c>item_reference</c>), <c>background</c>, <c>conversation</c> or <c>prompt</c>:
/// refused (400 naming the field). <b>Hints</b> shape how a model answers (<c>reasoning</c>, <c>include</c>,
/// <c>prompt_cache_key</c>, <c>service_tier</c>, <c>truncation</c>, built-in tools nobody forces, reasoning items in
/// the input, unknown fields): translated where the target has an equivalent (<c>reasoning.effort</c> → OpenAI
/// <c>reasoning_effort</c>, which Gemini's adapter turns into a thinking budget) and dropped otherwise, named either way.
/// </para>
/// <para>
/// Tool namespaces (<c>{"type":"namespace","name":"crm","tools":[...]}</c>) become plain functions named
/// <c>crm__lookup</c>; calls of them come back as <c>function_call</c> items with <c>name: "lookup"</c> and
/// <c>namespace: "crm"</c>.
/// </para>
/// </summary>
internal static class ResponsesTranslation
{
    /// <summary>The separator of a namespace and a function name in a flattened tool name.</summary>
    public const string NamespaceSeparator = "__";

    /// <summary>
    /// The gateway's own field on a body that continues a stored conversation: the items of every earlier turn (inputs
    /// and outputs, oldest first), put there from the store before routing. Never the client's, never sent upstream.
    /// </summary>
    public const string HistoryField = "__helixagent_history";

    /// <summary>A request's own input as items (a string is one user message).</summary>
    public static JsonArray InputItems(JsonObject body) => body["input"] switch
    {
        JsonArray items => (JsonArray)items.DeepClone(),
        JsonValue v when StringOf(v) is { } text => new JsonArray(new JsonObject
        {
            ["type"] = "message", ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "input_text", ["text"] = text }),
        }),
        _ => [],
    };

    /// <summary>Top-level fields this dialect knows (anything else is an unknown hint).</summary>
    private static readonly HashSet<string> Known =
    [
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens", "temperature",
        "top_p", "text", "reasoning", "store", "previous_response_id", "metadata", "stream", "stream_options", "truncation",
        "user", "safety_identifier", "include", "prompt_cache_key", "prompt_cache_retention", "client_metadata",
        "service_tier", "background", "conversation", "prompt", "max_tool_calls", "top_logprobs",
    ];

    public static Prepared ToCanonical(JsonObject body, IChatProvider target, bool rejectHints)
    {
        var hints = new Hints(target, rejectHints);
        var Drop = hints.Drop;
        var type = target.Type;
        var openai = type == "openai";
        var chat = new JsonObject { ["model"] = StringOf(body["model"]) };
        var messages = new JsonArray();
        if (StringOf(body["instructions"]) is { Length: > 0 } instructions)
        {
            messages.Add(new JsonObject { ["role"] = "system", ["content"] = instructions });
        }

        var all = new List<(JsonObject Item, string At)>();
        var history = ProviderSupport.Objects(body[HistoryField]).ToList();
        for (var h = 0; h < history.Count; h++)
        {
            all.Add((history[h], $"previous_response_id (item {h} of the conversation)"));
        }
        if (body["input"] is JsonValue && StringOf(body["input"]) is { } text)
        {
            all.Add((new JsonObject { ["role"] = "user", ["content"] = text }, "input"));
        }
        else if (body["input"] is JsonArray inputItems)
        {
            for (var i = 0; i < inputItems.Count; i++)
            {
                all.Add(((JsonObject)inputItems[i]!, $"input[{i}]"));
            }
        }
        if (Messages(all, messages, target, hints) is { } refused)
        {
            return Prepared.Refuse(refused);
        }
        chat["messages"] = messages;

        if (IntOf(body["max_output_tokens"]) is { } maxOutput)
        {
            chat["max_tokens"] = maxOutput;
        }
        foreach (var name in (ReadOnlySpan<string>)["temperature", "top_p"])
        {
            if (body[name] is { } value)
            {
                chat[name] = value.DeepClone();
            }
        }
        if (OpenAiChatDialect.IsStreamBody(body))
        {
            chat["stream"] = true;
        }
        if (Tools(body, chat, target, Drop) is { } toolError)
        {
            return Prepared.Refuse(toolError);
        }
        if (body["parallel_tool_calls"] is JsonValue parallel && chat.ContainsKey("tools"))
        {
            chat["parallel_tool_calls"] = parallel.DeepClone();
        }
        switch (body["text"]?["format"] is JsonObject format ? StringOf(format["type"]) : null)
        {
            case "json_object":
                chat["response_format"] = new JsonObject { ["type"] = "json_object" };
                break;
            case "json_schema":
                var f = (JsonObject)body["text"]!["format"]!;
                var schema = new JsonObject { ["name"] = StringOf(f["name"]) ?? "response", ["schema"] = f["schema"]?.DeepClone() };
                if (f["strict"] is JsonValue strict)
                {
                    schema["strict"] = strict.DeepClone();
                }
                if (StringOf(f["description"]) is { } description)
                {
                    schema["description"] = description;
                }
                chat["response_format"] = new JsonObject { ["type"] = "json_schema", ["json_schema"] = schema };
                break;
        }
        if (body["text"] is JsonObject textConfig && textConfig.Any(p => p.Key != "format"))
        {
            Drop("text.verbosity");
        }

        if (body["reasoning"] is JsonObject reasoning)
        {
            if (StringOf(reasoning["effort"]) is { } effort && effort != "none")
            {
                if (type is "openai" or "gemini")
                {
                    chat["reasoning_effort"] = effort == "xhigh" ? "high" : effort == "minimal" ? "low" : effort;
                    hints.Translated("reasoning.effort=reasoning_effort");
                }
                else
                {
                    Drop("reasoning");
                }
            }
            if (reasoning["summary"] is JsonValue || reasoning["generate_summary"] is JsonValue)
            {
                Drop("reasoning.summary");
            }
        }
        if (body["include"] is JsonArray { Count: > 0 })
        {
            Drop("include");
        }
        if (StringOf(body["safety_identifier"]) is { } safety)
        {
            if (openai)
            {
                chat["safety_identifier"] = safety;
                hints.Translated("safety_identifier");
            }
            else
            {
                Drop("safety_identifier");
            }
        }
        if (StringOf(body["user"]) is { } user)
        {
            if (openai)
            {
                chat["user"] = user;
            }
            else
            {
                Drop("user");
            }
        }
        if (StringOf(body["prompt_cache_key"]) is { } cacheKey)
        {
            if (openai)
            {
                chat["prompt_cache_key"] = cacheKey;
            }
            else
            {
                Drop("prompt_cache_key");
            }
        }
        if (StringOf(body["service_tier"]) is { } tier && tier != "auto")
        {
            if (openai)
            {
                chat["service_tier"] = tier;
            }
            else
            {
                Drop("service_tier");
            }
        }
        if (StringOf(body["truncation"]) is "auto")
        {
            Drop("truncation");
        }
        foreach (var (name, value) in body)
        {
            if (name == HistoryField)
            {
                continue;
            }
            if (name is "client_metadata" or "prompt_cache_retention" or "max_tool_calls" or "top_logprobs" || !Known.Contains(name))
            {
                Drop(name);
            }
        }
        return hints.Result(chat);
    }

    /// <summary>
    /// Input items (earlier turns first) as chat messages: consecutive assistant output and function calls join one
    /// assistant turn, function outputs become <c>role: tool</c>; a requirement the target cannot meet refuses it.
    /// </summary>
    private static ValidationError? Messages(List<(JsonObject Item, string At)> items, JsonArray messages, IChatProvider target, Hints hints)
    {
        JsonObject? assistant = null; // the assistant turn that consecutive output items and function calls join
        foreach (var (item, at) in items)
        {
            var itemType = StringOf(item["type"]) ?? "message";
            switch (itemType)
            {
                case "message" when StringOf(item["role"]) == "assistant":
                    var said = new StringBuilder();
                    foreach (var part in Parts(item["content"]))
                    {
                        said.Append(StringOf(part["text"]) ?? StringOf(part["refusal"]));
                    }
                    assistant = AssistantMessage(said.ToString(), null);
                    messages.Add(assistant);
                    break;
                case "message":
                    assistant = null;
                    var role = Role(StringOf(item["role"])!);
                    if (StringOf(item["content"]) is { } plain)
                    {
                        messages.Add(new JsonObject { ["role"] = role, ["content"] = plain });
                        break;
                    }
                    var (content, refused) = UserContent(item["content"]!.AsArray(), at, target);
                    if (refused is not null)
                    {
                        return refused;
                    }
                    messages.Add(new JsonObject { ["role"] = role, ["content"] = content });
                    break;
                case "function_call":
                    var name = StringOf(item["namespace"]) is { Length: > 0 } ns
                        ? ns + NamespaceSeparator + StringOf(item["name"])
                        : StringOf(item["name"])!;
                    if (assistant is null)
                    {
                        assistant = AssistantMessage(null, new JsonArray());
                        messages.Add(assistant);
                    }
                    if (assistant["tool_calls"] is not JsonArray calls)
                    {
                        assistant["tool_calls"] = calls = new JsonArray();
                    }
                    calls.Add(ToolCall(StringOf(item["call_id"])!, name, StringOf(item["arguments"]) ?? "{}"));
                    break;
                case "function_call_output":
                    assistant = null;
                    if (OutputText(item["output"]) is not { } output)
                    {
                        return Cannot($"{at}.output", "a function output other than text", target);
                    }
                    messages.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = StringOf(item["call_id"]), ["content"] = output });
                    break;
                case "item_reference":
                    return new ValidationError(
                        $"{at}: item references are not resolved by this gateway; send the item itself, or continue with previous_response_id.", at);
                default:
                    // Reasoning, or a built-in tool's call or output from an earlier turn (web_search_call, ...): the target has no such thing.
                    hints.Drop(itemType);
                    break;
            }
        }
        return null;
    }

    /// <summary>A user (or system) message's parts as chat content parts, or the part the target cannot take.</summary>
    private static (JsonArray? Content, ValidationError? Refused) UserContent(JsonArray parts, string at, IChatProvider target)
    {
        var content = new JsonArray();
        for (var j = 0; j < parts.Count; j++)
        {
            var part = (JsonObject)parts[j]!;
            var partAt = $"{at}.content[{j}]";
            switch (StringOf(part["type"]))
            {
                case "input_text" or "output_text":
                    content.Add(new JsonObject { ["type"] = "text", ["text"] = StringOf(part["text"]) });
                    break;
                case "input_image" when target.IsSimulated:
                    return (null, Cannot(partAt, "an image", target));
                case "input_image" when StringOf(part["image_url"]) is not { Length: > 0 }:
                    return (null, new ValidationError(
                        $"{partAt}.file_id: this gateway has no Files API; send the image as image_url (an https or data: URL).", $"{partAt}.image_url"));
                case "input_image":
                    var image = new JsonObject { ["url"] = StringOf(part["image_url"]) };
                    if (StringOf(part["detail"]) is { } detail && detail != "auto")
                    {
                        image["detail"] = detail;
                    }
                    content.Add(new JsonObject { ["type"] = "image_url", ["image_url"] = image });
                    break;
                case "input_file" when FileText(part) is { } fileText:
                    content.Add(new JsonObject { ["type"] = "text", ["text"] = fileText });
                    break;
                case "input_file":
                    return (null, Cannot(partAt, "a file other than plain text sent as file_data", target));
                default:
                    return (null, Cannot(partAt, $"a '{HelixAgent.Data.Echo.Clip(StringOf(part["type"]))}' part", target));
            }
        }
        return (content, null);
    }

    /// <summary>Function tools (and the functions of namespaces) become chat functions; built-in tools are dropped, or refused when forced.</summary>
    private static ValidationError? Tools(JsonObject body, JsonObject chat, IChatProvider target, Action<string> drop)
    {
        var functions = new JsonArray();
        void AddFunction(JsonObject tool, string name)
        {
            var function = new JsonObject { ["name"] = name };
            if (StringOf(tool["description"]) is { } description)
            {
                function["description"] = description;
            }
            function["parameters"] = tool["parameters"]?.DeepClone() ?? new JsonObject { ["type"] = "object", ["properties"] = new JsonObject() };
            if (tool["strict"] is JsonValue strict)
            {
                function["strict"] = strict.DeepClone();
            }
            functions.Add(new JsonObject { ["type"] = "function", ["function"] = function });
        }
        var builtIn = new List<string>();
        foreach (var tool in ProviderSupport.Objects(body["tools"]))
        {
            switch (StringOf(tool["type"]))
            {
                case "function":
                    AddFunction(tool, StringOf(tool["name"])!);
                    break;
                case "namespace":
                    foreach (var inner in ProviderSupport.Objects(tool["tools"]))
                    {
                        if (StringOf(inner["type"]) is "function" or null)
                        {
                            AddFunction(inner, StringOf(tool["name"]) + NamespaceSeparator + StringOf(inner["name"]));
                        }
                        else
                        {
                            drop("tools.namespace." + StringOf(inner["type"]));
                        }
                    }
                    break;
                default:
                    builtIn.Add(StringOf(tool["type"]) ?? "");
                    drop(StringOf(tool["type"]) ?? "tools");
                    break;
            }
        }
        switch (body["tool_choice"])
        {
            case JsonValue mode when StringOf(mode) is { } m:
                if (m == "required" && functions.Count == 0)
                {
                    return new ValidationError(
                        $"tool_choice: 'required' with only built-in tools ({string.Join(", ", builtIn)}), which {target.Name} ({target.Type}) cannot call.", "tool_choice");
                }
                if (functions.Count > 0)
                {
                    chat["tool_choice"] = m;
                }
                break;
            case JsonObject choice:
                var choiceType = StringOf(choice["type"]);
                if (choiceType == "function")
                {
                    var name = StringOf(choice["name"]);
                    chat["tool_choice"] = new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = name } };
                }
                else if (choiceType == "allowed_tools")
                {
                    chat["tool_choice"] = StringOf(choice["mode"]) == "required" ? "required" : "auto";
                    drop("tool_choice.allowed_tools");
                }
                else
                {
                    return new ValidationError(
                        $"tool_choice: '{HelixAgent.Data.Echo.Clip(choiceType)}' is an OpenAI built-in tool, which {target.Name} ({target.Type}) cannot call.", "tool_choice");
                }
                break;
        }
        if (functions.Count > 0)
        {
            chat["tools"] = functions;
        }
        else
        {
            chat.Remove("tool_choice");
        }
        return null;
    }

    private static string Role(string role) => role == "developer" ? "system" : role;

    private static IEnumerable<JsonObject> Parts(JsonNode? content) =>
        content is JsonArray parts ? ProviderSupport.Objects(parts)
        : StringOf(content) is { } text ? [new JsonObject { ["type"] = "output_text", ["text"] = text }]
        : [];

    /// <summary>A function output as text: a string, or its text parts joined (null when it carries anything else).</summary>
    private static string? OutputText(JsonNode? output)
    {
        if (StringOf(output) is { } text)
        {
            return text;
        }
        if (output is not JsonArray parts)
        {
            return null;
        }
        var joined = new StringBuilder();
        foreach (var part in ProviderSupport.Objects(parts))
        {
            if (StringOf(part["type"]) is not ("input_text" or "output_text") || StringOf(part["text"]) is not { } partText)
            {
                return null;
            }
            joined.Append(joined.Length > 0 ? "\n" : "").Append(partText);
        }
        return joined.ToString();
    }

    /// <summary>An <c>input_file</c> sent as a plain-text data URL, decoded (anything else: null).</summary>
    private static string? FileText(JsonObject part)
    {
        if (StringOf(part["file_data"]) is not { } data || !data.StartsWith("data:text/", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }
        var comma = data.IndexOf(',', StringComparison.Ordinal);
        if (comma < 0 || !data[..comma].EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }
        try
        {
            var text = Encoding.UTF8.GetString(Convert.FromBase64String(data[(comma + 1)..]));
            return StringOf(part["filename"]) is { } filename ? $"{filename}:\n{text}" : text;
        }
        catch (FormatException)
        {
            return null;
        }
    }

    private static ValidationError Cannot(string at, string what, IChatProvider target) =>
        new($"{at}: {target.Name} ({target.Type}) cannot take {what}.", at);

    // ---- answers ----

    /// <summary>A flattened tool name back as the client named it: (<c>name</c>, <c>namespace</c> or null).</summary>
    public static (string Name, string? Namespace) Unflatten(string name, JsonObject body)
    {
        var separator = name.IndexOf(NamespaceSeparator, StringComparison.Ordinal);
        if (separator <= 0)
        {
            return (name, null);
        }
        var ns = name[..separator];
        var inner = name[(separator + NamespaceSeparator.Length)..];
        foreach (var tool in ProviderSupport.Objects(body["tools"]))
        {
            if (StringOf(tool["type"]) == "namespace" && StringOf(tool["name"]) == ns
                && ProviderSupport.Objects(tool["tools"]).Any(t => StringOf(t["name"]) == inner))
            {
                return (inner, ns);
            }
        }
        return (name, null);
    }

    public static JsonObject FunctionCallItem(string id, string callId, string name, string arguments, string status, JsonObject body)
    {
        var (plain, ns) = Unflatten(name, body);
        var item = new JsonObject
        {
            ["id"] = id,
            ["type"] = "function_call",
            ["status"] = status,
            ["arguments"] = arguments,
            ["call_id"] = callId,
            ["name"] = plain,
        };
        if (ns is not null)
        {
            item["namespace"] = ns;
        }
        return item;
    }

    public static JsonObject MessageItem(string id, string text, string status) => new()
    {
        ["id"] = id,
        ["type"] = "message",
        ["status"] = status,
        ["content"] = status == "in_progress" ? new JsonArray() : new JsonArray(TextPart(text)),
        ["role"] = "assistant",
    };

    public static JsonObject TextPart(string text) => new()
    {
        ["type"] = "output_text",
        ["annotations"] = new JsonArray(),
        ["logprobs"] = new JsonArray(),
        ["text"] = text,
    };

    public static JsonObject UsageJson(TokenUsage usage, int cached, int reasoning) => new()
    {
        ["input_tokens"] = usage.PromptTokens,
        ["input_tokens_details"] = new JsonObject { ["cached_tokens"] = cached },
        ["output_tokens"] = usage.CompletionTokens,
        ["output_tokens_details"] = new JsonObject { ["reasoning_tokens"] = reasoning },
        ["total_tokens"] = usage.PromptTokens + usage.CompletionTokens,
    };

    /// <summary>
    /// The <c>response</c> object with the request's settings echoed: <paramref name="status"/> <c>in_progress</c>
    /// (no output, no usage yet), <c>completed</c>, <c>incomplete</c> (with <paramref name="incomplete"/>'s reason) or
    /// <c>failed</c> (with <paramref name="error"/>).
    /// </summary>
    public static JsonObject Response(JsonObject body, RequestTrace trace, string model, long createdAt, string status, JsonArray? output,
        JsonObject? usage, string? incomplete = null, JsonObject? error = null)
    {
        var response = new JsonObject
        {
            ["id"] = ResponseId(trace),
            ["object"] = "response",
            ["created_at"] = createdAt,
            ["status"] = status,
            ["background"] = false,
            ["error"] = error,
            ["incomplete_details"] = incomplete is null ? null : new JsonObject { ["reason"] = incomplete },
            ["instructions"] = body["instructions"]?.DeepClone(),
            ["max_output_tokens"] = body["max_output_tokens"]?.DeepClone(),
            ["model"] = model,
            ["output"] = output ?? new JsonArray(),
            ["parallel_tool_calls"] = body["parallel_tool_calls"]?.DeepClone() ?? true,
            ["previous_response_id"] = body["previous_response_id"]?.DeepClone(),
            ["reasoning"] = new JsonObject
            {
                ["effort"] = body["reasoning"]?["effort"]?.DeepClone(),
                ["summary"] = body["reasoning"]?["summary"]?.DeepClone(),
            },
            ["service_tier"] = body["service_tier"]?.DeepClone() ?? "default",
            ["store"] = ResponsesValidation.Stores(body),
            ["temperature"] = body["temperature"]?.DeepClone() ?? 1.0,
            ["text"] = new JsonObject { ["format"] = body["text"]?["format"]?.DeepClone() ?? new JsonObject { ["type"] = "text" } },
            ["tool_choice"] = body["tool_choice"]?.DeepClone() ?? "auto",
            ["tools"] = body["tools"]?.DeepClone() ?? new JsonArray(),
            ["top_p"] = body["top_p"]?.DeepClone() ?? 1.0,
            ["truncation"] = body["truncation"]?.DeepClone() ?? "disabled",
            ["usage"] = usage,
            ["user"] = body["user"]?.DeepClone(),
            ["metadata"] = body["metadata"]?.DeepClone() ?? new JsonObject(),
        };
        if (status == "completed")
        {
            response["completed_at"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        }
        return response;
    }

    public static string ResponseId(RequestTrace trace) => "resp_" + trace.RequestId;

    /// <summary>Status and incomplete reason of a chat finish reason.</summary>
    public static (string Status, string? Incomplete) StatusOf(string? finishReason) => finishReason switch
    {
        "length" => ("incomplete", "max_output_tokens"),
        "content_filter" => ("incomplete", "content_filter"),
        _ => ("completed", null),
    };

    /// <summary>A canonical <c>chat.completion</c> (its first choice) as a <c>response</c>.</summary>
    public static JsonObject ToResponse(JsonObject completion, JsonObject body, RequestTrace trace)
    {
        var choice = completion["choices"] is JsonArray { Count: > 0 } choices ? choices[0] as JsonObject : null;
        var message = choice?["message"] as JsonObject;
        var output = new JsonArray();
        if (TextOf(message?["content"]) is { Length: > 0 } text)
        {
            output.Add(MessageItem("msg_" + trace.RequestId, text, "completed"));
        }
        var n = 0;
        foreach (var call in ProviderSupport.Objects(message?["tool_calls"]))
        {
            var function = call["function"] as JsonObject;
            output.Add(FunctionCallItem($"fc_{trace.RequestId}_{n++}", StringOf(call["id"]) ?? NewToolCallId(), StringOf(function?["name"]) ?? "",
                StringOf(function?["arguments"]) ?? "{}", "completed", body));
        }
        var usage = OpenAiCompatibleProvider.UsageOf(completion);
        var cached = IntOf(completion["usage"]?["prompt_tokens_details"]?["cached_tokens"]) ?? 0;
        var reasoning = IntOf(completion["usage"]?["completion_tokens_details"]?["reasoning_tokens"]) ?? 0;
        var (status, incomplete) = StatusOf(StringOf(choice?["finish_reason"]));
        var created = IntOf(completion["created"]) is { } c ? c : DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        return Response(body, trace, StringOf(completion["model"]) ?? trace.Model, created, status, output, UsageJson(usage, cached, reasoning), incomplete);
    }

    /// <summary>
    /// Canonical chunks as the Responses stream's semantic events, each with its <c>sequence_number</c>:
    /// <c>response.created</c>, <c>response.in_progress</c>, per output item <c>response.output_item.added</c>, for
    /// text <c>response.content_part.added</c> / <c>response.output_text.delta</c> / <c>.done</c> /
    /// <c>response.content_part.done</c>, for calls <c>response.function_call_arguments.delta</c> / <c>.done</c>, then
    /// <c>response.output_item.done</c>, and <c>response.completed</c> (or <c>response.incomplete</c>) with the whole
    /// response. A break after the start is <c>response.failed</c> then <c>error</c>.
    /// </summary>
    internal sealed class ResponsesStream(JsonObject body, RequestTrace trace) : IStreamRenderer
    {
        private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        private readonly JsonArray _output = [];
        private readonly Dictionary<int, OpenCall> _calls = [];
        private int _sequence;
        private bool _started;
        private int _textIndex = -1;
        private readonly StringBuilder _text = new();
        private string? _finish;
        private TokenUsage? _usage;
        private string _model = trace.Model;
        private bool _native;

        private sealed class OpenCall(int outputIndex, string id, string callId, string name)
        {
            public int OutputIndex { get; } = outputIndex;
            public string Id { get; } = id;
            public string CallId { get; } = callId;
            public string Name { get; } = name;
            public StringBuilder Arguments { get; } = new();
            public bool Done { get; set; }
        }

        public void AddNative(NativeEvent native, List<SseFrame> frames)
        {
            _native = true;
            frames.Add(new SseFrame(native.Event, null, native.Data));
            if (native.UsageFinal && JsonNode.Parse(native.Data)?["response"] is JsonObject final)
            {
                Answer = final;
            }
        }

        public void Add(ChatChunk chunk, List<SseFrame> frames)
        {
            var node = chunk.Chunk;
            if (StringOf(node["model"]) is { } model)
            {
                _model = model;
            }
            Start(frames);
            if (chunk.Usage is { } usage)
            {
                _usage = usage;
            }
            if (node["choices"] is not JsonArray { Count: > 0 } choices || choices[0] is not JsonObject choice)
            {
                return;
            }
            if (choice["delta"] is JsonObject delta)
            {
                if (StringOf(delta["content"]) is { Length: > 0 } text)
                {
                    if (_textIndex < 0)
                    {
                        _textIndex = _output.Count;
                        var item = MessageItem(MessageId, "", "in_progress");
                        _output.Add(item);
                        frames.Add(Event("response.output_item.added", new JsonObject { ["output_index"] = _textIndex, ["item"] = item.DeepClone() }));
                        frames.Add(Event("response.content_part.added", new JsonObject
                        {
                            ["item_id"] = MessageId, ["output_index"] = _textIndex, ["content_index"] = 0, ["part"] = TextPart(""),
                        }));
                    }
                    _text.Append(text);
                    frames.Add(Event("response.output_text.delta", new JsonObject
                    {
                        ["item_id"] = MessageId, ["output_index"] = _textIndex, ["content_index"] = 0, ["delta"] = text, ["logprobs"] = new JsonArray(),
                    }));
                }
                foreach (var call in ProviderSupport.Objects(delta["tool_calls"]))
                {
                    var index = IntOf(call["index"]) ?? 0;
                    if (!_calls.TryGetValue(index, out var open))
                    {
                        CloseText(frames);
                        open = _calls[index] = new OpenCall(_output.Count, $"fc_{trace.RequestId}_{index}", StringOf(call["id"]) ?? NewToolCallId(),
                            StringOf(call["function"]?["name"]) ?? "");
                        var item = FunctionCallItem(open.Id, open.CallId, open.Name, "", "in_progress", body);
                        _output.Add(item);
                        frames.Add(Event("response.output_item.added", new JsonObject { ["output_index"] = open.OutputIndex, ["item"] = item.DeepClone() }));
                    }
                    if (StringOf(call["function"]?["arguments"]) is { Length: > 0 } arguments)
                    {
                        open.Arguments.Append(arguments);
                        frames.Add(Event("response.function_call_arguments.delta", new JsonObject
                        {
                            ["item_id"] = open.Id, ["output_index"] = open.OutputIndex, ["delta"] = arguments,
                        }));
                    }
                }
            }
            if (StringOf(choice["finish_reason"]) is { } finish)
            {
                _finish = finish;
                CloseAll(frames);
            }
        }

        public void End(List<SseFrame> frames)
        {
            if (_native)
            {
                return; // the upstream's own response.completed went through
            }
            Start(frames);
            CloseAll(frames);
            var (status, incomplete) = StatusOf(_finish);
            var usage = UsageJson(_usage ?? trace.Usage, 0, 0);
            Answer = Response(body, trace, _model, _created, status, (JsonArray)_output.DeepClone(), usage, incomplete);
            frames.Add(Event(status == "completed" ? "response.completed" : "response.incomplete", new JsonObject
            {
                ["response"] = Answer.DeepClone(),
            }));
        }

        public SseFrame Error(int status, string type, string code, string message) => Event("error", new JsonObject
        {
            ["code"] = code, ["message"] = message, ["param"] = null,
        });

        public IEnumerable<SseFrame> ErrorFrames(int status, string type, string code, string message)
        {
            var failed = Response(body, trace, _model, _created, "failed", (JsonArray)_output.DeepClone(), null,
                error: new JsonObject { ["code"] = code, ["message"] = message });
            return [Event("response.failed", new JsonObject { ["response"] = failed }), Error(status, type, code, message)];
        }

        /// <summary>The finished response (for storing), once <see cref="End"/> has run.</summary>
        public JsonObject? Answer { get; private set; }

        private string MessageId => "msg_" + trace.RequestId;

        private void Start(List<SseFrame> frames)
        {
            if (_started)
            {
                return;
            }
            _started = true;
            var response = Response(body, trace, _model, _created, "in_progress", null, null);
            frames.Add(Event("response.created", new JsonObject { ["response"] = response }));
            frames.Add(Event("response.in_progress", new JsonObject { ["response"] = response.DeepClone() }));
        }

        private void CloseText(List<SseFrame> frames)
        {
            if (_textIndex < 0 || _output[_textIndex]!["status"]!.GetValue<string>() != "in_progress")
            {
                return;
            }
            var text = _text.ToString();
            frames.Add(Event("response.output_text.done", new JsonObject
            {
                ["item_id"] = MessageId, ["output_index"] = _textIndex, ["content_index"] = 0, ["text"] = text, ["logprobs"] = new JsonArray(),
            }));
            frames.Add(Event("response.content_part.done", new JsonObject
            {
                ["item_id"] = MessageId, ["output_index"] = _textIndex, ["content_index"] = 0, ["part"] = TextPart(text),
            }));
            var done = MessageItem(MessageId, text, "completed");
            _output[_textIndex] = done;
            frames.Add(Event("response.output_item.done", new JsonObject { ["output_index"] = _textIndex, ["item"] = done.DeepClone() }));
        }

        private void CloseAll(List<SseFrame> frames)
        {
            CloseText(frames);
            foreach (var open in _calls.Values.Where(c => !c.Done).OrderBy(c => c.OutputIndex))
            {
                open.Done = true;
                var arguments = open.Arguments.ToString();
                var done = FunctionCallItem(open.Id, open.CallId, open.Name, arguments, "completed", body);
                frames.Add(Event("response.function_call_arguments.done", new JsonObject
                {
                    ["item_id"] = open.Id, ["output_index"] = open.OutputIndex, ["name"] = done["name"]!.DeepClone(), ["arguments"] = arguments,
                }));
                _output[open.OutputIndex] = done;
                frames.Add(Event("response.output_item.done", new JsonObject { ["output_index"] = open.OutputIndex, ["item"] = done.DeepClone() }));
            }
        }

        private SseFrame Event(string type, JsonObject payload)
        {
            var data = new JsonObject { ["type"] = type };
            foreach (var (key, value) in payload.ToList())
            {
                payload.Remove(key);
                data[key] = value;
            }
            data["sequence_number"] = _sequence++;
            return new SseFrame(type, data);
        }
    }
}
