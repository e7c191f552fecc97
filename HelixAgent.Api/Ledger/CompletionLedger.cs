using System.ComponentModel.DataAnnotations;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using HelixAgent.Api.Observability;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;

namespace HelixAgent.Api.Ledger;

/// <summary>One served request, as it lands in <c>completions</c>.</summary>
public sealed record CompletionRecord(
    string RequestId,
    Guid? KeyId,
    string? KeyName,
    string Model,
    string? Provider,
    string Endpoint,
    int Status,
    string? ErrorType,
    int PromptTokens,
    int CompletionTokens,
    double LatencyMs,
    double? TtftMs,
    bool CacheHit,
    bool Stream,
    int Attempts,
    DateTimeOffset CreatedAt,
    bool UsageEstimated = false,
    string? DroppedHints = null);

public sealed class LedgerOptions
{
    public const string Section = "Ledger";

    /// <summary>Rows waiting in memory (e.g. during a PostgreSQL outage) before new ones are counted lost.</summary>
    [Range(1, 10_000_000)]
    public int Capacity { get; set; } = 200_000;

    [Range(1, 100_000)]
    public int BatchSize { get; set; } = 1000;

    /// <summary>Longest a row waits for its batch to fill.</summary>
    [Range(0, 60_000)]
    public int FlushIntervalMs { get; set; } = 200;
}

/// <summary>
/// The usage ledger: <see cref="Record"/> is a non-blocking enqueue on the request path; a background writer inserts
/// batches with one multi-row <c>INSERT ... SELECT FROM unnest(...) ON CONFLICT (request_id) DO NOTHING</c> (so a
/// retried batch never duplicates). While PostgreSQL is down, rows wait and the batch is retried with backoff. On
/// shutdown the queue is flushed after the last request finished. A row that does not fit in the queue, or that
/// PostgreSQL refuses (e.g. a constraint an operator added), is counted in <c>helixagent_ledger_rows_lost_total</c> and
/// logged, never dropped silently, and never holds back the rows batched with it.
/// </summary>
public sealed partial class CompletionLedger : IHostedService, IAsyncDisposable
{
    public const string MeterName = "HelixAgent.Ledger";

    private readonly Counter<long> _lostCounter;
    private readonly Counter<long> _writtenCounter;
    private readonly GatewayMetrics _metrics;

    private readonly Channel<CompletionRecord> _queue;
    private readonly NpgsqlDataSource _db;
    private readonly LedgerOptions _options;
    private readonly ILogger<CompletionLedger> _logger;
    private readonly CancellationTokenSource _abort = new();
    private Task? _writer;
    private long _lost;
    private long _written;
    private int _pending;
    private int _disposed;

    public CompletionLedger(NpgsqlDataSource db, IOptions<LedgerOptions> options, IMeterFactory meters, GatewayMetrics metrics, ILogger<CompletionLedger> logger)
    {
        var meter = meters.Create(MeterName);
        _lostCounter = meter.CreateCounter<long>("helixagent_ledger_rows_lost_total", description: "Usage rows lost: the queue was full, PostgreSQL refused them, or the shutdown timeout left them unwritten.");
        _writtenCounter = meter.CreateCounter<long>("helixagent_ledger_rows_written_total", description: "Usage rows written to completions.");
        // Present (as 0) from the start, so an alert on it has a series to watch.
        _lostCounter.Add(0);
        _writtenCounter.Add(0);
        _metrics = metrics;
        _db = db;
        _options = options.Value;
        _logger = logger;
        _queue = Channel.CreateBounded<CompletionRecord>(new BoundedChannelOptions(_options.Capacity)
        {
            // Wait, not DropWrite: with DropWrite a full channel's TryWrite returns true and discards the row unseen.
            // With Wait, TryWrite never waits; it returns false when full, and Record counts and logs that row.
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
            SingleWriter = false,
        });
        meter.CreateObservableGauge("helixagent_ledger_queue_depth", () => Volatile.Read(ref _pending), description: "Usage rows waiting to be written.");
    }

    public long LostRows => Interlocked.Read(ref _lost);
    public long WrittenRows => Interlocked.Read(ref _written);
    public int PendingRows => Volatile.Read(ref _pending);

    /// <summary>Queues a row without waiting. Never throws.</summary>
    public void Record(CompletionRecord record)
    {
        if (_queue.Writer.TryWrite(record))
        {
            Interlocked.Increment(ref _pending);
            return;
        }
        CountLost(1);
        LogLost(_logger, record.RequestId, _options.Capacity);
    }

    /// <summary>Rows that will never be written: not queued, refused by PostgreSQL, or left at the shutdown timeout.</summary>
    private void CountLost(int rows)
    {
        Interlocked.Add(ref _lost, rows);
        _lostCounter.Add(rows);
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _writer = Task.Run(() => WriteLoopAsync(_abort.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    /// <summary>Stops taking rows and writes every queued one, unless the host's shutdown timeout runs out first.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _queue.Writer.TryComplete();
        if (_writer is null)
        {
            return;
        }
        using var registration = cancellationToken.Register(_abort.Cancel);
        try
        {
            await _writer;
        }
        catch (OperationCanceledException)
        {
            // shutdown timeout: what is left is counted below
        }
        var left = Volatile.Read(ref _pending);
        if (left > 0)
        {
            CountLost(left);
            LogUnflushed(_logger, left);
        }
    }

    private async Task WriteLoopAsync(CancellationToken abort)
    {
        var batch = new List<CompletionRecord>(_options.BatchSize);
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync(abort))
        {
            // Let a batch fill a little when traffic is light, so each row is not its own transaction.
            if (_options.FlushIntervalMs > 0 && reader.Count < _options.BatchSize && !reader.Completion.IsCompleted)
            {
                try
                {
                    await Task.Delay(_options.FlushIntervalMs, abort);
                }
                catch (OperationCanceledException) when (!abort.IsCancellationRequested)
                {
                }
            }
            while (batch.Count < _options.BatchSize && reader.TryRead(out var row))
            {
                batch.Add(row);
            }
            await WriteWithRetryAsync(batch, abort);
            Interlocked.Add(ref _pending, -batch.Count);
            batch.Clear();
        }
    }

    /// <summary>
    /// Writes the batch, retrying with backoff for as long as PostgreSQL is unreachable or fails for any other reason,
    /// except one: when it refuses a value (a data exception or a constraint, SQLSTATE class 22 or 23), retrying would
    /// block every row behind it forever. Then each row is written alone, and only the refused ones are counted lost.
    /// </summary>
    private async Task WriteWithRetryAsync(List<CompletionRecord> batch, CancellationToken abort)
    {
        var delay = TimeSpan.FromMilliseconds(200);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                var started = Stopwatch.GetTimestamp();
                await InsertAsync(batch, abort);
                _metrics.DbQuery("ledger_insert", Stopwatch.GetElapsedTime(started));
                Interlocked.Add(ref _written, batch.Count);
                _writtenCounter.Add(batch.Count);
                if (attempt > 1)
                {
                    LogRecovered(_logger, batch.Count, attempt);
                }
                return;
            }
            catch (PostgresException ex) when (ex.SqlState.StartsWith("22", StringComparison.Ordinal) || ex.SqlState.StartsWith("23", StringComparison.Ordinal))
            {
                if (batch.Count == 1)
                {
                    CountLost(1);
                    LogRefused(_logger, batch[0].RequestId, ex.SqlState, ex.MessageText);
                    return;
                }
                foreach (var row in batch)
                {
                    await WriteWithRetryAsync([row], abort);
                }
                return;
            }
            catch (Exception ex) when (!abort.IsCancellationRequested)
            {
                LogRetry(_logger, batch.Count, Volatile.Read(ref _pending), ex.Message, delay.TotalSeconds);
                await Task.Delay(delay, abort);
                delay = TimeSpan.FromSeconds(Math.Min(delay.TotalSeconds * 2, 5));
            }
        }
    }

    private async Task InsertAsync(List<CompletionRecord> rows, CancellationToken ct)
    {
        await using var cmd = _db.CreateCommand("""
            INSERT INTO completions (request_id, key_id, key_name, model, provider, endpoint, status, error_type,
                prompt_tokens, completion_tokens, latency_ms, ttft_ms, cache_hit, stream, attempts, created_at, usage_estimated,
                dropped_hints)
            SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::smallint[],
                $8::text[], $9::int[], $10::int[], $11::float8[], $12::float8[], $13::bool[], $14::bool[], $15::smallint[],
                $16::timestamptz[], $17::bool[], $18::text[])
            ON CONFLICT (request_id) DO NOTHING
            """);
        Add(cmd, rows.Select(r => Text(r.RequestId)).ToArray(), NpgsqlDbType.Text);
        Add(cmd, rows.Select(r => r.KeyId).ToArray(), NpgsqlDbType.Uuid);
        Add(cmd, rows.Select(r => Text(r.KeyName)).ToArray(), NpgsqlDbType.Text);
        Add(cmd, rows.Select(r => Text(r.Model)).ToArray(), NpgsqlDbType.Text);
        Add(cmd, rows.Select(r => Text(r.Provider)).ToArray(), NpgsqlDbType.Text);
        Add(cmd, rows.Select(r => Text(r.Endpoint)).ToArray(), NpgsqlDbType.Text);
        Add(cmd, rows.Select(r => (short)r.Status).ToArray(), NpgsqlDbType.Smallint);
        Add(cmd, rows.Select(r => Text(r.ErrorType)).ToArray(), NpgsqlDbType.Text);
        Add(cmd, rows.Select(r => r.PromptTokens).ToArray(), NpgsqlDbType.Integer);
        Add(cmd, rows.Select(r => r.CompletionTokens).ToArray(), NpgsqlDbType.Integer);
        Add(cmd, rows.Select(r => r.LatencyMs).ToArray(), NpgsqlDbType.Double);
        Add(cmd, rows.Select(r => r.TtftMs).ToArray(), NpgsqlDbType.Double);
        Add(cmd, rows.Select(r => r.CacheHit).ToArray(), NpgsqlDbType.Boolean);
        Add(cmd, rows.Select(r => r.Stream).ToArray(), NpgsqlDbType.Boolean);
        Add(cmd, rows.Select(r => (short)Math.Min(r.Attempts, short.MaxValue)).ToArray(), NpgsqlDbType.Smallint);
        Add(cmd, rows.Select(r => r.CreatedAt).ToArray(), NpgsqlDbType.TimestampTz);
        Add(cmd, rows.Select(r => r.UsageEstimated).ToArray(), NpgsqlDbType.Boolean);
        Add(cmd, rows.Select(r => Text(r.DroppedHints)).ToArray(), NpgsqlDbType.Text);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>PostgreSQL text cannot hold NUL: it is written as U+FFFD rather than losing the row.</summary>
    [return: System.Diagnostics.CodeAnalysis.NotNullIfNotNull(nameof(value))]
    private static string? Text(string? value) => value is null || !value.Contains('\0', StringComparison.Ordinal) ? value : value.Replace('\0', '\uFFFD');

    private static void Add<T>(NpgsqlCommand cmd, T[] values, NpgsqlDbType type) =>
        cmd.Parameters.Add(new NpgsqlParameter<T[]> { TypedValue = values, NpgsqlDbType = NpgsqlDbType.Array | type });

    public async ValueTask DisposeAsync()
    {
        // Registered both as itself and as a hosted service: the container disposes it twice.
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        await _abort.CancelAsync();
        _abort.Dispose();
    }

    /// <summary>The process's last line: every row it recorded was written, or how many were not (rows left at the
    /// shutdown timeout stay pending, and counted lost).</summary>
    public static void LogStopped(ILogger logger, CompletionLedger ledger)
    {
        if (ledger.PendingRows > 0)
        {
            LogStoppedUnflushed(logger, ledger.PendingRows, ledger.WrittenRows);
        }
        else
        {
            LogStoppedFlushed(logger, ledger.WrittenRows);
        }
    }

    [LoggerMessage(6, LogLevel.Information, "stopped; ledger flushed ({Rows} rows)")]
    private static partial void LogStoppedFlushed(ILogger logger, long rows);

    [LoggerMessage(7, LogLevel.Error, "stopped; ledger NOT flushed: {Unwritten} rows unwritten, counted lost ({Rows} rows written)")]
    private static partial void LogStoppedUnflushed(ILogger logger, int unwritten, long rows);

    [LoggerMessage(1, LogLevel.Error, "Usage row {RequestId} lost: the ledger queue is full ({Capacity} rows waiting)")]
    private static partial void LogLost(ILogger logger, string requestId, int capacity);

    [LoggerMessage(2, LogLevel.Warning, "Ledger could not write {BatchCount} rows ({Pending} waiting): {Reason}; retrying in {Seconds}s")]
    private static partial void LogRetry(ILogger logger, int batchCount, int pending, string reason, double seconds);

    [LoggerMessage(3, LogLevel.Information, "Ledger wrote {Count} rows after {Attempts} attempts")]
    private static partial void LogRecovered(ILogger logger, int count, int attempts);

    [LoggerMessage(4, LogLevel.Error, "Ledger stopped with {Count} rows unwritten (shutdown timeout)")]
    private static partial void LogUnflushed(ILogger logger, int count);

    [LoggerMessage(5, LogLevel.Error, "Usage row {RequestId} lost: PostgreSQL refused it ({SqlState}: {Reason})")]
    private static partial void LogRefused(ILogger logger, string requestId, string sqlState, string reason);
}
