using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway.Dialects;

/// <summary>
/// An inbound dialect: the shape a client speaks (OpenAI chat, legacy completions, Anthropic Messages, OpenAI
/// Responses). It sits at the
/// edge of the one request pipeline (<see cref="GatewayApi"/>) and does four things: validates a body, prepares it for
/// each target (the canonical OpenAI chat request, or the body as it is when the target speaks the same protocol),
/// renders a canonical answer, stream and error in its own shape, and names what it could not carry to a target.
/// </summary>
internal interface IDialect
{
    /// <summary>The <c>endpoint</c> of the ledger row and the metrics label: <c>chat.completions</c>, <c>messages</c>, ...</summary>
    string Endpoint { get; }

    ValidationError? Validate(JsonObject body);

    bool IsStream(JsonObject body);

    /// <summary>Whether a (non-streaming, deterministic) answer to this body may come from the response cache.</summary>
    bool Cacheable(JsonObject body) => true;

    /// <summary>The request as <paramref name="target"/> gets it (see <see cref="Prepared"/>).</summary>
    Prepared Prepare(JsonObject body, RouteTarget target, bool allowPassThrough, GatewayOptions options);

    /// <summary>The body a target of the client's own protocol gets (<see cref="Prepared.PassThrough"/>): the client's, or what it refers to made whole.</summary>
    JsonObject PassThroughBody(JsonObject body) => body;

    /// <summary>A call passed through to a target of this dialect's protocol.</summary>
    Task<ChatResult> PassThroughAsync(IChatProvider adapter, NativeCall call, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"{Endpoint} requests are never passed through");

    /// <summary>A streaming call passed through to a target of this dialect's protocol.</summary>
    IAsyncEnumerable<NativeEvent> PassThroughStreamAsync(IChatProvider adapter, NativeCall call, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"{Endpoint} requests are never passed through");

    /// <summary>A canonical <c>chat.completion</c> in this dialect's shape (answers a target passed through are already).</summary>
    ReadOnlyMemory<byte> Render(ChatResult result, JsonObject body, RequestTrace trace) => JsonBytes.Of(RenderObject(result.Response, body, trace));

    /// <summary>A canonical <c>chat.completion</c> tree in this dialect's shape (the ensemble adds its block to it).</summary>
    JsonObject RenderObject(JsonObject completion, JsonObject body, RequestTrace trace);

    /// <summary>The dialect's own request-id header, set alongside <c>x-request-id</c> (Anthropic's <c>request-id</c>).</summary>
    string? RequestIdHeader => null;

    /// <summary>Renders canonical chunks (and events passed through) as this dialect's stream.</summary>
    IStreamRenderer NewStream(JsonObject body, RequestTrace trace);

    /// <summary>
    /// An error in this dialect's shape. <paramref name="type"/> and <paramref name="code"/> are the gateway's own (OpenAI's
    /// vocabulary); a dialect with another vocabulary maps them, by status where it must.
    /// </summary>
    Task WriteErrorAsync(HttpContext ctx, int status, string message, string type, string? code, string? param);
}

/// <summary>
/// A request prepared for one target: <see cref="Canonical"/> (the OpenAI chat request its adapter takes), or
/// <see cref="PassThrough"/> (the client's body goes to a target of the same protocol as it is); the hints that were
/// <see cref="Dropped"/> or <see cref="Translated"/> on the way; or <see cref="Refused"/>, a requirement this target
/// cannot meet (the router skips it; when every target refuses, the client gets that 400).
/// </summary>
internal sealed record Prepared(JsonObject? Canonical, bool PassThrough, IReadOnlyList<string> Dropped, IReadOnlyList<string> Translated,
    ValidationError? Refused = null)
{
    public static Prepared Refuse(ValidationError error) => new(null, false, [], [], error);
}

/// <summary>
/// What a translation could not carry to a target as the client sent it: the hints it dropped and those it carried by an
/// equivalent (<c>from=to</c>), each named once. With <c>Gateway:UnsupportedHints = reject</c> a dropped hint refuses
/// the target instead (400 naming it).
/// </summary>
internal sealed class Hints(IChatProvider target, bool reject)
{
    private readonly List<string> _dropped = [];
    private readonly List<string> _translated = [];

    public void Drop(string hint)
    {
        if (!_dropped.Contains(hint))
        {
            _dropped.Add(hint);
        }
    }

    public void Translated(string hint) => _translated.Add(hint);

    public Prepared Result(JsonObject canonical) => reject && _dropped.Count > 0
        ? Prepared.Refuse(new ValidationError(
            $"{_dropped[0]}: {target.Name} ({target.Type}) has no equivalent, and this gateway rejects hints it cannot carry (Gateway:UnsupportedHints = reject).",
            _dropped[0]))
        : new Prepared(canonical, PassThrough: false, _dropped, _translated);
}

/// <summary>One server-sent event: an optional <c>event:</c> name and its data (a JSON tree, or text written as it is).</summary>
internal readonly record struct SseFrame(string? Event, JsonNode? Json, string? Text = null);

/// <summary>
/// Turns one stream into a dialect's events. <see cref="Add"/> takes each canonical chunk; <see cref="AddNative"/> an
/// upstream event of the dialect's own protocol (pass-through, written byte for byte); <see cref="End"/> closes a
/// stream that finished; <see cref="Error"/> is the event that ends one that broke after it started.
/// </summary>
internal interface IStreamRenderer
{
    void Add(ChatChunk chunk, List<SseFrame> frames);

    void AddNative(NativeEvent native, List<SseFrame> frames) => frames.Add(new SseFrame(native.Event, null, native.Data));

    void End(List<SseFrame> frames);

    SseFrame Error(int status, string type, string code, string message);

    /// <summary>
    /// The whole answer in the dialect's shape once <see cref="End"/> has run, for dialects whose answers are kept
    /// (a stored Response); null for the others.
    /// </summary>
    JsonObject? Answer => null;

    /// <summary>The events that end a stream broken after it started (most dialects: the one <see cref="Error"/> event).</summary>
    IEnumerable<SseFrame> ErrorFrames(int status, string type, string code, string message) => [Error(status, type, code, message)];
}

/// <summary>The dialect of a path, for answers given before a handler runs (authentication, unknown routes, 405).</summary>
internal static class Dialects
{
    public static IDialect ForPath(PathString path) =>
        path.StartsWithSegments("/v1/messages") ? AnthropicMessagesDialect.Instance
        : path.StartsWithSegments("/v1/responses") ? OpenAiResponsesDialect.Instance
        : OpenAiChatDialect.Instance;

    public static Task WriteErrorAsync(HttpContext ctx, int status, string message, string type, string? code = null, string? param = null) =>
        ForPath(ctx.Request.Path).WriteErrorAsync(ctx, status, message, type, code, param);
}
