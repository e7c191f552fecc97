using System.Text.Json.Nodes;

namespace HelixAgent.Fakes;

public sealed partial class FakeUpstream
{
    private Answer RouteOpenAI(Incoming r) => (r.Method, r.Path) switch
    {
        ("POST", "/v1/chat/completions") => OpenAIChat(r),
        ("POST", "/v1/embeddings") => OpenAIEmbeddings(r),
        ("GET", "/v1/models") => new JsonAnswer(200, new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(Models.Select(m => (JsonNode)new JsonObject
            {
                ["id"] = m,
                ["object"] = "model",
                ["created"] = 1_700_000_000,
                ["owned_by"] = "fake",
            }).ToArray()),
        }),
        _ => NotFound(r),
    };

    /// <summary>Words of every message's text content (string or <c>text</c> parts).</summary>
    private static int OpenAIPromptTokens(JsonObject body) =>
        body["messages"] is JsonArray messages ? messages.Sum(m => FakeText.CountContentWords(m?["content"])) : 0;

    private Answer OpenAIChat(Incoming r)
    {
        var body = r.Json!;
        if (Strict && (Str(body["model"]) is null || body["messages"] is not JsonArray { Count: > 0 }))
        {
            return Error(400, ErrorKind.InvalidRequest, "'model' and a non-empty 'messages' are required.");
        }
        var model = Str(body["model"]) ?? "gpt-fake";
        var reply = Reply;
        var tool = TakeToolCall();
        var prompt = OpenAIPromptTokens(body);
        var completion = CompletionTokens(reply, tool);
        var id = $"chatcmpl-fake{NextId()}";
        var created = UnixNow;
        JsonObject Usage() => new()
        {
            ["prompt_tokens"] = prompt,
            ["completion_tokens"] = completion,
            ["total_tokens"] = prompt + completion,
        };

        if (!Bool(body["stream"], false))
        {
            var message = new JsonObject { ["role"] = "assistant" };
            if (tool is null)
            {
                message["content"] = reply;
            }
            else
            {
                message["content"] = null;
                message["tool_calls"] = new JsonArray(new JsonObject
                {
                    ["id"] = tool.Id,
                    ["type"] = "function",
                    ["function"] = new JsonObject { ["name"] = tool.Name, ["arguments"] = tool.ArgumentsJson },
                });
            }
            message["refusal"] = null;
            return new JsonAnswer(200, new JsonObject
            {
                ["id"] = id,
                ["object"] = "chat.completion",
                ["created"] = created,
                ["model"] = model,
                ["choices"] = new JsonArray(new JsonObject
                {
                    ["index"] = 0,
                    ["message"] = message,
                    ["logprobs"] = null,
                    ["finish_reason"] = tool is null ? "stop" : "tool_calls",
                }),
                ["usage"] = Usage(),
                ["system_fingerprint"] = "fp_fake",
            });
        }

        var includeUsage = Bool(body["stream_options"]?["include_usage"], false);
        JsonObject Chunk(JsonObject? delta, string? finish)
        {
            var chunk = new JsonObject
            {
                ["id"] = id,
                ["object"] = "chat.completion.chunk",
                ["created"] = created,
                ["model"] = model,
                ["system_fingerprint"] = "fp_fake",
                ["choices"] = delta is null
                    ? new JsonArray()
                    : new JsonArray(new JsonObject
                    {
                        ["index"] = 0,
                        ["delta"] = delta,
                        ["logprobs"] = null,
                        ["finish_reason"] = finish,
                    }),
            };
            if (includeUsage)
            {
                chunk["usage"] = delta is null ? Usage() : null;
            }
            return chunk;
        }

        var frames = new List<Frame>();
        if (tool is null)
        {
            frames.Add(new Frame(null, Json(Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "", ["refusal"] = null }, null)), false));
            foreach (var piece in FakeText.SplitIntoChunks(reply))
            {
                frames.Add(new Frame(null, Json(Chunk(new JsonObject { ["content"] = piece }, null)), true));
            }
        }
        else
        {
            frames.Add(new Frame(null, Json(Chunk(new JsonObject
            {
                ["role"] = "assistant",
                ["content"] = null,
                ["tool_calls"] = new JsonArray(new JsonObject
                {
                    ["index"] = 0,
                    ["id"] = tool.Id,
                    ["type"] = "function",
                    ["function"] = new JsonObject { ["name"] = tool.Name, ["arguments"] = "" },
                }),
                ["refusal"] = null,
            }, null)), true));
            foreach (var piece in FakeText.SplitArguments(tool.ArgumentsJson))
            {
                frames.Add(new Frame(null, Json(Chunk(new JsonObject
                {
                    ["tool_calls"] = new JsonArray(new JsonObject
                    {
                        ["index"] = 0,
                        ["function"] = new JsonObject { ["arguments"] = piece },
                    }),
                }, null)), true));
            }
        }
        frames.Add(new Frame(null, Json(Chunk(new JsonObject(), tool is null ? "stop" : "tool_calls")), false));
        if (includeUsage)
        {
            frames.Add(new Frame(null, Json(Chunk(null, null)), false));
        }
        frames.Add(new Frame(null, "[DONE]", false));
        return new StreamAnswer(StreamFormat.Sse, frames);
    }

    private Answer OpenAIEmbeddings(Incoming r)
    {
        var body = r.Json!;
        var inputs = body["input"] switch
        {
            JsonArray a => a.Select(x => Str(x) ?? x?.ToJsonString() ?? "").ToList(),
            var x when Str(x) is { } s => [s],
            _ => null,
        };
        if (inputs is null || (Strict && Str(body["model"]) is null))
        {
            return Error(400, ErrorKind.InvalidRequest, "'model' and 'input' are required.");
        }
        var dims = Int(body["dimensions"]) ?? EmbeddingDimensions;
        var base64 = Str(body["encoding_format"]) == "base64";
        var data = new JsonArray();
        for (var i = 0; i < inputs.Count; i++)
        {
            var vector = FakeText.Embed(inputs[i], dims);
            data.Add(new JsonObject
            {
                ["object"] = "embedding",
                ["index"] = i,
                ["embedding"] = base64
                    ? Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(vector.AsSpan()))
                    : FakeText.ToJsonArray(vector),
            });
        }
        var tokens = inputs.Sum(FakeText.CountWords);
        return new JsonAnswer(200, new JsonObject
        {
            ["object"] = "list",
            ["data"] = data,
            ["model"] = Str(body["model"]) ?? "text-embedding-fake",
            ["usage"] = new JsonObject { ["prompt_tokens"] = tokens, ["total_tokens"] = tokens },
        });
    }
}
