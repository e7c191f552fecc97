using System.Text.Json.Nodes;

namespace HelixAgent.Fakes;

public sealed partial class FakeUpstream
{
    private Answer RouteAnthropic(Incoming r) => (r.Method, r.Path) switch
    {
        ("POST", "/v1/messages") => AnthropicMessages(r),
        ("POST", "/v1/messages/count_tokens") => new JsonAnswer(200, new JsonObject { ["input_tokens"] = AnthropicPromptTokens(r.Json!) }),
        ("GET", "/v1/models") => new JsonAnswer(200, new JsonObject
        {
            ["data"] = new JsonArray(Models.Select(m => (JsonNode)new JsonObject
            {
                ["type"] = "model",
                ["id"] = m,
                ["display_name"] = m,
                ["created_at"] = "2025-01-01T00:00:00Z",
            }).ToArray()),
            ["has_more"] = false,
            ["first_id"] = Models.FirstOrDefault(),
            ["last_id"] = Models.LastOrDefault(),
        }),
        _ => NotFound(r),
    };

    /// <summary>The thinking block the fake sends when a request asks for extended thinking.</summary>
    public const string ThinkingText = "The user wants an answer; I will give one.";

    /// <summary>The signature of <see cref="ThinkingText"/> (an opaque string, as Anthropic's are).</summary>
    public const string ThinkingSignature = "EqQBCkYIBxgCKkDfakeSignatureOfTheThinkingBlock0123456789abcdefEgw=";

    /// <summary>Words of <c>system</c> (string or text blocks) plus every message's text content.</summary>
    private static int AnthropicPromptTokens(JsonObject body) =>
        FakeText.CountContentWords(body["system"]) +
        (body["messages"] is JsonArray messages ? messages.Sum(m => FakeText.CountContentWords(m?["content"])) : 0);

    private static string JsonObjectOrEmpty(string text)
    {
        try
        {
            return JsonNode.Parse(text) is JsonObject o ? o.ToJsonString() : "{}";
        }
        catch (System.Text.Json.JsonException)
        {
            return "{}";
        }
    }

    private Answer AnthropicMessages(Incoming r)
    {
        var body = r.Json!;
        if (Strict)
        {
            if (string.IsNullOrEmpty(r.Headers["anthropic-version"].ToString()))
            {
                return Error(400, ErrorKind.InvalidRequest, "anthropic-version: header is required");
            }
            if (Int(body["max_tokens"]) is null)
            {
                return Error(400, ErrorKind.InvalidRequest, "max_tokens: Field required");
            }
            if (Str(body["model"]) is null || body["messages"] is not JsonArray { Count: > 0 })
            {
                return Error(400, ErrorKind.InvalidRequest, "model and messages: Field required");
            }
            if (body["temperature"] is JsonValue t && t.TryGetValue<double>(out var temperature) && temperature is < 0 or > 1)
            {
                return Error(400, ErrorKind.InvalidRequest, "temperature: Input should be less than or equal to 1");
            }
        }
        var model = Str(body["model"]) ?? "claude-fake";
        var reply = Reply;
        var tool = TakeToolCall();
        if (tool is null && Str(body["tool_choice"]?["type"]) == "tool" && Str(body["tool_choice"]?["name"]) is { } forced)
        {
            // A forced tool is called, as Claude does: with the reply as its input when that is a JSON object.
            tool = new FakeToolCall(forced, JsonObjectOrEmpty(reply), $"toolu_forced{NextId():D8}");
        }
        var prompt = AnthropicPromptTokens(body);
        // Anthropic counts cache reads and writes apart from input_tokens: prompt = input + read + write.
        var read = Math.Min(CachedPromptTokens, prompt);
        var write = Math.Min(CacheWritePromptTokens, prompt - read);
        JsonObject InputUsage(int output) => new()
        {
            ["input_tokens"] = prompt - read - write, ["cache_creation_input_tokens"] = write, ["cache_read_input_tokens"] = read, ["output_tokens"] = output,
        };
        var completion = CompletionTokens(reply, tool);
        var id = $"msg_fake{NextId():D8}";
        var stopReason = tool is null ? "end_turn" : "tool_use";
        var toolId = tool is null ? null : tool.Id.StartsWith("toolu_", StringComparison.Ordinal) ? tool.Id : "toolu_" + tool.Id;
        // Extended thinking asked for: the answer opens with a thinking block and its signature, as Claude's do.
        var thinking = Str(body["thinking"]?["type"]) is "enabled" or "adaptive";
        var first = thinking ? 1 : 0;

        if (!Bool(body["stream"], false))
        {
            JsonNode block = tool is null
                ? new JsonObject { ["type"] = "text", ["text"] = reply }
                : new JsonObject { ["type"] = "tool_use", ["id"] = toolId, ["name"] = tool.Name, ["input"] = ParseArguments(tool) };
            var content = new JsonArray();
            if (thinking)
            {
                content.Add(new JsonObject { ["type"] = "thinking", ["thinking"] = ThinkingText, ["signature"] = ThinkingSignature });
            }
            content.Add(block);
            return new JsonAnswer(200, new JsonObject
            {
                ["id"] = id,
                ["type"] = "message",
                ["role"] = "assistant",
                ["model"] = model,
                ["content"] = content,
                ["stop_reason"] = stopReason,
                ["stop_sequence"] = null,
                ["usage"] = InputUsage(completion),
            });
        }

        var frames = new List<Frame>
        {
            Event("message_start", new JsonObject
            {
                ["type"] = "message_start",
                ["message"] = new JsonObject
                {
                    ["id"] = id,
                    ["type"] = "message",
                    ["role"] = "assistant",
                    ["model"] = model,
                    ["content"] = new JsonArray(),
                    ["stop_reason"] = null,
                    ["stop_sequence"] = null,
                    ["usage"] = InputUsage(1),
                },
            }),
        };
        if (thinking)
        {
            frames.Add(Event("content_block_start", new JsonObject
            {
                ["type"] = "content_block_start",
                ["index"] = 0,
                ["content_block"] = new JsonObject { ["type"] = "thinking", ["thinking"] = "", ["signature"] = "" },
            }));
            frames.Add(Event("content_block_delta", new JsonObject
            {
                ["type"] = "content_block_delta",
                ["index"] = 0,
                ["delta"] = new JsonObject { ["type"] = "thinking_delta", ["thinking"] = ThinkingText },
            }, content: true));
            frames.Add(Event("content_block_delta", new JsonObject
            {
                ["type"] = "content_block_delta",
                ["index"] = 0,
                ["delta"] = new JsonObject { ["type"] = "signature_delta", ["signature"] = ThinkingSignature },
            }));
            frames.Add(Event("content_block_stop", new JsonObject { ["type"] = "content_block_stop", ["index"] = 0 }));
        }
        frames.AddRange(
        [
            Event("content_block_start", new JsonObject
            {
                ["type"] = "content_block_start",
                ["index"] = first,
                ["content_block"] = tool is null
                    ? new JsonObject { ["type"] = "text", ["text"] = "" }
                    : new JsonObject { ["type"] = "tool_use", ["id"] = toolId, ["name"] = tool.Name, ["input"] = new JsonObject() },
            }, content: tool is not null),
            Event("ping", new JsonObject { ["type"] = "ping" }),
        ]);
        var pieces = tool is null ? FakeText.SplitIntoChunks(reply) : FakeText.SplitArguments(tool.ArgumentsJson);
        foreach (var piece in pieces)
        {
            frames.Add(Event("content_block_delta", new JsonObject
            {
                ["type"] = "content_block_delta",
                ["index"] = first,
                ["delta"] = tool is null
                    ? new JsonObject { ["type"] = "text_delta", ["text"] = piece }
                    : new JsonObject { ["type"] = "input_json_delta", ["partial_json"] = piece },
            }, content: true));
        }
        frames.Add(Event("content_block_stop", new JsonObject { ["type"] = "content_block_stop", ["index"] = first }));
        frames.Add(Event("message_delta", new JsonObject
        {
            ["type"] = "message_delta",
            ["delta"] = new JsonObject { ["stop_reason"] = stopReason, ["stop_sequence"] = null },
            ["usage"] = new JsonObject { ["output_tokens"] = completion },
        }));
        frames.Add(Event("message_stop", new JsonObject { ["type"] = "message_stop" }));
        return new StreamAnswer(StreamFormat.Sse, frames);

        static Frame Event(string name, JsonObject data, bool content = false) => new(name, data.ToJsonString(), content);
    }
}
