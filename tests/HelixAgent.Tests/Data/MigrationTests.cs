using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Data;

/// <summary>Schema migrations on a real PostgreSQL: round trips, concurrency, the CLI verbs the Makefile calls.</summary>
public sealed class MigrationTests(PostgresServer postgres) : IClassFixture<PostgresServer>
{
    private static async Task<List<string>> TablesAsync(string cs)
    {
        await using var conn = new NpgsqlConnection(cs + ";Pooling=false");
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            // The contract's tables: a partition of completions is not one of them.
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1
            """, conn);
        var list = new List<string>();
        await using var r = await cmd.ExecuteReaderAsync();
        while (await r.ReadAsync())
        {
            list.Add(r.GetString(0));
        }
        return list;
    }

    private static async Task<List<long>> RecordedVersionsAsync(string cs)
    {
        await using var conn = new NpgsqlConnection(cs + ";Pooling=false");
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT version FROM schema_migrations ORDER BY version DESC", conn);
        var list = new List<long>();
        await using var r = await cmd.ExecuteReaderAsync();
        while (await r.ReadAsync())
        {
            list.Add(r.GetInt64(0));
        }
        return list;
    }

    [Fact]
    public async Task Up_down_up_round_trip_creates_drops_and_recreates_the_contract_tables()
    {
        var cs = await postgres.CreateDatabaseAsync("mig");
        await using var ds = NpgsqlDataSource.Create(cs);
        var migrator = new SchemaMigrator(ds);

        string[] all = ["api_keys", "completions", "schema_migrations", "usage_daily", "worker_jobs"];
        Assert.Equal(SchemaMigrator.All.Select(m => m.Version), await migrator.UpAsync());
        Assert.Equal([.. all.Take(2), "responses", .. all.Skip(2).Take(1), "teams", .. all.Skip(3)], await TablesAsync(cs));
        Assert.Equal(SchemaMigrator.All.Select(m => m.Version).Reverse(), await RecordedVersionsAsync(cs));

        // One step down at a time, newest first.
        Assert.True(await ColumnAsync(cs, "team"));
        Assert.Equal(8, await migrator.DownAsync());
        Assert.False(await ColumnAsync(cs, "team"));
        Assert.Equal([.. all.Take(2), "responses", .. all.Skip(2)], await TablesAsync(cs));
        Assert.Equal([7L, 6L, 5L, 4L, 3L, 2L, 1L], await RecordedVersionsAsync(cs));
        Assert.True(await ColumnAsync(cs, "cost_usd"));
        Assert.Equal(7, await migrator.DownAsync());
        Assert.False(await ColumnAsync(cs, "cost_usd"));
        Assert.Equal([6L, 5L, 4L, 3L, 2L, 1L], await RecordedVersionsAsync(cs));
        Assert.True(await PartitionedAsync(cs));
        Assert.Equal(6, await migrator.DownAsync());
        Assert.False(await PartitionedAsync(cs));
        Assert.Equal([.. all.Take(2), "responses", .. all.Skip(2)], await TablesAsync(cs));
        Assert.Equal([5L, 4L, 3L, 2L, 1L], await RecordedVersionsAsync(cs));
        Assert.Equal(5, await migrator.DownAsync());
        Assert.Equal(all, await TablesAsync(cs));
        Assert.Equal([4L, 3L, 2L, 1L], await RecordedVersionsAsync(cs));
        Assert.True(await ColumnAsync(cs, "dropped_hints"));
        Assert.Equal(4, await migrator.DownAsync());
        Assert.Equal(all, await TablesAsync(cs));
        Assert.Equal([3L, 2L, 1L], await RecordedVersionsAsync(cs));
        Assert.False(await ColumnAsync(cs, "dropped_hints"));
        Assert.True(await UsageEstimatedColumnAsync(cs));
        Assert.Equal(3, await migrator.DownAsync());
        Assert.Equal(all, await TablesAsync(cs));
        Assert.Equal([2L, 1L], await RecordedVersionsAsync(cs));
        Assert.False(await UsageEstimatedColumnAsync(cs));
        Assert.Equal(2, await migrator.DownAsync());
        Assert.Equal(["api_keys", "completions", "schema_migrations"], await TablesAsync(cs));
        Assert.Equal([1L], await RecordedVersionsAsync(cs));
        Assert.Equal(1, await migrator.DownAsync());
        Assert.Equal(["schema_migrations"], await TablesAsync(cs));
        Assert.Empty(await RecordedVersionsAsync(cs));
        Assert.Null(await migrator.DownAsync());

        await migrator.UpAsync();
        Assert.Equal([.. all.Take(2), "responses", .. all.Skip(2).Take(1), "teams", .. all.Skip(3)], await TablesAsync(cs));
        Assert.Empty(await migrator.UpAsync());
    }

    [Fact]
    public async Task Concurrent_migrators_apply_each_migration_exactly_once()
    {
        var cs = await postgres.CreateDatabaseAsync("race");
        var sources = Enumerable.Range(0, 4).Select(_ => NpgsqlDataSource.Create(cs)).ToList();
        try
        {
            var results = await Task.WhenAll(sources.Select(ds => Task.Run(() => new SchemaMigrator(ds).UpAsync())));

            Assert.Equal(SchemaMigrator.All.Count, results.Sum(r => r.Count));
            Assert.Single(results, r => r.Count > 0);
            Assert.Equal(SchemaMigrator.All.Select(m => m.Version).Reverse(), await RecordedVersionsAsync(cs));
        }
        finally
        {
            foreach (var ds in sources)
            {
                await ds.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Cli_migrate_verbs_round_trip_and_report_status()
    {
        var cs = await postgres.CreateDatabaseAsync("cli");
        var env = new Dictionary<string, string> { ["ConnectionStrings__helixagent-db"] = cs };

        var status = await ApiProcess.RunCliAsync(env, "migrate", "status");
        Assert.Equal(0, status.ExitCode);
        Assert.Contains("pending", status.Stdout);

        var up = await ApiProcess.RunCliAsync(env, "migrate", "up");
        Assert.Equal(0, up.ExitCode);
        Assert.Contains($"schema at version {SchemaMigrator.ExpectedVersion}", up.Stdout);

        Assert.True(await ColumnAsync(cs, "dropped_hints"));
        var down = await ApiProcess.RunCliAsync(env, "migrate", "down");
        Assert.Equal((0, $"reverted {SchemaMigrator.ExpectedVersion}"), (down.ExitCode, down.Stdout.Trim()));
        // 0008 reverted: teams and the budget columns are gone, the rest (0007's cost columns included) stays.
        Assert.False(await ColumnAsync(cs, "team"));
        Assert.DoesNotContain("teams", await TablesAsync(cs));
        Assert.True(await ColumnAsync(cs, "cost_usd"));
        Assert.True(await PartitionedAsync(cs));
        Assert.Contains("responses", await TablesAsync(cs));
        Assert.True(await ColumnAsync(cs, "dropped_hints"));
        Assert.True(await UsageEstimatedColumnAsync(cs));

        Assert.Equal(0, (await ApiProcess.RunCliAsync(env, "migrate", "up")).ExitCode);
        Assert.Equal(SchemaMigrator.All.Select(m => m.Version).Reverse(), await RecordedVersionsAsync(cs));
    }

    [Fact]
    public async Task Cli_rejects_bad_input_with_a_message_and_a_nonzero_exit()
    {
        var bad = await ApiProcess.RunCliAsync(new Dictionary<string, string>(), "migrate", "sideways");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("usage: helixagent migrate up|down|status", bad.Stderr);

        var noDb = await ApiProcess.RunCliAsync(new Dictionary<string, string>(), "migrate", "up");
        Assert.Equal(2, noDb.ExitCode);
        Assert.Contains("no database configured", noDb.Stderr);

        var unreachable = await ApiProcess.RunCliAsync(
            new Dictionary<string, string> { ["ConnectionStrings__helixagent-db"] = $"Host=127.0.0.1;Port={ServerProcess.FreePort()};Username=x;Timeout=2" },
            "migrate", "up");
        Assert.Equal(3, unreachable.ExitCode);
        Assert.StartsWith("helixagent: database error:", unreachable.Stderr);
        Assert.DoesNotContain("   at ", unreachable.Stderr);
    }

    [Fact]
    public async Task Migration_0006_partitions_completions_by_day_and_back_keeping_every_row_and_its_id()
    {
        var cs = await postgres.CreateDatabaseAsync("part");
        await using var ds = NpgsqlDataSource.Create(cs);
        var migrator = new SchemaMigrator(ds);
        await migrator.UpAsync();
        Assert.Equal(8, await migrator.DownAsync());
        Assert.Equal(7, await migrator.DownAsync());
        Assert.Equal(6, await migrator.DownAsync());
        Assert.False(await PartitionedAsync(cs));
        // Rows of three days long ago, yesterday and today, as the gateway wrote them before 0006.
        await using (var insert = ds.CreateCommand("""
            INSERT INTO completions (request_id, model, endpoint, status, latency_ms, prompt_tokens, created_at)
            SELECT 'before-' || g, 'm', 'chat.completions', 200, g, g, now() - make_interval(days => (g % 5) * 20) - interval '1 minute'
            FROM generate_series(1, 300) g
            """))
        {
            await insert.ExecuteNonQueryAsync();
        }
        var before = await SnapshotAsync(ds);

        Assert.Equal([6L, 7L, 8L], await migrator.UpAsync());

        Assert.True(await PartitionedAsync(cs));
        Assert.Equal(before, await SnapshotAsync(ds));
        // Each row sits in the partition of its own day (UTC): none fell into the default partition.
        Assert.Equal(0L, await ScalarAsync(ds, "SELECT count(*) FROM completions_default"));
        Assert.Equal(0L, await ScalarAsync(ds, """
            SELECT count(*) FROM completions WHERE tableoid::regclass::text <> 'completions_p' || to_char(created_at AT TIME ZONE 'UTC', 'YYYYMMDD')
            """));
        // Partitions stand ready for the week ahead, and a new row takes the next id.
        Assert.Equal(1L, await ScalarAsync(ds, "SELECT count(*) FROM pg_class WHERE relname = 'completions_p' || to_char((now() AT TIME ZONE 'UTC')::date + 7, 'YYYYMMDD')"));
        Assert.Equal(before.MaxId + 1, await ScalarAsync(ds,
            "INSERT INTO completions (request_id, model, endpoint, status, latency_ms) VALUES ('after', 'm', 'chat.completions', 200, 1) RETURNING id"));
        // (request_id, created_at) is unique: the journal's replay of a row it already wrote is skipped, not doubled.
        Assert.Equal(0L, await ScalarAsync(ds, """
            WITH again AS (INSERT INTO completions (request_id, model, endpoint, status, latency_ms, created_at)
                SELECT request_id, model, endpoint, status, latency_ms, created_at FROM completions WHERE request_id = 'after'
                ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM again
            """));
        Assert.Equal(before.Rows + 1, await ScalarAsync(ds, "SELECT count(*) FROM completions"));

        Assert.Equal(8, await migrator.DownAsync());
        Assert.Equal(7, await migrator.DownAsync());
        Assert.Equal(6, await migrator.DownAsync());
        Assert.False(await PartitionedAsync(cs));
        Assert.Equal(before.Rows + 1, await ScalarAsync(ds, "SELECT count(*) FROM completions"));
        Assert.Equal(before, await SnapshotAsync(ds, "WHERE request_id <> 'after'"));
        Assert.Equal(before.MaxId + 2, await ScalarAsync(ds,
            "INSERT INTO completions (request_id, model, endpoint, status, latency_ms) VALUES ('after-down', 'm', 'chat.completions', 200, 1) RETURNING id"));
    }

    private sealed record Snapshot(long Rows, long MaxId, string Digest);

    /// <summary>Every row's id, request id, tokens and created_at, digested.</summary>
    private static async Task<Snapshot> SnapshotAsync(NpgsqlDataSource ds, string where = "")
    {
        await using var cmd = ds.CreateCommand($"""
            SELECT count(*), coalesce(max(id), 0), md5(coalesce(string_agg(id || '/' || request_id || '/' || prompt_tokens || '/' || created_at, ',' ORDER BY id), ''))
            FROM completions {where}
            """);
        await using var r = await cmd.ExecuteReaderAsync();
        await r.ReadAsync();
        return new Snapshot(r.GetInt64(0), r.GetInt64(1), r.GetString(2));
    }

    private static async Task<long> ScalarAsync(NpgsqlDataSource ds, string sql)
    {
        await using var cmd = ds.CreateCommand(sql);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    private static async Task<bool> PartitionedAsync(string cs)
    {
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT relkind = 'p' FROM pg_class WHERE relname = 'completions'", conn);
        return (bool)(await cmd.ExecuteScalarAsync())!;
    }

    private static Task<bool> UsageEstimatedColumnAsync(string cs) => ColumnAsync(cs, "usage_estimated");

    private static async Task<bool> ColumnAsync(string cs, string column)
    {
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'completions' AND column_name = $1", conn);
        cmd.Parameters.AddWithValue(column);
        return (long)(await cmd.ExecuteScalarAsync())! == 1;
    }
}
