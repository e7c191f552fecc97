using System.Text.Json.Nodes;

namespace HelixAgent.Fakes;

public sealed partial class FakeUpstream
{
    private Answer RouteOpenAI(Incoming r) => (r.Method, r.Path) switch
    {
        ("POST", "/v1/chat/completions") => OpenAIChat(r),
        ("POST", "/v1/responses") => OpenAIResponses(r),
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
        var cached = Math.Min(CachedPromptTokens, prompt);
        JsonObject Usage() => new()
        {
            ["prompt_tokens"] = prompt,
            ["completion_tokens"] = completion,
            ["total_tokens"] = prompt + completion,
            ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = cached },
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

    /// <summary>Words of a Responses request's input (a string, or the text of its message items and call outputs).</summary>
    private static int ResponsesPromptTokens(JsonObject body) => body["input"] switch
    {
        JsonArray items => items.Sum(i => FakeText.CountContentWords(i?["content"]) + FakeText.CountWords(Str(i?["output"]) ?? "")),
        var x => FakeText.CountWords(Str(x) ?? ""),
    };

    /// <summary>
    /// OpenAI Responses (<c>/v1/responses</c>), as OpenAI's servers answer: the <c>response</c> object with a message
    /// (or a <c>function_call</c>, see <see cref="NextToolCall"/>), or with <c>stream: true</c> the semantic events with
    /// their <c>sequence_number</c>s, ending in <c>response.completed</c>. Every id is the fake's own (<c>resp_fake...</c>).
    /// </summary>
    private Answer OpenAIResponses(Incoming r)
    {
        var body = r.Json!;
        if (Strict && (Str(body["model"]) is null || body["input"] is null))
        {
            return Error(400, ErrorKind.InvalidRequest, "'model' and 'input' are required.");
        }
        if (body["previous_response_id"] is not null)
        {
            return Error(400, ErrorKind.InvalidRequest, "Previous response with id not found (the fake stores nothing).");
        }
        var model = Str(body["model"]) ?? "gpt-fake";
        var reply = Reply;
        var tool = TakeToolCall();
        var prompt = ResponsesPromptTokens(body);
        var completion = CompletionTokens(reply, tool);
        var n = NextId();
        var id = $"resp_fake{n:D8}";
        var itemId = tool is null ? $"msg_fake{n:D8}" : $"fc_fake{n:D8}";
        var created = UnixNow;
        JsonObject Item(string status, bool whole) => tool is null
            ? new JsonObject
            {
                ["id"] = itemId, ["type"] = "message", ["status"] = status, ["role"] = "assistant",
                ["content"] = whole ? new JsonArray(TextPart(reply)) : new JsonArray(),
            }
            : new JsonObject
            {
                ["id"] = itemId, ["type"] = "function_call", ["status"] = status, ["arguments"] = whole ? tool.ArgumentsJson : "",
                ["call_id"] = tool.Id, ["name"] = tool.Name,
            };
        static JsonObject TextPart(string text) => new() { ["type"] = "output_text", ["annotations"] = new JsonArray(), ["logprobs"] = new JsonArray(), ["text"] = text };
        JsonObject Response(string status) => new()
        {
            ["id"] = id, ["object"] = "response", ["created_at"] = created, ["status"] = status, ["error"] = null,
            ["incomplete_details"] = null, ["model"] = model,
            ["output"] = status == "completed" ? new JsonArray(Item("completed", true)) : new JsonArray(),
            ["parallel_tool_calls"] = true, ["tool_choice"] = body["tool_choice"]?.DeepClone() ?? "auto",
            ["tools"] = body["tools"]?.DeepClone() ?? new JsonArray(),
            ["usage"] = status == "completed"
                ? new JsonObject
                {
                    ["input_tokens"] = prompt, ["input_tokens_details"] = new JsonObject { ["cached_tokens"] = Math.Min(CachedPromptTokens, prompt) },
                    ["output_tokens"] = completion, ["output_tokens_details"] = new JsonObject { ["reasoning_tokens"] = 0 },
                    ["total_tokens"] = prompt + completion,
                }
                : null,
        };
        if (!Bool(body["stream"], false))
        {
            return new JsonAnswer(200, Response("completed"));
        }
        var sequence = 0;
        var frames = new List<Frame>();
        void Add(string type, JsonObject data, bool content = false)
        {
            var e = new JsonObject { ["type"] = type };
            foreach (var (k, v) in data.ToList())
            {
                data.Remove(k);
                e[k] = v;
            }
            e["sequence_number"] = sequence++;
            frames.Add(new Frame(type, Json(e), content));
        }
        Add("response.created", new JsonObject { ["response"] = Response("in_progress") });
        Add("response.in_progress", new JsonObject { ["response"] = Response("in_progress") });
        Add("response.output_item.added", new JsonObject { ["output_index"] = 0, ["item"] = Item("in_progress", false) });
        if (tool is null)
        {
            Add("response.content_part.added", new JsonObject { ["item_id"] = itemId, ["output_index"] = 0, ["content_index"] = 0, ["part"] = TextPart("") });
            foreach (var piece in FakeText.SplitIntoChunks(reply))
            {
                Add("response.output_text.delta", new JsonObject
                {
                    ["item_id"] = itemId, ["output_index"] = 0, ["content_index"] = 0, ["delta"] = piece, ["logprobs"] = new JsonArray(),
                }, content: true);
            }
            Add("response.output_text.done", new JsonObject
            {
                ["item_id"] = itemId, ["output_index"] = 0, ["content_index"] = 0, ["text"] = reply, ["logprobs"] = new JsonArray(),
            });
            Add("response.content_part.done", new JsonObject { ["item_id"] = itemId, ["output_index"] = 0, ["content_index"] = 0, ["part"] = TextPart(reply) });
        }
        else
        {
            foreach (var piece in FakeText.SplitArguments(tool.ArgumentsJson))
            {
                Add("response.function_call_arguments.delta", new JsonObject { ["item_id"] = itemId, ["output_index"] = 0, ["delta"] = piece }, content: true);
            }
            Add("response.function_call_arguments.done", new JsonObject
            {
                ["item_id"] = itemId, ["output_index"] = 0, ["name"] = tool.Name, ["arguments"] = tool.ArgumentsJson,
            });
        }
        Add("response.output_item.done", new JsonObject { ["output_index"] = 0, ["item"] = Item("completed", true) });
        Add("response.completed", new JsonObject { ["response"] = Response("completed") });
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
