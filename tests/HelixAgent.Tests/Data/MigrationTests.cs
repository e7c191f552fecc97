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
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1", conn);
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
        await using var cmd = new NpgsqlCommand("SELECT version FROM schema_migrations ORDER BY version DESC LIMIT 5", conn);
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
        Assert.Equal([.. all.Take(2), "responses", .. all.Skip(2)], await TablesAsync(cs));
        Assert.Equal(SchemaMigrator.All.Select(m => m.Version).Reverse(), await RecordedVersionsAsync(cs));

        // One step down at a time, newest first.
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
        Assert.Equal([.. all.Take(2), "responses", .. all.Skip(2)], await TablesAsync(cs));
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
        Assert.DoesNotContain("responses", await TablesAsync(cs)); // 0005 reverted: its table is gone, the others stay
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
