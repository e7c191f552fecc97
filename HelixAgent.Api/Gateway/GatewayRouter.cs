using System.Diagnostics;
using HelixAgent.Api.Observability;
using Microsoft.Extensions.Options;

namespace HelixAgent.Api.Gateway;

/// <summary>What one client request went through: the ledger row and the response headers are made from it.</summary>
public sealed class RequestTrace(string requestId, string model, string endpoint, bool stream, long startTimestamp)
{
    public string RequestId { get; } = requestId;
    public string Model { get; } = model;
    public string Endpoint { get; } = endpoint;
    public bool Stream { get; } = stream;
    public long StartTimestamp { get; } = startTimestamp;
    public string? Provider { get; set; }
    public Guid? KeyId { get; set; }
    public string? KeyName { get; set; }

    /// <summary>The team of the key (its row says which team it was served for).</summary>
    public string? Team { get; set; }
    public int Attempts { get; set; }
    public TokenUsage Usage { get; set; }

    /// <summary>The target that answered (its price prices <see cref="Usage"/>).</summary>
    public RouteTarget? Served { get; set; }

    /// <summary>What the request cost (USD); null when a target with usage has no price. Set once by <c>Price</c>.</summary>
    public decimal? CostUsd { get; set; }

    /// <summary>A cache hit: what the answer would have cost from the route's first target.</summary>
    public decimal? CostSavedUsd { get; set; }

    public bool Priced { get; set; }

    /// <summary>The usage is the gateway's estimate (a stream that ended before its provider reported usage).</summary>
    public bool UsageEstimated { get; set; }
    public double? TtftMs { get; set; }
    public bool CacheHit { get; set; }

    /// <summary>Answered by an ensemble: <see cref="Attempts"/> counts every member's attempts.</summary>
    public bool Ensemble { get; set; }
    public int Status { get; set; } = 200;
    public string? ErrorType { get; set; }

    /// <summary>The client's hints the serving target had no equivalent for (comma-separated), e.g. <c>thinking,context_management</c>.</summary>
    public string? DroppedHints { get; set; }

    /// <summary>The client's hints carried to the serving target in its own terms, e.g. <c>thinking=reasoning_effort</c>.</summary>
    public string? TranslatedHints { get; set; }

    /// <summary>What the client was told when the request failed (for the log; never sent anywhere else).</summary>
    public string? ErrorMessage { get; set; }
}

/// <summary>How a request that could not be served is answered (OpenAI error shape).</summary>
public sealed record GatewayError(int Status, string Message, string Type, string Code, TimeSpan? RetryAfter = null);

/// <summary>The attempt that succeeded, with the cancellation source that bounds the rest of its work.</summary>
public sealed record AttemptSuccess<T>(T Value, RouteTarget Target, CancellationTokenSource Cancellation);

/// <summary>
/// The failover loop: tries the route's providers in order (or by weight), skipping those whose circuit is open or
/// that asked to be left alone (Retry-After); fails over on connect errors, timeouts, 429 and 5xx; answers at once on
/// 400/401/403/404/422; waits a jittered backoff between rounds; never exceeds the attempt bound or the request's
/// deadline. A client disconnect cancels the upstream call at once.
/// </summary>
public sealed partial class GatewayRouter(IOptions<GatewayOptions> options, TimeProvider time, GatewayMetrics metrics, ILogger<GatewayRouter> logger)
{
    /// <summary>Spans of upstream attempts; registered with OpenTelemetry by the service defaults.</summary>
    public static readonly ActivitySource ActivitySource = new("HelixAgent.Gateway");

    private readonly GatewayOptions _options = options.Value;

    public TimeSpan Remaining(RequestTrace trace) =>
        TimeSpan.FromSeconds(_options.DeadlineSeconds) - time.GetElapsedTime(trace.StartTimestamp);

    /// <summary>
    /// Runs <paramref name="attempt"/> against the route's providers until one succeeds. <paramref name="budget"/> gives
    /// the first timeout of an attempt (whole call, or time to first token for streams); the attempt may change it on
    /// the cancellation source it receives. On success the caller owns (and must dispose) that source.
    /// </summary>
    public async Task<(AttemptSuccess<T>? Success, GatewayError? Error)> RunAsync<T>(
        ModelRoute route,
        RequestTrace trace,
        Func<RouteTarget, TimeSpan> budget,
        Func<RouteTarget, CancellationTokenSource, Task<T>> attempt,
        Func<RouteTarget, bool>? eligible,
        CancellationToken clientAborted)
    {
        UpstreamException? last = null;
        var onlyRateLimited = true;
        for (var round = 0; trace.Attempts < _options.MaxAttempts; round++)
        {
            var triedThisRound = false;
            foreach (var target in Order(route))
            {
                if (trace.Attempts >= _options.MaxAttempts || Remaining(trace) <= TimeSpan.Zero)
                {
                    break;
                }
                if (eligible is not null && !eligible(target))
                {
                    continue;
                }
                var state = target.Provider.State;
                if (!state.TryAcquire(out var isProbeCall))
                {
                    continue;
                }
                triedThisRound = true;
                trace.Attempts++;
                // One span per upstream attempt (OpenTelemetry GenAI conventions), children of the request's span.
                using var span = ActivitySource.StartActivity($"{route.Id} {target.Provider.Name}", ActivityKind.Client);
                span?.SetTag("gen_ai.system", target.Provider.Adapter.Type);
                span?.SetTag("gen_ai.operation.name", "chat");
                span?.SetTag("gen_ai.request.model", target.UpstreamModel);
                span?.SetTag("helixagent.provider", target.Provider.Name);
                span?.SetTag("helixagent.attempt", trace.Attempts);
                var cts = CancellationTokenSource.CreateLinkedTokenSource(clientAborted);
                var timeout = Min(budget(target), Remaining(trace));
                cts.CancelAfter(timeout);
                var started = time.GetTimestamp();
                try
                {
                    var value = await attempt(target, cts);
                    var elapsed = time.GetElapsedTime(started);
                    state.RecordSuccess(elapsed);
                    metrics.ProviderAttempt(target.Provider.Name, "success", elapsed);
                    span?.SetStatus(ActivityStatusCode.Ok);
                    trace.Provider = target.Provider.Name;
                    trace.Served = target;
                    return (new AttemptSuccess<T>(value, target, cts), null);
                }
                catch (UpstreamException ex) when (ex.Kind == UpstreamFailure.BadRequest)
                {
                    // The provider is fine; the request is not. Answer now, never retry.
                    cts.Dispose();
                    var elapsed = time.GetElapsedTime(started);
                    state.RecordSuccess(elapsed);
                    metrics.ProviderAttempt(target.Provider.Name, "bad_request", elapsed);
                    trace.Provider = target.Provider.Name;
                    LogProviderError(logger, target.Provider.Name, route.Id, ex.StatusCode ?? 0, ex.Kind, ex.Message);
                    var status = ex.StatusCode is 413 ? 413 : 400;
                    return (null, new GatewayError(status, ex.Message, "invalid_request_error", "upstream_rejected_request"));
                }
                catch (UpstreamException ex)
                {
                    cts.Dispose();
                    metrics.ProviderAttempt(target.Provider.Name, GatewayMetrics.Outcome(ex.Kind), time.GetElapsedTime(started));
                    span?.SetStatus(ActivityStatusCode.Error, ex.Message);
                    span?.SetTag("error.type", GatewayMetrics.Outcome(ex.Kind));
                    state.RecordFailure(ex.Kind, ex.Message, ex.RetryAfter);
                    LogProviderError(logger, target.Provider.Name, route.Id, ex.StatusCode ?? 0, ex.Kind, ex.Message);
                    trace.Provider = target.Provider.Name;
                    if (!ex.IsRetryable)
                    {
                        return (null, new GatewayError(502, $"Provider {target.Provider.Name} rejected the gateway's credentials: {ex.Message}",
                            "upstream_error", "upstream_unauthorized"));
                    }
                    onlyRateLimited &= ex.Kind == UpstreamFailure.RateLimited;
                    last = ex;
                }
                catch (OperationCanceledException) when (clientAborted.IsCancellationRequested)
                {
                    cts.Dispose();
                    if (isProbeCall)
                    {
                        state.ReleaseProbe();
                    }
                    throw;
                }
                catch (OperationCanceledException)
                {
                    cts.Dispose();
                    var message = $"{target.Provider.Name}: no answer within {timeout.TotalSeconds:0.###}s";
                    metrics.ProviderAttempt(target.Provider.Name, "timeout", time.GetElapsedTime(started));
                    span?.SetStatus(ActivityStatusCode.Error, message);
                    span?.SetTag("error.type", "timeout");
                    state.RecordFailure(UpstreamFailure.Timeout, message, null);
                    LogProviderError(logger, target.Provider.Name, route.Id, 0, UpstreamFailure.Timeout, message);
                    trace.Provider = target.Provider.Name;
                    onlyRateLimited = false;
                    last = new UpstreamException(UpstreamFailure.Timeout, message);
                }
            }

            if (Remaining(trace) <= TimeSpan.Zero || trace.Attempts >= _options.MaxAttempts)
            {
                break;
            }
            if (!triedThisRound)
            {
                // Every provider is cooling down or has an open circuit: wait for the soonest Retry-After if it is short.
                var soonest = route.Targets.Select(t => t.Provider.State.CoolingUntil).Where(c => c is not null).Min();
                var wait = soonest is { } until ? until - time.GetUtcNow() : (TimeSpan?)null;
                if (wait is { } w && w <= TimeSpan.FromSeconds(_options.MaxRetryAfterWaitSeconds) && w < Remaining(trace))
                {
                    await Task.Delay(w < TimeSpan.Zero ? TimeSpan.Zero : w, time, clientAborted);
                    continue;
                }
                if (last is null)
                {
                    return (null, soonest is { } s
                        ? new GatewayError(429, $"Every provider for model '{route.Id}' asked to wait (Retry-After).", "rate_limit_error", "upstream_rate_limited", Ceil(s - time.GetUtcNow()))
                        : new GatewayError(502, $"No provider for model '{route.Id}' is available (circuits open).", "upstream_error", "no_provider_available"));
                }
                break;
            }
            var backoff = _options.BackoffMs * Math.Pow(2, round) * (0.5 + Random.Shared.NextDouble());
            await Task.Delay(Min(TimeSpan.FromMilliseconds(backoff), Remaining(trace)), time, clientAborted);
        }

        if (last is null)
        {
            return (null, new GatewayError(502, $"No provider for model '{route.Id}' could take the request.", "upstream_error", "no_provider_available"));
        }
        if (last.Kind == UpstreamFailure.Timeout)
        {
            return (null, new GatewayError(504, $"The upstream did not answer in time: {last.Message}", "timeout_error", "upstream_timeout"));
        }
        if (onlyRateLimited)
        {
            var soonest = route.Targets.Select(t => t.Provider.State.CoolingUntil).Where(c => c is not null).Min();
            return (null, new GatewayError(429, $"Every provider for model '{route.Id}' is rate limited: {last.Message}", "rate_limit_error",
                "upstream_rate_limited", soonest is { } s ? Ceil(s - time.GetUtcNow()) : last.RetryAfter ?? TimeSpan.FromSeconds(1)));
        }
        return (null, new GatewayError(502, $"All providers for model '{route.Id}' failed; last: {last.Message}", "upstream_error", "upstream_unavailable"));
    }

    /// <summary>Ordered: configuration order. Weighted: a weighted random permutation (weight 0 = last resort).</summary>
    private static IEnumerable<RouteTarget> Order(ModelRoute route)
    {
        if (route.Strategy != "weighted" || route.Targets.Count < 2)
        {
            return route.Targets;
        }
        return route.Targets
            .Select(t => (Target: t, Key: t.Provider.Options.Weight <= 0 ? double.MaxValue : -Math.Log(1 - Random.Shared.NextDouble()) / t.Provider.Options.Weight))
            .OrderBy(x => x.Key)
            .Select(x => x.Target);
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static TimeSpan Ceil(TimeSpan t) => TimeSpan.FromSeconds(Math.Max(1, Math.Ceiling(t.TotalSeconds)));

    [LoggerMessage(10, LogLevel.Warning, "provider error: {Provider} for model {Model} ({Status}, {Kind}): {Message}")]
    private static partial void LogProviderError(ILogger logger, string provider, string model, int status, UpstreamFailure kind, string message);
}
