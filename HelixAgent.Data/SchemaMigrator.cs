using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;
using Npgsql;

namespace HelixAgent.Data;

/// <summary>One versioned schema change with its up and down scripts.</summary>
public sealed record Migration(long Version, string Name, string Up, string Down);

/// <summary>A migration's state in a database.</summary>
public sealed record MigrationStatus(long Version, string Name, DateTimeOffset? AppliedAt);

/// <summary>
/// Applies the embedded SQL migrations (<c>Migrations/NNNN_name.up.sql</c> / <c>.down.sql</c>) and records them
/// in <c>schema_migrations</c>. Every change runs in its own transaction under a PostgreSQL advisory lock, so
/// two migrators (two workers, or a worker and the CLI) never race.
/// </summary>
public sealed partial class SchemaMigrator(NpgsqlDataSource dataSource)
{
    /// <summary>Advisory lock key shared by every migrator ("helixmig").</summary>
    public const long AdvisoryLockKey = 0x68656c69786d6967;

    public static readonly ActivitySource ActivitySource = new("HelixAgent.Migrations");

    public static IReadOnlyList<Migration> All { get; } = Load();

    /// <summary>The schema version this build expects (the newest embedded migration).</summary>
    public static long ExpectedVersion => All[^1].Version;

    /// <summary>Applies every pending migration; returns the versions applied.</summary>
    public async Task<IReadOnlyList<long>> UpAsync(CancellationToken ct = default)
    {
        using var activity = ActivitySource.StartActivity("migrate up");
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await LockAsync(conn, ct);
        try
        {
            var applied = await AppliedVersionsAsync(conn, ct);
            var done = new List<long>();
            foreach (var m in All.Where(m => !applied.Contains(m.Version)))
            {
                await using var tx = await conn.BeginTransactionAsync(ct);
                await ExecAsync(conn, m.Up, ct);
                await using (var cmd = new NpgsqlCommand(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", conn))
                {
                    cmd.Parameters.AddWithValue(m.Version);
                    cmd.Parameters.AddWithValue(m.Name);
                    await cmd.ExecuteNonQueryAsync(ct);
                }
                await tx.CommitAsync(ct);
                done.Add(m.Version);
            }
            activity?.SetTag("helixagent.migrations.applied", done.Count);
            return done;
        }
        finally
        {
            await UnlockAsync(conn);
        }
    }

    /// <summary>Reverts the newest applied migration; returns its version, or null when none is applied.</summary>
    public async Task<long?> DownAsync(CancellationToken ct = default)
    {
        using var activity = ActivitySource.StartActivity("migrate down");
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await LockAsync(conn, ct);
        try
        {
            var applied = await AppliedVersionsAsync(conn, ct);
            if (applied.Count == 0)
            {
                return null;
            }
            var newest = applied.Max();
            var m = All.FirstOrDefault(x => x.Version == newest)
                ?? throw new InvalidOperationException(
                    $"The database is at schema version {newest}, which this build does not know; use a newer build to migrate down.");
            await using var tx = await conn.BeginTransactionAsync(ct);
            await ExecAsync(conn, m.Down, ct);
            await using (var cmd = new NpgsqlCommand("DELETE FROM schema_migrations WHERE version = $1", conn))
            {
                cmd.Parameters.AddWithValue(m.Version);
                await cmd.ExecuteNonQueryAsync(ct);
            }
            await tx.CommitAsync(ct);
            return m.Version;
        }
        finally
        {
            await UnlockAsync(conn);
        }
    }

    /// <summary>Every known migration with the time it was applied (null when pending).</summary>
    public async Task<IReadOnlyList<MigrationStatus>> StatusAsync(CancellationToken ct = default)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        var applied = new Dictionary<long, (string Name, DateTimeOffset At)>();
        if (await TableExistsAsync(conn, ct))
        {
            await using var cmd = new NpgsqlCommand("SELECT version, name, applied_at FROM schema_migrations", conn);
            await using var r = await cmd.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct))
            {
                applied[r.GetInt64(0)] = (r.GetString(1), r.GetFieldValue<DateTimeOffset>(2));
            }
        }
        var all = All.Select(m => new MigrationStatus(m.Version, m.Name,
            applied.TryGetValue(m.Version, out var a) ? a.At : null)).ToList();
        all.AddRange(applied.Where(a => All.All(m => m.Version != a.Key))
            .Select(a => new MigrationStatus(a.Key, a.Value.Name, a.Value.At)));
        return all.OrderBy(s => s.Version).ToList();
    }

    /// <summary>The newest applied version, 0 when the schema is empty.</summary>
    public static async Task<long> CurrentVersionAsync(NpgsqlConnection conn, CancellationToken ct = default)
    {
        await using var cmd = new NpgsqlCommand("SELECT coalesce(max(version), 0) FROM schema_migrations", conn);
        try
        {
            return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct), System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            return 0; // a database no migrator has touched yet
        }
    }

    private static async Task LockAsync(NpgsqlConnection conn, CancellationToken ct)
    {
        await using (var cmd = new NpgsqlCommand("SELECT pg_advisory_lock($1)", conn))
        {
            cmd.Parameters.AddWithValue(AdvisoryLockKey);
            await cmd.ExecuteNonQueryAsync(ct);
        }
        await ExecAsync(conn, """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    bigint PRIMARY KEY,
                name       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """, ct);
    }

    private static async Task UnlockAsync(NpgsqlConnection conn)
    {
        if (conn.State != System.Data.ConnectionState.Open)
        {
            return;
        }
        await using var cmd = new NpgsqlCommand("SELECT pg_advisory_unlock($1)", conn);
        cmd.Parameters.AddWithValue(AdvisoryLockKey);
        await cmd.ExecuteNonQueryAsync();
    }

    private static async Task<HashSet<long>> AppliedVersionsAsync(NpgsqlConnection conn, CancellationToken ct)
    {
        var set = new HashSet<long>();
        await using var cmd = new NpgsqlCommand("SELECT version FROM schema_migrations", conn);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
        {
            set.Add(r.GetInt64(0));
        }
        return set;
    }

    private static async Task<bool> TableExistsAsync(NpgsqlConnection conn, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("SELECT to_regclass('schema_migrations') IS NOT NULL", conn);
        return (bool)(await cmd.ExecuteScalarAsync(ct))!;
    }

    private static async Task ExecAsync(NpgsqlConnection conn, string sql, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(sql, conn);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    private static List<Migration> Load()
    {
        var asm = typeof(SchemaMigrator).Assembly;
        var scripts = new Dictionary<(long, string), (string? Up, string? Down)>();
        foreach (var res in asm.GetManifestResourceNames())
        {
            var m = FileName().Match(res);
            if (!m.Success)
            {
                continue;
            }
            var key = (long.Parse(m.Groups["v"].Value, System.Globalization.CultureInfo.InvariantCulture), m.Groups["n"].Value);
            using var reader = new StreamReader(asm.GetManifestResourceStream(res)!);
            var text = reader.ReadToEnd();
            scripts.TryGetValue(key, out var pair);
            scripts[key] = m.Groups["d"].Value == "up" ? (text, pair.Down) : (pair.Up, text);
        }
        var list = new List<Migration>();
        foreach (var ((version, name), (up, down)) in scripts.OrderBy(s => s.Key.Item1))
        {
            if (up is null || down is null)
            {
                throw new InvalidOperationException($"Migration {version}_{name} needs both an up and a down script.");
            }
            list.Add(new Migration(version, name, up, down));
        }
        if (list.Count == 0 || list.Select(m => m.Version).Distinct().Count() != list.Count)
        {
            throw new InvalidOperationException("Embedded migrations are missing or have duplicate versions.");
        }
        return list;
    }

    [GeneratedRegex(@"^Migrations/(?<v>\d+)_(?<n>[a-z0-9_]+)\.(?<d>up|down)\.sql$")]
    private static partial Regex FileName();
}
