using System.Diagnostics;
using System.Net;
using System.Text;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Deploy;

/// <summary>scripts/backup-helixagent.sh and scripts/restore-helixagent.sh on a real PostgreSQL: every row comes back.</summary>
public sealed class BackupRestoreTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static async Task<(int ExitCode, string Stdout, string Stderr)> ScriptAsync(string script, IDictionary<string, string> env, params string[] args)
    {
        var (exit, stdout, stderr) = await ServerProcess.RunAsync(Path.Combine(RepoPaths.Root, "scripts", script), args,
            env: new Dictionary<string, string>(env) { ["HELIXAGENT_BACKUP_ENV"] = "/nonexistent" });
        return (exit, stdout.Trim(), stderr);
    }

    private static async Task<long> CountAsync(string cs, string sql)
    {
        await using var conn = new NpgsqlConnection(cs + ";Pooling=false");
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    [Fact]
    public async Task Traffic_backup_drop_restore_brings_back_every_completion_and_key()
    {
        var backups = ServerProcess.TempDir("helixagent-backups");
        var settings = GatewayHarness.SimulatorSettings();
        string cs, clientKey;
        long completions, keys;
        await using (var gw = await GatewayHarness.StartAsync(postgres, redis, settings))
        {
            cs = gw.DatabaseConnectionString;
            clientKey = gw.ClientKey;
            for (var i = 0; i < 12; i++)
            {
                await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat(i % 4 == 0 ? "sim-error" : "sim-small"));
            }
            await gw.LedgerRowsAsync(12);
            completions = await CountAsync(cs, "SELECT count(*) FROM completions");
            keys = await CountAsync(cs, "SELECT count(*) FROM api_keys");
        }
        var database = new NpgsqlConnectionStringBuilder(cs).Database!;
        var env = new Dictionary<string, string>
        {
            ["PGHOST"] = "127.0.0.1",
            ["PGPORT"] = postgres.Port.ToString(),
            ["PGUSER"] = "postgres",
            ["PGDATABASE"] = database,
            ["BACKUP_DIR"] = backups,
            ["BACKUP_KEEP"] = "2",
        };

        var backup = await ScriptAsync("backup-helixagent.sh", env);
        Assert.Equal(0, backup.ExitCode);
        Assert.Matches(@"/backup_\d{8}_\d{6}\.dump$", backup.Stdout);

        await using (var admin = new NpgsqlConnection(postgres.ConnectionString("postgres") + ";Pooling=false"))
        {
            await admin.OpenAsync();
            NpgsqlConnection.ClearAllPools();
            await new NpgsqlCommand($"DROP DATABASE \"{database}\" WITH (FORCE)", admin).ExecuteNonQueryAsync();
            await new NpgsqlCommand($"CREATE DATABASE \"{database}\"", admin).ExecuteNonQueryAsync();
        }
        Assert.Equal(0, await CountAsync(cs, "SELECT count(*) FROM pg_tables WHERE tablename = 'completions'"));

        var restore = await ScriptAsync("restore-helixagent.sh", env, backup.Stdout);
        Assert.Equal(0, restore.ExitCode);
        Assert.Contains($"{completions} rows in completions", restore.Stdout);
        Assert.Equal(completions, await CountAsync(cs, "SELECT count(*) FROM completions"));
        Assert.Equal(keys, await CountAsync(cs, "SELECT count(*) FROM api_keys"));

        // The restored keys still authenticate.
        await using var after = await GatewayHarness.StartAsync(postgres, redis, settings, databaseConnectionString: cs);
        var response = await after.WithKey(clientKey).PostAsync("/v1/chat/completions",
            new StringContent(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task Backups_keep_the_newest_n_copies_and_a_failed_dump_exits_non_zero_with_a_message()
    {
        var backups = ServerProcess.TempDir("helixagent-backups");
        var cs = await postgres.CreateDatabaseAsync("bk");
        var env = new Dictionary<string, string>
        {
            ["PGHOST"] = "127.0.0.1",
            ["PGPORT"] = postgres.Port.ToString(),
            ["PGUSER"] = "postgres",
            ["PGDATABASE"] = new NpgsqlConnectionStringBuilder(cs).Database!,
            ["BACKUP_DIR"] = backups,
            ["BACKUP_KEEP"] = "2",
        };
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(0, (await ScriptAsync("backup-helixagent.sh", env)).ExitCode);
        }
        Assert.Equal(2, Directory.GetFiles(backups, "backup_*.dump").Length);

        env["PGDATABASE"] = "no_such_database";
        var failed = await ScriptAsync("backup-helixagent.sh", env);
        Assert.Equal(1, failed.ExitCode);
        Assert.Contains("backup-helixagent: pg_dump of no_such_database failed", failed.Stderr);
        Assert.Empty(Directory.GetFiles(backups, "*.partial"));

        var missing = await ScriptAsync("restore-helixagent.sh", env, "/nonexistent.dump");
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("cannot read /nonexistent.dump", missing.Stderr);
    }
}
