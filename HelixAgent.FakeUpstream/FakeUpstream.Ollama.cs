using System.Text.Json.Nodes;

namespace HelixAgent.Fakes;

public sealed partial class FakeUpstream
{
    private Answer RouteOllama(Incoming r) => (r.Method, r.Path) switch
    {
        ("POST", "/api/chat") => OllamaChat(r),
        ("POST", "/api/embed") => OllamaEmbed(r),
        ("GET", "/api/tags") => new JsonAnswer(200, new JsonObject
        {
            ["models"] = new JsonArray(Models.Select(m => (JsonNode)new JsonObject
            {
                ["name"] = m,
                ["model"] = m,
                ["modified_at"] = "2025-01-01T00:00:00.000000000Z",
                ["size"] = 2_019_393_189L,
                ["digest"] = "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                ["details"] = new JsonObject
                {
                    ["parent_model"] = "",
                    ["format"] = "gguf",
                    ["family"] = "llama",
                    ["families"] = new JsonArray("llama"),
                    ["parameter_size"] = "3.2B",
                    ["quantization_level"] = "Q4_K_M",
                },
            }).ToArray()),
        }),
        _ => new JsonAnswer(404, new JsonObject { ["error"] = "404 page not found" }),
    };

    private static string OllamaTimestamp => DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", System.Globalization.CultureInfo.InvariantCulture);

    private Answer OllamaChat(Incoming r)
    {
        var body = r.Json!;
        if (Strict && Str(body["model"]) is null)
        {
            return new JsonAnswer(400, new JsonObject { ["error"] = "model is required" });
        }
        var model = Str(body["model"]) ?? "llama-fake";
        var reply = Reply;
        var tool = TakeToolCall();
        // Words of every messages[].content (Ollama's content is a plain string).
        var prompt = body["messages"] is JsonArray messages ? messages.Sum(m => FakeText.CountContentWords(m?["content"])) : 0;
        var completion = CompletionTokens(reply, tool);

        JsonObject Message(string content, bool withTool)
        {
            var message = new JsonObject { ["role"] = "assistant", ["content"] = content };
            if (withTool && tool is not null)
            {
                message["tool_calls"] = new JsonArray(new JsonObject
                {
                    ["function"] = new JsonObject { ["name"] = tool.Name, ["arguments"] = ParseArguments(tool) },
                });
            }
            return message;
        }

        JsonObject Done(JsonObject message) => new()
        {
            ["model"] = model,
            ["created_at"] = OllamaTimestamp,
            ["message"] = message,
            ["done_reason"] = "stop",
            ["done"] = true,
            ["total_duration"] = 1_000_000L,
            ["load_duration"] = 100_000L,
            ["prompt_eval_count"] = prompt,
            ["prompt_eval_duration"] = 200_000L,
            ["eval_count"] = completion,
            ["eval_duration"] = 700_000L,
        };

        // Ollama streams unless told "stream": false.
        if (!Bool(body["stream"], true))
        {
            return new JsonAnswer(200, Done(Message(tool is null ? reply : "", withTool: true)));
        }

        JsonObject Partial(JsonObject message) => new()
        {
            ["model"] = model,
            ["created_at"] = OllamaTimestamp,
            ["message"] = message,
            ["done"] = false,
        };

        var frames = new List<Frame>();
        if (tool is not null)
        {
            frames.Add(new Frame(null, Json(Partial(Message("", withTool: true))), true));
        }
        else
        {
            foreach (var piece in FakeText.SplitIntoChunks(reply))
            {
                frames.Add(new Frame(null, Json(Partial(Message(piece, withTool: false))), true));
            }
        }
        frames.Add(new Frame(null, Json(Done(Message("", withTool: false))), false));
        return new StreamAnswer(StreamFormat.Ndjson, frames);
    }

    private Answer OllamaEmbed(Incoming r)
    {
        var body = r.Json!;
        var inputs = body["input"] switch
        {
            JsonArray a => a.Select(x => Str(x) ?? "").ToList(),
            var x when Str(x) is { } s => [s],
            _ => null,
        };
        if (inputs is null || (Strict && Str(body["model"]) is null))
        {
            return new JsonAnswer(400, new JsonObject { ["error"] = "model and input are required" });
        }
        var dims = Int(body["dimensions"]) ?? EmbeddingDimensions;
        return new JsonAnswer(200, new JsonObject
        {
            ["model"] = Str(body["model"]),
            ["embeddings"] = new JsonArray(inputs.Select(i => (JsonNode)FakeText.ToJsonArray(FakeText.Embed(i, dims))).ToArray()),
            ["total_duration"] = 1_000_000L,
            ["load_duration"] = 100_000L,
            ["prompt_eval_count"] = inputs.Sum(FakeText.CountWords),
        });
    }
}
