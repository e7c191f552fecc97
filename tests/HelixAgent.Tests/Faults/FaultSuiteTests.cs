using System.Diagnostics;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Xunit.Abstractions;

namespace HelixAgent.Tests.Faults;

/// <summary>
/// Issue 8's fault suite: the real <c>helixagent</c> process under a sustained mixed load (streaming and not) while
/// upstreams fail, PostgreSQL and Redis go away and come back, and one of two instances is stopped with SIGTERM. Every
/// client must get an answer or a clean OpenAI error, failovers must match the faults injected, and the ledger must
/// end up with one row per request served.
/// </summary>
[Collection(FaultSuite.Name)]
public sealed class FaultSuiteTests(PostgresServer postgres, RedisServer redis, ITestOutputHelper output)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    // ------------------------------------------------------------------ upstream faults

    private const int SentinelBase = 1_000_000;
    private const string SentinelText = "sentinel-rate-limit-me";

    /// <summary>
    /// What the primary does to load request <paramref name="id"/>: of every 20 requests, 2 get a 500, 2 a connection
    /// reset, 2 a stall before the first byte and 2 a cut after the first chunks (one streaming, one not each). The
    /// sentinels get a 500 (then a 429 from the secondary).
    /// </summary>
    private static FakeFault PrimaryFault(int id) => id >= SentinelBase ? FakeFault.Status500 : (id / 2 % 10) switch
    {
        0 => FakeFault.Status500,
        1 => FakeFault.ResetConnection,
        2 => FakeFault.StallBeforeFirstByte,
        3 => FakeFault.CutMidStream,
        _ => FakeFault.None,
    };

    private static bool Streams(int id) => id % 2 == 1;

    /// <summary>A fault the gateway notices before any content reached the client: it must fail over.</summary>
    private static bool FailsOver(int id) => PrimaryFault(id) is var f && f != FakeFault.None && !(f == FakeFault.CutMidStream && Streams(id));

    [Fact]
    public async Task Upstream_faults_under_load_each_fail_over_once_before_content_end_streams_with_an_error_event_after_and_no_client_hangs()
    {
        const int count = 1000;
        await using var primary = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var secondary = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        await using var tertiary = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        primary.Reply = "primary answer one two three";
        secondary.Reply = "secondary answer in full";
        tertiary.Reply = "tertiary answer in full";
        primary.FailEach(r => LoadRequest.IdIn(r.Body) is { } id ? PrimaryFault(id) : FakeFault.None);
        secondary.RetryAfterSeconds = 2;
        secondary.FailEach(r => r.Body.Contains(SentinelText, StringComparison.Ordinal) ? FakeFault.Status429 : FakeFault.None);

        var db = await FaultDatabase.CreateAsync(postgres);
        var key = await db.CreateKeyAsync("faults-upstream");
        var env = FaultEnvironment.For(db, redis)
            .WithProvider("p0", primary, "m", timeoutSeconds: 2, firstTokenTimeoutSeconds: 1)
            .WithProvider("p1", secondary, "m")
            .WithProvider("p2", tertiary, "m");
        env["Routes__m__Targets__0"] = "p0";
        env["Routes__m__Targets__1"] = "p1";
        env["Routes__m__Targets__2"] = "p2";
        // Every injected fault is counted below, so the breaker must not take the primary out of the route (its own
        // tests are in Gateway/UpstreamProtocolTests); the secondary's Retry-After is what this route must honour.
        env["Gateway__CircuitFailureThreshold"] = "1000";
        await using var api = await ApiProcess.StartAsync(env);
        using var driver = new LoadDriver(key);

        var clock = Stopwatch.StartNew();
        var load = driver.RunAsync(count, concurrency: 16, id => LoadRequest.Chat(id, api.BaseAddress, "m", Streams(id)));
        // Three requests the secondary answers with 429 + Retry-After: 2, three seconds apart, sent while the load runs.
        var sentinels = Task.WhenAll(Enumerable.Range(0, 3).Select(async k =>
        {
            await Task.Delay(TimeSpan.FromSeconds(1 + 3 * k));
            return await driver.SendAsync(LoadRequest.Chat(SentinelBase + k, api.BaseAddress, "m", stream: false, SentinelText));
        }));
        var outcomes = await load;
        var sentinelOutcomes = await sentinels;
        clock.Stop();
        Report("upstream faults", outcomes.Concat(sentinelOutcomes).ToList(), clock.Elapsed);

        var n500 = Enumerable.Range(0, count).Count(id => PrimaryFault(id) == FakeFault.Status500);
        var nReset = Enumerable.Range(0, count).Count(id => PrimaryFault(id) == FakeFault.ResetConnection);
        var nStall = Enumerable.Range(0, count).Count(id => PrimaryFault(id) == FakeFault.StallBeforeFirstByte);
        var nCutPlain = Enumerable.Range(0, count).Count(id => PrimaryFault(id) == FakeFault.CutMidStream && !Streams(id));
        var nCutStream = Enumerable.Range(0, count).Count(id => PrimaryFault(id) == FakeFault.CutMidStream && Streams(id));
        var nFailover = Enumerable.Range(0, count).Count(FailsOver);
        Assert.Equal((100, 100, 100, 50, 50, 350), (n500, nReset, nStall, nCutPlain, nCutStream, nFailover));

        // What each client got.
        var violations = new List<string>();
        foreach (var o in outcomes)
        {
            var fault = PrimaryFault(o.Id);
            if (o.Problem is not null)
            {
                violations.Add(o.ToString());
            }
            else if (fault == FakeFault.None)
            {
                Expect(violations, o, o.Answered && o.Provider == "p0" && o.Attempts == 1 && o.Content == primary.Reply && (o.Done || !o.Stream),
                    "a request the primary answered must come back whole from p0 in one attempt");
            }
            else if (!FailsOver(o.Id))
            {
                Expect(violations, o, o.EndedWithStreamError && o.ErrorCode == "stream_interrupted" && o.Provider == "p0" && o.Attempts == 1 &&
                    o.Content == "primary answer" && !o.Done,
                    "a stream cut after content reached the client must end with the stream_interrupted error event, without failover");
            }
            else
            {
                Expect(violations, o, o.Answered && o.Attempts == 2 &&
                    ((o.Provider == "p1" && o.Content == secondary.Reply) || (o.Provider == "p2" && o.Content == tertiary.Reply)) && (o.Done || !o.Stream),
                    $"a {fault} before content must fail over once, to p1 (or p2 while p1 waits out its Retry-After)");
            }
        }
        foreach (var o in sentinelOutcomes)
        {
            Expect(violations, o, o.Answered && o.Provider == "p2" && o.Attempts == 3 && o.Content == tertiary.Reply,
                "500 from p0 then 429 from p1 must end on p2 in three attempts");
        }
        Assert.True(violations.Count == 0, $"{violations.Count} clients saw the wrong thing:\n{string.Join("\n", violations.Take(25))}\n{api.LogTail()}");

        // What the upstreams saw: one call per request and provider (a reset may be re-sent once by the HTTP client's
        // own retry of a request that got no response byte on a reused connection), nothing hidden.
        var atPrimary = ReceivedIds(primary);
        var atSecondary = ReceivedIds(secondary);
        var atTertiary = ReceivedIds(tertiary);
        Assert.All(outcomes, o => Assert.InRange(atPrimary.GetValueOrDefault(o.Id), 1, PrimaryFault(o.Id) == FakeFault.ResetConnection ? 2 : 1));
        Assert.Equal(outcomes.Concat(sentinelOutcomes).Where(o => o.Attempts >= 2 && o.Provider != "p0" && (o.Provider == "p1" || o.Id >= SentinelBase))
            .Select(o => o.Id).Order(), atSecondary.Keys.Order());
        Assert.All(atSecondary.Values, n => Assert.Equal(1, n));
        Assert.Equal(outcomes.Concat(sentinelOutcomes).Where(o => o.Provider == "p2").Select(o => o.Id).Order(), atTertiary.Keys.Order());
        Assert.Empty(primary.Errors.Concat(secondary.Errors).Concat(tertiary.Errors));
        // Every stalled upstream call was abandoned by the gateway when its budget ran out: none is left hanging.
        await primary.WaitForCancellationAsync(nStall, TimeSpan.FromSeconds(10));

        // Retry-After honoured: after each 429 the secondary got no new request for the 2 s it asked for (0.5 s of
        // slack for calls that were already on their way), and failovers in that time went to the tertiary instead.
        var rateLimitedAt = secondary.Requests.Where(r => r.Body.Contains(SentinelText, StringComparison.Ordinal)).Select(r => r.Timestamp).ToList();
        Assert.Equal(3, rateLimitedAt.Count);
        foreach (var t in rateLimitedAt)
        {
            Assert.DoesNotContain(secondary.Requests, r => r.Timestamp > t + TimeSpan.FromSeconds(0.5) && r.Timestamp < t + TimeSpan.FromSeconds(1.5));
        }
        Assert.Contains(outcomes, o => o.Provider == "p2");

        // The gateway's own counters agree with the injected faults.
        var metrics = await ScrapedMetrics.ScrapeAsync(api.BaseAddress);
        double Attempts(string provider, string outcome) =>
            metrics.Sum("helixagent_provider_requests_total", ("provider", provider), ("outcome", outcome));
        Assert.Equal(n500 + 3, Attempts("p0", "server_error"));
        Assert.Equal(nReset, Attempts("p0", "connect"));
        Assert.Equal(nStall, Attempts("p0", "timeout"));
        Assert.Equal(nCutPlain, Attempts("p0", "protocol"));
        Assert.Equal(count - nFailover, Attempts("p0", "success"));
        Assert.Equal(3, Attempts("p1", "rate_limited"));
        Assert.Equal(nFailover + 3, metrics.Sum("helixagent_fallbacks_total"));
        Assert.Equal(count + 3, metrics.Sum("helixagent_requests_total"));
        Assert.Equal(nCutStream, metrics.Sum("helixagent_errors_total"));

        // 100% ledger parity: one row per request served, with what the client was told.
        await AssertLedgerParityAsync(db, outcomes.Concat(sentinelOutcomes).ToList(), api);
        var rows = (await GatewayHarness.ReadLedgerAsync(db.ConnectionString)).ToDictionary(r => r.RequestId);
        Assert.All(outcomes.Concat(sentinelOutcomes), o =>
        {
            var row = rows[o.RequestId!];
            Assert.Equal((o.EndedWithStreamError ? 502 : 200, o.Attempts, o.Provider), (row.Status, (int?)row.Attempts, row.Provider));
        });
        Assert.Equal(0, (await ScrapedMetrics.ScrapeAsync(api.BaseAddress)).Sum("helixagent_ledger_rows_lost_total"));
    }

    // ------------------------------------------------------------------ shared checks

    /// <summary>Load ids received by a fake, with how many times each arrived.</summary>
    private static Dictionary<int, int> ReceivedIds(FakeUpstream fake) => fake.Requests
        .Select(r => LoadRequest.IdIn(r.Body))
        .Where(id => id is not null)
        .GroupBy(id => id!.Value)
        .ToDictionary(g => g.Key, g => g.Count());

    private static void Expect(List<string> violations, Outcome o, bool ok, string rule)
    {
        if (!ok)
        {
            violations.Add($"{o} content='{o.Content}': {rule}");
        }
    }

    /// <summary>
    /// <c>SELECT count(*) FROM completions</c> equals the requests served (every request that reached routing, which the
    /// client can tell by its <c>x-request-id</c>), and the rows are exactly those requests: none lost, none doubled.
    /// </summary>
    private async Task AssertLedgerParityAsync(FaultDatabase db, IReadOnlyList<Outcome> outcomes, params ApiProcess[] apis)
    {
        var served = outcomes.Where(o => o.ReachedRouting).Select(o => o.RequestId!).ToHashSet();
        var rows = await db.WaitForRowsAsync(served.Count, TimeSpan.FromSeconds(45));
        var ids = rows.Select(r => r.RequestId).ToList();
        var missing = served.Except(ids).Take(10).ToList();
        var unknown = ids.Except(served).Take(10).ToList();
        Assert.True(rows.Count == served.Count && missing.Count == 0 && unknown.Count == 0,
            $"completions has {rows.Count} rows for {served.Count} requests served; missing {string.Join(",", missing)}; " +
            $"unexpected {string.Join(",", unknown)}\n{string.Join("\n", apis.Select(a => a.LogTail()))}");
    }

    private void Report(string scenario, IReadOnlyList<Outcome> outcomes, TimeSpan elapsed)
    {
        var byStatus = string.Join(", ", outcomes.GroupBy(o => o.Problem is null ? o.Status.ToString() : "problem").OrderBy(g => g.Key)
            .Select(g => $"{g.Key}: {g.Count()}"));
        var slowest = outcomes.Count == 0 ? 0 : outcomes.Max(o => o.Elapsed.TotalSeconds);
        output.WriteLine($"{scenario}: {outcomes.Count} requests ({outcomes.Count(o => o.Stream)} streaming) in {elapsed.TotalSeconds:0.0} s " +
            $"({outcomes.Count / elapsed.TotalSeconds:0} req/s); {byStatus}; stream errors {outcomes.Count(o => o.EndedWithStreamError)}; " +
            $"slowest {slowest:0.00} s");
    }
}
