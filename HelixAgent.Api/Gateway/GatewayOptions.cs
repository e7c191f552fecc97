using System.ComponentModel.DataAnnotations;

namespace HelixAgent.Api.Gateway;

/// <summary>Routing and failover settings (<c>Gateway</c> section).</summary>
public sealed class GatewayOptions
{
    public const string Section = "Gateway";

    /// <summary>Request bodies above this get 413.</summary>
    [Range(1024, 256 * 1024 * 1024)]
    public long MaxRequestBodyBytes { get; set; } = 4 * 1024 * 1024;

    /// <summary>Upstream attempts per request across all providers of the route (retries included).</summary>
    [Range(1, 20)]
    public int MaxAttempts { get; set; } = 4;

    /// <summary>One overall deadline per request, streams included.</summary>
    [Range(1, 3600)]
    public double DeadlineSeconds { get; set; } = 600;

    /// <summary>Base of the jittered backoff between rounds over the route's providers.</summary>
    [Range(0, 10000)]
    public int BackoffMs { get; set; } = 100;

    /// <summary>Longest upstream Retry-After the gateway waits out inside one request before answering 429.</summary>
    [Range(0, 60)]
    public double MaxRetryAfterWaitSeconds { get; set; } = 2;

    /// <summary><c>ordered</c> (first healthy provider first) or <c>weighted</c> (by provider weight); a route may override.</summary>
    [RegularExpression("^(ordered|weighted)$")]
    public string Strategy { get; set; } = "ordered";

    /// <summary>Consecutive failures that open a provider's circuit.</summary>
    [Range(1, 1000)]
    public int CircuitFailureThreshold { get; set; } = 5;

    /// <summary>How long an open circuit rejects calls before one half-open probe call is let through.</summary>
    [Range(0.1, 3600)]
    public double CircuitBreakSeconds { get; set; } = 30;

    /// <summary>Interval of the active, token-free provider probes (0 disables them).</summary>
    [Range(0, 3600)]
    public double ProbeIntervalSeconds { get; set; } = 30;

    /// <summary>
    /// What a Messages (or Responses) request's hints do on a target that has no equivalent (Anthropic's
    /// <c>thinking</c>, <c>context_management</c>, <c>cache_control</c>... on an OpenAI-compatible model): <c>drop</c>
    /// them and name them in <c>x-helixagent-dropped</c> and the ledger row, or <c>reject</c> the request with a 400
    /// naming the first.
    /// </summary>
    [RegularExpression("^(drop|reject)$")]
    public string UnsupportedHints { get; set; } = "drop";

    /// <summary>Allows the simulator provider in Production (always allowed in other environments).</summary>
    public bool EnableSimulatorInProduction { get; set; }
}

/// <summary>A model route (<c>Routes:&lt;model&gt;</c>): an ordered list of provider targets plus aliases.</summary>
public sealed class RouteOptions
{
    /// <summary>Targets as <c>provider</c> (same model name upstream) or <c>provider/upstream-model</c>.</summary>
    public List<string> Targets { get; set; } = [];

    public List<string> Aliases { get; set; } = [];

    /// <summary>Overrides <see cref="GatewayOptions.Strategy"/> for this route.</summary>
    public string? Strategy { get; set; }
}
