using System.Diagnostics;
using System.Text.RegularExpressions;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Npgsql;
using Xunit.Abstractions;

namespace HelixAgent.Tests.Faults;

/// <summary>
/// <c>kill -9</c> of the real binary under sustained open-loop load: what a client saw answered is in <c>completions</c>
/// after the restart, once. Runs in the fault suite (alone: it loads the machine on purpose).
/// </summary>
[Collection(FaultSuite.Name)]
public sealed partial class LedgerCrashTests(OwnPostgresServer postgres, OwnRedisServer redis, ITestOutputHelper output)
    : IClassFixture<OwnPostgresServer>, IClassFixture<OwnRedisServer>
{
    /// <summary>Starts requests at <paramref name="perSecond"/> whatever the answers take (open loop), until stopped.</summary>
    private static async Task<List<Outcome>> OpenLoopAsync(LoadDriver driver, Uri instance, int perSecond, int firstId, CancellationToken stop)
    {
        var sent = new List<Task<Outcome>>();
        var clock = Stopwatch.StartNew();
        for (var n = 0; !stop.IsCancellationRequested; n++)
        {
            var due = TimeSpan.FromSeconds((double)n / perSecond) - clock.Elapsed;
            if (due > TimeSpan.Zero)
            {
                await Task.Delay(due, stop).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
            var id = firstId + n;
            sent.Add(Task.Run(() => driver.SendAsync(LoadRequest.Chat(id, instance, "m", stream: id % 3 == 0))));
        }
        return [.. await Task.WhenAll(sent)];
    }

    [Fact]
    public async Task Killed_with_sigkill_three_times_under_open_loop_load_every_answered_request_has_exactly_one_row_after_the_restart()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        upstream.Reply = "answered before the crash";
        var db = await TestDatabase.CreateAsync(postgres, "crash");
        var key = await db.CreateKeyAsync("crash");
        var journal = Path.Combine(Path.GetTempPath(), "helixagent-crash-" + Guid.NewGuid().ToString("N"));
        var env = FaultEnvironment.For(db, redis).WithProvider("p0", upstream, "m");
        env["Ledger__Journal__Path"] = journal;
        env["Ledger__FlushIntervalMs"] = "200"; // the default: rows wait up to 200 ms for their batch, as in production
        env["Logging__LogLevel__HelixAgent.Api.Ledger"] = "Information";
        using var driver = new LoadDriver(key);
        var answered = new List<Outcome>();
        var replayedInAll = 0;
        var api = await ApiProcess.StartAsync(env);
        try
        {
            for (var round = 0; round < 3; round++)
            {
                using var stop = new CancellationTokenSource();
                var load = OpenLoopAsync(driver, api.BaseAddress, perSecond: 250, firstId: round * 100_000, stop.Token);
                await Task.Delay(TimeSpan.FromSeconds(3));
                api.Signal("KILL");
                await api.WaitForExitAsync(TimeSpan.FromSeconds(10));
                await stop.CancelAsync();
                var outcomes = await load;
                var ok = outcomes.Where(o => o.Answered && (o.Done || !o.Stream)).ToList();
                answered.AddRange(ok);
                var killed = api;
                api = await ApiProcess.StartAsync(env);
                await killed.DisposeAsync();

                // The restart replays what the killed process had not shipped, and says how much (a kill that lands
                // just after the shipper's checkpoint may leave nothing, and says so too).
                await api.WaitForLogAsync("Ledger journal: replayed", TimeSpan.FromSeconds(60));
                var replaying = int.Parse(Replaying().Match(api.LogTail(200_000)).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                replayedInAll += replaying;
                output.WriteLine($"round {round + 1}: {outcomes.Count} sent, {ok.Count} answered, killed; the restart replayed {replaying} rows");
                Assert.True(ok.Count >= 300, $"only {ok.Count} requests were answered before the kill");
            }

            // Rows wait up to 200 ms for their batch: three kills at 250 requests/s that all found nothing unshipped
            // would mean the journal was not in the path at all.
            Assert.True(replayedInAll > 0, "no kill left an unshipped row: the load did not reach the journal");
            var ids = answered.Select(o => o.RequestId!).ToHashSet();
            await db.WaitForRowsAsync(ids.Count, TimeSpan.FromSeconds(60), api);
            await using var ds = NpgsqlDataSource.Create(db.ConnectionString);
            var rows = new Dictionary<string, long>();
            await using (var cmd = ds.CreateCommand("SELECT request_id, count(*) FROM completions GROUP BY request_id"))
            await using (var r = await cmd.ExecuteReaderAsync())
            {
                while (await r.ReadAsync())
                {
                    rows[r.GetString(0)] = r.GetInt64(1);
                }
            }
            var missing = ids.Where(id => !rows.ContainsKey(id)).ToList();
            var duplicated = rows.Where(kv => kv.Value > 1).Select(kv => kv.Key).ToList();
            output.WriteLine($"{ids.Count} answered over 3 kills: {missing.Count} missing, {duplicated.Count} duplicated ({rows.Count} rows)");
            Assert.True(missing.Count == 0, $"{missing.Count} answered requests have no row: {string.Join(",", missing.Take(10))}\n{api.Diagnostics()}");
            Assert.Empty(duplicated);
            Assert.Equal(0, (await ScrapedMetrics.ScrapeAsync(api.BaseAddress)).Sum("helixagent_ledger_rows_lost_total"));
        }
        finally
        {
            await api.DisposeAsync();
            if (Directory.Exists(journal))
            {
                Directory.Delete(journal, recursive: true);
            }
        }
    }

    [GeneratedRegex(@"replaying (\d+) rows a previous run left unshipped")]
    private static partial Regex Replaying();
}
