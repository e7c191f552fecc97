using System.Buffers;
using System.ComponentModel.DataAnnotations;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using HelixAgent.Api.Observability;
using HelixAgent.Data;
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
    string? DroppedHints = null,
    decimal? CostUsd = null,
    decimal? CostSavedUsd = null,
    string? Team = null);

public sealed class LedgerOptions
{
    public const string Section = "Ledger";

    /// <summary>Without the journal (<c>Ledger:Journal:Enabled=false</c>): rows waiting in memory before new ones are counted lost.</summary>
    [Range(1, 10_000_000)]
    public int Capacity { get; set; } = 200_000;

    [Range(1, 100_000)]
    public int BatchSize { get; set; } = 1000;

    /// <summary>Longest a row waits for its batch to fill.</summary>
    [Range(0, 60_000)]
    public int FlushIntervalMs { get; set; } = 200;

    public JournalOptions Journal { get; set; } = new();

    /// <summary>When the journal cannot take a row (full, or its disk fails): serve (count it lost) or refuse requests.</summary>
    public LedgerWhenFull WhenFull { get; set; } = LedgerWhenFull.Serve;
}

/// <summary>
/// The usage ledger. <see cref="Record"/> runs on the request path before the response's last bytes leave: it appends
/// the row to the write-ahead journal (<see cref="LedgerJournal"/>, one <c>pwrite</c>), so a crash after the client
/// saw its answer cannot lose the row. A background shipper reads the journal and inserts batches with one multi-row
/// <c>INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING</c> (a replayed row, with its journaled
/// <c>created_at</c>, conflicts on <c>(request_id, created_at)</c> and is skipped: never duplicated). While PostgreSQL is
/// down the backlog grows on disk and the batch is retried with backoff; at start the previous run's unshipped rows
/// are replayed while the gateway serves; a graceful stop ships everything and leaves the journal empty. A row the
/// journal cannot take (full at <c>Ledger:Journal:MaxBytes</c>, or the disk fails) or that PostgreSQL refuses (e.g. a
/// constraint an operator added) is counted in <c>helixagent_ledger_rows_lost_total</c> and logged, never dropped
/// silently, and never holds back the rows batched with it. With the journal off, rows wait in a bounded in-memory queue.
/// </summary>
public sealed partial class CompletionLedger : IHostedService, IAsyncDisposable
{
    public const string MeterName = "HelixAgent.Ledger";

    /// <summary>Room kept for the rows of requests in flight when <c>WhenFull=refuse</c> stops admitting new ones.</summary>
    private const long RefuseHeadroomRows = 256;
    private const long TypicalRowBytes = 512;

    private readonly Counter<long> _lostCounter;
    private readonly Counter<long> _writtenCounter;
    private readonly GatewayMetrics _metrics;

    private readonly Channel<CompletionRecord>? _queue;
    private readonly LedgerJournal? _journal;
    private readonly NpgsqlDataSource _db;
    private readonly LedgerOptions _options;
    private readonly ILogger<CompletionLedger> _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _abort = new();
    private Task? _writer;
    private long _lost;
    private long _written;
    private long _pending;
    private long _oldestPendingTicks;
    private long _lastLossTicks;
    private long _diskFailedUntilTicks;
    private int _disposed;

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_frame;

    public CompletionLedger(NpgsqlDataSource db, IOptions<LedgerOptions> options, IMeterFactory meters, GatewayMetrics metrics, IHostEnvironment environment,
        ILogger<CompletionLedger> logger, TimeProvider time)
    {
        var meter = meters.Create(MeterName);
        _lostCounter = meter.CreateCounter<long>("helixagent_ledger_rows_lost_total", description: "Usage rows lost: the journal could not take them (full, or its disk failed), PostgreSQL refused them, or (without the journal) the queue was full.");
        _writtenCounter = meter.CreateCounter<long>("helixagent_ledger_rows_written_total", description: "Usage rows written to completions.");
        // Present (as 0) from the start, so an alert on it has a series to watch.
        _lostCounter.Add(0);
        _writtenCounter.Add(0);
        _metrics = metrics;
        _db = db;
        _options = options.Value;
        _logger = logger;
        _time = time;
        if (_options.Journal.Enabled)
        {
            _journal = new LedgerJournal(JournalFolder(_options.Journal, environment), _options.Journal, logger);
            meter.CreateObservableGauge("helixagent_ledger_journal_bytes", () => _journal.DiskBytes, description: "Bytes of the ledger journal on disk.");
            meter.CreateObservableCounter("helixagent_ledger_torn_records_total", () => _journal.TornRecords, description: "Journal records a crash cut mid-write, skipped at replay.");
        }
        else
        {
            _queue = Channel.CreateBounded<CompletionRecord>(new BoundedChannelOptions(_options.Capacity)
            {
                // Wait, not DropWrite: with DropWrite a full channel's TryWrite returns true and discards the row unseen.
                // With Wait, TryWrite never waits; it returns false when full, and Record counts and logs that row.
                FullMode = BoundedChannelFullMode.Wait,
                SingleReader = true,
                SingleWriter = false,
            });
        }
        meter.CreateObservableGauge("helixagent_ledger_unshipped_rows", () => Interlocked.Read(ref _pending), description: "Usage rows not yet in PostgreSQL (in the journal, or queued).");
        meter.CreateObservableGauge("helixagent_ledger_oldest_unshipped_seconds", () => OldestUnshippedSeconds, description: "Age of the oldest usage row not yet in PostgreSQL (0 when none waits).");
    }

    /// <summary><c>Ledger:Journal:Path</c>, else <c>&lt;data dir&gt;/ledger</c> (relative paths from the content root).</summary>
    public static string JournalFolder(JournalOptions options, IHostEnvironment environment) =>
        string.IsNullOrWhiteSpace(options.Path)
            ? Path.Combine(LocalDevEnvironment.DataDirectory, "ledger")
            : Path.GetFullPath(options.Path, environment.ContentRootPath);

    public long LostRows => Interlocked.Read(ref _lost);
    public long WrittenRows => Interlocked.Read(ref _written);
    public int PendingRows => (int)Math.Min(int.MaxValue, Interlocked.Read(ref _pending));
    public string? JournalPath => _journal?.Folder;
    public long JournalBytes => _journal?.DiskBytes ?? 0;

    public double OldestUnshippedSeconds
    {
        get
        {
            var ticks = Interlocked.Read(ref _oldestPendingTicks);
            return ticks == 0 || Interlocked.Read(ref _pending) == 0 ? 0 : Math.Max(0, (_time.GetUtcNow().UtcTicks - ticks) / (double)TimeSpan.TicksPerSecond);
        }
    }

    /// <summary><c>WhenFull=refuse</c> and the journal has no room for more rows (or its disk failed a moment ago):
    /// client routes answer 503 + Retry-After.</summary>
    public bool Refusing => _options.WhenFull == LedgerWhenFull.Refuse && !CanTakeRows;

    /// <summary>Whether a row recorded now would be kept (with room left for the requests in flight).</summary>
    public bool CanTakeRows => _journal is null
        ? _queue!.Reader.Count < _options.Capacity
        : _time.GetUtcNow().UtcTicks >= Interlocked.Read(ref _diskFailedUntilTicks)
          && _journal.HasRoom(Math.Min(RefuseHeadroomRows * TypicalRowBytes, _journal.MaxBytes / 8));

    /// <summary>Degraded: the ledger cannot take rows now, or lost one in the last 5 minutes.</summary>
    public string? Problem =>
        !CanTakeRows ? _journal is null ? "the ledger queue is full" : $"the ledger journal {_journal.Folder} is full or its disk fails"
        : Interlocked.Read(ref _lastLossTicks) is var t && t > 0 && _time.GetUtcNow().UtcTicks - t < TimeSpan.TicksPerMinute * 5 ? "usage rows were lost in the last 5 minutes"
        : null;

    /// <summary>Journals (or queues) a row. Never throws; a row that cannot be kept is counted lost and logged.</summary>
    public void Record(CompletionRecord record)
    {
        if (_journal is null)
        {
            if (_queue!.Writer.TryWrite(record))
            {
                Interlocked.Increment(ref _pending);
                return;
            }
            CountLost(1);
            LogLost(_logger, record.RequestId, _options.Capacity);
            return;
        }
        var frame = t_frame ??= new ArrayBufferWriter<byte>(1024);
        AppendResult result;
        try
        {
            LedgerJournal.Encode(record, frame);
            // Counted before the append: the shipper may take the row before Append returns.
            Interlocked.Increment(ref _pending);
            result = _journal.Append(frame.WrittenSpan);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // ENOSPC, EIO, a read-only remount: the same rule as a full journal; refuse mode refuses for a second.
            Interlocked.Decrement(ref _pending);
            Interlocked.Exchange(ref _diskFailedUntilTicks, _time.GetUtcNow().UtcTicks + TimeSpan.TicksPerSecond);
            CountLost(1);
            LogJournalFailed(_logger, record.RequestId, _journal.Folder, ex.Message);
            return;
        }
        finally
        {
            if (frame.Capacity > 64 * 1024)
            {
                t_frame = null; // one huge row does not pin its buffer to the thread
            }
        }
        if (result == AppendResult.Written)
        {
            return;
        }
        Interlocked.Decrement(ref _pending);
        CountLost(1);
        if (result == AppendResult.Full)
        {
            LogJournalFull(_logger, record.RequestId, _journal.Folder, _journal.MaxBytes);
        }
        else
        {
            LogLostAfterStop(_logger, record.RequestId);
        }
    }

    /// <summary>Rows that will never be written: not kept, refused by PostgreSQL, or (without the journal) left at the shutdown timeout.</summary>
    private void CountLost(int rows)
    {
        Interlocked.Add(ref _lost, rows);
        _lostCounter.Add(rows);
        Interlocked.Exchange(ref _lastLossTicks, _time.GetUtcNow().UtcTicks);
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _writer = Task.Run(() => _journal is null ? WriteLoopAsync(_abort.Token) : ShipLoopAsync(_journal, _abort.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    /// <summary>Stops taking rows and ships every one, unless the host's shutdown timeout runs out first: then what is
    /// left stays in the journal for the next start (without the journal, it is counted lost).</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _queue?.Writer.TryComplete();
        _journal?.Complete();
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
        var left = PendingRows;
        if (_journal is not null)
        {
            if (left == 0)
            {
                _journal.DeleteShipped();
            }
            else
            {
                LogLeftInJournal(_logger, left, _journal.Folder);
            }
        }
        else if (left > 0)
        {
            CountLost(left);
            LogUnflushed(_logger, left);
        }
    }

    /// <summary>
    /// The journal's shipper: first the rows a previous run left (replayed while the gateway serves; counted first, so
    /// the gauge and the log say how many), then this run's, in batches to PostgreSQL; the checkpoint moves past each.
    /// </summary>
    private async Task ShipLoopAsync(LedgerJournal journal, CancellationToken abort)
    {
        var batch = new List<CompletionRecord>(_options.BatchSize);
        long replaying = 0, replayed = 0, replayedNew = 0;
        if (journal.InReplay)
        {
            // A previous run left segments (it did not stop gracefully): say what it left, even when that is nothing.
            replaying = journal.CountUnshipped();
            Interlocked.Add(ref _pending, replaying);
            LogReplaying(_logger, replaying, journal.Folder);
        }
        while (await journal.WaitToReadAsync(abort))
        {
            var wasReplay = journal.InReplay;
            if (!wasReplay && _options.FlushIntervalMs > 0 && Interlocked.Read(ref _pending) < _options.BatchSize)
            {
                try
                {
                    await Task.Delay(_options.FlushIntervalMs, abort);
                }
                catch (OperationCanceledException) when (!abort.IsCancellationRequested)
                {
                }
            }
            var position = journal.ReadBatch(batch, _options.BatchSize);
            var inserted = 0;
            if (batch.Count > 0)
            {
                Interlocked.Exchange(ref _oldestPendingTicks, batch[0].CreatedAt.UtcTicks);
                inserted = await WriteWithRetryAsync(batch, abort);
            }
            journal.Commit(position);
            Interlocked.Add(ref _pending, -batch.Count);
            Interlocked.Exchange(ref _oldestPendingTicks, 0);
            if (wasReplay)
            {
                replayed += batch.Count;
                replayedNew += inserted;
                if (!journal.InReplay)
                {
                    // Records counted by their headers whose checksum failed were skipped: they wait no more.
                    Interlocked.Add(ref _pending, -(replaying - replayed));
                    LogReplayed(_logger, replayed, replayedNew, replayed - replayedNew, journal.TornRecords);
                }
            }
            batch.Clear();
        }
    }

    private async Task WriteLoopAsync(CancellationToken abort)
    {
        var batch = new List<CompletionRecord>(_options.BatchSize);
        var reader = _queue!.Reader;
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
            Interlocked.Exchange(ref _oldestPendingTicks, batch[0].CreatedAt.UtcTicks);
            await WriteWithRetryAsync(batch, abort);
            Interlocked.Add(ref _pending, -batch.Count);
            Interlocked.Exchange(ref _oldestPendingTicks, 0);
            batch.Clear();
        }
    }

    /// <summary>
    /// Writes the batch, retrying with backoff for as long as PostgreSQL is unreachable or fails for any other reason,
    /// except one: when it refuses a value (a data exception or a constraint, SQLSTATE class 22 or 23), retrying would
    /// block every row behind it forever. Then each row is written alone, and only the refused ones are counted lost.
    /// </summary>
    private async Task<int> WriteWithRetryAsync(List<CompletionRecord> batch, CancellationToken abort)
    {
        var delay = TimeSpan.FromMilliseconds(200);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                var started = Stopwatch.GetTimestamp();
                var inserted = await InsertAsync(batch, abort);
                _metrics.DbQuery("ledger_insert", Stopwatch.GetElapsedTime(started));
                Interlocked.Add(ref _written, inserted);
                _writtenCounter.Add(inserted);
                if (attempt > 1)
                {
                    LogRecovered(_logger, batch.Count, attempt);
                }
                return inserted;
            }
            catch (PostgresException ex) when (ex.SqlState.StartsWith("22", StringComparison.Ordinal) || ex.SqlState.StartsWith("23", StringComparison.Ordinal))
            {
                if (batch.Count == 1)
                {
                    CountLost(1);
                    LogRefused(_logger, batch[0].RequestId, ex.SqlState, ex.MessageText);
                    return 0;
                }
                var written = 0;
                foreach (var row in batch)
                {
                    written += await WriteWithRetryAsync([row], abort);
                }
                return written;
            }
            catch (Exception ex) when (!abort.IsCancellationRequested)
            {
                LogRetry(_logger, batch.Count, PendingRows, ex.Message, delay.TotalSeconds);
                await Task.Delay(delay, abort);
                delay = TimeSpan.FromSeconds(Math.Min(delay.TotalSeconds * 2, 5));
            }
        }
    }

    /// <summary>The rows PostgreSQL did not have already (a replayed one it has is skipped).</summary>
    private async Task<int> InsertAsync(List<CompletionRecord> rows, CancellationToken ct)
    {
        await using var cmd = _db.CreateCommand("""
            INSERT INTO completions (request_id, key_id, key_name, model, provider, endpoint, status, error_type,
                prompt_tokens, completion_tokens, latency_ms, ttft_ms, cache_hit, stream, attempts, created_at, usage_estimated,
                dropped_hints, cost_usd, cost_saved_usd, team)
            SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::smallint[],
                $8::text[], $9::int[], $10::int[], $11::float8[], $12::float8[], $13::bool[], $14::bool[], $15::smallint[],
                $16::timestamptz[], $17::bool[], $18::text[], $19::numeric[], $20::numeric[], $21::text[])
            ON CONFLICT DO NOTHING
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
        Add(cmd, rows.Select(r => r.CostUsd).ToArray(), NpgsqlDbType.Numeric);
        Add(cmd, rows.Select(r => r.CostSavedUsd).ToArray(), NpgsqlDbType.Numeric);
        Add(cmd, rows.Select(r => Text(r.Team)).ToArray(), NpgsqlDbType.Text);
        return await cmd.ExecuteNonQueryAsync(ct);
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
        if (_writer is not null)
        {
            try
            {
                await _writer.WaitAsync(TimeSpan.FromSeconds(5));
            }
            catch (Exception ex) when (ex is OperationCanceledException or TimeoutException)
            {
            }
        }
        _journal?.Dispose();
        _abort.Dispose();
    }

    /// <summary>The process's last line: every row it recorded was written, or how many were not (rows left at the
    /// shutdown timeout stay in the journal for the next start; without the journal they are counted lost).</summary>
    public static void LogStopped(ILogger logger, CompletionLedger ledger)
    {
        if (ledger.PendingRows > 0 && ledger.JournalPath is { } folder)
        {
            LogStoppedInJournal(logger, ledger.PendingRows, folder, ledger.WrittenRows);
        }
        else if (ledger.PendingRows > 0)
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

    [LoggerMessage(8, LogLevel.Warning, "stopped; ledger NOT flushed: {Unshipped} rows left in the journal {Folder}, shipped at the next start ({Rows} rows written)")]
    private static partial void LogStoppedInJournal(ILogger logger, int unshipped, string folder, long rows);

    [LoggerMessage(9, LogLevel.Error, "Usage row {RequestId} lost: the ledger journal {Folder} is full (Ledger:Journal:MaxBytes = {MaxBytes} bytes)")]
    private static partial void LogJournalFull(ILogger logger, string requestId, string folder, long maxBytes);

    [LoggerMessage(10, LogLevel.Error, "Usage row {RequestId} lost: the ledger journal {Folder} could not be written: {Reason}")]
    private static partial void LogJournalFailed(ILogger logger, string requestId, string folder, string reason);

    [LoggerMessage(11, LogLevel.Error, "Usage row {RequestId} lost: recorded after the ledger stopped")]
    private static partial void LogLostAfterStop(ILogger logger, string requestId);

    [LoggerMessage(12, LogLevel.Information, "Ledger journal: replaying {Rows} rows a previous run left unshipped in {Folder}")]
    private static partial void LogReplaying(ILogger logger, long rows, string folder);

    [LoggerMessage(13, LogLevel.Information, "Ledger journal: replayed {Rows} rows ({New} new to completions, {Present} already there, {Torn} torn)")]
    private static partial void LogReplayed(ILogger logger, long rows, long @new, long present, long torn);

    [LoggerMessage(14, LogLevel.Warning, "Ledger stopped with {Count} rows not yet in PostgreSQL; they stay in the journal {Folder} for the next start")]
    private static partial void LogLeftInJournal(ILogger logger, int count, string folder);

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
