using System.Diagnostics;
using System.Reflection;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Observability;
using HelixAgent.Data;
using Microsoft.Extensions.Options;
using Npgsql;
using StackExchange.Redis;

namespace HelixAgent.Api.Health;

/// <summary>What the probes of PostgreSQL, Redis and the providers found at one moment.</summary>
internal sealed record HealthSnapshot(
    ComponentHealth Database,
    ComponentHealth Redis,
    ProvidersHealth Providers,
    long SchemaVersion,
    DateTimeOffset CheckedAt)
{
    /// <summary>PostgreSQL down → unhealthy; Redis or providers down → degraded (requests still served).</summary>
    public string Status =>
        Database.Status != HealthStatus.Healthy ? HealthStatus.Unhealthy
        : Redis.Status != HealthStatus.Healthy || Providers.Status != HealthStatus.Healthy ? HealthStatus.Degraded
        : HealthStatus.Healthy;
}

/// <summary>Source of the providers component of <c>/health</c>.</summary>
internal interface IProviderHealthSource
{
    ProvidersHealth Current();
}

/// <summary>
/// Runs real, cheap probes (one PostgreSQL round trip that also reads the schema version, one Redis PING) with short
/// timeouts. Results are shared for <see cref="HealthOptions.CacheSeconds"/> and concurrent callers share one probe,
/// so a probe storm costs the database at most one query per interval.
/// </summary>
internal sealed class HealthReporter(
    NpgsqlDataSource db,
    IServiceProvider services,
    IProviderHealthSource providers,
    DrainState drain,
    IOptions<HealthOptions> options,
    GatewayMetrics metrics,
    TimeProvider time)
{
    private static readonly DateTimeOffset ProcessStart = Process.GetCurrentProcess().StartTime.ToUniversalTime();

    public static string Version { get; } = ReadVersion();

    private readonly Lock _gate = new();
    private HealthSnapshot? _last;
    private Task<HealthSnapshot>? _probe;
    private long _lastKnownSchema = -1;

    public bool IsDraining => drain.IsDraining;

    /// <summary>Newest schema version the probes saw; survives a database outage (-1 until first seen).</summary>
    public long LastKnownSchemaVersion => Interlocked.Read(ref _lastKnownSchema);

    public string Uptime => FormatUptime(time.GetUtcNow() - ProcessStart);

    public async ValueTask<HealthSnapshot> GetAsync()
    {
        var last = _last;
        if (last is not null && time.GetUtcNow() - last.CheckedAt < TimeSpan.FromSeconds(options.Value.CacheSeconds))
        {
            return last;
        }
        Task<HealthSnapshot> probe;
        lock (_gate)
        {
            if (_probe is null || _probe.IsCompleted)
            {
                _probe = ProbeAsync();
            }
            probe = _probe;
        }
        return await probe;
    }

    private async Task<HealthSnapshot> ProbeAsync()
    {
        var dbTask = ProbeDatabaseAsync();
        var redisTask = ProbeRedisAsync();
        var (database, schema) = await dbTask;
        var redis = await redisTask;
        if (schema >= 0)
        {
            Interlocked.Exchange(ref _lastKnownSchema, schema);
        }
        var snapshot = new HealthSnapshot(database, redis, providers.Current(), LastKnownSchemaVersion, time.GetUtcNow());
        _last = snapshot;
        return snapshot;
    }

    private async Task<(ComponentHealth, long)> ProbeDatabaseAsync()
    {
        var start = time.GetTimestamp();
        using var cts = new CancellationTokenSource(options.Value.DatabaseTimeoutMs);
        try
        {
            await using var conn = await db.OpenConnectionAsync(cts.Token);
            var queryStart = time.GetTimestamp();
            var version = await SchemaMigrator.CurrentVersionAsync(conn, cts.Token);
            metrics.DbQuery("health_probe", time.GetElapsedTime(queryStart));
            return (new ComponentHealth(HealthStatus.Healthy, Elapsed(start)), version);
        }
        catch (Exception ex) when (ex is NpgsqlException or OperationCanceledException or TimeoutException or System.Net.Sockets.SocketException)
        {
            // Npgsql reports a cancelled open as an NpgsqlException around a TimeoutException ("The operation has timed out").
            var timedOut = cts.IsCancellationRequested || ex is OperationCanceledException or TimeoutException || ex.InnerException is TimeoutException;
            var reason = timedOut ? $"no answer within {options.Value.DatabaseTimeoutMs} ms" : ex.Message;
            return (new ComponentHealth(HealthStatus.Unhealthy, Elapsed(start), reason), -1);
        }
    }

    private async Task<ComponentHealth> ProbeRedisAsync()
    {
        var start = time.GetTimestamp();
        try
        {
            var redis = services.GetRequiredService<IConnectionMultiplexer>();
            if (!redis.IsConnected)
            {
                return new ComponentHealth(HealthStatus.Unhealthy, Elapsed(start), "not connected");
            }
            await redis.GetDatabase().PingAsync().WaitAsync(TimeSpan.FromMilliseconds(options.Value.RedisTimeoutMs));
            return new ComponentHealth(HealthStatus.Healthy, Elapsed(start));
        }
        catch (Exception ex) when (RedisOutage.Is(ex))
        {
            var reason = ex is TimeoutException ? $"no answer within {options.Value.RedisTimeoutMs} ms" : ex.Message;
            return new ComponentHealth(HealthStatus.Unhealthy, Elapsed(start), reason);
        }
    }

    private double Elapsed(long start) => Math.Round(time.GetElapsedTime(start).TotalMilliseconds, 2);

    internal static string FormatUptime(TimeSpan t) =>
        $"{(long)t.TotalHours}h{t.Minutes}m{t.Seconds}s";

    private static string ReadVersion()
    {
        var info = typeof(HealthReporter).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        if (string.IsNullOrEmpty(info))
        {
            return typeof(HealthReporter).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";
        }
        var plus = info.IndexOf('+');
        return plus < 0 ? info : info[..plus];
    }
}
