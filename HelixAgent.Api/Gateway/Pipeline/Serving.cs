using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway.Dialects;

namespace HelixAgent.Api.Gateway;

/// <summary>
/// Serving an admitted request, the same for every dialect: the response cache, the router (failover, breaker,
/// deadlines), and for streams the holding back of everything before the first content until it arrives (until then
/// a 429, 5xx, stall or cut fails over and the client sees one clean stream). Each attempt sends the target the request
/// its dialect prepared for it: the canonical chat request, or the client's own body when the target speaks the
/// client's protocol.
/// </summary>
internal static partial class GatewayApi
{
    private static async Task CompleteAsync(HttpContext ctx, GatewayServices s, Admitted admitted, RequestTrace trace)
    {
        if (await ServeFromCacheAsync(ctx, s, trace, admitted.Cache, admitted.Route))
        {
            return;
        }
        var (success, error) = await s.Router.RunAsync(
            admitted.Route, trace,
            t => TimeSpan.FromSeconds(t.Provider.Options.TimeoutSeconds),
            (t, cts) => admitted.Requests.For(t) is { PassThrough: true }
                ? admitted.Dialect.PassThroughAsync(t.Provider.Adapter,
                    new NativeCall(admitted.Dialect.PassThroughBody(admitted.Body), t.UpstreamModel, trace.RequestId, admitted.ForwardedHeaders), cts.Token)
                : t.Provider.Adapter.CompleteAsync(new ChatCall(admitted.Requests.For(t).Canonical!, t.UpstreamModel, trace.RequestId), cts.Token),
            Eligible(admitted),
            ctx.RequestAborted);
        if (error is not null)
        {
            await FailAsync(ctx, admitted.Dialect, trace, error);
            return;
        }
        using var cancellation = success!.Cancellation;
        trace.Usage = success.Value.Usage;
        trace.TtftMs = s.Time.GetElapsedTime(trace.StartTimestamp).TotalMilliseconds;
        NoteHints(trace, admitted, success.Target);
        SetRouteHeaders(ctx, trace);
        SetCostHeader(ctx, s, trace);
        var answer = success.Value.IsNative ? success.Value.Utf8Json : admitted.Dialect.Render(success.Value, admitted.Body, trace);
        admitted.OnAnswer?.Invoke(answer);
        await WriteAndCacheAsync(ctx, s, admitted.Cache?.Key, answer, trace.Usage);
    }

    /// <summary>The targets that can take the request (null, the router's "all", when none refuses).</summary>
    private static Func<RouteTarget, bool>? Eligible(Admitted admitted) =>
        admitted.Requests.Refusals(admitted.Route, allowPassThrough: true).First is null ? null : t => admitted.Requests.For(t).Refused is null;

    /// <summary>
    /// What the serving target got differently from what the client sent: the hints dropped (with the client's
    /// <c>anthropic-beta</c> flags, which only a target passed through receives) and translated.
    /// </summary>
    private static void NoteHints(RequestTrace trace, Admitted admitted, RouteTarget target)
    {
        var prepared = admitted.Requests.For(target);
        var betasDropped = !prepared.PassThrough && admitted.ForwardedHeaders.Any(h => h.Key == "anthropic-beta" && h.Value.Length > 0);
        trace.DroppedHints = prepared.Dropped.Count == 0 && !betasDropped ? null
            : string.Join(',', betasDropped ? [.. prepared.Dropped, "anthropic-beta"] : prepared.Dropped);
        trace.TranslatedHints = prepared.Translated.Count == 0 ? null : string.Join(',', prepared.Translated);
    }

    /// <summary>Answers from the response cache when it has this request (no upstream call, no attempt).</summary>
    private static async Task<bool> ServeFromCacheAsync(HttpContext ctx, GatewayServices s, RequestTrace trace, CacheLookup? cache, ModelRoute route)
    {
        if (cache is null)
        {
            ctx.Response.Headers["x-helixagent-cache"] = "bypass";
            return false;
        }
        var cached = await cache.Answer;
        s.Metrics.CacheLookup(hit: cached is not null, local: cache.Local);
        if (cached is null)
        {
            ctx.Response.Headers["x-helixagent-cache"] = "miss";
            return false;
        }
        trace.CacheHit = true;
        trace.Usage = cached.Usage;
        trace.TtftMs = s.Time.GetElapsedTime(trace.StartTimestamp).TotalMilliseconds;
        // Free, and worth what the route's first target would have charged for it.
        trace.CostSavedUsd = s.Prices.For(route.Targets[0])?.Cost(cached.Usage);
        ctx.Response.Headers["x-helixagent-cache"] = "hit";
        SetRouteHeaders(ctx, trace);
        SetCostHeader(ctx, s, trace);
        await WriteUtf8JsonAsync(ctx, cached.Body);
        return true;
    }

    private static Task WriteAndCacheAsync(HttpContext ctx, GatewayServices s, string? cacheKey, ReadOnlyMemory<byte> body, TokenUsage usage)
    {
        if (cacheKey is not null)
        {
            s.Cache.Set(cacheKey, body, usage);
        }
        return WriteUtf8JsonAsync(ctx, body);
    }

    /// <summary>
    /// A 200 JSON answer from its UTF-8 bytes, with a Content-Length (no chunked framing). Put in the response pipe, not
    /// flushed: it leaves when the handler returns, after the request's ledger row is in the journal (Recording.cs).
    /// </summary>
    private static Task WriteUtf8JsonAsync(HttpContext ctx, ReadOnlyMemory<byte> body)
    {
        ctx.Response.StatusCode = StatusCodes.Status200OK;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = body.Length;
        ctx.Response.BodyWriter.Write(body.Span);
        return Task.CompletedTask;
    }

    /// <summary>One item of an attempt's stream: a canonical chunk, or an event of the client's protocol passed through.</summary>
    private readonly record struct StreamPiece(ChatChunk? Chunk, NativeEvent? Native)
    {
        public bool HasContent => Chunk?.HasContent ?? Native!.HasContent;
    }

    /// <summary>An attempt's stream, opened up to (and including) its first content.</summary>
    private sealed record OpenStream(IAsyncEnumerator<StreamPiece> Pieces, List<StreamPiece> Buffered, bool Ended);

    private static async IAsyncEnumerable<StreamPiece> Pieces(IAsyncEnumerable<ChatChunk> chunks, [EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var chunk in chunks.WithCancellation(ct))
        {
            yield return new StreamPiece(chunk, null);
        }
    }

    private static async IAsyncEnumerable<StreamPiece> Pieces(IAsyncEnumerable<NativeEvent> events, [EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var native in events.WithCancellation(ct))
        {
            yield return new StreamPiece(null, native);
        }
    }

    private static async Task StreamAsync(HttpContext ctx, GatewayServices s, Admitted admitted, RequestTrace trace)
    {
        var (success, error) = await s.Router.RunAsync(
            admitted.Route, trace,
            t => TimeSpan.FromSeconds(Math.Min(t.Provider.Options.FirstTokenTimeoutSeconds, t.Provider.Options.TimeoutSeconds)),
            async (t, cts) =>
            {
                var prepared = admitted.Requests.For(t);
                var pieces = (prepared.PassThrough
                    ? Pieces(admitted.Dialect.PassThroughStreamAsync(t.Provider.Adapter,
                        new NativeCall(admitted.Dialect.PassThroughBody(admitted.Body), t.UpstreamModel, trace.RequestId, admitted.ForwardedHeaders), cts.Token), cts.Token)
                    : Pieces(t.Provider.Adapter.StreamAsync(new ChatCall(prepared.Canonical!, t.UpstreamModel, trace.RequestId), cts.Token), cts.Token))
                    .GetAsyncEnumerator(cts.Token);
                // Hold back only what precedes the first content (role chunk, message_start, ping): until then we can still fail over.
                var buffered = new List<StreamPiece>(2);
                try
                {
                    while (await pieces.MoveNextAsync())
                    {
                        buffered.Add(pieces.Current);
                        if (pieces.Current.HasContent)
                        {
                            return new OpenStream(pieces, buffered, Ended: false);
                        }
                    }
                    return new OpenStream(pieces, buffered, Ended: true);
                }
                catch
                {
                    await pieces.DisposeAsync();
                    throw;
                }
            },
            Eligible(admitted),
            ctx.RequestAborted);
        if (error is not null)
        {
            await FailAsync(ctx, admitted.Dialect, trace, error);
            return;
        }

        using var cancellation = success!.Cancellation;
        var open = success.Value;
        var provider = success.Target.Provider;
        await using var pieces = open.Pieces;
        trace.TtftMs = s.Time.GetElapsedTime(trace.StartTimestamp).TotalMilliseconds;
        cancellation.CancelAfter(Min(TimeSpan.FromSeconds(provider.Options.TimeoutSeconds), s.Router.Remaining(trace)));
        NoteHints(trace, admitted, success.Target);
        SetRouteHeaders(ctx, trace);
        using var sse = new SseWriter(ctx.Response);
        var ct = ctx.RequestAborted;
        var renderer = admitted.Dialect.NewStream(admitted.Body, trace);
        var frames = new List<SseFrame>(4);
        var usageReported = false;
        long streamedChars = 0;
        var price = s.Prices.For(success.Target);

        ValueTask Emit(StreamPiece piece)
        {
            if (piece.Chunk is { } chunk)
            {
                if (chunk.Usage is { } usage)
                {
                    trace.Usage = usage;
                    usageReported = true;
                    // A stream's headers left long ago: its cost rides in the final usage chunk (and the ledger).
                    if (price is not null)
                    {
                        chunk.Chunk["helixagent"] = new JsonObject { ["cost_usd"] = PriceTable.Format(price.Cost(usage)) };
                    }
                }
                if (chunk.HasContent)
                {
                    streamedChars += TokenEstimate.ChunkChars(chunk.Chunk);
                }
                renderer.Add(chunk, frames);
            }
            else
            {
                var native = piece.Native!;
                if (native.Usage is { } usage)
                {
                    trace.Usage = usage;
                    usageReported |= native.UsageFinal;
                }
                streamedChars += native.ContentChars;
                renderer.AddNative(native, frames);
            }
            return sse.WriteAsync(frames, ct);
        }

        try
        {
            foreach (var piece in open.Buffered)
            {
                await Emit(piece);
            }
            if (!open.Ended)
            {
                try
                {
                    while (await pieces.MoveNextAsync())
                    {
                        await Emit(pieces.Current);
                    }
                }
                catch (UpstreamException ex)
                {
                    provider.State.RecordFailure(ex.Kind, ex.Message, ex.RetryAfter);
                    Interrupt(sse, renderer, trace, 502, "upstream_error", "stream_interrupted",
                        $"The upstream stream from {provider.Name} failed after it started: {ex.Message}");
                    return;
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    provider.State.RecordFailure(UpstreamFailure.Timeout, $"{provider.Name}: stream exceeded its timeout", null);
                    Interrupt(sse, renderer, trace, 504, "timeout_error", "upstream_timeout",
                        $"The upstream stream from {provider.Name} did not finish in time.");
                    return;
                }
            }
            renderer.End(frames);
            if (admitted.OnAnswer is { } onAnswer && renderer.Answer is { } whole)
            {
                onAnswer(JsonBytes.Of(whole));
            }
            sse.WriteLast(frames); // leaves after the ledger row is journaled

        }
        finally
        {
            // A stream that ended (client gone, upstream cut, timeout) before its provider reported usage still spent
            // tokens: the row counts what was sent, estimated, and says so.
            if (!usageReported)
            {
                trace.Usage = new TokenUsage(trace.Usage.PromptTokens > 0 ? trace.Usage.PromptTokens : TokenEstimate.Prompt(admitted.Body), TokenEstimate.OfChars(streamedChars));
                trace.UsageEstimated = true;
            }
        }
    }

    /// <summary>After the first byte there is no failover: end with the dialect's error event, never a silent cut.</summary>
    private static void Interrupt(SseWriter sse, IStreamRenderer renderer, RequestTrace trace, int status, string type, string code, string message)
    {
        trace.Status = status;
        trace.ErrorType = code;
        trace.ErrorMessage = message;
        sse.WriteLast([.. renderer.ErrorFrames(status, type, code, message)]); // leaves after the ledger row is journaled
    }

    private static Task FailAsync(HttpContext ctx, IDialect dialect, RequestTrace trace, GatewayError error)
    {
        trace.Status = error.Status;
        trace.ErrorType = error.Code;
        trace.ErrorMessage = error.Message;
        if (error.RetryAfter is { } retry)
        {
            ctx.Response.Headers.RetryAfter = ((int)Math.Ceiling(retry.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        SetRouteHeaders(ctx, trace);
        return dialect.WriteErrorAsync(ctx, error.Status, error.Message, error.Type, error.Code, null);
    }

    private static void SetRouteHeaders(HttpContext ctx, RequestTrace trace)
    {
        if (trace.Provider is not null)
        {
            ctx.Response.Headers["x-helixagent-provider"] = trace.Provider;
        }
        ctx.Response.Headers["x-helixagent-attempts"] = trace.Attempts.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (trace.DroppedHints is not null)
        {
            ctx.Response.Headers["x-helixagent-dropped"] = trace.DroppedHints;
        }
        if (trace.TranslatedHints is not null)
        {
            ctx.Response.Headers["x-helixagent-translated"] = trace.TranslatedHints;
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
