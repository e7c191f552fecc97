using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Ledger;
using HelixAgent.Api.Observability;

namespace HelixAgent.Api.Gateway;

/// <summary>
/// The last stage of every request: whatever happened (answer, failure, client disconnect), one ledger row, the request
/// span's tags, the metrics, and the rate limiter's settlement with the actual usage.
/// </summary>
internal static partial class GatewayApi
{
    /// <summary>Serves an admitted request through <paramref name="serve"/> and records it, whatever happens.</summary>
    private static async Task ServeAsync(HttpContext ctx, GatewayServices s, Admitted admitted, RequestTrace trace, Func<Task> serve)
    {
        trace.KeyId = admitted.Key?.Id;
        trace.KeyName = admitted.Key?.Name;
        trace.Team = admitted.Key?.Team;
        ctx.Response.Headers["x-request-id"] = trace.RequestId;
        if (admitted.Dialect.RequestIdHeader is { } requestIdHeader)
        {
            ctx.Response.Headers[requestIdHeader] = trace.RequestId;
        }
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
            Price(s, trace);
            s.Ledger.Record(ToRecord(trace, s.Time));
            TagRequestSpan(trace);
            s.Metrics.RequestCompleted(trace, s.Time.GetElapsedTime(trace.StartTimestamp).TotalSeconds);
            s.Limiter.Settle(admitted.Ticket, trace.Usage.TotalTokens, trace.CostUsd);
        }
    }

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
        if (trace.DroppedHints is not null)
        {
            span.SetTag("helixagent.dropped", trace.DroppedHints);
        }
        if (trace.ErrorType is not null)
        {
            span.SetTag("error.type", trace.ErrorType);
        }
    }

    private static CompletionRecord ToRecord(RequestTrace t, TimeProvider time) => new(
        t.RequestId, t.KeyId, t.KeyName, t.Model, t.Provider, t.Endpoint, t.Status, t.ErrorType,
        t.Usage.PromptTokens, t.Usage.CompletionTokens,
        time.GetElapsedTime(t.StartTimestamp).TotalMilliseconds, t.TtftMs,
        t.CacheHit, t.Stream, t.Attempts, time.GetUtcNow(), t.UsageEstimated, t.DroppedHints, t.CostUsd, t.CostSavedUsd, t.Team);

    /// <summary>
    /// Prices the request once its usage is final (<see cref="Pricing.cs"/>): the serving target's price applied to the
    /// usage, 0 for a cache hit (its saving is set where it was served) or a request that spent no tokens, null when a
    /// target that spent tokens has no price. An ensemble prices itself, member by member.
    /// </summary>
    internal static void Price(GatewayServices s, RequestTrace trace)
    {
        if (trace.Priced)
        {
            return;
        }
        trace.Priced = true;
        if (trace.CacheHit)
        {
            trace.CostUsd = 0;
            return;
        }
        var price = trace.Served is { } served ? s.Prices.For(served) : null;
        trace.CostUsd = price is not null ? price.Cost(trace.Usage) : trace.Usage.TotalTokens == 0 ? 0 : null;
    }

    /// <summary><c>x-helixagent-cost-usd</c> on an answer whose usage is known before its body (not on a stream's).</summary>
    private static void SetCostHeader(HttpContext ctx, GatewayServices s, RequestTrace trace)
    {
        Price(s, trace);
        if (trace.CostUsd is { } cost)
        {
            ctx.Response.Headers["x-helixagent-cost-usd"] = PriceTable.Format(cost);
        }
        if (trace.CostSavedUsd is { } saved)
        {
            ctx.Response.Headers["x-helixagent-cost-saved-usd"] = PriceTable.Format(saved);
        }
    }

    /// <summary>
    /// A request the gateway could not serve (5xx to the client: every provider failed, a stream broke after its first
    /// byte, a defect). Each failed attempt before it was a <c>provider error</c> warning; this is the line an on-call
    /// engineer's <c>grep ERROR</c> finds.
    /// </summary>
    [LoggerMessage(30, LogLevel.Error, "request failed: {Endpoint} for model {Model} answered {Status} ({ErrorType}) after {Attempts} attempts: {Reason}")]
    private static partial void LogRequestFailed(ILogger logger, string endpoint, string model, int status, string? errorType, int attempts, string? reason);
}
