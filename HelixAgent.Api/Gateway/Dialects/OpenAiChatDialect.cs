using System.Text.Json.Nodes;
using HelixAgent.Api.Infrastructure;

namespace HelixAgent.Api.Gateway.Dialects;

/// <summary>
/// OpenAI Chat Completions (<c>/v1/chat/completions</c>), the gateway's canonical form: bodies go to every adapter as
/// they are, answers and chunks come back as they are.
/// </summary>
internal sealed class OpenAiChatDialect : IDialect
{
    public static readonly OpenAiChatDialect Instance = new();

    public string Endpoint => "chat.completions";

    public ValidationError? Validate(JsonObject body) => RequestValidation.Chat(body);

    public bool IsStream(JsonObject body) => IsStreamBody(body);

    public Prepared Prepare(JsonObject body, RouteTarget target, bool allowPassThrough, GatewayOptions options) => new(body, false, [], []);

    public ReadOnlyMemory<byte> Render(ChatResult result, JsonObject body, RequestTrace trace) => result.Utf8Json;

    public JsonObject RenderObject(JsonObject completion, JsonObject body, RequestTrace trace) => completion;

    public IStreamRenderer NewStream(JsonObject body, RequestTrace trace) => new ChatStream(IncludeUsage(body), null);

    public Task WriteErrorAsync(HttpContext ctx, int status, string message, string type, string? code, string? param) =>
        OpenAiErrors.WriteAsync(ctx, status, message, type, code, param);

    internal static bool IsStreamBody(JsonObject body) => body["stream"] is JsonValue sv && sv.TryGetValue<bool>(out var b) && b;

    /// <summary><c>stream_options.include_usage</c>: the client wants the final usage chunk (the gateway always asks for it).</summary>
    internal static bool IncludeUsage(JsonObject body) =>
        body["stream_options"]?["include_usage"] is JsonValue iu && iu.TryGetValue<bool>(out var b) && b;

    /// <summary>
    /// Chat chunks as they are (the usage chunk only when the client asked for it), optionally turned into another
    /// OpenAI shape by <paramref name="convert"/>; <c>data: [DONE]</c> at the end; an OpenAI error object on a break.
    /// </summary>
    internal sealed class ChatStream(bool includeUsage, Func<JsonObject, JsonObject?>? convert) : IStreamRenderer
    {
        public void Add(ChatChunk chunk, List<SseFrame> frames)
        {
            var node = chunk.Chunk;
            if (chunk.Usage is not null && !includeUsage)
            {
                if (node["choices"] is JsonArray { Count: 0 })
                {
                    return;
                }
                node.Remove("usage");
            }
            if ((convert is null ? node : convert(node)) is { } outgoing)
            {
                frames.Add(new SseFrame(null, outgoing));
            }
        }

        public void End(List<SseFrame> frames) => frames.Add(new SseFrame(null, null, "[DONE]"));

        public SseFrame Error(int status, string type, string code, string message) => new(null, new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = null, ["code"] = code },
        });
    }
}
