using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;
using Npgsql;

namespace HelixAgent.Api.Infrastructure;

public sealed class ReplicaOptions
{
    public const string Section = "Database:Replica";

    /// <summary>Reads go to the replica only while its replay lag is at most this.</summary>
    [Range(0, 86400)]
    public double MaxLagSeconds { get; set; } = 10;

    /// <summary>How often the replica's reachability and lag are checked.</summary>
    [Range(0.1, 3600)]
    public double CheckSeconds { get; set; } = 2;
}

/// <summary>
/// The optional read replica (<c>ConnectionStrings:helixagent-db-replica</c>): read-only queries that tolerate a few
/// seconds of staleness (usage reports, key listings) use <see cref="ForReads"/>; writes and key checks always use the
/// primary. A background check measures the replica's replay lag; while it is unreachable or lags more than
/// <see cref="ReplicaOptions.MaxLagSeconds"/>, reads fall back to the primary.
/// </summary>
public sealed partial class ReadReplica : BackgroundService
{
    public const string ConnectionName = KnownResourceNames.Database + "-replica";

    private readonly NpgsqlDataSource _primary;
    private readonly NpgsqlDataSource? _replica;
    private readonly ReplicaOptions _options;
    private readonly ILogger<ReadReplica> _logger;
    private volatile bool _usable;
    private double? _lagSeconds;
    private volatile string? _problem = "not checked yet";

    public ReadReplica(NpgsqlDataSource primary, IConfiguration configuration, IOptions<ReplicaOptions> options, ILogger<ReadReplica> logger)
    {
        _primary = primary;
        _options = options.Value;
        _logger = logger;
        var cs = configuration.GetConnectionString(ConnectionName);
        if (!string.IsNullOrWhiteSpace(cs))
        {
            var builder = new NpgsqlDataSourceBuilder(cs);
            HelixAgent.Data.DatabasePool.Configure(builder, configuration[HelixAgent.Data.DatabasePool.MaxOpenKey]);
            builder.Name += ":replica";
            _replica = builder.Build();
        }
    }

    public bool Configured => _replica is not null;
    public bool ServingReads => _replica is not null && _usable;
    public double? LagSeconds => _lagSeconds;
    public string? Problem => _problem;

    /// <summary>The replica when it is healthy and close enough, else the primary.</summary>
    public NpgsqlDataSource ForReads() => _usable && _replica is not null ? _replica : _primary;

    /// <summary>
    /// Runs a read on <see cref="ForReads"/>; if the replica fails it (down, or not caught up with a new table), the
    /// replica is set aside until its next good check and the read is retried on the primary.
    /// </summary>
    public async Task<T> ReadAsync<T>(Func<NpgsqlDataSource, Task<T>> read)
    {
        var source = ForReads();
        if (ReferenceEquals(source, _primary))
        {
            return await read(_primary);
        }
        try
        {
            return await read(source);
        }
        catch (NpgsqlException ex)
        {
            Set(ex.Message);
            return await read(_primary);
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (_replica is null)
        {
            return;
        }
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(_options.CheckSeconds));
        do
        {
            await CheckAsync(stoppingToken);
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    internal async Task CheckAsync(CancellationToken stoppingToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        cts.CancelAfter(TimeSpan.FromSeconds(Math.Max(1, _options.CheckSeconds)));
        try
        {
            await using var cmd = _replica!.CreateCommand("""
                SELECT pg_is_in_recovery(),
                       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END
                """);
            await using var r = await cmd.ExecuteReaderAsync(cts.Token);
            await r.ReadAsync(cts.Token);
            var inRecovery = r.GetBoolean(0);
            var lag = Convert.ToDouble(r.GetValue(1), System.Globalization.CultureInfo.InvariantCulture);
            _lagSeconds = lag;
            var problem = !inRecovery ? "the replica connection points at a primary (not in recovery)"
                : lag > _options.MaxLagSeconds ? $"replay lag {lag:0.#}s exceeds {_options.MaxLagSeconds}s"
                : null;
            Set(problem);
        }
        catch (Exception ex) when (ex is NpgsqlException or OperationCanceledException or TimeoutException && !stoppingToken.IsCancellationRequested)
        {
            _lagSeconds = null;
            Set(ex is OperationCanceledException ? "no answer in time" : ex.Message);
        }
    }

    private void Set(string? problem)
    {
        var usable = problem is null;
        if (usable != _usable)
        {
            if (usable)
            {
                LogServing(_logger);
            }
            else
            {
                LogFallback(_logger, problem!);
            }
        }
        _problem = problem;
        _usable = usable;
    }

    public override void Dispose()
    {
        _replica?.Dispose();
        base.Dispose();
    }

    [LoggerMessage(50, LogLevel.Information, "Read replica is healthy: reads go to it")]
    private static partial void LogServing(ILogger logger);

    [LoggerMessage(51, LogLevel.Warning, "Read replica not used ({Reason}): reads go to the primary")]
    private static partial void LogFallback(ILogger logger, string reason);
}
