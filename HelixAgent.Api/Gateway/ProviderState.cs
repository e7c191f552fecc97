namespace HelixAgent.Api.Gateway;

public enum CircuitState
{
    Closed,
    Open,
    HalfOpen,
}

/// <summary>
/// Live state of one provider: circuit breaker, Retry-After cool-down, EWMA latency and error rate, last probe.
/// Lock-free: admission is a couple of volatile reads on the hot path, and in half-open exactly one call is let
/// through by compare-and-swap while every other call skips the provider at once (calls are never serialised).
/// </summary>
public sealed class ProviderState(string name, int failureThreshold, TimeSpan breakDuration, TimeProvider time)
{
    private const double Alpha = 0.2;

    private readonly object _statsGate = new();
    private int _consecutiveFailures;
    private long _openUntilTicks;
    private long _coolUntilTicks;
    private int _circuit; // CircuitState
    private int _halfOpenCallInFlight;
    private double _latencyMs;
    private double _errorRate;
    private long _requests;
    private long _failures;
    private volatile bool _probeFailed;
    private volatile string? _lastError;

    public string Name { get; } = name;
    public CircuitState Circuit => (CircuitState)Volatile.Read(ref _circuit);
    public double LatencyMs { get { lock (_statsGate) { return _latencyMs; } } }
    public double ErrorRate { get { lock (_statsGate) { return _errorRate; } } }
    public long Requests => Interlocked.Read(ref _requests);
    public long Failures => Interlocked.Read(ref _failures);
    public string? LastError => _lastError;
    public bool ProbeFailed => _probeFailed;

    /// <summary>When a Retry-After told us to wait, the time it ends.</summary>
    public DateTimeOffset? CoolingUntil
    {
        get
        {
            var until = Interlocked.Read(ref _coolUntilTicks);
            return until > time.GetUtcNow().UtcTicks ? new DateTimeOffset(until, TimeSpan.Zero) : null;
        }
    }

    /// <summary><c>healthy</c>, <c>degraded</c> (errors or cooling down) or <c>unhealthy</c> (circuit open or probe failing).</summary>
    public string Status => Circuit != CircuitState.Closed || _probeFailed ? "unhealthy"
        : ErrorRate > 0.25 || CoolingUntil is not null ? "degraded"
        : "healthy";

    public bool IsHealthy => Status == "healthy";

    /// <summary>
    /// Whether a call may go to this provider now. Returns false while cooling down after a 429, while the circuit is
    /// open, and in half-open for every call but the single probe call.
    /// </summary>
    public bool TryAcquire(out bool isProbeCall)
    {
        isProbeCall = false;
        var now = time.GetUtcNow().UtcTicks;
        if (Interlocked.Read(ref _coolUntilTicks) > now)
        {
            return false;
        }
        switch (Circuit)
        {
            case CircuitState.Closed:
                return true;
            case CircuitState.Open when now >= Interlocked.Read(ref _openUntilTicks):
                if (Interlocked.CompareExchange(ref _halfOpenCallInFlight, 1, 0) == 0)
                {
                    Volatile.Write(ref _circuit, (int)CircuitState.HalfOpen);
                    isProbeCall = true;
                    return true;
                }
                return false;
            default:
                return false;
        }
    }

    public void RecordSuccess(TimeSpan latency)
    {
        Interlocked.Increment(ref _requests);
        Interlocked.Exchange(ref _consecutiveFailures, 0);
        lock (_statsGate)
        {
            _latencyMs = _latencyMs == 0 ? latency.TotalMilliseconds : (Alpha * latency.TotalMilliseconds) + ((1 - Alpha) * _latencyMs);
            _errorRate *= 1 - Alpha;
        }
        if (Circuit != CircuitState.Closed)
        {
            Volatile.Write(ref _circuit, (int)CircuitState.Closed);
            Interlocked.Exchange(ref _halfOpenCallInFlight, 0);
        }
    }

    /// <summary>Counts a failure of the provider (not of the client's request) and opens the circuit when due.</summary>
    public void RecordFailure(UpstreamFailure kind, string message, TimeSpan? retryAfter)
    {
        Interlocked.Increment(ref _requests);
        Interlocked.Increment(ref _failures);
        _lastError = message;
        lock (_statsGate)
        {
            _errorRate = (Alpha * 1) + ((1 - Alpha) * _errorRate);
        }
        if (retryAfter is { } wait && wait > TimeSpan.Zero)
        {
            Interlocked.Exchange(ref _coolUntilTicks, (time.GetUtcNow() + wait).UtcTicks);
        }
        var failures = Interlocked.Increment(ref _consecutiveFailures);
        if (Circuit == CircuitState.HalfOpen || failures >= failureThreshold)
        {
            Interlocked.Exchange(ref _openUntilTicks, (time.GetUtcNow() + breakDuration).UtcTicks);
            Volatile.Write(ref _circuit, (int)CircuitState.Open);
            Interlocked.Exchange(ref _halfOpenCallInFlight, 0);
        }
    }

    /// <summary>The half-open call ended without telling anything about the provider (e.g. the client went away).</summary>
    public void ReleaseProbe()
    {
        if (Circuit == CircuitState.HalfOpen)
        {
            Interlocked.Exchange(ref _openUntilTicks, time.GetUtcNow().UtcTicks);
            Volatile.Write(ref _circuit, (int)CircuitState.Open);
            Interlocked.Exchange(ref _halfOpenCallInFlight, 0);
        }
    }

    public void RecordProbe(bool ok, string? error)
    {
        _probeFailed = !ok;
        if (!ok)
        {
            _lastError = error;
        }
    }

    /// <summary>Closes the circuit and forgets cool-downs (admin reset).</summary>
    public void Reset()
    {
        Interlocked.Exchange(ref _consecutiveFailures, 0);
        Interlocked.Exchange(ref _coolUntilTicks, 0);
        Interlocked.Exchange(ref _halfOpenCallInFlight, 0);
        Volatile.Write(ref _circuit, (int)CircuitState.Closed);
        _probeFailed = false;
    }
}
