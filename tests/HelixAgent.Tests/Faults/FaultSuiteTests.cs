using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
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
public sealed class FaultSuiteTests(OwnPostgresServer postgres, OwnRedisServer redis, ITestOutputHelper output)
    : IClassFixture<OwnPostgresServer>, IClassFixture<OwnRedisServer>
{
    // ------------------------------------------------------------------ upstream faults

    private const int SentinelBase = 1_000_000;
    private const string SentinelText = "sentinel-rate-limit-me";

    /// <summary>One primary of each wire protocol, each on its own route in front of the same two backups.</summary>
    private static readonly FakeProtocol[] PrimaryProtocols = [FakeProtocol.OpenAI, FakeProtocol.Anthropic, FakeProtocol.Gemini, FakeProtocol.Ollama];

    /// <summary>Which primary (route) load request <paramref name="id"/> goes to: blocks of 20 requests in turn.</summary>
    private static int PrimaryOf(int id) => id >= SentinelBase ? 0 : id / 20 % PrimaryProtocols.Length;

    private static string PrimaryName(int primary) => "primary-" + PrimaryProtocols[primary].ToString().ToLowerInvariant();

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
        const int count = 960;
        const string reply = "primary answer one two three";
        var primaries = await Task.WhenAll(PrimaryProtocols.Select(p => FakeUpstream.StartAsync(p)));
        await using var secondary = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        await using var tertiary = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        try
        {
            foreach (var primary in primaries)
            {
                primary.Reply = reply;
                primary.FailEach(r => LoadRequest.IdIn(r.Body) is { } id ? PrimaryFault(id) : FakeFault.None);
            }
            secondary.Reply = "secondary answer in full";
            tertiary.Reply = "tertiary answer in full";
            secondary.RetryAfterSeconds = 3;
            secondary.FailEach(r => r.Body.Contains(SentinelText, StringComparison.Ordinal) ? FakeFault.Status429 : FakeFault.None);

            var db = await TestDatabase.CreateAsync(postgres, "faults");
            var key = await db.CreateKeyAsync("faults-upstream");
            var env = FaultEnvironment.For(db, redis).WithProvider("secondary", secondary, "m").WithProvider("tertiary", tertiary, "m");
            for (var i = 0; i < primaries.Length; i++)
            {
                env.WithProvider(PrimaryName(i), primaries[i], "m", timeoutSeconds: 2, firstTokenTimeoutSeconds: 1);
                env[$"Routes__m{i}__Targets__0"] = PrimaryName(i) + "/m";
                env[$"Routes__m{i}__Targets__1"] = "secondary/m";
                env[$"Routes__m{i}__Targets__2"] = "tertiary/m";
            }
            // Every injected fault is counted below, so the breaker must not take a primary out of its route (its own
            // tests are in Gateway/UpstreamProtocolTests); the secondary's Retry-After is what the routes must honour.
            env["Gateway__CircuitFailureThreshold"] = "1000";
            await using var api = await ApiProcess.StartAsync(env);
            using var driver = new LoadDriver(key);

            var clock = Stopwatch.StartNew();
            var load = driver.RunAsync(count, concurrency: 16, id => LoadRequest.Chat(id, api.BaseAddress, $"m{PrimaryOf(id)}", Streams(id)));
            // Three requests the secondary answers with 429 + Retry-After: 3, sent five seconds apart while the load runs
            // (so each finds the secondary out of its previous cool-down).
            var sentinels = Task.WhenAll(Enumerable.Range(0, 3).Select(async k =>
            {
                await Task.Delay(TimeSpan.FromSeconds(1 + 5 * k));
                return await driver.SendAsync(LoadRequest.Chat(SentinelBase + k, api.BaseAddress, "m0", stream: false, SentinelText));
            }));
            var outcomes = await load;
            var sentinelOutcomes = await sentinels;
            clock.Stop();
            List<Outcome> all = [.. outcomes, .. sentinelOutcomes];
            Report("upstream faults", all, clock.Elapsed);

            int Count(int primary, Func<int, bool> which) => Enumerable.Range(0, count).Count(id => PrimaryOf(id) == primary && which(id));
            Assert.Equal((24, 24, 24, 12, 12, 84), (
                Count(1, id => PrimaryFault(id) == FakeFault.Status500), Count(1, id => PrimaryFault(id) == FakeFault.ResetConnection),
                Count(1, id => PrimaryFault(id) == FakeFault.StallBeforeFirstByte), Count(1, id => PrimaryFault(id) == FakeFault.CutMidStream && !Streams(id)),
                Count(1, id => PrimaryFault(id) == FakeFault.CutMidStream && Streams(id)), Count(1, FailsOver)));

            // What each client got.
            var violations = new List<string>();
            foreach (var o in outcomes)
            {
                var fault = PrimaryFault(o.Id);
                var primary = PrimaryName(PrimaryOf(o.Id));
                if (o.Problem is not null)
                {
                    violations.Add(o.ToString());
                }
                else if (fault == FakeFault.None)
                {
                    Expect(violations, o, o.Answered && o.Provider == primary && o.Attempts == 1 && o.Content == reply && (o.Done || !o.Stream),
                        "a request the primary answered must come back whole from it in one attempt");
                }
                else if (!FailsOver(o.Id))
                {
                    Expect(violations, o, o.EndedWithStreamError && o.ErrorCode == "stream_interrupted" && o.Provider == primary && o.Attempts == 1 &&
                        o.Content == "primary answer" && !o.Done,
                        "a stream cut after content reached the client must end with the stream_interrupted error event, without failover");
                }
                else
                {
                    Expect(violations, o, o.Answered && o.Attempts == 2 && (o.Done || !o.Stream) &&
                        ((o.Provider == "secondary" && o.Content == secondary.Reply) || (o.Provider == "tertiary" && o.Content == tertiary.Reply)),
                        $"a {fault} before content must fail over once, to the secondary (or the tertiary while the secondary waits out its Retry-After)");
                }
            }
            foreach (var o in sentinelOutcomes)
            {
                Expect(violations, o, o.Answered && o.Provider == "tertiary" && o.Attempts == 3 && o.Content == tertiary.Reply,
                    "500 from the primary then 429 from the secondary must end on the tertiary in three attempts");
            }
            Assert.True(violations.Count == 0, $"{violations.Count} clients saw the wrong thing:\n{string.Join("\n", violations.Take(25))}\n{api.Diagnostics()}");

            // What the upstreams saw: one call per request and provider (a reset may be re-sent once by the HTTP client's
            // own retry of a request that got no response byte on a reused connection), nothing hidden.
            for (var i = 0; i < primaries.Length; i++)
            {
                var received = ReceivedIds(primaries[i]);
                var routed = all.Where(o => PrimaryOf(o.Id) == i).ToList();
                Assert.Equal(routed.Select(o => o.Id).Order(), received.Keys.Order());
                Assert.All(routed, o => Assert.InRange(received[o.Id], 1, PrimaryFault(o.Id) == FakeFault.ResetConnection ? 2 : 1));
                Assert.Empty(primaries[i].Errors);
            }
            var atSecondary = ReceivedIds(secondary);
            Assert.Equal(all.Where(o => o.Provider == "secondary" || o.Id >= SentinelBase).Select(o => o.Id).Order(), atSecondary.Keys.Order());
            Assert.All(atSecondary.Values, n => Assert.Equal(1, n));
            Assert.Equal(all.Where(o => o.Provider == "tertiary").Select(o => o.Id).Order(), ReceivedIds(tertiary).Keys.Order());
            Assert.Empty(secondary.Errors.Concat(tertiary.Errors));
            // Every stalled upstream call was abandoned by the gateway when its budget ran out: none is left hanging.
            for (var i = 0; i < primaries.Length; i++)
            {
                await primaries[i].WaitForCancellationAsync(Count(i, id => PrimaryFault(id) == FakeFault.StallBeforeFirstByte), TimeSpan.FromSeconds(10));
            }

            // Retry-After honoured: after each 429 the secondary got no new request for the 3 s it asked for (1 s of slack
            // for calls already on their way, 0.4 s for clocks), and failovers in that time went to the tertiary instead.
            var rateLimitedAt = secondary.Requests.Where(r => r.Body.Contains(SentinelText, StringComparison.Ordinal)).Select(r => r.Timestamp).ToList();
            Assert.Equal(3, rateLimitedAt.Count);
            foreach (var t in rateLimitedAt)
            {
                Assert.DoesNotContain(secondary.Requests, r => r.Timestamp > t + TimeSpan.FromSeconds(1) && r.Timestamp < t + TimeSpan.FromSeconds(2.6));
            }
            Assert.Contains(outcomes, o => o.Provider == "tertiary");

            // The gateway's own counters agree with the injected faults, provider by provider.
            var metrics = await ScrapedMetrics.ScrapeAsync(api.BaseAddress);
            double Attempts(string provider, string outcome) =>
                metrics.Sum("helixagent_provider_requests_total", ("provider", provider), ("outcome", outcome));
            for (var i = 0; i < primaries.Length; i++)
            {
                var name = PrimaryName(i);
                Assert.Equal(Count(i, id => PrimaryFault(id) == FakeFault.Status500) + (i == 0 ? 3 : 0), Attempts(name, "server_error"));
                Assert.Equal(Count(i, id => PrimaryFault(id) == FakeFault.ResetConnection), Attempts(name, "connect"));
                Assert.Equal(Count(i, id => PrimaryFault(id) == FakeFault.StallBeforeFirstByte), Attempts(name, "timeout"));
                Assert.Equal(Count(i, id => PrimaryFault(id) == FakeFault.CutMidStream && !Streams(id)), Attempts(name, "protocol"));
                Assert.Equal(Count(i, id => !FailsOver(id)), Attempts(name, "success"));
            }
            var failovers = Enumerable.Range(0, count).Count(FailsOver) + sentinelOutcomes.Length;
            Assert.Equal(3, Attempts("secondary", "rate_limited"));
            Assert.Equal(failovers, Attempts("secondary", "success") + Attempts("tertiary", "success"));
            Assert.Equal(failovers, metrics.Sum("helixagent_fallbacks_total"));
            Assert.Equal(all.Count, metrics.Sum("helixagent_requests_total"));
            Assert.Equal(all.Count(o => o.EndedWithStreamError), metrics.Sum("helixagent_errors_total"));

            // 100% ledger parity: one row per request served, with what the client was told.
            await AssertLedgerParityAsync(db, all, api);
            var rows = (await GatewayHarness.ReadLedgerAsync(db.ConnectionString)).ToDictionary(r => r.RequestId);
            Assert.All(all, o =>
            {
                var row = rows[o.RequestId!];
                Assert.Equal((o.EndedWithStreamError ? 502 : 200, o.Attempts, o.Provider), (row.Status, (int?)row.Attempts, row.Provider));
            });
            Assert.Equal(0, (await ScrapedMetrics.ScrapeAsync(api.BaseAddress)).Sum("helixagent_ledger_rows_lost_total"));
        }
        finally
        {
            foreach (var primary in primaries)
            {
                await primary.DisposeAsync();
            }
        }
    }

    // ------------------------------------------------------------------ PostgreSQL outage

    [Fact]
    public async Task With_postgresql_stopped_for_3_minutes_under_load_every_request_is_answered_the_backlog_waits_on_disk_not_in_memory_and_after_restart_the_ledger_holds_every_one()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        upstream.Reply = "answered while the database is away";
        var db = await TestDatabase.CreateAsync(postgres, "faults");
        var key = await db.CreateKeyAsync("faults-postgres");
        var unseenKey = await db.CreateKeyAsync("faults-postgres-unseen"); // first used during the outage
        var adminKey = await db.CreateKeyAsync("faults-postgres-admin", scope: "admin");
        var env = FaultEnvironment.For(db, redis).WithProvider("p0", upstream, "m");
        // Keys are re-checked against PostgreSQL every 2 s: the outage outlasts the key cache, as a real one would.
        env["Auth__CacheSeconds"] = "2";
        await using var api = await ApiProcess.StartAsync(env);
        using var driver = new LoadDriver(key);
        using var unseen = new LoadDriver(unseenKey);
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        using var admin = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        admin.DefaultRequestHeaders.Add("X-API-Key", adminKey);
        Assert.Equal(200, (await CallAsync(admin, HttpMethod.Get, "/admin/keys")).Status);
        Assert.Equal(200, (await CallAsync(http, HttpMethod.Get, "/ready")).Status); // as a kubelet's readiness probe does from the start

        using var stop = new CancellationTokenSource();
        var clock = Stopwatch.StartNew();
        var load = driver.RunUntilAsync(stop.Token, concurrency: 6, pause: TimeSpan.FromMilliseconds(20),
            id => LoadRequest.Chat(id, api.BaseAddress, "m", Streams(id)));
        await Task.Delay(TimeSpan.FromSeconds(3));

        var down = DateTimeOffset.UtcNow;
        await postgres.StopAsync();
        Answer healthDuring, readyDuring, adminDuring;
        double queuedDuring, journalDuring, oldestDuring;
        long rssAfterAMinute, rssAtTheEnd;
        Outcome unseenDuring;
        try
        {
            // Under load the writer soon holds rows it cannot write: the outage is felt.
            await Eventually.TrueAsync(async () => (await ScrapedMetrics.ScrapeAsync(api.BaseAddress)).Sum("helixagent_ledger_unshipped_rows") > 0,
                "rows queued in the ledger while PostgreSQL is down");
            healthDuring = await CallAsync(http, HttpMethod.Get, "/health");
            readyDuring = await CallAsync(http, HttpMethod.Get, "/ready");
            unseenDuring = await unseen.SendAsync(LoadRequest.Chat(-1, api.BaseAddress, "m", stream: false));
            adminDuring = await CallAsync(admin, HttpMethod.Get, "/admin/keys");
            // The backlog grows in the journal on disk: the process's memory stays where it was after the first minute
            // (its caches and pools warm), whatever the outage's length.
            await UntilAsync(down + TimeSpan.FromSeconds(60));
            rssAfterAMinute = ResidentBytes(api.Id);
            await UntilAsync(down + TimeSpan.FromMinutes(3));
            rssAtTheEnd = ResidentBytes(api.Id);
            var atTheEnd = await ScrapedMetrics.ScrapeAsync(api.BaseAddress);
            queuedDuring = atTheEnd.Sum("helixagent_ledger_unshipped_rows");
            journalDuring = atTheEnd.Sum("helixagent_ledger_journal_bytes");
            oldestDuring = atTheEnd.Sum("helixagent_ledger_oldest_unshipped_seconds");
        }
        finally
        {
            await postgres.StartAsync();
        }
        var up = DateTimeOffset.UtcNow;
        await Task.Delay(TimeSpan.FromSeconds(3));
        await stop.CancelAsync();
        var outcomes = await load;
        clock.Stop();
        Report("postgresql outage", outcomes, clock.Elapsed);

        Assert.True(outcomes.All(o => o.Answered && o.Content == upstream.Reply && (o.Done || !o.Stream)),
            $"every request must be answered while PostgreSQL is away:\n{string.Join("\n", outcomes.Where(o => !o.Answered).Take(25))}\n{api.Diagnostics()}");
        var duringOutage = outcomes.Count(o => o.Started > down + TimeSpan.FromSeconds(1) && o.Finished < up);
        Assert.True(duringOutage >= 200, $"only {duringOutage} requests were served during the outage: the load did not go on");
        // The outage is visible where it should be: /health is unhealthy (503) with the database down.
        Assert.Equal(503, healthDuring.Status);
        Assert.Equal("unhealthy", JsonNode.Parse(healthDuring.Body)!["components"]!["database"]!["status"]!.GetValue<string>());
        Assert.True(queuedDuring > 0, "the rows of requests served during the outage wait in the ledger's journal");
        output.WriteLine($"after 3 minutes: {queuedDuring} rows unshipped, journal {journalDuring / 1e6:0.0} MB, oldest {oldestDuring:0} s; " +
                         $"RSS {rssAfterAMinute / 1e6:0.0} MB after a minute, {rssAtTheEnd / 1e6:0.0} MB after three");
        Assert.True(journalDuring > queuedDuring * 100, $"{queuedDuring} rows wait but the journal holds only {journalDuring} bytes");
        Assert.True(oldestDuring > 120, $"the oldest unshipped row is {oldestDuring} s old after a 3-minute outage");
        Assert.True(rssAtTheEnd - rssAfterAMinute < 20_000_000,
            $"RSS grew {(rssAtTheEnd - rssAfterAMinute) / 1e6:0.0} MB in the outage's last two minutes, while {queuedDuring} rows waited: the backlog is in memory");
        // The instance can serve, so it stays ready: a load balancer must not take every replica out because of the database.
        Assert.Equal(200, readyDuring.Status);
        // A key never seen before cannot be checked: a clean 503 with Retry-After, not a 401 and not a 500.
        Assert.True(unseenDuring.Problem is null && unseenDuring.Status == 503 && unseenDuring.ErrorCode == "key_store_unavailable", unseenDuring.ToString());
        // Key management needs the database: a clean 503 with Retry-After, never a 500 from our own code.
        Assert.Equal((503, "database_unavailable", true), (adminDuring.Status, adminDuring.ErrorCode, adminDuring.RetryAfter));

        await AssertLedgerParityAsync(db, outcomes, api);
        var metrics = await ScrapedMetrics.ScrapeAsync(api.BaseAddress);
        Assert.Equal(0, metrics.Sum("helixagent_ledger_rows_lost_total"));
        Assert.Equal(outcomes.Count, metrics.Sum("helixagent_ledger_rows_written_total"));
        Assert.Equal(200, (await CallAsync(http, HttpMethod.Get, "/health")).Status);
        Assert.Equal(200, (await CallAsync(admin, HttpMethod.Get, "/admin/keys")).Status);
        Assert.True((await unseen.SendAsync(LoadRequest.Chat(-2, api.BaseAddress, "m", stream: false))).Answered, "the unseen key works once the database is back");
    }

    /// <summary>The process's resident set (VmRSS), in bytes.</summary>
    private static long ResidentBytes(int pid) =>
        long.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;

    // ------------------------------------------------------------------ Redis outage

    [Fact]
    public async Task With_redis_stopped_and_restarted_under_load_every_request_is_answered_limits_go_local_and_back_and_the_ledger_holds_every_one()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        upstream.Reply = "answered while redis is away";
        var db = await TestDatabase.CreateAsync(postgres, "faults");
        // A limit far above the load: every admission asks Redis, and must fall back to this replica while it is away.
        var key = await db.CreateKeyAsync("faults-redis", requestsPerMinute: 1_000_000);
        var adminKey = await db.CreateKeyAsync("faults-redis-admin", scope: "admin");
        var env = FaultEnvironment.For(db, redis).WithProvider("p0", upstream, "m");
        await using var api = await ApiProcess.StartAsync(env);
        using var driver = new LoadDriver(key);
        using var admin = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        admin.DefaultRequestHeaders.Add("X-API-Key", adminKey);
        // One request in three asks something cacheable (temperature 0, four distinct questions): cache lookups and
        // writes go on through the outage too.
        LoadRequest Make(int id) => id % 3 != 0
            ? LoadRequest.Chat(id, api.BaseAddress, "m", Streams(id))
            : new LoadRequest(id, api.BaseAddress, new JsonObject
            {
                ["model"] = "m",
                ["temperature"] = 0,
                ["messages"] = new JsonArray(new JsonObject
                {
                    ["role"] = "user",
                    ["content"] = $"a question worth caching, number {id % 4}",
                }),
            });

        using var stop = new CancellationTokenSource();
        var clock = Stopwatch.StartNew();
        var load = driver.RunUntilAsync(stop.Token, concurrency: 6, pause: TimeSpan.FromMilliseconds(20), Make);
        await Task.Delay(TimeSpan.FromSeconds(3));
        var before = await ScrapedMetrics.ScrapeAsync(api.BaseAddress);

        var down = DateTimeOffset.UtcNow;
        await redis.StopAsync();
        double degradedDuring;
        Answer flushDuring, maintenanceDuring;
        try
        {
            // The limiter notices (its calls fail) and limits each replica alone.
            await Eventually.TrueAsync(async () => (await ScrapedMetrics.ScrapeAsync(api.BaseAddress)).Sum("helixagent_rate_limit_degraded") == 1,
                "helixagent_rate_limit_degraded 1 while Redis is down");
            degradedDuring = (await ScrapedMetrics.ScrapeAsync(api.BaseAddress)).Sum("helixagent_rate_limit_degraded");
            // The operator's Redis-backed actions: flushing the cache, switching maintenance mode (off: the load goes on).
            flushDuring = await CallAsync(admin, HttpMethod.Delete, "/admin/cache");
            maintenanceDuring = await CallAsync(admin, HttpMethod.Post, "/admin/maintenance", """{"enabled":false}""");
            await UntilAsync(down + TimeSpan.FromSeconds(10));
        }
        finally
        {
            await redis.StartAsync();
        }
        var up = DateTimeOffset.UtcNow;
        // Back to cluster-wide limits once the client has reconnected (bounded wait), with the load still running.
        var degradedAfter = (await Eventually.ValueAsync(() => ScrapedMetrics.ScrapeAsync(api.BaseAddress), m => m.Sum("helixagent_rate_limit_degraded") == 0,
            "cluster-wide limits again after Redis returned", TimeSpan.FromSeconds(20), m => $"degraded {m.Sum("helixagent_rate_limit_degraded")}"))
            .Sum("helixagent_rate_limit_degraded");
        await Task.Delay(TimeSpan.FromSeconds(2));
        await stop.CancelAsync();
        var outcomes = await load;
        clock.Stop();
        Report("redis outage", outcomes, clock.Elapsed);

        Assert.True(outcomes.All(o => o.Answered && o.Content == upstream.Reply && (o.Done || !o.Stream)),
            $"every request must be answered while Redis is away:\n{string.Join("\n", outcomes.Where(o => !o.Answered).Take(25))}\n{api.Diagnostics()}");
        var duringOutage = outcomes.Count(o => o.Started > down + TimeSpan.FromSeconds(1) && o.Finished < up);
        Assert.True(duringOutage >= 100, $"only {duringOutage} requests were served during the outage: the load did not go on");
        Assert.Equal(0, before.Sum("helixagent_rate_limit_degraded"));
        Assert.Equal(1, degradedDuring);
        Assert.Equal(0, degradedAfter);
        Assert.True(before.Sum("helixagent_cache_hits_total") > 0, "the cache served hits before the outage");
        // What needs Redis says so cleanly (503 + Retry-After), and works again once it is back.
        Assert.Equal((503, "redis_unavailable", true), (flushDuring.Status, flushDuring.ErrorCode, flushDuring.RetryAfter));
        Assert.Equal((503, "redis_unavailable", true), (maintenanceDuring.Status, maintenanceDuring.ErrorCode, maintenanceDuring.RetryAfter));
        Assert.Equal(200, (await CallAsync(admin, HttpMethod.Delete, "/admin/cache")).Status);
        Assert.Equal(200, (await CallAsync(admin, HttpMethod.Post, "/admin/maintenance", """{"enabled":false}""")).Status);

        await AssertLedgerParityAsync(db, outcomes, api);
        Assert.Equal(0, (await ScrapedMetrics.ScrapeAsync(api.BaseAddress)).Sum("helixagent_ledger_rows_lost_total"));
    }

    // ------------------------------------------------------------------ two instances

    [Fact]
    public async Task Two_instances_sharing_redis_hold_a_keys_requests_per_minute_within_one_percent_under_load_spread_across_both()
    {
        const int limit = 300;
        const int count = 750;
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var db = await TestDatabase.CreateAsync(postgres, "faults");
        var limitedKey = await db.CreateKeyAsync("faults-limited", requestsPerMinute: limit);
        var warmKey = await db.CreateKeyAsync("faults-warm-up");
        var env = FaultEnvironment.For(db, redis).WithProvider("p0", upstream, "m");
        var started = await Task.WhenAll(ApiProcess.StartAsync(env), ApiProcess.StartAsync(env));
        await using var a = started[0];
        await using var b = started[1];
        Uri Spread(int id) => id % 2 == 0 ? a.BaseAddress : b.BaseAddress;

        // Warm both instances up with another key (connections, JIT, the limiter's script), so the limited load below
        // measures the limit and nothing else.
        List<Outcome> warmUp;
        using (var warm = new LoadDriver(warmKey))
        {
            warmUp = await warm.RunAsync(40, concurrency: 4, id => LoadRequest.Chat(id, Spread(id), "m", Streams(id)));
        }
        Assert.All(warmUp, o => Assert.True(o.Answered, o.ToString()));

        // Limits are per minute of the Redis server's clock (a sliding estimate across two minutes): run the load
        // inside one minute, so the limit to hold is exactly `limit`.
        var minute = await RedisMinute.FreshAsync(redis, TimeSpan.FromSeconds(15));
        using var driver = new LoadDriver(limitedKey);
        var clock = Stopwatch.StartNew();
        var outcomes = await driver.RunAsync(count, concurrency: 16, id => LoadRequest.Chat(id, Spread(id), "m", id % 3 == 0));
        clock.Stop();
        Assert.Equal(minute, await RedisMinute.CurrentAsync(redis));
        Report("rate limit on two instances", outcomes, clock.Elapsed);

        Assert.True(outcomes.All(o => o.Problem is null), string.Join("\n", outcomes.Where(o => o.Problem is not null).Take(25)));
        var admitted = outcomes.Where(o => o.Answered).ToList();
        var rejected = outcomes.Where(o => o.Status == 429 && o.ErrorCode == "rate_limit_exceeded" && o.RetryAfter is not null).ToList();
        Assert.Equal(count, admitted.Count + rejected.Count);
        output.WriteLine($"admitted {admitted.Count} of {count} against {limit} per minute " +
            $"(instance A {admitted.Count(o => o.Instance == a.BaseAddress)}, instance B {admitted.Count(o => o.Instance == b.BaseAddress)})");
        Assert.True(admitted.Count <= limit * 1.01, $"admitted {admitted.Count}: more than 1% over the limit of {limit}");
        Assert.True(admitted.Count >= limit * 0.99, $"admitted {admitted.Count}: the limit of {limit} must not under-admit either");
        foreach (var instance in new[] { a, b })
        {
            Assert.Contains(admitted, o => o.Instance == instance.BaseAddress);
            Assert.Contains(rejected, o => o.Instance == instance.BaseAddress);
            // Every decision was cluster-wide: neither instance fell back to its own, per-replica count.
            Assert.Equal(0, (await ScrapedMetrics.ScrapeAsync(instance.BaseAddress)).Sum("helixagent_rate_limit_degraded"));
        }

        // Rejected requests never reached routing, so the ledger holds exactly the admitted ones (and the warm-up).
        await AssertLedgerParityAsync(db, [.. warmUp, .. outcomes], a, b);
    }

    [Fact]
    public async Task An_instance_stopped_with_sigterm_mid_load_finishes_its_in_flight_streams_and_exits_zero_while_the_other_takes_the_new_requests()
    {
        const int slowBase = 100_000;
        await using var fast = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var slow = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        fast.Reply = "a quick answer";
        slow.Reply = string.Join(' ', Enumerable.Range(1, 30).Select(i => $"word{i}"));
        slow.ChunkDelay = TimeSpan.FromMilliseconds(100); // each stream takes about 3 s
        var db = await TestDatabase.CreateAsync(postgres, "faults");
        var key = await db.CreateKeyAsync("faults-sigterm");
        var env = FaultEnvironment.For(db, redis).WithProvider("fast", fast, "quick").WithProvider("slow", slow, "long");
        // After SIGTERM /ready is 503 for 2 s while the instance still serves: time for the load balancer to notice.
        env["Shutdown__DrainDelaySeconds"] = "2";
        var started = await Task.WhenAll(ApiProcess.StartAsync(env), ApiProcess.StartAsync(env));
        await using var a = started[0];
        await using var b = started[1];
        await using var rotation = new ReadinessRotation(a.BaseAddress, b.BaseAddress);
        using var driver = new LoadDriver(key);

        using var stop = new CancellationTokenSource();
        var clock = Stopwatch.StartNew();
        var load = driver.RunUntilAsync(stop.Token, concurrency: 6, pause: TimeSpan.FromMilliseconds(20),
            id => LoadRequest.Chat(id, rotation.Next(), "quick", stream: id % 4 >= 2)); // both instances get both kinds
        await Task.Delay(TimeSpan.FromSeconds(1.5));

        // Long streams on A, well under way when A gets SIGTERM.
        var inFlight = Enumerable.Range(slowBase, 6).Select(id => driver.SendAsync(LoadRequest.Chat(id, a.BaseAddress, "long", stream: true))).ToList();
        await slow.WaitForRequestsAsync(6, TimeSpan.FromSeconds(10));
        await Task.Delay(TimeSpan.FromMilliseconds(500));
        var sigterm = DateTimeOffset.UtcNow;
        a.Signal("TERM");
        // A load balancer that has not yet noticed: requests sent to A during its drain delay are still served.
        var lateToA = await Task.WhenAll(Enumerable.Range(slowBase + 100, 4)
            .Select(id => driver.SendAsync(LoadRequest.Chat(id, a.BaseAddress, "quick", Streams(id)))));
        await a.WaitForExitAsync(TimeSpan.FromSeconds(45));
        var exited = DateTimeOffset.UtcNow;
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        await stop.CancelAsync();
        var outcomes = await load;
        var streams = await Task.WhenAll(inFlight);
        clock.Stop();
        Report("sigterm one of two", [.. outcomes, .. streams, .. lateToA], clock.Elapsed);

        Assert.True(a.ExitCode == 0, $"the SIGTERM'd instance exited {a.ExitCode}\n{a.Diagnostics()}");
        Assert.All(streams, o =>
        {
            Assert.True(o.Answered && o.Done && o.Content == slow.Reply, $"{o} content='{o.Content}'\n{a.Diagnostics()}");
            Assert.True(o.Started < sigterm && o.Finished > sigterm, $"{o} was not in flight at SIGTERM");
        });
        Assert.True(outcomes.All(o => o.Answered && o.Content == fast.Reply),
            $"every request must be answered:\n{string.Join("\n", outcomes.Where(o => !o.Answered).Take(25))}\n{a.Diagnostics()}\n{b.Diagnostics()}");

        // The load balancer saw A leave (its /ready turned 503) while A was still alive; from then on B took every request.
        Assert.True(rotation.RemovedAt.TryGetValue(a.BaseAddress, out var removed), "A never left the rotation");
        Assert.InRange(removed, sigterm, exited);
        output.WriteLine($"A left the rotation {(removed - sigterm).TotalMilliseconds:0} ms after SIGTERM and exited {(exited - sigterm).TotalSeconds:0.0} s after it");
        Assert.False(rotation.RemovedAt.ContainsKey(b.BaseAddress));
        var afterRemoval = outcomes.Where(o => o.Started > removed + TimeSpan.FromMilliseconds(50)).ToList();
        Assert.True(afterRemoval.Count >= 50, $"only {afterRemoval.Count} requests after A left the rotation");
        Assert.All(afterRemoval, o => Assert.Equal(b.BaseAddress, o.Instance));
        Assert.All(lateToA, o => Assert.True(o.Answered && o.Content == fast.Reply, o.ToString()));

        // A flushed its ledger before exiting: the rows of both instances are all there.
        await AssertLedgerParityAsync(db, [.. outcomes, .. streams, .. lateToA], a, b);
        Assert.DoesNotContain("unwritten", a.LogTail(int.MaxValue), StringComparison.Ordinal);
        Assert.Equal(0, (await ScrapedMetrics.ScrapeAsync(b.BaseAddress)).Sum("helixagent_ledger_rows_lost_total"));
    }

    // ------------------------------------------------------------------ shared checks

    private static async Task UntilAsync(DateTimeOffset moment)
    {
        var wait = moment - DateTimeOffset.UtcNow;
        if (wait > TimeSpan.Zero)
        {
            await Task.Delay(wait);
        }
    }

    /// <summary>An answer to an operator's (or a probe's) request: status, OpenAI error code if any, Retry-After, body.</summary>
    private sealed record Answer(int Status, string? ErrorCode, bool RetryAfter, string Body);

    private static async Task<Answer> CallAsync(HttpClient client, HttpMethod method, string path, string? json = null)
    {
        using var request = new HttpRequestMessage(method, path)
        {
            Content = json is null ? null : new StringContent(json, Encoding.UTF8, "application/json"),
        };
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        var code = response.Content.Headers.ContentType?.MediaType == "application/json" && JsonNode.Parse(body)?["error"] is JsonObject error
            ? error["code"]?.GetValue<string>()
            : null;
        return new Answer((int)response.StatusCode, code, response.Headers.RetryAfter is not null, body);
    }

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
    private async Task AssertLedgerParityAsync(TestDatabase db, IReadOnlyList<Outcome> outcomes, params ApiProcess[] apis)
    {
        var served = outcomes.Where(o => o.ReachedRouting).Select(o => o.RequestId!).ToHashSet();
        List<LedgerRow> rows;
        try
        {
            rows = await db.WaitForRowsAsync(served.Count, TimeSpan.FromSeconds(45), apis);
        }
        catch (Xunit.Sdk.XunitException waited)
        {
            rows = await GatewayHarness.ReadLedgerAsync(db.ConnectionString);
            var absent = served.Except(rows.Select(r => r.RequestId)).Take(10);
            Assert.Fail($"{waited.Message}\nmissing {string.Join(",", absent)}\n{string.Join("\n", apis.Select(a => a.Diagnostics()))}");
            throw;
        }
        var ids = rows.Select(r => r.RequestId).ToList();
        var missing = served.Except(ids).Take(10).ToList();
        var unknown = ids.Except(served).Take(10).ToList();
        Assert.True(rows.Count == served.Count && missing.Count == 0 && unknown.Count == 0,
            $"completions has {rows.Count} rows for {served.Count} requests served; missing {string.Join(",", missing)}; " +
            $"unexpected {string.Join(",", unknown)}\n{string.Join("\n", apis.Select(a => a.Diagnostics()))}");
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
