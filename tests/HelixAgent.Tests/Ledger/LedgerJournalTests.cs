using System.Net.Http.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using HelixAgent.Fakes;
using HelixAgent.Tests.Faults;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Ledger;

/// <summary>
/// The ledger's write-ahead journal, on the real binary: full (serve and refuse), torn by a crash, held by another
/// process, emptied by a graceful stop. PostgreSQL "stops taking rows" by a test holding an exclusive lock on
/// <c>completions</c>: the shipper's insert waits, exactly as in an outage, while health probes still answer.
/// </summary>
public sealed partial class LedgerJournalTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private sealed record Gateway(ApiProcess Api, TestDatabase Db, string Key, FakeUpstream Upstream, Dictionary<string, string> Env) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await Api.DisposeAsync();
            await Upstream.DisposeAsync();
        }
    }

    private async Task<Gateway> StartAsync(string journal, params (string Key, string Value)[] settings)
    {
        var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var db = await TestDatabase.CreateAsync(postgres, "journal");
        var key = await db.CreateKeyAsync("journal");
        var env = FaultEnvironment.For(db, redis).WithProvider("p0", upstream, "m");
        env["Ledger__Journal__Path"] = journal;
        env["Logging__LogLevel__HelixAgent.Api.Ledger"] = "Information";
        foreach (var (k, v) in settings)
        {
            env[k] = v;
        }
        return new Gateway(await ApiProcess.StartAsync(env), db, key, upstream, env);
    }

    private static string NewFolder() => Path.Combine(Path.GetTempPath(), "helixagent-journal-test-" + Guid.NewGuid().ToString("N"));

    /// <summary>Holds an exclusive lock on completions until disposed: the shipper's inserts wait behind it.</summary>
    private static async Task<NpgsqlTransaction> LockCompletionsAsync(TestDatabase db)
    {
        var connection = new NpgsqlConnection(db.ConnectionString);
        await connection.OpenAsync();
        var tx = await connection.BeginTransactionAsync();
        await new NpgsqlCommand("LOCK TABLE completions IN ACCESS EXCLUSIVE MODE", connection, tx).ExecuteNonQueryAsync();
        return tx;
    }

    private static async Task<(int Status, string? RequestId, string? RetryAfter, JsonNode? Body)> ChatAsync(Gateway gw, bool stream = false)
    {
        using var http = new HttpClient { BaseAddress = gw.Api.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", gw.Key);
        using var response = await http.PostAsJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m", stream: stream));
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, response.Headers.TryGetValues("x-request-id", out var id) ? id.Single() : null,
            response.Headers.RetryAfter?.ToString(), stream ? null : JsonNode.Parse(text));
    }

    private static async Task<HashSet<string>> RowIdsAsync(TestDatabase db) =>
        [.. (await GatewayHarness.ReadLedgerAsync(db.ConnectionString)).Select(r => r.RequestId)];

    private static async Task<HashSet<string>> WaitForRowsAsync(TestDatabase db, IReadOnlyCollection<string> ids, TimeSpan timeout)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var rows = await RowIdsAsync(db);
            if (ids.All(rows.Contains) || clock.Elapsed > timeout)
            {
                return rows;
            }
            await Task.Delay(200);
        }
    }

    private static string[] SegmentFiles(string journal) => Directory.GetFiles(journal, "*.journal");

    [Fact]
    public async Task A_full_journal_in_serve_mode_answers_every_request_and_counts_and_logs_exactly_the_rows_that_did_not_fit()
    {
        var journal = NewFolder();
        await using var gw = await StartAsync(journal, ("Ledger__Journal__MaxBytes", "16384"), ("Ledger__FlushIntervalMs", "0"));
        var tx = await LockCompletionsAsync(gw.Db);
        var answered = new List<string>();
        const int sent = 80;
        for (var i = 0; i < sent; i++)
        {
            var (status, id, _, _) = await ChatAsync(gw, stream: i % 2 == 1);
            Assert.Equal(200, status);
            answered.Add(id!);
        }
        var health = JsonNode.Parse(await new HttpClient { BaseAddress = gw.Api.BaseAddress }.GetStringAsync("/health"))!;
        var metrics = await ScrapedMetrics.ScrapeAsync(gw.Api.BaseAddress);
        var lost = (int)metrics.Sum("helixagent_ledger_rows_lost_total");
        await tx.CommitAsync();
        await tx.Connection!.DisposeAsync();

        var rows = await WaitForRowsAsync(gw.Db, answered.Take(10).ToList(), TimeSpan.FromSeconds(30));
        await Task.Delay(1000);
        rows = await RowIdsAsync(gw.Db);
        var missing = answered.Where(id => !rows.Contains(id)).ToHashSet();
        var logged = JournalFullLine().Matches(gw.Api.LogTail(1_000_000)).Select(m => m.Groups[1].Value).ToHashSet();
        Assert.True(lost is > 0 and < sent, $"{lost} rows lost of {sent}: the journal did not fill, or kept nothing");
        // Exact: the rows missing from completions are the ones counted, and each is named in its own ERROR line.
        Assert.Equal(missing.Count, lost);
        Assert.Equal(missing.Order(), logged.Order());
        Assert.Equal(sent - lost, rows.Count);
        Assert.Equal("degraded", health["status"]!.GetValue<string>());
        Assert.Equal("degraded", health["components"]!["ledger"]!["status"]!.GetValue<string>());
        Assert.Contains("full", health["components"]!["ledger"]!["error"]!.GetValue<string>());
    }

    [GeneratedRegex(@"Usage row (\w+) lost: the ledger journal \S+ is full")]
    private static partial Regex JournalFullLine();

    [Fact]
    public async Task A_full_journal_in_refuse_mode_answers_503_with_retry_after_and_loses_no_row()
    {
        var journal = NewFolder();
        await using var gw = await StartAsync(journal, ("Ledger__Journal__MaxBytes", "16384"), ("Ledger__WhenFull", "refuse"), ("Ledger__FlushIntervalMs", "0"));
        var tx = await LockCompletionsAsync(gw.Db);
        var answered = new List<string>();
        (int Status, string? RequestId, string? RetryAfter, JsonNode? Body) refused = default;
        for (var i = 0; i < 200 && refused.Status == 0; i++)
        {
            var r = await ChatAsync(gw);
            if (r.Status == 200)
            {
                answered.Add(r.RequestId!);
            }
            else
            {
                refused = r;
            }
        }
        await tx.CommitAsync();
        await tx.Connection!.DisposeAsync();

        Assert.Equal(503, refused.Status);
        Assert.Equal("5", refused.RetryAfter);
        Assert.Equal("ledger_unavailable", refused.Body!["error"]!["code"]!.GetValue<string>());
        Assert.True(answered.Count > 5, $"only {answered.Count} answered before the journal refused");
        var rows = await WaitForRowsAsync(gw.Db, answered, TimeSpan.FromSeconds(30));
        Assert.All(answered, id => Assert.Contains(id, rows));
        Assert.Equal(0, (await ScrapedMetrics.ScrapeAsync(gw.Api.BaseAddress)).Sum("helixagent_ledger_rows_lost_total"));
        // Shipped, the journal has room again: requests are answered.
        await Eventually.TrueAsync(async () => (await ChatAsync(gw)).Status == 200, "an answer once the journal shipped its rows");
    }

    [Fact]
    public async Task A_record_torn_by_a_crash_is_counted_and_skipped_at_replay_and_every_whole_record_is_shipped()
    {
        var journal = NewFolder();
        var gw = await StartAsync(journal);
        string[] ids;
        await using (gw)
        {
            var tx = await LockCompletionsAsync(gw.Db);
            ids = new string[5];
            for (var i = 0; i < ids.Length; i++)
            {
                ids[i] = (await ChatAsync(gw)).RequestId!;
            }
            gw.Api.Signal("KILL");
            await gw.Api.WaitForExitAsync(TimeSpan.FromSeconds(10));
            // The killed process's server sessions outlive it: one may be waiting on the lock with an INSERT it sent before
            // the crash, and PostgreSQL only notices the dead socket after running it. End them, as a crashed host's would.
            await new NpgsqlCommand(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                tx.Connection, tx).ExecuteNonQueryAsync();
            await tx.RollbackAsync();
            await tx.Connection!.DisposeAsync();
        }
        Assert.Empty(await RowIdsAsync(gw.Db));
        // A crash mid-write: a header announcing 300 bytes, and only 20 of them.
        var last = SegmentFiles(journal).Order().Last();
        await using (var file = new FileStream(last, FileMode.Append))
        {
            file.Write([44, 1, 0, 0, 1, 2, 3, 4]);
            file.Write(new byte[20]);
        }

        await using var restarted = await ApiProcess.StartAsync(gw.Env);
        await restarted.WaitForLogAsync("Ledger journal: replayed", TimeSpan.FromSeconds(30));

        var rows = await WaitForRowsAsync(gw.Db, ids, TimeSpan.FromSeconds(30));
        Assert.Equal(ids.Order(), rows.Order());
        Assert.Contains("replaying 5 rows a previous run left unshipped", restarted.LogTail(100_000));
        Assert.Contains("replayed 5 rows (5 new to completions, 0 already there, 1 torn)", restarted.LogTail(100_000));
        Assert.Contains("torn record in " + last, restarted.LogTail(100_000));
        Assert.Equal(1, (await ScrapedMetrics.ScrapeAsync(restarted.BaseAddress)).Sum("helixagent_ledger_torn_records_total"));
        Assert.Equal(0, (await ScrapedMetrics.ScrapeAsync(restarted.BaseAddress)).Sum("helixagent_ledger_rows_lost_total"));
    }

    [Fact]
    public async Task A_second_process_on_the_same_journal_folder_refuses_to_start_naming_the_setting()
    {
        var journal = NewFolder();
        await using var gw = await StartAsync(journal);

        var second = await ServerProcess.RunAsync("dotnet", [RepoPaths.ApiDll], Path.GetDirectoryName(RepoPaths.ApiDll)!, TimeSpan.FromSeconds(60),
            new Dictionary<string, string>(gw.Env) { ["ASPNETCORE_URLS"] = "http://127.0.0.1:0" });

        Assert.Equal(75, second.ExitCode);
        Assert.Contains($"the ledger journal {journal} is in use by another process", second.Stderr);
        Assert.Contains("Ledger:Journal:Path (Ledger__Journal__Path)", second.Stderr);
        Assert.DoesNotContain("   at ", second.Stderr);
        Assert.Equal(200, (await ChatAsync(gw)).Status); // the first goes on
    }

    [Fact]
    public async Task A_graceful_stop_ships_every_row_and_leaves_the_journal_empty()
    {
        var journal = NewFolder();
        await using var gw = await StartAsync(journal, ("Ledger__FlushIntervalMs", "1000"), ("Logging__LogLevel__HelixAgent.Api", "Information"));
        var ids = new List<string>();
        for (var i = 0; i < 12; i++)
        {
            ids.Add((await ChatAsync(gw, stream: i % 3 == 0)).RequestId!);
        }
        Assert.NotEmpty(SegmentFiles(journal));

        gw.Api.Signal("TERM");
        await gw.Api.WaitForExitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(0, gw.Api.ExitCode);
        Assert.Equal(ids.Order(), (await RowIdsAsync(gw.Db)).Order());
        Assert.Empty(SegmentFiles(journal));
        Assert.False(File.Exists(Path.Combine(journal, "checkpoint")));
        Assert.Contains("stopped; ledger flushed (12 rows)", gw.Api.LogTail(100_000));
    }
}
