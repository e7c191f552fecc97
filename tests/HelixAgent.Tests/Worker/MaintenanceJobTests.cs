using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using HelixAgent.Worker.Jobs;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace HelixAgent.Tests.Worker;

/// <summary>The worker's maintenance jobs against a real PostgreSQL, each showing its effect.</summary>
public sealed class MaintenanceJobTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UtcNow;

    private async Task<(string Cs, NpgsqlDataSource Db)> DatabaseAsync()
    {
        var cs = await postgres.CreateDatabaseAsync("jobs");
        var db = NpgsqlDataSource.Create(cs);
        await new SchemaMigrator(db).UpAsync();
        return (cs, db);
    }

    private static JobRunner Runner(NpgsqlDataSource db, WorkerOptions options) => new(db, options, TimeProvider.System,
        NullLogger<JobRunner>.Instance,
        [new RetentionJob(options, TimeProvider.System), new PartitionJob(options, TimeProvider.System), new KeyExpiryJob(options, TimeProvider.System), new VacuumJob(), new RollupJob(options, TimeProvider.System),
         new ResponsesRetentionJob(new ResponsesRetentionOptions { RetentionDays = 30 }, options, TimeProvider.System)],
        Meters);

    /// <summary>One meter factory per test class instance is enough: nothing here reads the job metrics.</summary>
    private static readonly System.Diagnostics.Metrics.IMeterFactory Meters =
        Microsoft.Extensions.DependencyInjection.ServiceCollectionContainerBuilderExtensions.BuildServiceProvider(
            Microsoft.Extensions.DependencyInjection.MetricsServiceExtensions.AddMetrics(new Microsoft.Extensions.DependencyInjection.ServiceCollection()))
        .GetService(typeof(System.Diagnostics.Metrics.IMeterFactory)) as System.Diagnostics.Metrics.IMeterFactory ?? throw new InvalidOperationException();

    private static async Task InsertCompletionsAsync(NpgsqlDataSource db, int count, DateTimeOffset at, string model = "m", string provider = "p",
        int status = 200, Guid? keyId = null, string? keyName = null, double latency = 100)
    {
        await using var cmd = db.CreateCommand("""
            INSERT INTO completions (request_id, key_id, key_name, model, provider, endpoint, status, prompt_tokens, completion_tokens, latency_ms, created_at)
            SELECT gen_random_uuid()::text, $2, $3, $4, $5, 'chat.completions', $6, 10, 20, $7 + g, $1 FROM generate_series(1, $8) g
            """);
        cmd.Parameters.AddWithValue(at);
        cmd.Parameters.Add(new NpgsqlParameter<Guid?> { TypedValue = keyId, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Uuid });
        cmd.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = keyName, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        cmd.Parameters.AddWithValue(model);
        cmd.Parameters.AddWithValue(provider);
        cmd.Parameters.AddWithValue((short)status);
        cmd.Parameters.AddWithValue(latency);
        cmd.Parameters.AddWithValue(count);
        await cmd.ExecuteNonQueryAsync();
    }

    private static async Task<long> ScalarAsync(NpgsqlDataSource db, string sql)
    {
        await using var cmd = db.CreateCommand(sql);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    private sealed class FixedTime(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }

    private static Task<long> PartitionAsync(NpgsqlDataSource db, DateTimeOffset day) =>
        ScalarAsync(db, $"SELECT helixagent_completions_partition('{day.UtcDateTime:yyyy-MM-dd}')::int");

    [Fact]
    public async Task Retention_drops_each_day_partition_wholly_older_than_the_retention_and_keeps_the_others()
    {
        var (_, db) = await DatabaseAsync();
        await using var _ = db;
        foreach (var age in new[] { 100, 92, 89 })
        {
            Assert.Equal(1, await PartitionAsync(db, Now.AddDays(-age)));
            await InsertCompletionsAsync(db, 10 + age, Now.AddDays(-age));
        }
        await InsertCompletionsAsync(db, 4, Now);
        var runner = Runner(db, new WorkerOptions { RetentionDays = 90 });

        var run = await runner.RunOnceAsync(runner.Jobs["retention"], CancellationToken.None);

        // The 100- and 92-day-old days go whole (110 + 102 rows), by DROP TABLE: nothing is left to vacuum.
        Assert.Equal((JobOutcome.Succeeded, 212L), (run.Outcome, run.Rows));
        Assert.Equal(0, await ScalarAsync(db, $"SELECT count(*) FROM pg_class WHERE relname IN ('completions_p{Now.AddDays(-100).UtcDateTime:yyyyMMdd}', 'completions_p{Now.AddDays(-92).UtcDateTime:yyyyMMdd}')"));
        Assert.Equal(99 + 4, await ScalarAsync(db, "SELECT count(*) FROM completions"));
        Assert.Equal(1, await ScalarAsync(db, $"SELECT count(*) FROM pg_class WHERE relname = 'completions_p{Now.AddDays(-89).UtcDateTime:yyyyMMdd}'"));
    }

    [Fact]
    public async Task The_partitions_job_creates_day_partitions_ahead_and_moves_rows_that_landed_in_the_default_partition()
    {
        var (_, db) = await DatabaseAsync();
        await using var _ = db;
        var later = Now.AddDays(15);
        // A row for a day no partition covered yet (as when the worker was down for weeks): it waits in the default partition.
        await InsertCompletionsAsync(db, 3, later.AddDays(5));
        Assert.Equal(3, await ScalarAsync(db, "SELECT count(*) FROM completions_default"));
        var options = new WorkerOptions { PartitionDaysAhead = 7 };
        var job = new PartitionJob(options, new FixedTime(later));
        var runner = new JobRunner(db, options, TimeProvider.System, NullLogger<JobRunner>.Instance, [job], Meters);

        var run = await runner.RunOnceAsync(job, CancellationToken.None);

        // Yesterday to a week ahead, seen from 15 days on: 9 days, none of which existed (the migration made up to day 7).
        Assert.Equal((JobOutcome.Succeeded, 9L), (run.Outcome, run.Rows));
        Assert.Equal(0, await ScalarAsync(db, "SELECT count(*) FROM completions_default"));
        Assert.Equal(3, await ScalarAsync(db, $"SELECT count(*) FROM completions_p{later.AddDays(5).UtcDateTime:yyyyMMdd}"));
        Assert.Equal(1, await ScalarAsync(db, $"SELECT count(*) FROM pg_class WHERE relname = 'completions_p{later.AddDays(7).UtcDateTime:yyyyMMdd}'"));
        // Run again: nothing more to make.
        Assert.Equal(0L, (await runner.RunOnceAsync(job, CancellationToken.None)).Rows);
    }

    [Fact]
    public async Task Retention_deletes_rows_of_the_default_partition_older_than_the_retention_in_batches()
    {
        var (_, db) = await DatabaseAsync();
        await using var _ = db;
        await InsertCompletionsAsync(db, 25, Now.AddDays(-100));
        await InsertCompletionsAsync(db, 5, Now.AddDays(-1));
        var runner = Runner(db, new WorkerOptions { RetentionDays = 90, RetentionBatchSize = 10 });
        // Each statement the job sends to this database, as Npgsql traces it.
        var database = new NpgsqlConnectionStringBuilder(db.ConnectionString).Database;
        var deletes = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == "Npgsql",
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllData,
            ActivityStopped = a =>
            {
                var text = (a.GetTagItem("db.query.text") ?? a.GetTagItem("db.statement")) as string;
                var ns = (a.GetTagItem("db.namespace") ?? a.GetTagItem("db.name")) as string;
                if (ns == database && text?.StartsWith("DELETE FROM completions", StringComparison.Ordinal) == true)
                {
                    deletes.Enqueue(text);
                }
            },
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);

        var run = await runner.RunOnceAsync(runner.Jobs["retention"], CancellationToken.None);

        Assert.Equal((JobOutcome.Succeeded, 25L), (run.Outcome, run.Rows));
        // 25 old rows in batches of 10: three DELETEs of at most 10 rows (10, 10, 5), not one of 25.
        Assert.Equal(3, deletes.Count);
        Assert.All(deletes, d => Assert.Contains("LIMIT", d, StringComparison.Ordinal));
        Assert.Equal(5, await ScalarAsync(db, "SELECT count(*) FROM completions"));
        Assert.Equal(25, await ScalarAsync(db, "SELECT last_rows FROM worker_jobs WHERE job = 'retention'"));
    }

    [Fact]
    public async Task Responses_retention_deletes_stored_responses_older_than_thirty_days_and_keeps_the_rest()
    {
        var (_, db) = await DatabaseAsync();
        await using var _ = db;
        foreach (var (id, age) in new[] { ("resp_old1", 45), ("resp_old2", 31), ("resp_new", 29), ("resp_today", 0) })
        {
            await using var insert = db.CreateCommand(
                "INSERT INTO responses (id, created_at, model, input, response) VALUES ($1, $2, 'm', '[]', '{}')");
            insert.Parameters.AddWithValue(id);
            insert.Parameters.AddWithValue(Now.AddDays(-age));
            await insert.ExecuteNonQueryAsync();
        }
        var runner = Runner(db, new WorkerOptions { RetentionBatchSize = 1 });

        var run = await runner.RunOnceAsync(runner.Jobs["responses-retention"], CancellationToken.None);

        Assert.Equal((JobOutcome.Succeeded, 2L), (run.Outcome, run.Rows));
        Assert.Equal(2, await ScalarAsync(db, "SELECT count(*) FROM responses WHERE id IN ('resp_new', 'resp_today')"));
        Assert.Equal(2, await ScalarAsync(db, "SELECT count(*) FROM responses"));
    }

    [Fact]
    public async Task Rollup_aggregates_per_day_key_model_and_provider_and_reruns_without_double_counting()
    {
        var (_, db) = await DatabaseAsync();
        await using var _ = db;
        var key = Guid.NewGuid();
        await InsertCompletionsAsync(db, 10, Now.AddDays(-5), "gpt", "openai", keyId: key, keyName: "app");
        await InsertCompletionsAsync(db, 4, Now.AddDays(-5), "gpt", "openai", status: 502, keyId: key, keyName: "app");
        await InsertCompletionsAsync(db, 3, Now, "claude", "anthropic", keyId: key, keyName: "app");
        var runner = Runner(db, new WorkerOptions());

        Assert.Equal(JobOutcome.Succeeded, (await runner.RunOnceAsync(runner.Jobs["rollup"], CancellationToken.None)).Outcome);
        Assert.Equal(JobOutcome.Succeeded, (await runner.RunOnceAsync(runner.Jobs["rollup"], CancellationToken.None)).Outcome);

        Assert.Equal(2, await ScalarAsync(db, "SELECT count(*) FROM usage_daily"));
        Assert.Equal(14, await ScalarAsync(db, "SELECT requests FROM usage_daily WHERE model = 'gpt'"));
        Assert.Equal(4, await ScalarAsync(db, "SELECT errors FROM usage_daily WHERE model = 'gpt'"));
        Assert.Equal(280, await ScalarAsync(db, "SELECT completion_tokens FROM usage_daily WHERE model = 'gpt'"));
        Assert.Equal(3, await ScalarAsync(db, "SELECT requests FROM usage_daily WHERE model = 'claude' AND provider = 'anthropic'"));
        Assert.True(await ScalarAsync(db, "SELECT latency_p95_ms::bigint FROM usage_daily WHERE model = 'gpt'") > 100);
    }

    [Fact]
    public async Task Key_expiry_deletes_keys_expired_or_revoked_long_ago_and_keeps_the_rest()
    {
        var (_, db) = await DatabaseAsync();
        await using var _ = db;
        var store = new ApiKeyStore(db);
        await store.CreateAsync("live", "client", null, null, null, null, Now);
        await store.CreateAsync("grace", "client", null, null, null, Now.AddHours(5), Now);
        await store.CreateAsync("long-expired", "client", null, null, null, Now.AddDays(-40), Now.AddDays(-41));
        await store.CreateAsync("just-revoked", "client", null, null, null, null, Now);
        await store.RevokeAsync("just-revoked", Now);
        await store.CreateAsync("old-revoked", "client", null, null, null, null, Now.AddDays(-60));
        await store.RevokeAsync("old-revoked", Now.AddDays(-45));
        var runner = Runner(db, new WorkerOptions { KeyKeepDays = 30 });

        var run = await runner.RunOnceAsync(runner.Jobs["expire-keys"], CancellationToken.None);

        Assert.Equal(2, run.Rows);
        Assert.Equal(["grace", "just-revoked", "live"], (await store.ListAsync()).Select(k => k.Name).Order());
    }

    [Fact]
    public async Task Vacuum_analyzes_the_hot_tables()
    {
        var (_, db) = await DatabaseAsync();
        await using var _ = db;
        await InsertCompletionsAsync(db, 50, Now);
        var runner = Runner(db, new WorkerOptions());

        Assert.Equal(JobOutcome.Succeeded, (await runner.RunOnceAsync(runner.Jobs["vacuum"], CancellationToken.None)).Outcome);

        // completions is partitioned: its partitions (today's with the rows) are what VACUUM and ANALYZE reach.
        Assert.Equal(2, await ScalarAsync(db, $"SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('completions_p{Now.UtcDateTime:yyyyMMdd}', 'responses') AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL"));
    }

    [Fact]
    public async Task A_job_runs_on_one_worker_at_a_time_through_its_advisory_lock()
    {
        var (cs, db) = await DatabaseAsync();
        await using var _ = db;
        var runner = Runner(db, new WorkerOptions());
        await using var other = new NpgsqlConnection(cs);
        await other.OpenAsync();
        await using (var take = new NpgsqlCommand("SELECT pg_advisory_lock($1)", other))
        {
            take.Parameters.AddWithValue(JobRunner.LockKey("rollup"));
            await take.ExecuteNonQueryAsync();
        }

        Assert.Equal(JobOutcome.SkippedLocked, (await runner.RunOnceAsync(runner.Jobs["rollup"], CancellationToken.None)).Outcome);
        Assert.Equal(JobOutcome.Succeeded, (await runner.RunOnceAsync(runner.Jobs["retention"], CancellationToken.None)).Outcome);
    }

    [Fact]
    public async Task A_job_that_keeps_failing_turns_worker_health_unhealthy_and_a_success_heals_it()
    {
        var (_, db) = await DatabaseAsync();
        await using var _ = db;
        var runner = Runner(db, new WorkerOptions { UnhealthyAfterFailures = 3 });
        await using (var rename = db.CreateCommand("ALTER TABLE usage_daily RENAME TO usage_daily_away"))
        {
            await rename.ExecuteNonQueryAsync();
        }
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(JobOutcome.Failed, (await runner.RunOnceAsync(runner.Jobs["rollup"], CancellationToken.None)).Outcome);
        }
        var sick = await runner.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, sick.Status);
        Assert.Contains("rollup (3 failures in a row)", sick.Description);
        Assert.Equal(3, await ScalarAsync(db, "SELECT consecutive_failures FROM worker_jobs WHERE job = 'rollup'"));

        await using (var back = db.CreateCommand("ALTER TABLE usage_daily_away RENAME TO usage_daily"))
        {
            await back.ExecuteNonQueryAsync();
        }
        Assert.Equal(JobOutcome.Succeeded, (await runner.RunOnceAsync(runner.Jobs["rollup"], CancellationToken.None)).Outcome);
        Assert.Equal(HealthStatus.Healthy, (await runner.CheckHealthAsync(new HealthCheckContext())).Status);
    }

    [Fact]
    public async Task The_running_worker_serves_each_jobs_outcome_on_metrics_for_prometheus_to_scrape()
    {
        var (cs, db) = await DatabaseAsync();
        await using var _ = db;
        await InsertCompletionsAsync(db, 7, Now);
        await using (var rename = db.CreateCommand("ALTER TABLE api_keys RENAME TO api_keys_away"))
        {
            await rename.ExecuteNonQueryAsync(); // expire-keys fails at start
        }
        await using var worker = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["Worker__Jobs__vacuum__IntervalSeconds"] = "0",
        }, RepoPaths.WorkerDll);
        using var http = new HttpClient { BaseAddress = worker.BaseAddress };

        // A scrape is not one snapshot across instruments (a job may finish while it is written): poll until every
        // line this test expects is there, or 30 s pass.
        string[] expected =
        [
            "# TYPE helixagent_worker_job_rows_total counter",
            "helixagent_worker_job_rows_total{worker_job=\"rollup\"} 1",
            "helixagent_worker_job_duration_seconds_count{worker_job=\"rollup\"} 1",
            "helixagent_worker_job_failures_total{worker_job=\"expire-keys\"} 1",
        ];
        var metrics = await Eventually.ValueAsync(() => http.GetStringAsync("/metrics"),
            text => expected.All(text.Split('\n').Contains) && text.Contains("helixagent_worker_job_last_success_timestamp_seconds{worker_job=\"rollup\"}", StringComparison.Ordinal),
            "every job outcome on the worker's /metrics", TimeSpan.FromSeconds(30), text => text);
        var lines = metrics.Split('\n');
        var lastSuccess = lines.Single(l => l.StartsWith("helixagent_worker_job_last_success_timestamp_seconds{worker_job=\"rollup\"}", StringComparison.Ordinal));
        var at = DateTimeOffset.FromUnixTimeMilliseconds((long)(double.Parse(lastSuccess.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture) * 1000));
        Assert.InRange(at, Now, DateTimeOffset.UtcNow);
        Assert.DoesNotContain(lines, l => l.StartsWith("helixagent_worker_job_last_success_timestamp_seconds{worker_job=\"expire-keys\"}", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.Contains("worker_job=\"vacuum\"", StringComparison.Ordinal)); // disabled: never ran
    }

    [Fact]
    public async Task The_worker_cli_runs_a_job_on_demand_and_rejects_unknown_jobs()
    {
        var (cs, db) = await DatabaseAsync();
        await using var _ = db;
        await InsertCompletionsAsync(db, 7, Now);

        var ok = await RunWorkerAsync(cs, "run", "rollup");
        Assert.Equal(0, ok.ExitCode);
        Assert.StartsWith("rollup: 1 rows", ok.Stdout);
        Assert.Equal(7, await ScalarAsync(db, "SELECT requests FROM usage_daily"));

        var bad = await RunWorkerAsync(cs, "run", "defragment");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("jobs: expire-keys, partitions, responses-retention, retention, rollup, vacuum", bad.Stderr);
    }

    [Fact]
    public async Task The_rollup_sums_each_groups_cost_in_exact_decimals_and_the_usage_report_shows_it_with_the_unpriced_count()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        await using (var db = NpgsqlDataSource.Create(gw.DatabaseConnectionString))
        {
            // Ten rows of a tenth of a micro-dollar each (a float would not sum them to exactly 0.000001), one unpriced.
            await using (var insert = db.CreateCommand("""
                INSERT INTO completions (request_id, model, provider, endpoint, status, latency_ms, prompt_tokens, cost_usd)
                SELECT 'cost-' || g, 'priced', 'p', 'chat.completions', 200, 1, 1, CASE WHEN g <= 10 THEN 0.0000001 END
                FROM generate_series(1, 11) g
                """))
            {
                await insert.ExecuteNonQueryAsync();
            }
            var runner = Runner(db, new WorkerOptions());
            Assert.Equal(JobOutcome.Succeeded, (await runner.RunOnceAsync(runner.Jobs["rollup"], CancellationToken.None)).Outcome);
            Assert.Equal(0.000001m, (decimal)(await db.CreateCommand("SELECT cost_usd FROM usage_daily WHERE model = 'priced'").ExecuteScalarAsync())!);
        }

        var row = JsonNode.Parse(await gw.WithKey(gw.AdminKey).GetStringAsync("/admin/usage?group_by=model"))!["data"]!.AsArray()
            .Single(r => r!["model"]!.GetValue<string>() == "priced")!;
        Assert.Equal((11L, 0.000001m, 1L), (row["requests"]!.GetValue<long>(), row["cost_usd"]!.GetValue<decimal>(), row["unpriced_requests"]!.GetValue<long>()));
    }

    [Fact]
    public async Task The_admin_usage_report_is_served_from_the_rollups()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        for (var i = 0; i < 3; i++)
        {
            await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"));
        }
        await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-error"));
        await gw.LedgerRowsAsync(4);
        await using (var db = NpgsqlDataSource.Create(gw.DatabaseConnectionString))
        {
            var runner = Runner(db, new WorkerOptions());
            Assert.Equal(JobOutcome.Succeeded, (await runner.RunOnceAsync(runner.Jobs["rollup"], CancellationToken.None)).Outcome);
        }
        var admin = gw.WithKey(gw.AdminKey);

        var byModel = JsonNode.Parse(await admin.GetStringAsync("/admin/usage?group_by=model"))!["data"]!.AsArray();
        Assert.Equal((3L, 0L), (byModel.Single(r => r!["model"]!.GetValue<string>() == "sim-small")!["requests"]!.GetValue<long>(),
            byModel.Single(r => r!["model"]!.GetValue<string>() == "sim-small")!["errors"]!.GetValue<long>()));
        Assert.Equal(1L, byModel.Single(r => r!["model"]!.GetValue<string>() == "sim-error")!["errors"]!.GetValue<long>());
        var byKey = JsonNode.Parse(await admin.GetStringAsync("/admin/usage?group_by=key"))!["data"]!.AsArray();
        Assert.Equal(4L, byKey.Single()!["requests"]!.GetValue<long>());
        Assert.Equal("harness-client", byKey.Single()!["key"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.BadRequest, (await admin.GetAsync("/admin/usage?group_by=colour")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await gw.Client.GetAsync("/admin/usage")).StatusCode);
    }

    private static Task<(int ExitCode, string Stdout, string Stderr)> RunWorkerAsync(string cs, params string[] args) =>
        // Its own folder as the working directory: its own appsettings.json, as installed.
        ServerProcess.RunAsync("dotnet", [RepoPaths.WorkerDll, .. args], Path.GetDirectoryName(RepoPaths.WorkerDll)!,
            env: new Dictionary<string, string> { ["ConnectionStrings__helixagent-db"] = cs });
}
