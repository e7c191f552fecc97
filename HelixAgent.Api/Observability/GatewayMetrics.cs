using System.Diagnostics;
using System.Diagnostics.Metrics;
using HelixAgent.Api.Access;
using HelixAgent.Api.Gateway;
using HelixAgent.Api.Health;
using HelixAgent.Data;

namespace HelixAgent.Api.Observability;

/// <summary>
/// Every instrument of the gateway, created once from the app's <see cref="IMeterFactory"/> (so each host, and each
/// test server, has its own). The names are the ones the runbook queries; <c>/metrics</c> writes them verbatim and
/// OpenTelemetry sends them over OTLP. Labels are bounded: route template, configured model/alias, provider name,
/// status class, outcome. Never a key, user, request id or raw path.
/// </summary>
public sealed class GatewayMetrics
{
    public const string MeterName = "HelixAgent";

    /// <summary>Seconds, 5 ms … 60 s.</summary>
    public static readonly double[] LatencyBuckets = HelixAgent.Observability.PrometheusExposition.DefaultBuckets;

    /// <summary>Seconds, 0.5 ms … 10 s (database round trips).</summary>
    public static readonly double[] DbBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private static readonly string[] StatusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx"];

    private readonly Counter<long> _requests;
    private readonly Counter<long> _errors;
    private readonly Histogram<double> _duration;
    private readonly Counter<long> _providerRequests;
    private readonly Histogram<double> _providerLatency;
    private readonly Counter<long> _fallbacks;
    private readonly Counter<long> _tokens;
    private readonly Counter<double> _spend;
    private readonly Counter<long> _unpriced;
    private readonly Histogram<double> _ttft;
    private readonly Histogram<double> _dbQuery;
    private readonly Counter<long> _ensembleMembers;
    private readonly Counter<long> _ensembleSelected;
    private readonly Counter<long> _authRejected;
    private long _cacheHits;
    private long _cacheMisses;
    private long _cacheLocalHits;

    internal GatewayMetrics(IMeterFactory meters, ProviderRegistry registry, ClusterRateLimiter limiter, NpgsqlPoolMetrics pool, ResponseCache cache,
        KeyAuthenticator keys)
    {
        var meter = meters.Create(MeterName);
        _requests = meter.CreateCounter<long>("helixagent_requests_total", description: "Client requests on the gateway routes that reached routing.");
        _errors = meter.CreateCounter<long>("helixagent_errors_total", description: "Client requests answered >= 400 or ended with a stream error.");
        _duration = meter.CreateHistogram("helixagent_request_duration", unit: null,
            description: "Gateway request duration in seconds (whole response, streams included).",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _providerRequests = meter.CreateCounter<long>("helixagent_provider_requests_total", description: "Upstream attempts by provider and outcome.");
        _providerLatency = meter.CreateHistogram("helixagent_provider_latency_seconds", unit: null,
            description: "Upstream attempt latency in seconds (to the answer, or to the first token of a stream).",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _fallbacks = meter.CreateCounter<long>("helixagent_fallbacks_total", description: "Requests served after more than one attempt.");
        _tokens = meter.CreateCounter<long>("helixagent_tokens_total", description: "Tokens by direction (prompt, completion).");
        _spend = meter.CreateCounter<double>("helixagent_spend_usd_total", description: "What the served requests cost, in USD (the ledger's cost_usd holds the exact decimals).");
        _unpriced = meter.CreateCounter<long>("helixagent_unpriced_requests_total", description: "Requests that spent tokens on a model without a price (their cost_usd is NULL).");
        _ttft = meter.CreateHistogram("helixagent_time_to_first_token_seconds", unit: null,
            description: "Time to the first content token of served streams, in seconds.",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _dbQuery = meter.CreateHistogram("helixagent_db_query_duration_seconds", unit: null,
            description: "PostgreSQL query duration in seconds by operation.",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DbBuckets });

        _ensembleMembers = meter.CreateCounter<long>("helixagent_ensemble_member_answers_total",
            description: "Ensemble members asked, by provider and outcome (ok, error, timeout: no answer within the ensemble's timeout).");
        _ensembleSelected = meter.CreateCounter<long>("helixagent_ensemble_selected_total", description: "Ensemble answers served, by the provider whose answer was chosen.");

        meter.CreateObservableGauge("helixagent_provider_health", () => ProviderHealth(registry),
            description: "Provider availability: 1 healthy, 0.5 degraded, 0 unhealthy.");

        meter.CreateObservableGauge("helixagent_cache_hit_rate", CacheHitRate, description: "Response cache hits / lookups (0 without lookups).");
        meter.CreateObservableCounter("helixagent_cache_hits_total", () => Interlocked.Read(ref _cacheHits), description: "Response cache hits.");
        meter.CreateObservableCounter("helixagent_cache_misses_total", () => Interlocked.Read(ref _cacheMisses), description: "Response cache misses.");
        meter.CreateObservableCounter("helixagent_cache_local_hits_total", () => Interlocked.Read(ref _cacheLocalHits),
            description: "Response cache hits answered from this replica's local copies, without a Redis round trip (also in hits).");
        meter.CreateObservableGauge("helixagent_cache_local_entries", () => cache.LocalEntries, description: "Local copies of cached answers this replica holds.");
        meter.CreateObservableGauge("helixagent_cache_local_bytes", () => cache.LocalBytes,
            description: "Bytes of local copies, counted against Cache:LocalMaxBytes.");

        meter.CreateObservableGauge("helixagent_db_pool_idle", () => pool.Snapshot().Idle, description: "Idle PostgreSQL connections in the pool.");
        meter.CreateObservableGauge("helixagent_db_pool_used", () => pool.Snapshot().Used, description: "PostgreSQL connections in use.");
        meter.CreateObservableGauge("helixagent_db_pool_waiting", () => pool.Snapshot().Pending, description: "Callers waiting for a PostgreSQL connection.");
        meter.CreateObservableGauge("helixagent_db_pool_max", () => pool.Snapshot().Max, description: "Maximum PostgreSQL connections in the pool.");

        meter.CreateObservableCounter("helixagent_rate_limit_admitted_total", () => limiter.Admitted, description: "Requests admitted by the per-key rate limiter.");
        meter.CreateObservableCounter("helixagent_rate_limit_rejected_total", () => limiter.Rejected, description: "Requests rejected by the per-key rate limiter.");
        meter.CreateObservableCounter("helixagent_budget_rejected_total", () => (IEnumerable<Measurement<long>>)[
                new(limiter.BudgetRejected(BudgetScope.Key), new KeyValuePair<string, object?>("scope", "key")),
                new(limiter.BudgetRejected(BudgetScope.Team), new KeyValuePair<string, object?>("scope", "team"))],
            description: "Requests refused because a key's or a team's budget had no room for their worst-case cost.");
        meter.CreateObservableGauge("helixagent_budget_remaining_usd", limiter.Budgets.Remaining,
            description: $"What is left of a budget (USD), as this replica last knew it, for the {BudgetBook.GaugeLimit} budgets nearest their limit.");
        meter.CreateObservableGauge("helixagent_budget_limit_usd", limiter.Budgets.Limits,
            description: "The budget (USD) of each budget helixagent_budget_remaining_usd reports.");
        meter.CreateObservableGauge("helixagent_rate_limit_degraded", () => limiter.IsDegraded ? 1 : 0,
            description: "1 while Redis is unreachable and limits are enforced per replica.");

        _authRejected = meter.CreateCounter<long>("helixagent_auth_rejected_total",
            description: "Requests refused before routing, by reason (missing_api_key, invalid_api_key, insufficient_scope, key_store_unavailable).");
        meter.CreateObservableGauge("helixagent_auth_cache_entries", () => keys.CachedEntries,
            description: "API keys this replica holds in memory: known keys, and unknown ones for Auth:NegativeCacheSeconds.");
    }

    /// <summary>A request refused by key checking; <paramref name="reason"/> is its error code (a fixed set).</summary>
    public void AuthRejected(string reason) => _authRejected.Add(1, new KeyValuePair<string, object?>("reason", reason));

    /// <summary>One finished client request (called once, where its ledger row is recorded).</summary>
    public void RequestCompleted(RequestTrace trace, double seconds)
    {
        var route = RouteOf(trace.Endpoint);
        var provider = trace.Provider ?? "none";
        var statusClass = StatusClass(trace.Status);
        var tags = new TagList
        {
            { "route", route },
            { "model", trace.Model },
            { "provider", provider },
            { "status_class", statusClass },
        };
        _requests.Add(1, tags);
        if (trace.Status >= 400)
        {
            _errors.Add(1, tags);
        }
        _duration.Record(seconds, new TagList { { "route", route }, { "model", trace.Model }, { "status_class", statusClass } });

        if (trace.Status < 400 && trace.Provider is not null)
        {
            if (trace.Attempts > 1 && !trace.Ensemble) // an ensemble asks several providers by design: not a fallback
            {
                _fallbacks.Add(1, new KeyValuePair<string, object?>("model", trace.Model));
            }
            if (trace.Stream && trace.TtftMs is { } ttft)
            {
                _ttft.Record(ttft / 1000, new KeyValuePair<string, object?>("model", trace.Model), new KeyValuePair<string, object?>("provider", provider));
            }
        }
        if (trace.CostUsd is { } cost && cost > 0)
        {
            _spend.Add((double)cost, new KeyValuePair<string, object?>("model", trace.Model), new KeyValuePair<string, object?>("provider", provider));
        }
        else if (trace.CostUsd is null && trace.Priced)
        {
            _unpriced.Add(1, new KeyValuePair<string, object?>("model", trace.Model));
        }
        if (trace.Usage.PromptTokens > 0)
        {
            _tokens.Add(trace.Usage.PromptTokens, new KeyValuePair<string, object?>("direction", "prompt"),
                new KeyValuePair<string, object?>("model", trace.Model), new KeyValuePair<string, object?>("provider", provider));
        }
        if (trace.Usage.CompletionTokens > 0)
        {
            _tokens.Add(trace.Usage.CompletionTokens, new KeyValuePair<string, object?>("direction", "completion"),
                new KeyValuePair<string, object?>("model", trace.Model), new KeyValuePair<string, object?>("provider", provider));
        }
    }

    /// <summary>One upstream attempt and how it ended.</summary>
    /// <summary>One member of an ensemble: it answered (<c>ok</c>), failed (<c>error</c>) or ran out of the ensemble's time (<c>timeout</c>).</summary>
    public void EnsembleMember(string model, string provider, string outcome) =>
        _ensembleMembers.Add(1, new TagList { { "model", model }, { "provider", provider }, { "outcome", outcome } });

    /// <summary>An ensemble answer was served from <paramref name="provider"/>'s answer.</summary>
    public void EnsembleSelected(string model, string provider) =>
        _ensembleSelected.Add(1, new TagList { { "model", model }, { "provider", provider } });

    public void ProviderAttempt(string provider, string outcome, TimeSpan elapsed)
    {
        var p = new KeyValuePair<string, object?>("provider", provider);
        var o = new KeyValuePair<string, object?>("outcome", outcome);
        _providerRequests.Add(1, p, o);
        _providerLatency.Record(elapsed.TotalSeconds, p, o);
    }

    public static string Outcome(UpstreamFailure kind) => kind switch
    {
        UpstreamFailure.Connect => "connect",
        UpstreamFailure.Timeout => "timeout",
        UpstreamFailure.RateLimited => "rate_limited",
        UpstreamFailure.ServerError => "server_error",
        UpstreamFailure.BadRequest => "bad_request",
        UpstreamFailure.Unauthorized => "unauthorized",
        _ => "protocol",
    };

    /// <summary>One PostgreSQL query (<paramref name="operation"/> is a fixed name such as <c>ledger_insert</c>).</summary>
    public void DbQuery(string operation, TimeSpan elapsed) =>
        _dbQuery.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("operation", operation));

    /// <summary>For the response cache: one lookup.</summary>
    public long CacheHits => Interlocked.Read(ref _cacheHits);
    public long CacheMisses => Interlocked.Read(ref _cacheMisses);

    public long CacheLocalHits => Interlocked.Read(ref _cacheLocalHits);

    public void CacheLookup(bool hit, bool local = false)
    {
        Interlocked.Increment(ref hit ? ref _cacheHits : ref _cacheMisses);
        if (hit && local)
        {
            Interlocked.Increment(ref _cacheLocalHits);
        }
    }

    private double CacheHitRate()
    {
        var hits = Interlocked.Read(ref _cacheHits);
        var total = hits + Interlocked.Read(ref _cacheMisses);
        return total == 0 ? 0 : (double)hits / total;
    }

    private static IEnumerable<Measurement<double>> ProviderHealth(ProviderRegistry registry)
    {
        foreach (var p in registry.Providers)
        {
            var value = p.State.Status switch
            {
                HealthStatus.Healthy => 1.0,
                HealthStatus.Degraded => 0.5,
                _ => 0.0,
            };
            yield return new Measurement<double>(value, new KeyValuePair<string, object?>("provider", p.Name));
        }
    }

    internal static string RouteOf(string endpoint) => endpoint switch
    {
        "chat.completions" => "/v1/chat/completions",
        "completions" => "/v1/completions",
        "embeddings" => "/v1/embeddings",
        "messages" => "/v1/messages",
        "messages.count_tokens" => "/v1/messages/count_tokens",
        "responses" => "/v1/responses",
        _ => "other",
    };

    internal static string StatusClass(int status) => status is >= 100 and < 600 ? StatusClasses[status / 100 - 1] : "5xx";
}
