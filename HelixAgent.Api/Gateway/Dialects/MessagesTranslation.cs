using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway.Providers;
using static HelixAgent.Api.Gateway.Providers.OpenAiShapes;

namespace HelixAgent.Api.Gateway.Dialects;

/// <summary>
/// Anthropic Messages ⇄ the canonical form (OpenAI chat), for every target that does not speak Messages itself.
/// <para>
/// The client's fields are of two kinds. <b>Requirements</b> change what the answer means: a <c>document</c> or
/// <c>image</c> block the target cannot see, a server tool that <c>tool_choice</c> forces. A target that cannot meet
/// one refuses the request (400 naming the field). <b>Hints</b> shape how a model answers (<c>thinking</c>, effort,
/// <c>context_management</c>, <c>cache_control</c>, <c>service_tier</c>, <c>metadata</c>, <c>top_k</c>, server tools
/// nobody forces, unknown fields): each is translated where the target has an equivalent (thinking → OpenAI
/// <c>reasoning_effort</c>, which the Gemini adapter turns into a thinking budget) and dropped otherwise, and either way
/// named (<c>x-helixagent-dropped</c>, <c>x-helixagent-translated</c>, the ledger row).
/// </para>
/// </summary>
internal static class MessagesTranslation
{
    /// <summary>Fields this translation reads; any other top-level field is a hint nobody but Anthropic understands.</summary>
    private static readonly HashSet<string> Known =
    [
        "model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p", "top_k", "metadata", "stream", "tools",
        "tool_choice", "thinking", "service_tier", "output_config", "context_management", "cache_control",
    ];

    /// <summary>A tool the client runs (<c>type</c> absent or <c>custom</c>), as opposed to one of Anthropic's server tools.</summary>
    public static bool IsCustomTool(JsonObject tool) => StringOf(tool["type"]) is null or "custom";

    /// <summary>Targets that can see images (the simulator cannot).</summary>
    private static bool SeesImages(IChatProvider target) => !target.IsSimulated;

    public static Prepared ToCanonical(JsonObject body, IChatProvider target, bool rejectHints)
    {
        var hints = new Hints(target, rejectHints);
        var Drop = hints.Drop;
        var type = target.Type;
        var chat = new JsonObject { ["model"] = StringOf(body["model"]) };
        var messages = new JsonArray();

        switch (body["system"])
        {
            case JsonValue system when StringOf(system) is { Length: > 0 } text:
                messages.Add(new JsonObject { ["role"] = "system", ["content"] = text });
                break;
            case JsonArray blocks:
                var joined = new StringBuilder();
                foreach (var block in ProviderSupport.Objects(blocks))
                {
                    if (block.ContainsKey("cache_control"))
                    {
                        Drop("cache_control");
                    }
                    joined.Append(joined.Length > 0 ? "\n\n" : "").Append(StringOf(block["text"]));
                }
                if (joined.Length > 0)
                {
                    messages.Add(new JsonObject { ["role"] = "system", ["content"] = joined.ToString() });
                }
                break;
        }

        var turns = (JsonArray)body["messages"]!;
        for (var i = 0; i < turns.Count; i++)
        {
            var turn = (JsonObject)turns[i]!;
            var assistant = StringOf(turn["role"]) == "assistant";
            if (StringOf(turn["content"]) is { } plain)
            {
                messages.Add(new JsonObject { ["role"] = assistant ? "assistant" : "user", ["content"] = plain });
                continue;
            }
            var blocks = (JsonArray)turn["content"]!;
            var parts = new JsonArray();
            var text = new StringBuilder();
            var toolCalls = new JsonArray();
            for (var j = 0; j < blocks.Count; j++)
            {
                var block = (JsonObject)blocks[j]!;
                var at = $"messages.{i}.content.{j}";
                if (block.ContainsKey("cache_control"))
                {
                    Drop("cache_control");
                }
                switch (StringOf(block["type"]))
                {
                    case "text":
                        if (assistant)
                        {
                            text.Append(StringOf(block["text"]));
                        }
                        else
                        {
                            parts.Add(new JsonObject { ["type"] = "text", ["text"] = StringOf(block["text"]) });
                        }
                        break;
                    case "image" when !assistant:
                        if (!SeesImages(target))
                        {
                            return Prepared.Refuse(Cannot(at, "an image", target));
                        }
                        if (ImageUrl(block) is not { } url)
                        {
                            return Prepared.Refuse(new ValidationError($"{at}.source: expected a base64 or url image source.", $"{at}.source"));
                        }
                        parts.Add(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = url } });
                        break;
                    case "document" when !assistant:
                        if (DocumentText(block) is not { } documentText)
                        {
                            return Prepared.Refuse(Cannot(at, "a document other than plain text", target));
                        }
                        parts.Add(new JsonObject { ["type"] = "text", ["text"] = documentText });
                        break;
                    case "tool_result" when !assistant:
                        if (ToolResultText(block) is not { } result)
                        {
                            return Prepared.Refuse(Cannot(at, "a tool result with content other than text", target));
                        }
                        // OpenAI wants tool results right after the assistant turn that called: before this turn's other content.
                        messages.Add(new JsonObject
                        {
                            ["role"] = "tool",
                            ["tool_call_id"] = StringOf(block["tool_use_id"]),
                            ["content"] = IsBool(block["is_error"], true) ? "Error: " + result : result,
                        });
                        break;
                    case "tool_use" when assistant:
                        toolCalls.Add(ToolCall(StringOf(block["id"])!, StringOf(block["name"])!, block["input"]!.ToJsonString()));
                        break;
                    case "thinking" or "redacted_thinking":
                        Drop("thinking");
                        break;
                    case "server_tool_use" or "web_search_tool_result" or "web_fetch_tool_result" or "code_execution_tool_result"
                        or "bash_code_execution_tool_result" or "text_editor_code_execution_tool_result" or "mcp_tool_use" or "mcp_tool_result":
                        Drop("server_tools");
                        break;
                    default:
                        return Prepared.Refuse(Cannot(at, $"a '{HelixAgent.Data.Echo.Clip(StringOf(block["type"]))}' block in a {(assistant ? "assistant" : "user")} turn", target));
                }
            }
            if (assistant)
            {
                if (text.Length > 0 || toolCalls.Count > 0)
                {
                    messages.Add(AssistantMessage(text.Length > 0 ? text.ToString() : null, toolCalls.Count > 0 ? toolCalls : null));
                }
            }
            else if (parts.Count > 0)
            {
                messages.Add(new JsonObject { ["role"] = "user", ["content"] = parts });
            }
        }
        chat["messages"] = messages;
        chat["max_tokens"] = body["max_tokens"]?.DeepClone();
        if (body["stop_sequences"] is JsonArray { Count: > 0 } stops)
        {
            chat["stop"] = stops.DeepClone();
        }
        foreach (var name in (ReadOnlySpan<string>)["temperature", "top_p"])
        {
            if (body[name] is { } value)
            {
                chat[name] = value.DeepClone();
            }
        }
        if (body["top_k"] is { } topK)
        {
            if (type is "gemini" or "ollama")
            {
                chat["top_k"] = topK.DeepClone();
            }
            else
            {
                Drop("top_k");
            }
        }
        if (OpenAiChatDialect.IsStreamBody(body))
        {
            chat["stream"] = true;
        }
        if (body["metadata"] is JsonObject metadata)
        {
            if (type == "openai" && StringOf(metadata["user_id"]) is { } user)
            {
                chat["user"] = user;
                hints.Translated("metadata.user_id=user");
            }
            else if (metadata.Count > 0)
            {
                Drop("metadata");
            }
        }

        if (Tools(body, chat, target, Drop) is { } toolError)
        {
            return Prepared.Refuse(toolError);
        }

        var effort = Effort(body);
        var thinkingSet = body["thinking"] is JsonObject;
        // output_config.effort decides the effort unless thinking names a budget of its own.
        var effortSet = body["output_config"] is JsonObject { } config && config.ContainsKey("effort")
            && (!thinkingSet || StringOf(body["thinking"]!["type"]) == "adaptive");
        if (effort is not null && type is "openai" or "gemini")
        {
            chat["reasoning_effort"] = effort;
            if (thinkingSet)
            {
                hints.Translated("thinking=reasoning_effort");
            }
            if (effortSet)
            {
                hints.Translated("output_config.effort=reasoning_effort");
            }
        }
        else if (effort is not null)
        {
            if (thinkingSet)
            {
                Drop("thinking");
            }
            if (effortSet)
            {
                Drop("output_config");
            }
        }
        if (body["output_config"] is JsonObject output && (output.Count > (effortSet && effort is not null ? 1 : 0)))
        {
            Drop("output_config");
        }
        foreach (var (name, _) in body)
        {
            if (name is "context_management" or "service_tier" or "cache_control" || !Known.Contains(name))
            {
                Drop(name);
            }
        }
        return hints.Result(chat);
    }

    private static ValidationError Cannot(string at, string what, IChatProvider target) =>
        new($"{at}: {target.Name} ({target.Type}) cannot take {what}; route this model to an Anthropic target to send it.", at);

    /// <summary>Custom tools become functions; server tools are Anthropic's alone (dropped, or refused when forced).</summary>
    private static ValidationError? Tools(JsonObject body, JsonObject chat, IChatProvider target, Action<string> drop)
    {
        var functions = new JsonArray();
        foreach (var tool in ProviderSupport.Objects(body["tools"]))
        {
            if (tool.ContainsKey("cache_control"))
            {
                drop("cache_control");
            }
            if (!IsCustomTool(tool))
            {
                drop("server_tools");
                continue;
            }
            var function = new JsonObject { ["name"] = StringOf(tool["name"]) };
            if (StringOf(tool["description"]) is { } description)
            {
                function["description"] = description;
            }
            function["parameters"] = tool["input_schema"]!.DeepClone();
            functions.Add(new JsonObject { ["type"] = "function", ["function"] = function });
        }
        var choice = body["tool_choice"] as JsonObject;
        var mode = StringOf(choice?["type"]);
        if (mode == "tool")
        {
            var name = StringOf(choice!["name"]);
            if (!functions.Any(f => StringOf(f!["function"]!["name"]) == name))
            {
                return new ValidationError(
                    $"tool_choice.name: '{HelixAgent.Data.Echo.Clip(name)}' is one of Anthropic's server tools, which {target.Name} ({target.Type}) cannot call.", "tool_choice.name");
            }
        }
        if (mode == "any" && functions.Count == 0)
        {
            return new ValidationError($"tool_choice: every tool is an Anthropic server tool, which {target.Name} ({target.Type}) cannot call.", "tool_choice");
        }
        if (functions.Count == 0)
        {
            return null;
        }
        chat["tools"] = functions;
        chat["tool_choice"] = mode switch
        {
            "any" => "required",
            "none" => "none",
            "tool" => new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = StringOf(choice!["name"]) } },
            _ => "auto",
        };
        if (IsBool(choice?["disable_parallel_tool_use"], true) && target.Type == "openai")
        {
            chat["parallel_tool_calls"] = false;
        }
        return null;
    }

    /// <summary><c>thinking</c> (or <c>output_config.effort</c>) as an OpenAI <c>reasoning_effort</c>; null when neither asks for thinking.</summary>
    private static string? Effort(JsonObject body)
    {
        var configured = StringOf(body["output_config"]?["effort"]) is { } e && e is "low" or "medium" or "high" ? e : null;
        if (body["thinking"] is JsonObject thinking)
        {
            return StringOf(thinking["type"]) switch
            {
                "enabled" => IntOf(thinking["budget_tokens"]) switch
                {
                    < 4096 => "low",
                    < 16384 => "medium",
                    _ => "high",
                },
                "adaptive" => configured ?? "medium",
                _ => null,
            };
        }
        return configured;
    }

    private static string? ImageUrl(JsonObject block)
    {
        var source = block["source"] as JsonObject;
        return StringOf(source?["type"]) switch
        {
            "base64" when StringOf(source!["media_type"]) is { } mediaType && StringOf(source["data"]) is { } data => $"data:{mediaType};base64,{data}",
            "url" => StringOf(source!["url"]),
            _ => null,
        };
    }

    /// <summary>A plain-text document's text (a <c>text</c> source, or <c>content</c> of text blocks); null for PDFs and URLs.</summary>
    private static string? DocumentText(JsonObject block)
    {
        var source = block["source"] as JsonObject;
        var text = StringOf(source?["type"]) switch
        {
            "text" => StringOf(source!["data"]),
            "content" => BlocksText(source!["content"]),
            _ => null,
        };
        return text is null ? null : StringOf(block["title"]) is { } title ? title + "\n\n" + text : text;
    }

    private static string? ToolResultText(JsonObject block) => block["content"] switch
    {
        null => "",
        JsonValue v => StringOf(v),
        var blocks => BlocksText(blocks),
    };

    /// <summary>The text of a string or of text blocks; null when any block is not text.</summary>
    private static string? BlocksText(JsonNode? content)
    {
        if (StringOf(content) is { } s)
        {
            return s;
        }
        var text = new StringBuilder();
        foreach (var item in ProviderSupport.Items(content))
        {
            if (item is not JsonObject b || StringOf(b["type"]) != "text")
            {
                return null;
            }
            text.Append(text.Length > 0 ? "\n" : "").Append(StringOf(b["text"]));
        }
        return text.ToString();
    }

    // ---- answers ----

    internal static string StopReason(string? finishReason) => finishReason switch
    {
        "length" => "max_tokens",
        "tool_calls" or "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    };

    public static JsonObject UsageJson(TokenUsage usage, int cached = 0) => new()
    {
        ["input_tokens"] = Math.Max(0, usage.PromptTokens - cached),
        ["cache_creation_input_tokens"] = 0,
        ["cache_read_input_tokens"] = cached,
        ["output_tokens"] = usage.CompletionTokens,
    };

    /// <summary>A canonical <c>chat.completion</c> (its first choice) as a Messages <c>message</c>.</summary>
    public static JsonObject ToMessage(JsonObject completion, RequestTrace trace)
    {
        var choice = completion["choices"] is JsonArray { Count: > 0 } choices ? choices[0] as JsonObject : null;
        var message = choice?["message"] as JsonObject;
        var content = new JsonArray();
        if (TextOf(message?["content"]) is { Length: > 0 } text)
        {
            content.Add(new JsonObject { ["type"] = "text", ["text"] = text });
        }
        foreach (var call in ProviderSupport.Objects(message?["tool_calls"]))
        {
            var function = call["function"] as JsonObject;
            content.Add(new JsonObject
            {
                ["type"] = "tool_use",
                ["id"] = StringOf(call["id"]) ?? NewToolCallId(),
                ["name"] = StringOf(function?["name"]) ?? "",
                ["input"] = Arguments(StringOf(function?["arguments"])),
            });
        }
        var usage = OpenAiCompatibleProvider.UsageOf(completion);
        var cached = IntOf(completion["usage"]?["prompt_tokens_details"]?["cached_tokens"]) ?? 0;
        return new JsonObject
        {
            ["id"] = "msg_" + trace.RequestId,
            ["type"] = "message",
            ["role"] = "assistant",
            ["model"] = StringOf(completion["model"]) ?? trace.Model,
            ["content"] = content,
            ["stop_reason"] = StopReason(StringOf(choice?["finish_reason"])),
            ["stop_sequence"] = null,
            ["usage"] = UsageJson(usage, cached),
        };
    }

    /// <summary>Tool-call arguments as the <c>input</c> object (a model's invalid JSON is kept under <c>_raw</c>, never lost).</summary>
    private static JsonObject Arguments(string? arguments)
    {
        try
        {
            return ParseArguments(arguments);
        }
        catch (UpstreamException)
        {
            return new JsonObject { ["_raw"] = arguments };
        }
    }

    /// <summary>
    /// Canonical chunks as Messages events: <c>message_start</c>, per block <c>content_block_start</c> /
    /// <c>content_block_delta</c> (<c>text_delta</c>, <c>input_json_delta</c>) / <c>content_block_stop</c>, a
    /// <c>ping</c> after the first block opens, then <c>message_delta</c> (stop reason, usage) and <c>message_stop</c>.
    /// Events of an Anthropic target pass through as they are.
    /// </summary>
    internal sealed class MessagesStream(RequestTrace trace, int promptEstimate) : IStreamRenderer
    {
        private readonly Dictionary<int, int> _blockOfTool = [];
        private bool _started;
        private bool _native;
        private bool _pinged;
        private int _open = -1;
        private bool _openIsText;
        private int _next;
        private string _stopReason = "end_turn";
        private TokenUsage? _usage;
        private string _model = trace.Model;

        public void AddNative(NativeEvent native, List<SseFrame> frames)
        {
            _native = true;
            frames.Add(new SseFrame(native.Event, null, native.Data));
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
                    if (_open < 0 || !_openIsText)
                    {
                        Open(frames, new JsonObject { ["type"] = "text", ["text"] = "" }, text: true);
                    }
                    frames.Add(Delta(_open, new JsonObject { ["type"] = "text_delta", ["text"] = text }));
                }
                foreach (var call in ProviderSupport.Objects(delta["tool_calls"]))
                {
                    var index = IntOf(call["index"]) ?? 0;
                    if (!_blockOfTool.TryGetValue(index, out var block))
                    {
                        Open(frames, new JsonObject
                        {
                            ["type"] = "tool_use",
                            ["id"] = StringOf(call["id"]) ?? NewToolCallId(),
                            ["name"] = StringOf(call["function"]?["name"]) ?? "",
                            ["input"] = new JsonObject(),
                        }, text: false);
                        block = _blockOfTool[index] = _open;
                    }
                    if (StringOf(call["function"]?["arguments"]) is { Length: > 0 } arguments)
                    {
                        frames.Add(Delta(block, new JsonObject { ["type"] = "input_json_delta", ["partial_json"] = arguments }));
                    }
                }
            }
            if (StringOf(choice["finish_reason"]) is { } finish)
            {
                Close(frames);
                _stopReason = StopReason(finish);
            }
        }

        public void End(List<SseFrame> frames)
        {
            if (_native)
            {
                return; // the upstream's own message_delta and message_stop went through
            }
            Start(frames);
            Close(frames);
            var usage = _usage ?? trace.Usage;
            frames.Add(Event("message_delta", new JsonObject
            {
                ["type"] = "message_delta",
                ["delta"] = new JsonObject { ["stop_reason"] = _stopReason, ["stop_sequence"] = null },
                ["usage"] = UsageJson(usage),
            }));
            frames.Add(Event("message_stop", new JsonObject { ["type"] = "message_stop" }));
        }

        public SseFrame Error(int status, string type, string code, string message) => Event("error", new JsonObject
        {
            ["type"] = "error",
            ["error"] = new JsonObject { ["type"] = AnthropicMessagesDialect.ErrorType(status), ["message"] = message },
        });

        private void Start(List<SseFrame> frames)
        {
            if (_started)
            {
                return;
            }
            _started = true;
            frames.Add(Event("message_start", new JsonObject
            {
                ["type"] = "message_start",
                ["message"] = new JsonObject
                {
                    ["id"] = "msg_" + trace.RequestId,
                    ["type"] = "message",
                    ["role"] = "assistant",
                    ["model"] = _model,
                    ["content"] = new JsonArray(),
                    ["stop_reason"] = null,
                    ["stop_sequence"] = null,
                    ["usage"] = UsageJson(new TokenUsage(promptEstimate, 0)),
                },
            }));
        }

        private void Open(List<SseFrame> frames, JsonObject block, bool text)
        {
            Close(frames);
            _open = _next++;
            _openIsText = text;
            frames.Add(Event("content_block_start", new JsonObject { ["type"] = "content_block_start", ["index"] = _open, ["content_block"] = block }));
            if (!_pinged)
            {
                _pinged = true;
                frames.Add(Event("ping", new JsonObject { ["type"] = "ping" }));
            }
        }

        private void Close(List<SseFrame> frames)
        {
            if (_open >= 0)
            {
                frames.Add(Event("content_block_stop", new JsonObject { ["type"] = "content_block_stop", ["index"] = _open }));
                _open = -1;
            }
        }

        private static SseFrame Delta(int index, JsonObject delta) =>
            Event("content_block_delta", new JsonObject { ["type"] = "content_block_delta", ["index"] = index, ["delta"] = delta });

        private static SseFrame Event(string name, JsonObject data) => new(name, data);
    }
}
