using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Api.Access;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Ledger;
using HelixAgent.Api.Observability;
using HelixAgent.Data;
using Microsoft.Extensions.Options;

namespace HelixAgent.Api.Gateway;

/// <summary>Dependencies of the client API handlers.</summary>
internal sealed record GatewayServices(
    ProviderRegistry Registry,
    GatewayRouter Router,
    CompletionLedger Ledger,
    GatewayMetrics Metrics,
    ClusterRateLimiter Limiter,
    IOptions<RateLimitOptions> Limits,
    IOptions<GatewayOptions> Options,
    ResponseCache Cache,
    IOptions<EnsembleOptions> Ensemble,
    ILogger<GatewayRouter> Log,
    TimeProvider Time);

/// <summary>
/// The OpenAI-compatible client API: <c>/v1/chat/completions</c>, <c>/v1/completions</c>, <c>/v1/embeddings</c>,
/// <c>/v1/models</c>. Every request that reaches routing ends as one row in <c>completions</c>.
/// </summary>
internal static partial class GatewayApi
{
    public static IEndpointRouteBuilder MapGatewayApi(this IEndpointRouteBuilder app)
    {
        var v1 = app.MapGroup("/v1");
        v1.MapPost("/chat/completions", (HttpContext ctx, [AsParameters] GatewayServices s) => HandleChatAsync(ctx, s, legacy: false));
        v1.MapPost("/completions", (HttpContext ctx, [AsParameters] GatewayServices s) => HandleChatAsync(ctx, s, legacy: true));
        v1.MapPost("/embeddings", HandleEmbeddingsAsync);
        v1.MapGet("/models", ListModels);
        v1.MapGet("/models/{**id}", GetModel);
        return app;
    }

    private static async Task HandleChatAsync(HttpContext ctx, GatewayServices s, bool legacy)
    {
        var endpoint = legacy ? "completions" : "chat.completions";
        var admitted = await AdmitRequestAsync(ctx, s, legacy ? RequestValidation.Completion : RequestValidation.Chat, endpoint);
        if (admitted is null)
        {
            return;
        }
        var (body, model, route, _, _, cache, ensemble) = admitted;
        var stream = IsStream(body);
        var includeUsage = stream && body["stream_options"]?["include_usage"] is JsonValue iu && iu.TryGetValue<bool>(out var b) && b;
        var chatBody = legacy ? LegacyCompletions.ToChatRequest(body) : body;
        var trace = new RequestTrace(NewRequestId(), model, endpoint, stream, s.Time.GetTimestamp());
        await ServeAsync(ctx, s, admitted, trace, () => ensemble is not null
            ? EnsembleChatAsync(ctx, s, route, chatBody, trace, ensemble, legacy, includeUsage, cache)
            : stream
            ? StreamChatAsync(ctx, s, route, chatBody, trace, includeUsage, legacy)
            : CompleteChatAsync(ctx, s, route, chatBody, trace, legacy, cache));
    }

    private static bool IsStream(JsonObject body) => body["stream"] is JsonValue sv && sv.GetValue<bool>();

    /// <summary>
    /// A request that passed every check before routing: its body, route, key, rate-limit reservation, when it may
    /// be answered from the response cache the lookup started alongside the admission, and for an ensemble its plan.
    /// </summary>
    private sealed record Admitted(JsonObject Body, string Model, ModelRoute Route, HelixAgent.Data.ApiKeyInfo? Key, RateLimitTicket Ticket, CacheLookup? Cache,
        EnsemblePlan? Ensemble);

    /// <summary>
    /// Everything before routing, shared by every endpoint: body (413/400), validation (400 naming the field), route
    /// (404), the key's model allow-list (403) and the rate limit (429). Answers itself and returns null when refused;
    /// nothing refused here is routed, so nothing here writes a ledger row.
    /// </summary>
    private static async Task<Admitted?> AdmitRequestAsync(HttpContext ctx, GatewayServices s, Func<JsonObject, ValidationError?> validate, string endpoint)
    {
        var body = await ReadBodyAsync(ctx, s.Options.Value.MaxRequestBodyBytes);
        if (body is null)
        {
            return null;
        }
        if (validate(body) is { } invalid)
        {
            await WriteErrorAsync(ctx, invalid.Status, invalid.Message, "invalid_request_error", invalid.Code, invalid.Param);
            return null;
        }
        var model = body["model"]!.GetValue<string>();
        var embeddings = endpoint == "embeddings";
        if (!s.Registry.TryGetRoute(model, out var route) || (embeddings && !route.IsEnsemble && !route.Targets.Any(t => t.Provider.Adapter.SupportsEmbeddings)))
        {
            await WriteModelNotFoundAsync(ctx, model);
            return null;
        }
        EnsemblePlan? ensemble = null;
        var ensembleError = embeddings
            ? route.IsEnsemble ? new ValidationError($"The model '{Echo.Clip(model)}' answers chat and completions requests, not embeddings.", "model")
            : body.ContainsKey("ensemble_config") ? new ValidationError("'ensemble_config' applies to chat and completions requests, not embeddings.", "ensemble_config")
            : null
            : EnsemblePlan.Parse(body, route, s.Ensemble.Value, s.Options.Value.DeadlineSeconds, out ensemble);
        if (ensembleError is not null)
        {
            await WriteErrorAsync(ctx, ensembleError.Status, ensembleError.Message, "invalid_request_error", ensembleError.Code, ensembleError.Param);
            return null;
        }
        var key = AuthenticatedKey.Of(ctx);
        if (!ModelAllowed(key, model, route))
        {
            await WriteErrorAsync(ctx, 403, $"This API key may not use model '{Echo.Clip(model)}'.", "permission_error", "model_not_allowed", "model");
            return null;
        }
        // Streams are never cached. The lookup goes to Redis with the admission; a refused request drops its result.
        var cache = IsStream(body) ? null : s.Cache.Begin(ctx.Request, endpoint, route, body, key?.Id, ctx.RequestAborted);
        body.Remove("ensemble_config"); // the gateway's own field (part of the cache key above); never sent upstream
        // An ensemble asks every member: it reserves what all of them may spend.
        var ticket = await AdmitAsync(ctx, s, key, body, ensemble is null ? 1 : route.Targets.Count);
        return ticket is null ? null : new Admitted(body, model, route, key, ticket.Value, cache, ensemble);
    }

    /// <summary>
    /// Serves an admitted request and, whatever happens (answer, failure, client disconnect), records it: one ledger row,
    /// the request span's tags, the metrics, and the rate limiter's settlement with the actual usage.
    /// </summary>
    private static async Task ServeAsync(HttpContext ctx, GatewayServices s, Admitted admitted, RequestTrace trace, Func<Task> serve)
    {
        trace.KeyId = admitted.Key?.Id;
        trace.KeyName = admitted.Key?.Name;
        ctx.Response.Headers["x-request-id"] = trace.RequestId;
        using var logScope = s.Log.BeginScope(new RequestLogScope(trace.RequestId, admitted.Model, admitted.Key?.Name));
        try
        {
            await serve();
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            trace.Status = 499;
            trace.ErrorType = "client_disconnected";
        }
        catch (Exception ex)
        {
            // The client left while a write failed (a reset surfaces as an IOException before the abort token says
            // so): not ours. Anything else is a defect: the exception handler answers 500 and logs the exception,
            // and the ledger row must say 500 too.
            var clientLeft = ctx.RequestAborted.IsCancellationRequested;
            trace.Status = clientLeft ? 499 : 500;
            trace.ErrorType = clientLeft ? "client_disconnected" : "internal_error";
            trace.ErrorMessage = ex.GetType().Name;
            throw;
        }
        finally
        {
            if (trace.Status >= 500)
            {
                LogRequestFailed(s.Log, trace.Endpoint, trace.Model, trace.Status, trace.ErrorType, trace.Attempts, trace.ErrorMessage);
            }
            s.Ledger.Record(ToRecord(trace, s.Time));
            TagRequestSpan(trace);
            s.Metrics.RequestCompleted(trace, s.Time.GetElapsedTime(trace.StartTimestamp).TotalSeconds);
            s.Limiter.Settle(admitted.Ticket, trace.Usage.TotalTokens);
        }
    }

    /// <summary>
    /// Admits the request against the key's requests- and tokens-per-minute (cluster-wide through Redis), reserving the
    /// prompt estimate plus max tokens for each of the <paramref name="calls"/> upstream calls it makes. Answers 429 itself (returning null) when over the limit.
    /// </summary>
    private static async Task<RateLimitTicket?> AdmitAsync(HttpContext ctx, GatewayServices s, HelixAgent.Data.ApiKeyInfo? key, JsonObject body, int calls)
    {
        if (key is null)
        {
            return default(RateLimitTicket);
        }
        var limits = s.Limits.Value;
        var decision = await s.Limiter.AdmitAsync(key.Id.ToString(), limits.PolicyFor(key), (int)Math.Min(int.MaxValue, (long)limits.Reserve(body) * calls), ctx.RequestAborted);
        RateLimitHeaders.Apply(ctx.Response, decision);
        if (decision.Allowed)
        {
            return decision.Ticket;
        }
        if (decision.Rejection == RateLimitRejection.RequestExceedsTokenLimit)
        {
            ctx.Response.Headers.Remove("Retry-After");
            await WriteErrorAsync(ctx, 400, $"This request needs more tokens than the key may use in a minute: {decision.Reason}",
                "invalid_request_error", "tokens_exceed_limit", "max_tokens");
            return null;
        }
        await WriteErrorAsync(ctx, 429, $"Rate limit reached for this API key: {decision.Reason}. Retry after {Math.Ceiling(decision.RetryAfter.TotalSeconds)}s.",
            "rate_limit_error", "rate_limit_exceeded", null);
        return null;
    }

    private static async Task CompleteChatAsync(HttpContext ctx, GatewayServices s, ModelRoute route, JsonObject body, RequestTrace trace, bool legacy, CacheLookup? cache)
    {
        if (await ServeFromCacheAsync(ctx, s, trace, cache))
        {
            return;
        }
        var (success, error) = await s.Router.RunAsync(
            route, trace,
            t => TimeSpan.FromSeconds(t.Provider.Options.TimeoutSeconds),
            (t, cts) => t.Provider.Adapter.CompleteAsync(new ChatCall(body, t.UpstreamModel, trace.RequestId), cts.Token),
            eligible: null,
            ctx.RequestAborted);
        if (error is not null)
        {
            await FailAsync(ctx, trace, error);
            return;
        }
        using var cancellation = success!.Cancellation;
        trace.Usage = success.Value.Usage;
        trace.TtftMs = s.Time.GetElapsedTime(trace.StartTimestamp).TotalMilliseconds;
        SetRouteHeaders(ctx, trace);
        var answer = legacy ? JsonBytes.Of(LegacyCompletions.FromChatResponse(success.Value.Response, trace.RequestId)) : success.Value.Utf8Json;
        await WriteAndCacheAsync(ctx, s, cache?.Key, answer, trace.Usage);
    }

    /// <summary>Answers from the response cache when it has this request (no upstream call, no attempt).</summary>
    private static async Task<bool> ServeFromCacheAsync(HttpContext ctx, GatewayServices s, RequestTrace trace, CacheLookup? cache)
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
        ctx.Response.Headers["x-helixagent-cache"] = "hit";
        SetRouteHeaders(ctx, trace);
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

    /// <summary>A 200 JSON answer from its UTF-8 bytes, with a Content-Length (no chunked framing).</summary>
    private static async Task WriteUtf8JsonAsync(HttpContext ctx, ReadOnlyMemory<byte> body)
    {
        ctx.Response.StatusCode = StatusCodes.Status200OK;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = body.Length;
        await ctx.Response.Body.WriteAsync(body, ctx.RequestAborted);
    }

    /// <summary>An attempt's stream, opened up to (and including) its first content chunk.</summary>
    private sealed record OpenStream(IAsyncEnumerator<ChatChunk> Chunks, List<ChatChunk> Buffered, bool Ended);

    private static async Task StreamChatAsync(HttpContext ctx, GatewayServices s, ModelRoute route, JsonObject body, RequestTrace trace, bool includeUsage, bool legacy)
    {
        var (success, error) = await s.Router.RunAsync(
            route, trace,
            t => TimeSpan.FromSeconds(Math.Min(t.Provider.Options.FirstTokenTimeoutSeconds, t.Provider.Options.TimeoutSeconds)),
            async (t, cts) =>
            {
                // Hold back only what precedes the first content (the role chunk): until then we can still fail over.
                var chunks = t.Provider.Adapter.StreamAsync(new ChatCall(body, t.UpstreamModel, trace.RequestId), cts.Token)
                    .GetAsyncEnumerator(cts.Token);
                var buffered = new List<ChatChunk>(2);
                try
                {
                    while (await chunks.MoveNextAsync())
                    {
                        buffered.Add(chunks.Current);
                        if (chunks.Current.HasContent)
                        {
                            return new OpenStream(chunks, buffered, Ended: false);
                        }
                    }
                    return new OpenStream(chunks, buffered, Ended: true);
                }
                catch
                {
                    await chunks.DisposeAsync();
                    throw;
                }
            },
            eligible: null,
            ctx.RequestAborted);
        if (error is not null)
        {
            await FailAsync(ctx, trace, error);
            return;
        }

        using var cancellation = success!.Cancellation;
        var open = success.Value;
        var provider = success.Target.Provider;
        await using var chunks = open.Chunks;
        trace.TtftMs = s.Time.GetElapsedTime(trace.StartTimestamp).TotalMilliseconds;
        cancellation.CancelAfter(Min(TimeSpan.FromSeconds(provider.Options.TimeoutSeconds), s.Router.Remaining(trace)));
        SetRouteHeaders(ctx, trace);
        using var sse = new SseWriter(ctx.Response);
        var ct = ctx.RequestAborted;
        var converter = legacy ? new LegacyCompletions.ChunkConverter(trace.RequestId) : null;
        var usageReported = false;
        long streamedChars = 0;

        async ValueTask Emit(ChatChunk chunk)
        {
            if (chunk.Usage is { } usage)
            {
                trace.Usage = usage;
                usageReported = true;
            }
            var node = chunk.Chunk;
            if (chunk.HasContent)
            {
                streamedChars += TokenEstimate.ChunkChars(node);
            }
            if (chunk.Usage is not null && !includeUsage)
            {
                if (node["choices"] is JsonArray { Count: 0 })
                {
                    return;
                }
                node.Remove("usage");
            }
            var outgoing = converter is null ? node : converter.Convert(node);
            if (outgoing is not null)
            {
                await sse.WriteAsync(outgoing, ct);
            }
        }

        try
        {
            foreach (var chunk in open.Buffered)
            {
                await Emit(chunk);
            }
            if (!open.Ended)
            {
                try
                {
                    while (await chunks.MoveNextAsync())
                    {
                        await Emit(chunks.Current);
                    }
                }
                catch (UpstreamException ex)
                {
                    provider.State.RecordFailure(ex.Kind, ex.Message, ex.RetryAfter);
                    await InterruptAsync(sse, trace, 502, "upstream_error", "stream_interrupted",
                        $"The upstream stream from {provider.Name} failed after it started: {ex.Message}", ct);
                    return;
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    provider.State.RecordFailure(UpstreamFailure.Timeout, $"{provider.Name}: stream exceeded its timeout", null);
                    await InterruptAsync(sse, trace, 504, "timeout_error", "upstream_timeout",
                        $"The upstream stream from {provider.Name} did not finish in time.", ct);
                    return;
                }
            }
            await sse.WriteDoneAsync(ct);
        }
        finally
        {
            // A stream that ended (client gone, upstream cut, timeout) before its provider reported usage still spent
            // tokens: the row counts what was sent, estimated, and says so.
            if (!usageReported)
            {
                trace.Usage = new TokenUsage(TokenEstimate.Prompt(body), TokenEstimate.OfChars(streamedChars));
                trace.UsageEstimated = true;
            }
        }
    }

    /// <summary>After the first byte there is no failover: end with an OpenAI-style error event, never a silent cut.</summary>
    private static async Task InterruptAsync(SseWriter sse, RequestTrace trace, int status, string type, string code, string message, CancellationToken ct)
    {
        trace.Status = status;
        trace.ErrorType = code;
        trace.ErrorMessage = message;
        var error = new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = null, ["code"] = code },
        };
        await sse.WriteAsync(error, ct);
    }

    private static async Task HandleEmbeddingsAsync(HttpContext ctx, [AsParameters] GatewayServices s)
    {
        var admitted = await AdmitRequestAsync(ctx, s, RequestValidation.Embeddings, "embeddings");
        if (admitted is null)
        {
            return;
        }
        var trace = new RequestTrace(NewRequestId(), admitted.Model, "embeddings", false, s.Time.GetTimestamp());
        await ServeAsync(ctx, s, admitted, trace, () => EmbedAsync(ctx, s, admitted, trace));
    }

    private static async Task EmbedAsync(HttpContext ctx, GatewayServices s, Admitted admitted, RequestTrace trace)
    {
        if (await ServeFromCacheAsync(ctx, s, trace, admitted.Cache))
        {
            return;
        }
        var (success, error) = await s.Router.RunAsync(
            admitted.Route, trace,
            t => TimeSpan.FromSeconds(t.Provider.Options.TimeoutSeconds),
            (t, cts) => t.Provider.Adapter.EmbedAsync(new EmbeddingCall(admitted.Body, t.UpstreamModel, trace.RequestId), cts.Token),
            t => t.Provider.Adapter.SupportsEmbeddings,
            ctx.RequestAborted);
        if (error is not null)
        {
            await FailAsync(ctx, trace, error);
            return;
        }
        using var cancellation = success!.Cancellation;
        trace.Usage = success.Value.Usage;
        SetRouteHeaders(ctx, trace);
        await WriteAndCacheAsync(ctx, s, admitted.Cache?.Key, JsonBytes.Of(success.Value.Response), trace.Usage);
    }

    private static readonly long ModelsCreated = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    private static IResult ListModels(ProviderRegistry registry)
    {
        var data = new JsonArray();
        foreach (var route in registry.Models)
        {
            data.Add(ModelJson(route, route.Id));
            foreach (var alias in route.Aliases)
            {
                data.Add(ModelJson(route, alias));
            }
        }
        return Json(new JsonObject { ["object"] = "list", ["data"] = data });
    }

    private static IResult GetModel(string id, ProviderRegistry registry) =>
        registry.TryGetRoute(id, out var route)
            ? Json(ModelJson(route, id))
            : OpenAiErrors.Result(404, $"The model '{Echo.Clip(id)}' does not exist or you do not have access to it.", "invalid_request_error", "model_not_found", "model");

    private static JsonObject ModelJson(ModelRoute route, string id) => new()
    {
        ["id"] = id,
        ["object"] = "model",
        ["created"] = ModelsCreated,
        ["owned_by"] = route.IsEnsemble ? "helixagent" : route.IsSimulated ? "helixagent-simulator" : route.Targets[0].Provider.Name,
        ["helixagent"] = new JsonObject
        {
            ["route"] = route.Id,
            ["ensemble"] = route.IsEnsemble,
            ["providers"] = new JsonArray([.. route.Targets.Select(t => (JsonNode)JsonValue.Create(t.Provider.Name + "/" + t.UpstreamModel))]),
            ["simulated"] = route.IsSimulated,
        },
    };

    internal static IResult Json(JsonNode node, int status = 200) =>
        Results.Text(node.ToJsonString(), "application/json", System.Text.Encoding.UTF8, status);

    private static Task FailAsync(HttpContext ctx, RequestTrace trace, GatewayError error)
    {
        trace.Status = error.Status;
        trace.ErrorType = error.Code;
        trace.ErrorMessage = error.Message;
        if (error.RetryAfter is { } retry)
        {
            ctx.Response.Headers.RetryAfter = ((int)Math.Ceiling(retry.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        SetRouteHeaders(ctx, trace);
        return WriteErrorAsync(ctx, error.Status, error.Message, error.Type, error.Code, null);
    }

    private static void SetRouteHeaders(HttpContext ctx, RequestTrace trace)
    {
        if (trace.Provider is not null)
        {
            ctx.Response.Headers["x-helixagent-provider"] = trace.Provider;
        }
        ctx.Response.Headers["x-helixagent-attempts"] = trace.Attempts.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private static Task WriteModelNotFoundAsync(HttpContext ctx, string model) =>
        WriteErrorAsync(ctx, 404, $"The model '{Echo.Clip(model)}' does not exist or you do not have access to it.", "invalid_request_error", "model_not_found", "model");

    private static Task WriteErrorAsync(HttpContext ctx, int status, string message, string type, string? code, string? param) =>
        OpenAiErrors.WriteAsync(ctx, status, message, type, code, param);

    /// <summary>Reads a JSON object body strictly (<see cref="JsonBody"/>), answering 413/400 itself (and returning null) when it is not acceptable.</summary>
    private static async Task<JsonObject?> ReadBodyAsync(HttpContext ctx, long maxBytes)
    {
        var (body, error) = await JsonBody.ReadObjectAsync(ctx, maxBytes);
        if (error is not null)
        {
            await WriteErrorAsync(ctx, error.Status, error.Message, "invalid_request_error", error.Code, null);
        }
        return body;
    }

    /// <summary>A key with an allow-list may use the listed models (by the name asked for, or the route it resolves to).</summary>
    private static bool ModelAllowed(HelixAgent.Data.ApiKeyInfo? key, string model, ModelRoute route) =>
        key?.AllowedModels is not { Length: > 0 } allowed || allowed.Contains(model) || allowed.Contains(route.Id);

    /// <summary>The request's span (ASP.NET Core's) gets the outcome in GenAI terms; never the key or the content.</summary>
    private static void TagRequestSpan(RequestTrace trace)
    {
        if (System.Diagnostics.Activity.Current is not { IsAllDataRequested: true } span)
        {
            return;
        }
        span.SetTag("helixagent.request_id", trace.RequestId);
        span.SetTag("gen_ai.request.model", trace.Model);
        span.SetTag("helixagent.provider", trace.Provider);
        span.SetTag("helixagent.attempts", trace.Attempts);
        span.SetTag("gen_ai.usage.input_tokens", trace.Usage.PromptTokens);
        span.SetTag("gen_ai.usage.output_tokens", trace.Usage.CompletionTokens);
        if (trace.ErrorType is not null)
        {
            span.SetTag("error.type", trace.ErrorType);
        }
    }

    private static string NewRequestId() => Guid.CreateVersion7().ToString("N");

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static CompletionRecord ToRecord(RequestTrace t, TimeProvider time) => new(
        t.RequestId, t.KeyId, t.KeyName, t.Model, t.Provider, t.Endpoint, t.Status, t.ErrorType,
        t.Usage.PromptTokens, t.Usage.CompletionTokens,
        time.GetElapsedTime(t.StartTimestamp).TotalMilliseconds, t.TtftMs,
        t.CacheHit, t.Stream, t.Attempts, time.GetUtcNow(), t.UsageEstimated);

    /// <summary>
    /// A request the gateway could not serve (5xx to the client: every provider failed, a stream broke after its first
    /// byte, a defect). Each failed attempt before it was a <c>provider error</c> warning; this is the line an on-call
    /// engineer's <c>grep ERROR</c> finds.
    /// </summary>
    [LoggerMessage(30, LogLevel.Error, "request failed: {Endpoint} for model {Model} answered {Status} ({ErrorType}) after {Attempts} attempts: {Reason}")]
    private static partial void LogRequestFailed(ILogger logger, string endpoint, string model, int status, string? errorType, int attempts, string? reason);
}
