using Npgsql;

namespace HelixAgent.Worker.Jobs;

/// <summary>One periodic maintenance job. <see cref="RunAsync"/> returns the number of rows it touched.</summary>
public interface IMaintenanceJob
{
    /// <summary>Name used in configuration (<c>Worker:Jobs:&lt;name&gt;</c>), metrics, logs and <c>helixagent-worker run &lt;name&gt;</c>.</summary>
    string Name { get; }

    /// <summary>Default interval between runs.</summary>
    TimeSpan DefaultInterval { get; }

    Task<long> RunAsync(NpgsqlConnection connection, CancellationToken cancellationToken);
}

public sealed class WorkerOptions
{
    public const string Section = "Worker";

    /// <summary><c>completions</c> rows older than this many days are deleted (0 keeps everything).</summary>
    public int RetentionDays { get; set; } = 90;

    /// <summary>Rows deleted per statement by the retention job, so no delete holds locks for long.</summary>
    public int RetentionBatchSize { get; set; } = 10_000;

    /// <summary>Keys expired or revoked longer ago than this are deleted (0 keeps them).</summary>
    public int KeyKeepDays { get; set; } = 30;

    /// <summary>Days the rollup job recomputes each run (today included), so late rows are counted.</summary>
    public int RollupLookbackDays { get; set; } = 2;

    /// <summary>A job failing this many times in a row makes the worker's /health unhealthy.</summary>
    public int UnhealthyAfterFailures { get; set; } = 3;
}

/// <summary>Deletes <c>completions</c> older than the retention, in batches (never one giant delete).</summary>
public sealed class RetentionJob(WorkerOptions options, TimeProvider time) : IMaintenanceJob
{
    public string Name => "retention";
    public TimeSpan DefaultInterval => TimeSpan.FromHours(1);

    public async Task<long> RunAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        if (options.RetentionDays <= 0)
        {
            return 0;
        }
        return await DeleteOlderAsync(connection, "completions", "id", time.GetUtcNow().AddDays(-options.RetentionDays), options.RetentionBatchSize, cancellationToken);
    }

    /// <summary>Deletes the rows of <paramref name="table"/> created before <paramref name="cutoff"/>, <paramref name="batch"/> per statement (oldest first by <paramref name="order"/>).</summary>
    internal static async Task<long> DeleteOlderAsync(NpgsqlConnection connection, string table, string order, DateTimeOffset cutoff, int batch, CancellationToken ct)
    {
        long total = 0;
        while (true)
        {
            await using var cmd = new NpgsqlCommand(
                $"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE created_at < $1 ORDER BY {order} LIMIT $2)", connection);
            cmd.Parameters.AddWithValue(cutoff);
            cmd.Parameters.AddWithValue(batch);
            var deleted = await cmd.ExecuteNonQueryAsync(ct);
            total += deleted;
            if (deleted < batch)
            {
                return total;
            }
        }
    }
}

/// <summary>The <c>Responses:</c> settings the worker reads (the API reads the same section).</summary>
public sealed class ResponsesRetentionOptions
{
    public const string Section = "Responses";

    /// <summary>Stored responses older than this many days are deleted (0 keeps them).</summary>
    public int RetentionDays { get; set; } = 30;
}

/// <summary>Deletes stored Responses (<c>responses</c>) older than <c>Responses:RetentionDays</c>, in batches.</summary>
public sealed class ResponsesRetentionJob(ResponsesRetentionOptions responses, WorkerOptions options, TimeProvider time) : IMaintenanceJob
{
    public string Name => "responses-retention";
    public TimeSpan DefaultInterval => TimeSpan.FromHours(1);

    public async Task<long> RunAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        if (responses.RetentionDays <= 0)
        {
            return 0;
        }
        return await RetentionJob.DeleteOlderAsync(connection, "responses", "created_at", time.GetUtcNow().AddDays(-responses.RetentionDays),
            options.RetentionBatchSize, cancellationToken);
    }
}

/// <summary>
/// Rotated keys stop working at the end of their grace on every request (no job needed for that); this job deletes
/// keys that have been expired or revoked for longer than <see cref="WorkerOptions.KeyKeepDays"/>.
/// </summary>
public sealed class KeyExpiryJob(WorkerOptions options, TimeProvider time) : IMaintenanceJob
{
    public string Name => "expire-keys";
    public TimeSpan DefaultInterval => TimeSpan.FromHours(1);

    public async Task<long> RunAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        if (options.KeyKeepDays <= 0)
        {
            return 0;
        }
        await using var cmd = new NpgsqlCommand(
            "DELETE FROM api_keys WHERE least(coalesce(revoked_at, 'infinity'), coalesce(expires_at, 'infinity')) < $1", connection);
        cmd.Parameters.AddWithValue(time.GetUtcNow().AddDays(-options.KeyKeepDays));
        return await cmd.ExecuteNonQueryAsync(cancellationToken);
    }
}

/// <summary><c>VACUUM (ANALYZE)</c> of the hot tables.</summary>
public sealed class VacuumJob : IMaintenanceJob
{
    public string Name => "vacuum";
    public TimeSpan DefaultInterval => TimeSpan.FromHours(6);

    public async Task<long> RunAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        await using var cmd = new NpgsqlCommand("VACUUM (ANALYZE) completions, api_keys, usage_daily, responses", connection) { CommandTimeout = 0 };
        await cmd.ExecuteNonQueryAsync(cancellationToken);
        return 0;
    }
}

/// <summary>
/// Rolls <c>completions</c> up into <c>usage_daily</c> per day, key, model and provider (requests, errors, tokens,
/// latency percentiles). Recomputes the last few days each run (idempotent upsert); backfills everything the first time.
/// </summary>
public sealed class RollupJob(WorkerOptions options, TimeProvider time) : IMaintenanceJob
{
    public string Name => "rollup";
    public TimeSpan DefaultInterval => TimeSpan.FromMinutes(5);

    public async Task<long> RunAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var today = time.GetUtcNow().UtcDateTime.Date;
        DateTime from;
        await using (var first = new NpgsqlCommand(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM usage_daily) THEN NULL ELSE (SELECT min(created_at) FROM completions) END", connection))
        {
            var backfillFrom = await first.ExecuteScalarAsync(cancellationToken);
            from = backfillFrom is DateTime earliest ? earliest.Date : today.AddDays(1 - Math.Max(1, options.RollupLookbackDays));
        }
        await using var cmd = new NpgsqlCommand("""
            INSERT INTO usage_daily AS u (day, key_id, key_name, model, provider, requests, errors, prompt_tokens, completion_tokens,
                                          latency_p50_ms, latency_p95_ms, latency_p99_ms, updated_at)
            SELECT (created_at AT TIME ZONE 'UTC')::date,
                   coalesce(key_id, '00000000-0000-0000-0000-000000000000'),
                   coalesce(max(key_name), ''),
                   model,
                   coalesce(provider, ''),
                   count(*),
                   count(*) FILTER (WHERE status >= 400),
                   sum(prompt_tokens),
                   sum(completion_tokens),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms),
                   now()
            FROM completions
            WHERE created_at >= $1
            GROUP BY 1, 2, 4, 5
            ON CONFLICT (day, key_id, model, provider) DO UPDATE SET
                key_name = EXCLUDED.key_name, requests = EXCLUDED.requests, errors = EXCLUDED.errors,
                prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
                latency_p50_ms = EXCLUDED.latency_p50_ms, latency_p95_ms = EXCLUDED.latency_p95_ms,
                latency_p99_ms = EXCLUDED.latency_p99_ms, updated_at = EXCLUDED.updated_at
            """, connection);
        cmd.Parameters.AddWithValue(new DateTimeOffset(DateTime.SpecifyKind(from, DateTimeKind.Utc)));
        return await cmd.ExecuteNonQueryAsync(cancellationToken);
    }
}
