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

    /// <summary><c>completions</c> partitions wholly older than this many days are dropped (0 keeps everything).</summary>
    public int RetentionDays { get; set; } = 90;

    /// <summary>Days ahead (UTC) the partitions job keeps a partition of <c>completions</c> ready for.</summary>
    public int PartitionDaysAhead { get; set; } = 7;

    /// <summary>Rows deleted per statement by the retention job, so no delete holds locks for long.</summary>
    public int RetentionBatchSize { get; set; } = 10_000;

    /// <summary>Keys expired or revoked longer ago than this are deleted (0 keeps them).</summary>
    public int KeyKeepDays { get; set; } = 30;

    /// <summary>Days the rollup job recomputes each run (today included), so late rows are counted.</summary>
    public int RollupLookbackDays { get; set; } = 2;

    /// <summary>A job failing this many times in a row makes the worker's /health unhealthy.</summary>
    public int UnhealthyAfterFailures { get; set; } = 3;
}

/// <summary>
/// <c>completions</c> is partitioned by day (UTC): retention drops each day's partition once the whole day is older
/// than <see cref="WorkerOptions.RetentionDays"/> (so a row is kept up to a day longer than that), with no bloat left to
/// vacuum; rows that landed in the default partition (no partition for their day) are deleted in batches.
/// </summary>
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
        var cutoff = time.GetUtcNow().AddDays(-options.RetentionDays);
        long total = 0;
        foreach (var (partition, day) in await CompletionPartitions.DaysAsync(connection, cancellationToken))
        {
            if (day.AddDays(1).ToDateTime(TimeOnly.MinValue, DateTimeKind.Utc) > cutoff.UtcDateTime)
            {
                continue;
            }
            await using var count = new NpgsqlCommand($"SELECT count(*) FROM {partition}", connection);
            var rows = (long)(await count.ExecuteScalarAsync(cancellationToken))!;
            await using var drop = new NpgsqlCommand($"DROP TABLE {partition}", connection);
            await drop.ExecuteNonQueryAsync(cancellationToken);
            total += rows;
        }
        return total + await DeleteOlderAsync(connection, "completions_default", "id", cutoff, options.RetentionBatchSize, cancellationToken);
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

/// <summary>The day partitions of <c>completions</c> (<c>completions_pYYYYMMDD</c>), and making them ahead of time.</summary>
public static class CompletionPartitions
{
    public static async Task<List<(string Name, DateOnly Day)>> DaysAsync(NpgsqlConnection connection, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("""
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'completions'::regclass AND c.relname ~ '^completions_p[0-9]{8}$' ORDER BY c.relname
            """, connection);
        var days = new List<(string, DateOnly)>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            var name = reader.GetString(0);
            days.Add((name, DateOnly.ParseExact(name["completions_p".Length..], "yyyyMMdd", System.Globalization.CultureInfo.InvariantCulture)));
        }
        return days;
    }
}

/// <summary>
/// Creates the day partitions of <c>completions</c> from yesterday to <see cref="WorkerOptions.PartitionDaysAhead"/>
/// days ahead (UTC), so rows never wait on one; a day whose rows went to the default partition (the worker was down
/// for longer than that) gets its partition with those rows moved in.
/// </summary>
public sealed class PartitionJob(WorkerOptions options, TimeProvider time) : IMaintenanceJob
{
    public string Name => "partitions";
    public TimeSpan DefaultInterval => TimeSpan.FromHours(1);

    public async Task<long> RunAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var today = DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime);
        long created = 0;
        for (var day = today.AddDays(-1); day <= today.AddDays(Math.Max(0, options.PartitionDaysAhead)); day = day.AddDays(1))
        {
            await using var cmd = new NpgsqlCommand("SELECT helixagent_completions_partition($1)", connection);
            cmd.Parameters.AddWithValue(day);
            created += (bool)(await cmd.ExecuteScalarAsync(cancellationToken))! ? 1 : 0;
        }
        return created;
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
                                          latency_p50_ms, latency_p95_ms, latency_p99_ms, cost_usd, unpriced_requests, team, updated_at)
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
                   coalesce(sum(cost_usd), 0),
                   count(*) FILTER (WHERE cost_usd IS NULL),
                   coalesce(max(team), ''),
                   now()
            FROM completions
            WHERE created_at >= $1
            GROUP BY 1, 2, 4, 5
            ON CONFLICT (day, key_id, model, provider) DO UPDATE SET
                key_name = EXCLUDED.key_name, requests = EXCLUDED.requests, errors = EXCLUDED.errors,
                prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
                latency_p50_ms = EXCLUDED.latency_p50_ms, latency_p95_ms = EXCLUDED.latency_p95_ms,
                latency_p99_ms = EXCLUDED.latency_p99_ms, cost_usd = EXCLUDED.cost_usd,
                unpriced_requests = EXCLUDED.unpriced_requests, team = EXCLUDED.team, updated_at = EXCLUDED.updated_at
            """, connection);
        cmd.Parameters.AddWithValue(new DateTimeOffset(DateTime.SpecifyKind(from, DateTimeKind.Utc)));
        return await cmd.ExecuteNonQueryAsync(cancellationToken);
    }
}
