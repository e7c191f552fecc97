using System.Text.Json.Nodes;
using HelixAgent.Api.Access;
using HelixAgent.Api.Gateway.Dialects;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Data;

namespace HelixAgent.Api.Gateway;

/// <summary>
/// A request that passed every check before routing: its dialect, body, route, key, rate-limit reservation, what each
/// target gets (<see cref="TargetRequests"/>), the protocol headers to forward on pass-through, when it may be answered
/// from the response cache the lookup started alongside the admission, and for an ensemble its plan.
/// </summary>
internal sealed record Admitted(IDialect Dialect, JsonObject Body, string Model, ModelRoute Route, ApiKeyInfo? Key, RateLimitTicket Ticket,
    CacheLookup? Cache, EnsemblePlan? Ensemble, TargetRequests Requests, IReadOnlyList<KeyValuePair<string, string>> ForwardedHeaders)
{
    public bool Stream => Dialect.IsStream(Body);

    /// <summary>Called with the whole answer as the client gets it, before it is sent (stored Responses keep it).</summary>
    public Action<ReadOnlyMemory<byte>>? OnAnswer { get; init; }
}

/// <summary>
/// The request as each target of the route gets it, prepared by the dialect once per target protocol (and whether it
/// may be passed through): a route over one kind of provider prepares once.
/// </summary>
internal sealed class TargetRequests(IDialect dialect, JsonObject body, GatewayOptions options)
{
    private readonly Dictionary<(string Type, bool PassThrough), Prepared> _prepared = [];

    public Prepared For(RouteTarget target, bool allowPassThrough = true)
    {
        var key = (target.Provider.Adapter.Type, allowPassThrough);
        lock (_prepared)
        {
            if (!_prepared.TryGetValue(key, out var prepared))
            {
                _prepared[key] = prepared = dialect.Prepare(body, target, allowPassThrough, options);
            }
            return prepared;
        }
    }

    /// <summary>Null when every target can take the request; else why the first refuses, and whether any can.</summary>
    public (ValidationError? First, bool AllRefuse) Refusals(ModelRoute route, bool allowPassThrough)
    {
        ValidationError? first = null;
        var refused = 0;
        foreach (var target in route.Targets)
        {
            if (For(target, allowPassThrough).Refused is { } refusal)
            {
                first ??= refusal;
                refused++;
            }
        }
        return (first, refused == route.Targets.Count && refused > 0);
    }
}

internal static partial class GatewayApi
{
    /// <summary>
    /// Everything before routing, shared by every endpoint: body (413/400), validation (400 naming the field), route
    /// (404), what each target can take (400 naming the field when none can), the key's model allow-list (403) and the
    /// rate limit (429). Answers itself, in the dialect's shape, and returns null when refused; nothing refused here is
    /// routed, so nothing here writes a ledger row. First of all, with <c>Ledger:WhenFull=refuse</c>, a ledger that
    /// cannot keep another row answers 503 + Retry-After: a deployment that bills from the ledger serves nothing unbilled.
    /// </summary>
    private static async Task<Admitted?> AdmitRequestAsync(HttpContext ctx, GatewayServices s, IDialect dialect, Func<JsonObject, ValidationError?> validate,
        string endpoint, bool rateLimited = true, Func<JsonObject, ApiKeyInfo?, CancellationToken, Task<ValidationError?>>? expand = null)
    {
        if (s.Ledger.Refusing)
        {
            ctx.Response.Headers.RetryAfter = "5";
            await dialect.WriteErrorAsync(ctx, 503, "The gateway cannot record usage right now (its ledger journal is full or its disk fails); retry shortly.",
                "service_unavailable", "ledger_unavailable", null);
            return null;
        }
        var body = await ReadBodyAsync(ctx, dialect, s.Options.Value.MaxRequestBodyBytes);
        if (body is null)
        {
            return null;
        }
        if (validate(body) is { } invalid)
        {
            await dialect.WriteErrorAsync(ctx, invalid.Status, invalid.Message, "invalid_request_error", invalid.Code, invalid.Param);
            return null;
        }
        // What the body refers to (a stored conversation) is looked up before routing, with the key that may see it.
        if (expand is not null && await expand(body, AuthenticatedKey.Of(ctx), ctx.RequestAborted) is { } unresolved)
        {
            if (unresolved.Status == 503)
            {
                ctx.Response.Headers.RetryAfter = "5";
            }
            await dialect.WriteErrorAsync(ctx, unresolved.Status, unresolved.Message, "invalid_request_error", unresolved.Code, unresolved.Param);
            return null;
        }
        var model = body["model"]!.GetValue<string>();
        var embeddings = endpoint == "embeddings";
        if (!s.Registry.TryGetRoute(model, out var route) || (embeddings && !route.IsEnsemble && !route.Targets.Any(t => t.Provider.Adapter.SupportsEmbeddings)))
        {
            await dialect.WriteErrorAsync(ctx, 404, $"The model '{Echo.Clip(model)}' does not exist or you do not have access to it.", "invalid_request_error",
                "model_not_found", "model");
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
            await dialect.WriteErrorAsync(ctx, ensembleError.Status, ensembleError.Message, "invalid_request_error", ensembleError.Code, ensembleError.Param);
            return null;
        }
        var requests = new TargetRequests(dialect, body, s.Options.Value);
        if (!embeddings && requests.Refusals(route, allowPassThrough: ensemble is null) is { AllRefuse: true, First: { } refused })
        {
            await dialect.WriteErrorAsync(ctx, refused.Status, refused.Message, "invalid_request_error", refused.Code, refused.Param);
            return null;
        }
        var key = AuthenticatedKey.Of(ctx);
        if (!ModelAllowed(key, model, route))
        {
            await dialect.WriteErrorAsync(ctx, 403, $"This API key may not use model '{Echo.Clip(model)}'.", "permission_error", "model_not_allowed", "model");
            return null;
        }
        // Streams are never cached. The lookup goes to Redis with the admission; a refused request drops its result.
        var cache = !rateLimited || dialect.IsStream(body) || !dialect.Cacheable(body) ? null : s.Cache.Begin(ctx.Request, endpoint, route, body, key?.Id, ctx.RequestAborted);
        body.Remove("ensemble_config"); // the gateway's own field (part of the cache key above); never sent upstream
        // An ensemble asks every member: it reserves what all of them may spend.
        RateLimitTicket? ticket = rateLimited ? await AdmitAsync(ctx, s, dialect, key, body, route, ensemble is not null, embeddings) : default(RateLimitTicket);
        return ticket is null ? null : new Admitted(dialect, body, model, route, key, ticket.Value, cache, ensemble, requests, ForwardedHeaders(ctx.Request));
    }

    /// <summary>The client's protocol headers a target passed through gets: Anthropic's version and betas.</summary>
    private static IReadOnlyList<KeyValuePair<string, string>> ForwardedHeaders(HttpRequest request)
    {
        List<KeyValuePair<string, string>>? headers = null;
        foreach (var name in (ReadOnlySpan<string>)["anthropic-version", "anthropic-beta"])
        {
            var values = request.Headers[name];
            if (values.Count > 0)
            {
                (headers ??= []).Add(new(name, string.Join(",", values.Where(v => !string.IsNullOrWhiteSpace(v)))));
            }
        }
        return headers ?? (IReadOnlyList<KeyValuePair<string, string>>)[];
    }

    /// <summary>
    /// Admits the request against the key's requests- and tokens-per-minute (cluster-wide through Redis), reserving the
    /// prompt estimate plus max tokens for each upstream call it makes (every member of an ensemble), and against the
    /// key's and its team's budgets its worst-case cost (<see cref="BudgetReserve"/>), in the same Redis round trip.
    /// Answers 429 itself (returning null) when over a limit or a budget.
    /// </summary>
    private static async Task<RateLimitTicket?> AdmitAsync(HttpContext ctx, GatewayServices s, IDialect dialect, ApiKeyInfo? key, JsonObject body,
        ModelRoute route, bool ensemble, bool embeddings)
    {
        if (key is null)
        {
            return default(RateLimitTicket);
        }
        var limits = s.Limits.Value;
        var calls = ensemble ? route.Targets.Count : 1;
        var (prompt, completion) = limits.ReserveParts(body, embeddings);
        var budget = key.Budget is null && key.TeamBudget is null ? null
            : BudgetCheck.For(key, BudgetReserve.Usd(s.Prices, route, ensemble, prompt, completion), s.Time.GetUtcNow());
        var decision = await s.Limiter.AdmitAsync(key.Id.ToString(), limits.PolicyFor(key), (int)Math.Min(int.MaxValue, ((long)prompt + completion) * calls),
            ctx.RequestAborted, budget);
        RateLimitHeaders.Apply(ctx.Response, decision);
        if (decision.Allowed)
        {
            return decision.Ticket;
        }
        if (decision.Rejection == RateLimitRejection.BudgetExceeded)
        {
            await dialect.WriteErrorAsync(ctx, 429, decision.Reason!, "insufficient_quota", "budget_exceeded", null);
            return null;
        }
        if (decision.Rejection == RateLimitRejection.BudgetUnknown)
        {
            ctx.Response.Headers.RetryAfter = "5";
            await dialect.WriteErrorAsync(ctx, 503, decision.Reason!, "service_unavailable", "budget_unavailable", null);
            return null;
        }
        if (decision.Rejection == RateLimitRejection.RequestExceedsTokenLimit)
        {
            ctx.Response.Headers.Remove("Retry-After");
            await dialect.WriteErrorAsync(ctx, 400, $"This request needs more tokens than the key may use in a minute: {decision.Reason}",
                "invalid_request_error", "tokens_exceed_limit", "max_tokens");
            return null;
        }
        await dialect.WriteErrorAsync(ctx, 429, $"Rate limit reached for this API key: {decision.Reason}. Retry after {Math.Ceiling(decision.RetryAfter.TotalSeconds)}s.",
            "rate_limit_error", "rate_limit_exceeded", null);
        return null;
    }

    /// <summary>Reads a JSON object body strictly (<see cref="JsonBody"/>), answering 413/400 itself (and returning null) when it is not acceptable.</summary>
    private static async Task<JsonObject?> ReadBodyAsync(HttpContext ctx, IDialect dialect, long maxBytes)
    {
        var (body, error) = await JsonBody.ReadObjectAsync(ctx, maxBytes);
        if (error is not null)
        {
            await dialect.WriteErrorAsync(ctx, error.Status, error.Message, "invalid_request_error", error.Code, null);
        }
        return body;
    }

    /// <summary>A key with an allow-list may use the listed models (by the name asked for, or the route it resolves to).</summary>
    private static bool ModelAllowed(ApiKeyInfo? key, string model, ModelRoute route) =>
        key?.AllowedModels is not { Length: > 0 } allowed || allowed.Contains(model) || allowed.Contains(route.Id);
}
