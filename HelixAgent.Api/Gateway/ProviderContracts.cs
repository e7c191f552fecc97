using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway;

/// <summary>
/// One upstream LLM provider speaking its own wire protocol. The gateway's canonical format is OpenAI's: adapters take
/// an OpenAI request body and return OpenAI-shaped responses and chunks, translating only where the upstream differs.
/// Every failure is reported as an <see cref="UpstreamException"/> so the router can decide whether to fail over.
/// </summary>
public interface IChatProvider
{
    /// <summary>Configured name (the key under <c>Providers</c>), e.g. <c>anthropic</c>.</summary>
    string Name { get; }

    /// <summary>Protocol type: <c>openai</c>, <c>anthropic</c>, <c>gemini</c>, <c>ollama</c>, <c>simulator</c>.</summary>
    string Type { get; }

    /// <summary>True for the built-in simulator: labelled as simulated everywhere it is listed.</summary>
    bool IsSimulated => false;

    bool SupportsEmbeddings { get; }

    /// <summary>Non-streaming chat completion. The result is an OpenAI <c>chat.completion</c> object.</summary>
    Task<ChatResult> CompleteAsync(ChatCall call, CancellationToken cancellationToken);

    /// <summary>
    /// Streaming chat completion as OpenAI <c>chat.completion.chunk</c> objects. The upstream request is sent on the
    /// first <c>MoveNextAsync</c>; HTTP errors surface there, mid-stream failures on a later one.
    /// </summary>
    IAsyncEnumerable<ChatChunk> StreamAsync(ChatCall call, CancellationToken cancellationToken);

    /// <summary>Embeddings; the result is an OpenAI embeddings list object.</summary>
    Task<EmbeddingResult> EmbedAsync(EmbeddingCall call, CancellationToken cancellationToken);

    /// <summary>A cheap liveness probe that never spends tokens (a list-models style call).</summary>
    Task ProbeAsync(CancellationToken cancellationToken);
}

/// <summary>
/// A chat call: the client's OpenAI request body (already validated; <c>model</c> set to <see cref="UpstreamModel"/>,
/// <c>stream</c> set to match the call). Adapters must not mutate <see cref="Request"/>; clone what they change.
/// </summary>
public sealed record ChatCall(JsonObject Request, string UpstreamModel, string RequestId);

/// <summary>
/// An OpenAI <c>chat.completion</c> object and the usage it reports. Adapters that translate build a
/// <see cref="JsonObject"/>; the OpenAI-compatible adapter keeps the upstream's validated bytes
/// (<see cref="FromUtf8"/>), which are served as they are: no tree is built and nothing is serialised again.
/// </summary>
public sealed class ChatResult
{
    private JsonObject? _response;
    private readonly ReadOnlyMemory<byte> _utf8;

    public ChatResult(JsonObject response, TokenUsage usage)
    {
        _response = response;
        Usage = usage;
    }

    private ChatResult(ReadOnlyMemory<byte> utf8, TokenUsage usage)
    {
        _utf8 = utf8;
        Usage = usage;
    }

    /// <summary>An answer already in OpenAI's shape (the caller checked it is a JSON object with <c>choices</c>).</summary>
    public static ChatResult FromUtf8(ReadOnlyMemory<byte> utf8, TokenUsage usage) => new(utf8, usage);

    /// <summary>
    /// An answer in the client's own dialect, from a target of the same protocol (pass-through): served byte for byte,
    /// never read as a <c>chat.completion</c>.
    /// </summary>
    public static ChatResult PassedThrough(ReadOnlyMemory<byte> utf8, TokenUsage usage) => new(utf8, usage) { IsNative = true };

    /// <summary>True for an answer passed through in the client's dialect (<see cref="PassedThrough"/>).</summary>
    public bool IsNative { get; private init; }

    public TokenUsage Usage { get; }

    /// <summary>The answer as a JSON tree (parsed on first use when the result holds bytes).</summary>
    public JsonObject Response => _response ??= JsonNode.Parse(_utf8.Span) as JsonObject
        ?? throw new InvalidOperationException("The answer is not a JSON object.");

    /// <summary>The answer as UTF-8 JSON, the form it is written to the client and the cache in.</summary>
    public ReadOnlyMemory<byte> Utf8Json => _utf8.IsEmpty ? JsonBytes.Of(Response) : _utf8;
}

/// <summary>UTF-8 JSON of a tree, written once into a buffer sized as it grows (no UTF-16 string in between).</summary>
internal static class JsonBytes
{
    public static ReadOnlyMemory<byte> Of(JsonNode node)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(1024);
        using (var writer = new System.Text.Json.Utf8JsonWriter(buffer, new System.Text.Json.JsonWriterOptions { SkipValidation = true }))
        {
            node.WriteTo(writer);
        }
        return buffer.WrittenMemory;
    }

    /// <summary>Writes the properties of <paramref name="obj"/> for which <paramref name="skip"/> is false, as they are.</summary>
    public static void WritePropertiesExcept(System.Text.Json.Utf8JsonWriter writer, JsonObject obj, Func<string, bool> skip)
    {
        foreach (var (name, value) in obj)
        {
            if (skip(name))
            {
                continue;
            }
            writer.WritePropertyName(name);
            if (value is null)
            {
                writer.WriteNullValue();
            }
            else
            {
                value.WriteTo(writer);
            }
        }
    }
}

/// <summary>
/// One OpenAI <c>chat.completion.chunk</c>. <see cref="HasContent"/> is true when the chunk carries content the client
/// sees (text or tool-call deltas): until the first such chunk is sent the gateway may still fail over.
/// <see cref="Usage"/> is set on the chunk that reports token usage (which may have empty <c>choices</c>).
/// </summary>
public sealed record ChatChunk(JsonObject Chunk, bool HasContent, TokenUsage? Usage = null);

/// <summary>
/// A provider that also takes Anthropic Messages requests as they are (pass-through): the client's body with only
/// <c>model</c> replaced, its <c>anthropic-version</c> and <c>anthropic-beta</c> headers, and the answer or events back
/// byte for byte.
/// </summary>
public interface IMessagesPassThrough
{
    /// <summary>A non-streaming Messages call; the result holds the upstream's bytes (<see cref="ChatResult.IsNative"/>).</summary>
    Task<ChatResult> MessagesAsync(NativeCall call, CancellationToken cancellationToken);

    /// <summary>A streaming Messages call, event by event, as the upstream sent them.</summary>
    IAsyncEnumerable<NativeEvent> StreamMessagesAsync(NativeCall call, CancellationToken cancellationToken);

    /// <summary><c>/v1/messages/count_tokens</c>: the upstream's answer as it is.</summary>
    Task<ReadOnlyMemory<byte>> CountTokensAsync(NativeCall call, CancellationToken cancellationToken);
}

/// <summary>
/// A provider that also takes OpenAI Responses requests as they are (an OpenAI provider with <c>Responses: native</c>):
/// the body with only <c>model</c> replaced, and the answer or events back byte for byte.
/// </summary>
public interface IResponsesPassThrough
{
    /// <summary>Whether this provider was configured to take Responses natively (otherwise they are translated to chat).</summary>
    bool NativeResponses { get; }

    Task<ChatResult> ResponsesAsync(NativeCall call, CancellationToken cancellationToken);

    IAsyncEnumerable<NativeEvent> StreamResponsesAsync(NativeCall call, CancellationToken cancellationToken);
}

/// <summary>A call passed through: the client's body (not mutated), the upstream model, and the client's protocol headers to forward.</summary>
public sealed record NativeCall(JsonObject Request, string UpstreamModel, string RequestId, IReadOnlyList<KeyValuePair<string, string>> Headers);

/// <summary>
/// One upstream event passed through: its name and data exactly as received; whether it carries content the client sees
/// (until the first such event the gateway may still fail over); the usage it reports (<see cref="UsageFinal"/> when
/// that is the stream's final count); and how many characters of content it carries (for the estimate of a broken stream).
/// </summary>
public sealed record NativeEvent(string? Event, string Data, bool HasContent, TokenUsage? Usage, bool UsageFinal, int ContentChars);

/// <summary>An embeddings call: the client's OpenAI request body with <c>model</c> set to the upstream model.</summary>
public sealed record EmbeddingCall(JsonObject Request, string UpstreamModel, string RequestId);

/// <summary>An OpenAI embeddings <c>list</c> object and its usage.</summary>
public sealed record EmbeddingResult(JsonObject Response, TokenUsage Usage);

/// <summary>
/// Tokens of one call. <see cref="PromptTokens"/> is every input token; of them, <see cref="CachedTokens"/> were read
/// from the provider's prompt cache and <see cref="CacheWriteTokens"/> written to it (priced differently).
/// </summary>
public readonly record struct TokenUsage(int PromptTokens, int CompletionTokens, int CachedTokens = 0, int CacheWriteTokens = 0)
{
    public int TotalTokens => PromptTokens + CompletionTokens;
}

/// <summary>How an upstream call failed: decides failover (see <see cref="UpstreamException.IsRetryable"/>).</summary>
public enum UpstreamFailure
{
    /// <summary>Could not connect (DNS, refused, reset before a response).</summary>
    Connect,
    /// <summary>No answer (or no first token) within the budget.</summary>
    Timeout,
    /// <summary>429 (or a provider's equivalent, e.g. Gemini RESOURCE_EXHAUSTED).</summary>
    RateLimited,
    /// <summary>5xx, Anthropic 529 overloaded, an error event inside a stream.</summary>
    ServerError,
    /// <summary>400/404/422: the request itself is wrong; not retried.</summary>
    BadRequest,
    /// <summary>401/403: the gateway's upstream credentials are wrong; not retried.</summary>
    Unauthorized,
    /// <summary>The upstream answered something that does not follow its protocol, or the stream broke off.</summary>
    Protocol,
}

public sealed class UpstreamException(
    UpstreamFailure kind,
    string message,
    int? statusCode = null,
    TimeSpan? retryAfter = null,
    Exception? inner = null) : Exception(message, inner)
{
    public UpstreamFailure Kind { get; } = kind;

    /// <summary>HTTP status the upstream answered, when it answered one.</summary>
    public int? StatusCode { get; } = statusCode;

    /// <summary>The upstream's <c>Retry-After</c>, when it sent one.</summary>
    public TimeSpan? RetryAfter { get; } = retryAfter;

    /// <summary>Connect errors, timeouts, 429, 5xx and broken streams fail over; 400/401/403/404/422 do not.</summary>
    public bool IsRetryable => Kind is not (UpstreamFailure.BadRequest or UpstreamFailure.Unauthorized);
}

/// <summary>Configuration of one provider (<c>Providers:&lt;name&gt;</c>).</summary>
public sealed class ProviderOptions
{
    /// <summary><c>openai</c> (any OpenAI-compatible server), <c>anthropic</c>, <c>gemini</c>, <c>ollama</c>, <c>simulator</c>.</summary>
    public string Type { get; set; } = "";

    /// <summary>Base URL including the API version path where the protocol has one, e.g. <c>https://api.openai.com/v1</c>.</summary>
    public string? BaseUrl { get; set; }

    public string? ApiKey { get; set; }

    /// <summary>Upstream model names this provider serves; each is routable under its own name.</summary>
    public List<string> Models { get; set; } = [];

    /// <summary>Share of traffic when a route uses the weighted strategy.</summary>
    public int Weight { get; set; } = 1;

    /// <summary>Whole-call timeout for one attempt (a stream may run this long).</summary>
    public double TimeoutSeconds { get; set; } = 300;

    /// <summary>Time-to-first-token budget of one attempt; beyond it a stream fails over before anything was sent.</summary>
    public double FirstTokenTimeoutSeconds { get; set; } = 30;

    /// <summary>Extra headers sent with every upstream request (e.g. OpenRouter's HTTP-Referer).</summary>
    public Dictionary<string, string> Headers { get; set; } = [];

    /// <summary><c>native</c>: this OpenAI provider serves <c>/v1/responses</c> itself (bodies pass through); else Responses are translated to chat.</summary>
    public string? Responses { get; set; }

    /// <summary>Simulator only: delay before the first byte.</summary>
    public double LatencyMs { get; set; } = 20;

    /// <summary>Simulator only: streaming pace.</summary>
    public double TokensPerSecond { get; set; } = 200;
}
