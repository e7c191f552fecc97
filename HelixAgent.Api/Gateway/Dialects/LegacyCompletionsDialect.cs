using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway.Dialects;

/// <summary>
/// <c>/v1/completions</c> (prompt → text) served through the chat path of any provider: the prompt becomes one user
/// message, the answer and its chunks become <c>text_completion</c> objects.
/// </summary>
internal sealed class LegacyCompletionsDialect : IDialect
{
    public static readonly LegacyCompletionsDialect Instance = new();

    public string Endpoint => "completions";

    public ValidationError? Validate(JsonObject body) => RequestValidation.Completion(body);

    public bool IsStream(JsonObject body) => OpenAiChatDialect.IsStreamBody(body);

    public Prepared Prepare(JsonObject body, RouteTarget target, bool allowPassThrough, GatewayOptions options) => new(LegacyCompletions.ToChatRequest(body), false, [], []);

    public JsonObject RenderObject(JsonObject completion, JsonObject body, RequestTrace trace) => LegacyCompletions.FromChatResponse(completion, trace.RequestId);

    public IStreamRenderer NewStream(JsonObject body, RequestTrace trace) =>
        new OpenAiChatDialect.ChatStream(OpenAiChatDialect.IncludeUsage(body), new LegacyCompletions.ChunkConverter(trace.RequestId).Convert);

    public Task WriteErrorAsync(HttpContext ctx, int status, string message, string type, string? code, string? param) =>
        OpenAiChatDialect.Instance.WriteErrorAsync(ctx, status, message, type, code, param);
}

/// <summary>The translation between a legacy completions request, answer and chunk and their chat equivalents.</summary>
internal static class LegacyCompletions
{
    private static readonly string[] ChatOnly = ["prompt", "echo", "suffix", "logprobs", "best_of"];

    public static JsonObject ToChatRequest(JsonObject body)
    {
        var chat = (JsonObject)body.DeepClone();
        var prompt = body["prompt"] is JsonArray a ? a[0]!.GetValue<string>() : body["prompt"]!.GetValue<string>();
        foreach (var key in ChatOnly)
        {
            chat.Remove(key);
        }
        chat["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = prompt });
        if (!chat.ContainsKey("max_tokens"))
        {
            chat["max_tokens"] = 16; // the legacy API's default
        }
        return chat;
    }

    public static JsonObject FromChatResponse(JsonObject chat, string requestId)
    {
        var choices = new JsonArray();
        if (chat["choices"] is JsonArray chatChoices)
        {
            foreach (var c in chatChoices)
            {
                choices.Add(new JsonObject
                {
                    ["text"] = c?["message"]?["content"]?.DeepClone() ?? "",
                    ["index"] = c?["index"]?.DeepClone() ?? 0,
                    ["logprobs"] = null,
                    ["finish_reason"] = c?["finish_reason"]?.DeepClone(),
                });
            }
        }
        return new JsonObject
        {
            ["id"] = "cmpl-" + requestId,
            ["object"] = "text_completion",
            ["created"] = chat["created"]?.DeepClone() ?? DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
            ["model"] = chat["model"]?.DeepClone(),
            ["choices"] = choices,
            ["usage"] = chat["usage"]?.DeepClone(),
        };
    }

    /// <summary>Turns chat chunks into legacy completion chunks (role-only chunks are dropped).</summary>
    public sealed class ChunkConverter(string requestId)
    {
        public JsonObject? Convert(JsonObject chunk)
        {
            var choices = new JsonArray();
            if (chunk["choices"] is JsonArray chatChoices)
            {
                foreach (var c in chatChoices)
                {
                    var text = c?["delta"]?["content"]?.GetValue<string>();
                    var finish = c?["finish_reason"]?.DeepClone();
                    if (string.IsNullOrEmpty(text) && finish is null)
                    {
                        continue;
                    }
                    choices.Add(new JsonObject
                    {
                        ["text"] = text ?? "",
                        ["index"] = c?["index"]?.DeepClone() ?? 0,
                        ["logprobs"] = null,
                        ["finish_reason"] = finish,
                    });
                }
            }
            var usage = chunk["usage"]?.DeepClone();
            if (choices.Count == 0 && usage is null)
            {
                return null;
            }
            var result = new JsonObject
            {
                ["id"] = "cmpl-" + requestId,
                ["object"] = "text_completion",
                ["created"] = chunk["created"]?.DeepClone(),
                ["model"] = chunk["model"]?.DeepClone(),
                ["choices"] = choices,
            };
            if (usage is not null)
            {
                result["usage"] = usage;
            }
            return result;
        }
    }
}
