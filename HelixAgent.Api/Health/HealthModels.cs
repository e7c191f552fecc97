namespace HelixAgent.Api.Health;

internal static class HealthStatus
{
    public const string Healthy = "healthy";
    public const string Degraded = "degraded";
    public const string Unhealthy = "unhealthy";
}

/// <summary>The runbook's <c>/health</c> shape.</summary>
internal sealed record HealthResponse(string Status, HealthComponents Components, string Uptime, string Version);

internal sealed record HealthComponents(ComponentHealth Database, ComponentHealth Redis, ProvidersHealth Providers, LedgerHealth Ledger);

/// <summary>The usage ledger: degraded when it cannot keep another row (journal full, disk failing) or lost one in
/// the last 5 minutes; what waits for PostgreSQL, and where.</summary>
internal sealed record LedgerHealth(
    string Status,
    long UnshippedRows,
    double OldestUnshippedSeconds,
    long JournalBytes,
    long LostRows,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    string? Error = null)
{
    public static LedgerHealth Of(HelixAgent.Api.Ledger.CompletionLedger ledger) => ledger.Problem is { } problem
        ? new(HealthStatus.Degraded, ledger.PendingRows, Math.Round(ledger.OldestUnshippedSeconds, 1), ledger.JournalBytes, ledger.LostRows, problem)
        : new(HealthStatus.Healthy, ledger.PendingRows, Math.Round(ledger.OldestUnshippedSeconds, 1), ledger.JournalBytes, ledger.LostRows);
}

internal sealed record ComponentHealth(
    string Status,
    double LatencyMs,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    string? Error = null);

internal sealed record ProvidersHealth(string Status, int Active);

/// <summary><c>/health/detailed</c>: the basic report plus what an operator needs to dig in. No secrets.</summary>
internal sealed record DetailedHealthResponse(
    string Status,
    HealthComponents Components,
    string Uptime,
    string Version,
    bool Ready,
    bool Draining,
    bool Maintenance,
    RateLimitHealth RateLimits,
    ReplicaHealth ReadReplica,
    SchemaHealth Schema,
    PoolStats DatabasePool,
    ProcessStats Process,
    IReadOnlyList<ProviderDetail> Providers,
    CacheStats Cache,
    DateTimeOffset CheckedAt);

/// <summary>One provider as <c>/v1/providers</c> shows it, without its models: state, circuit, measured latency.</summary>
internal sealed record ProviderDetail(string Name, string Type, string Status, string Circuit, double LatencyMs, double ErrorRate, DateTimeOffset? CoolingUntil);

/// <summary>The response cache as this replica counts it (no Redis round trip): what <c>GET /admin/cache</c> shows.</summary>
internal sealed record CacheStats(
    string Mode,
    int TtlSeconds,
    long Hits,
    long Misses,
    double HitRate,
    bool LocalActive,
    long LocalHits,
    long LocalEntries,
    long LocalBytes,
    long LocalMaxBytes);

/// <summary>Degraded when Redis is unreachable and each replica enforces limits alone.</summary>
internal sealed record RateLimitHealth(string Status, bool Degraded, long Admitted, long Rejected, long DegradedDecisions);

/// <summary>The optional read replica: whether reads go to it, and why not.</summary>
internal sealed record ReplicaHealth(bool Configured, bool ServingReads, double? LagSeconds, string? Problem);

internal sealed record SchemaHealth(long Version, long ExpectedVersion, bool UpToDate);

internal sealed record PoolStats(long Idle, long Used, long Pending, long Max);

internal sealed record ProcessStats(
    long WorkingSetBytes,
    long GcHeapBytes,
    long TotalAllocatedBytes,
    int Gen0Collections,
    int Gen1Collections,
    int Gen2Collections,
    int ThreadCount,
    long ThreadPoolQueueLength);

internal sealed record ReadyResponse(string Status, bool Draining, bool Maintenance, long SchemaVersion, long ExpectedSchemaVersion);
