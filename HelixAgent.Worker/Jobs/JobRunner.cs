using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;

namespace HelixAgent.Worker.Jobs;

public enum JobOutcome
{
    Succeeded,
    Failed,
    /// <summary>Another worker holds the job's advisory lock: it is running there.</summary>
    SkippedLocked,
}

public sealed record JobRun(string Job, JobOutcome Outcome, long Rows, TimeSpan Duration, string? Error);

/// <summary>
/// Runs a job once on one worker at a time (a PostgreSQL advisory lock per job, so scaling the worker never runs a job
/// twice at once), records the outcome in <c>worker_jobs</c> and in metrics, and turns the worker's health unhealthy
/// when a job keeps failing.
/// </summary>
public sealed partial class JobRunner : IHealthCheck
{
    /// <summary>The worker's meter (OpenTelemetry and <c>/metrics</c>).</summary>
    public const string MeterName = "HelixAgent.Worker";

    /// <summary>The job's label. Not <c>job</c>: Prometheus gives every scraped series its own <c>job</c> label.</summary>
    public const string JobLabel = "worker_job";

    private readonly Histogram<double> _duration;
    private readonly Counter<long> _rows;
    private readonly Counter<long> _failures;

    private readonly NpgsqlDataSource _db;
    private readonly WorkerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<JobRunner> _logger;
    private readonly ConcurrentDictionary<string, int> _consecutiveFailures = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, DateTimeOffset> _lastSuccess = new(StringComparer.Ordinal);

    public JobRunner(NpgsqlDataSource db, WorkerOptions options, TimeProvider time, ILogger<JobRunner> logger, IEnumerable<IMaintenanceJob> jobs,
        IMeterFactory meters)
    {
        var meter = meters.Create(MeterName);
        _duration = meter.CreateHistogram("helixagent_worker_job_duration_seconds", unit: null, description: "Duration of maintenance job runs.",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.1, 1, 10, 60, 300, 1800] });
        _rows = meter.CreateCounter<long>("helixagent_worker_job_rows_total", description: "Rows touched by maintenance jobs.");
        _failures = meter.CreateCounter<long>("helixagent_worker_job_failures_total", description: "Failed maintenance job runs.");
        _db = db;
        _options = options;
        _time = time;
        _logger = logger;
        Jobs = jobs.ToDictionary(j => j.Name, StringComparer.Ordinal);
        meter.CreateObservableGauge("helixagent_worker_job_last_success_timestamp_seconds",
            () => _lastSuccess.Select(kv => new Measurement<double>(kv.Value.ToUnixTimeMilliseconds() / 1000.0, new KeyValuePair<string, object?>(JobLabel, kv.Key))),
            description: "Unix time of each job's last successful run.");
    }

    public IReadOnlyDictionary<string, IMaintenanceJob> Jobs { get; }

    public async Task<JobRun> RunOnceAsync(IMaintenanceJob job, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        await using var conn = await _db.OpenConnectionAsync(ct);
        var lockKey = LockKey(job.Name);
        await using (var take = new NpgsqlCommand("SELECT pg_try_advisory_lock($1)", conn))
        {
            take.Parameters.AddWithValue(lockKey);
            if (!(bool)(await take.ExecuteScalarAsync(ct))!)
            {
                return new JobRun(job.Name, JobOutcome.SkippedLocked, 0, TimeSpan.Zero, null);
            }
        }
        try
        {
            await RecordAsync(conn, "INSERT INTO worker_jobs (job, last_started_at) VALUES ($1, $2) ON CONFLICT (job) DO UPDATE SET last_started_at = $2",
                job.Name, _time.GetUtcNow(), ct);
            var rows = await job.RunAsync(conn, ct);
            var elapsed = Stopwatch.GetElapsedTime(started);
            await RecordAsync(conn, """
                UPDATE worker_jobs SET last_succeeded_at = $2, last_duration_ms = $3, last_rows = $4, consecutive_failures = 0, last_error = NULL
                WHERE job = $1
                """, job.Name, _time.GetUtcNow(), ct, elapsed.TotalMilliseconds, rows);
            _consecutiveFailures[job.Name] = 0;
            _lastSuccess[job.Name] = _time.GetUtcNow();
            _duration.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>(JobLabel, job.Name));
            _rows.Add(rows, new KeyValuePair<string, object?>(JobLabel, job.Name));
            LogRan(_logger, job.Name, rows, elapsed.TotalMilliseconds);
            return new JobRun(job.Name, JobOutcome.Succeeded, rows, elapsed, null);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException or InvalidOperationException && !ct.IsCancellationRequested)
        {
            var elapsed = Stopwatch.GetElapsedTime(started);
            var failures = _consecutiveFailures.AddOrUpdate(job.Name, 1, (_, n) => n + 1);
            _failures.Add(1, new KeyValuePair<string, object?>(JobLabel, job.Name));
            LogFailed(_logger, job.Name, failures, ex.Message);
            try
            {
                await RecordAsync(conn, """
                    UPDATE worker_jobs SET last_failed_at = $2, last_duration_ms = $3, last_error = $4, consecutive_failures = consecutive_failures + 1
                    WHERE job = $1
                    """, job.Name, _time.GetUtcNow(), ct, elapsed.TotalMilliseconds, ex.Message);
            }
            catch (NpgsqlException)
            {
                // the database itself is the problem; the failure is in the log and the metrics
            }
            return new JobRun(job.Name, JobOutcome.Failed, 0, elapsed, ex.Message);
        }
        finally
        {
            if (conn.State == System.Data.ConnectionState.Open)
            {
                await using var release = new NpgsqlCommand("SELECT pg_advisory_unlock($1)", conn);
                release.Parameters.AddWithValue(lockKey);
                await release.ExecuteNonQueryAsync(CancellationToken.None);
            }
        }
    }

    /// <summary>Unhealthy while any job has failed <see cref="WorkerOptions.UnhealthyAfterFailures"/> times in a row.</summary>
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var failing = _consecutiveFailures.Where(kv => kv.Value >= _options.UnhealthyAfterFailures).Select(kv => $"{kv.Key} ({kv.Value} failures in a row)").ToList();
        return Task.FromResult(failing.Count == 0
            ? HealthCheckResult.Healthy("maintenance jobs are running")
            : HealthCheckResult.Unhealthy("failing jobs: " + string.Join(", ", failing)));
    }

    /// <summary>A stable advisory-lock key per job name (distinct from the migrator's).</summary>
    public static long LockKey(string job) =>
        BitConverter.ToInt64(SHA256.HashData(Encoding.UTF8.GetBytes("helixagent-job:" + job)), 0);

    private static async Task RecordAsync(NpgsqlConnection conn, string sql, string job, DateTimeOffset at, CancellationToken ct, params object?[] more)
    {
        await using var cmd = new NpgsqlCommand(sql, conn);
        cmd.Parameters.AddWithValue(job);
        cmd.Parameters.AddWithValue(at);
        foreach (var value in more)
        {
            cmd.Parameters.AddWithValue(value ?? DBNull.Value);
        }
        await cmd.ExecuteNonQueryAsync(ct);
    }

    [LoggerMessage(1, LogLevel.Information, "Job {Job} touched {Rows} rows in {Milliseconds} ms")]
    private static partial void LogRan(ILogger logger, string job, long rows, double milliseconds);

    [LoggerMessage(2, LogLevel.Error, "Job {Job} failed ({Failures} in a row): {Reason}")]
    private static partial void LogFailed(ILogger logger, string job, int failures, string reason);
}

/// <summary>Runs every enabled job on its interval (<c>Worker:Jobs:&lt;name&gt;:IntervalSeconds</c>, 0 disables) once the schema is current.</summary>
public sealed class JobScheduler(JobRunner runner, SchemaState schema, IConfiguration configuration) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!schema.IsCurrent)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), stoppingToken);
        }
        await Task.WhenAll(runner.Jobs.Values.Select(job => LoopAsync(job, stoppingToken)));
    }

    private async Task LoopAsync(IMaintenanceJob job, CancellationToken stoppingToken)
    {
        var seconds = configuration.GetValue<double?>($"Worker:Jobs:{job.Name}:IntervalSeconds") ?? job.DefaultInterval.TotalSeconds;
        if (seconds <= 0)
        {
            return;
        }
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(seconds));
        do
        {
            await runner.RunOnceAsync(job, stoppingToken);
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }
}
