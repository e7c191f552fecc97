using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Data;

/// <summary>Read routing against a real streaming replica made with pg_basebackup.</summary>
public sealed class ReadReplicaTests(OwnPostgresServer postgres, RedisServer redis)
    : IClassFixture<OwnPostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Reports_read_from_the_replica_writes_go_to_the_primary_and_reads_fall_back_when_it_lags_or_stops()
    {
        await using var replica = await PostgresReplica.StartAsync(postgres);
        var database = $"replica_{Guid.NewGuid():N}"[..24];
        await using (var server = new NpgsqlConnection(postgres.ConnectionString("postgres") + ";Pooling=false"))
        {
            await server.OpenAsync();
            await new NpgsqlCommand($"CREATE DATABASE {database}", server).ExecuteNonQueryAsync();
        }
        var settings = GatewayHarness.SimulatorSettings();
        settings["ConnectionStrings:helixagent-db-replica"] = replica.ConnectionString(database);
        settings["Database:Replica:CheckSeconds"] = "0.2";
        settings["Database:Replica:MaxLagSeconds"] = "1";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings, databaseConnectionString: postgres.ConnectionString(database));
        var admin = gw.WithKey(gw.AdminKey);

        var ports = new ConcurrentQueue<(string Sql, int Port)>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Npgsql",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
            ActivityStopped = a =>
            {
                var sql = a.TagObjects.Select(t => t.Value as string).FirstOrDefault(v => v is not null && (v.Contains("usage_daily") || v.Contains("INSERT INTO completions")));
                var port = a.TagObjects.Where(t => t.Key.Contains("port", StringComparison.Ordinal)).Select(t => Convert.ToInt32(t.Value)).FirstOrDefault();
                // Other test classes run in parallel: only this test's database counts.
                if (sql is not null && a.TagObjects.Any(t => t.Value as string == database))
                {
                    ports.Enqueue((sql, port));
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        async Task<bool> ServingReads() =>
            JsonNode.Parse(await gw.Anonymous().GetStringAsync("/health/detailed"))!["read_replica"]!["serving_reads"]!.GetValue<bool>();
        async Task<int> UsagePort()
        {
            ports.Clear();
            Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/admin/usage?group_by=model")).StatusCode);
            return ports.Last(p => p.Sql.Contains("usage_daily")).Port;
        }

        // The replica has replayed the migrations (streaming is asynchronous).
        await Eventually.TrueAsync(async () =>
        {
            try
            {
                await using var r = new NpgsqlConnection(replica.ConnectionString(database) + ";Pooling=false");
                await r.OpenAsync();
                // Every migration, the newest included (its columns are what the usage report reads).
                return await new NpgsqlCommand("SELECT to_regclass('schema_migrations') IS NOT NULL AND (SELECT max(version) FROM schema_migrations) = "
                    + HelixAgent.Data.SchemaMigrator.ExpectedVersion, r).ExecuteScalarAsync() is true;
            }
            catch (PostgresException)
            {
                return false; // the database itself has not been replayed yet
            }
        }, "the replica replaying the migrations");
        await Eventually.TrueAsync(ServingReads, "reads served from the replica");
        Assert.Equal(replica.Port, await UsagePort());

        ports.Clear();
        await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"));
        await gw.LedgerRowsAsync(1);
        // The insert's span ends a moment after its row is visible.
        await Eventually.TrueAsync(() => ports.Any(p => p.Sql.Contains("INSERT INTO completions")), "the ledger's INSERT seen");
        Assert.All(ports.Where(p => p.Sql.Contains("INSERT INTO completions")), p => Assert.Equal(postgres.Port, p.Port));

        // Replay paused: the replica falls behind, reads go back to the primary until it catches up.
        await using (var r = new NpgsqlConnection(replica.ConnectionString(database) + ";Pooling=false"))
        {
            await r.OpenAsync();
            await new NpgsqlCommand("SELECT pg_wal_replay_pause()", r).ExecuteNonQueryAsync();
            for (var i = 0; i < 5; i++)
            {
                await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"));
            }
            await Eventually.TrueAsync(async () => !await ServingReads(), "reads back on the primary");
            Assert.Equal(postgres.Port, await UsagePort());
            await new NpgsqlCommand("SELECT pg_wal_replay_resume()", r).ExecuteNonQueryAsync();
        }
        await Eventually.TrueAsync(ServingReads, "reads served from the replica");
        Assert.Equal(replica.Port, await UsagePort());

        // Replica down: reads still answer, from the primary.
        await replica.StopAsync();
        await Eventually.TrueAsync(async () => !await ServingReads(), "reads back on the primary");
        Assert.Equal(postgres.Port, await UsagePort());
    }
}
