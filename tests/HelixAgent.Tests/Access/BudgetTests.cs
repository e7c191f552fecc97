using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Api.Access;
using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using OpenAI.Chat;
using StackExchange.Redis;

namespace HelixAgent.Tests.Access;

/// <summary>
/// Budgets in USD per key and per team as clients and operators meet them: reserved before the call in Redis with the
/// rate limit, settled with the ledger's cost, rebuilt from <c>completions</c> when Redis has no counter.
/// </summary>
public sealed class BudgetTests(PostgresServer postgres, OwnRedisServer redis) : IClassFixture<PostgresServer>, IClassFixture<OwnRedisServer>
{
    /// <summary>The simulator at 1000 USD per million tokens both ways: every token costs exactly 0.001 USD.</summary>
    private static Dictionary<string, string?> Priced()
    {
        var s = GatewayHarness.SimulatorSettings();
        s["Providers:sim:Pricing:sim-small:InputPerMTok"] = "1000";
        s["Providers:sim:Pricing:sim-small:OutputPerMTok"] = "1000";
        return s;
    }

    private static string Name(string prefix) => prefix + "-" + Guid.NewGuid().ToString("N")[..8];

    private static async Task<string> KeyAsync(GatewayHarness gw, string name, Budget? budget = null, string? team = null)
    {
        await using var ds = NpgsqlDataSource.Create(gw.DatabaseConnectionString);
        return (await new ApiKeyStore(ds).CreateAsync(name, "client", null, null, null, null, DateTimeOffset.UtcNow, team: team, budget: budget)).Secret;
    }

    private static async Task TeamAsync(GatewayHarness gw, string name, Budget? budget)
    {
        await using var ds = NpgsqlDataSource.Create(gw.DatabaseConnectionString);
        await new TeamStore(ds).CreateAsync(name, budget, DateTimeOffset.UtcNow);
    }

    private static StringContent Chat(int maxTokens = 8) =>
        new(new JsonObject
        {
            ["model"] = "sim-small",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hello there gateway" }),
            ["max_tokens"] = maxTokens,
        }.ToJsonString(), Encoding.UTF8, "application/json");

    private static async Task<decimal> SpentAsync(GatewayHarness gw, string column, string name)
    {
        await using var ds = NpgsqlDataSource.Create(gw.DatabaseConnectionString);
        await using var cmd = ds.CreateCommand($"SELECT coalesce(sum(cost_usd), 0) FROM completions WHERE {column} = $1");
        cmd.Parameters.AddWithValue(name);
        return (decimal)(await cmd.ExecuteScalarAsync())!;
    }

    private static async Task<JsonObject> ErrorOf(HttpResponseMessage response) =>
        (JsonObject)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;

    /// <summary>Waits until the one Redis counter matching <paramref name="pattern"/> holds <paramref name="expected"/> nano-USD.</summary>
    private async Task CounterSettlesAtAsync(string pattern, long expected)
    {
        await using var mux = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",allowAdmin=true");
        var server = mux.GetServers()[0];
        await Eventually.ValueAsync(async () =>
            {
                var keys = server.Keys(pattern: pattern).ToList();
                return keys.Count == 1 ? (long)await mux.GetDatabase().StringGetAsync(keys[0]) : -1;
            },
            value => value == expected, $"the budget counter {pattern} to settle at {expected} nano-USD");
    }

    private async Task FlushRedisAsync()
    {
        await using var mux = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString + ",allowAdmin=true");
        await mux.GetServers()[0].FlushAllDatabasesAsync();
    }

    [Fact]
    public async Task Sixty_four_parallel_requests_against_a_nearly_spent_budget_spend_no_more_than_it_once_settled()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Priced());
        var name = Name("par");
        var client = gw.WithKey(await KeyAsync(gw, name, Budget.Create(0.2m, "monthly")));

        var sent = DateTimeOffset.UtcNow;
        var responses = await Task.WhenAll(Enumerable.Range(0, 64).Select(_ => client.PostAsync("/v1/chat/completions", Chat())));
        var answered = DateTimeOffset.UtcNow;

        var ok = responses.Count(r => r.StatusCode == HttpStatusCode.OK);
        var refused = responses.Where(r => r.StatusCode == HttpStatusCode.TooManyRequests).ToList();
        Assert.Equal(64, ok + refused.Count);
        Assert.InRange(ok, 1, 63);
        await gw.LedgerRowsAsync(ok);
        var spent = await SpentAsync(gw, "key_name", name);
        Assert.True(spent <= 0.2m, $"spent {spent} of a 0.2 USD budget with {ok} requests admitted");
        Assert.True(spent > 0.2m / 2, $"spent {spent}: the budget admitted too little ({ok} requests)");
        await CounterSettlesAtAsync($"helixagent:budget:{{k:{name}}}:k:*", (long)(spent * 1_000_000_000m));

        var error = await ErrorOf(refused[0]);
        Assert.Equal(("insufficient_quota", "budget_exceeded"), (error["type"]!.GetValue<string>(), error["code"]!.GetValue<string>()));
        Assert.Contains($"key '{name}'", error["message"]!.GetValue<string>());
        Assert.Contains("0.2 USD monthly", error["message"]!.GetValue<string>());
        Assert.Equal("false", refused[0].Headers.GetValues("x-should-retry").Single());
        // Until the month's end, in whole seconds rounded up, counted from when the gateway refused (between sent and answered).
        var reset = new DateTimeOffset(sent.Year, sent.Month, 1, 0, 0, 0, TimeSpan.Zero).AddMonths(1);
        Assert.InRange(refused[0].Headers.RetryAfter!.Delta!.Value.TotalSeconds, Math.Floor((reset - answered).TotalSeconds), Math.Ceiling((reset - sent).TotalSeconds));

        var metrics = await ScrapedMetrics.ScrapeAsync(gw.Anonymous());
        Assert.Equal(refused.Count, metrics.Sum("helixagent_budget_rejected_total", ("scope", "key")));
        Assert.InRange(metrics.Sum("helixagent_budget_remaining_usd", ("scope", "key"), ("name", name)), 0, 0.2 - (double)spent + 1e-9);
        Assert.Equal(0.2, metrics.Sum("helixagent_budget_limit_usd", ("scope", "key"), ("name", name)), 9);
    }

    [Fact]
    public async Task A_budget_keys_single_settlement_corrects_both_its_token_reservation_and_its_cost_reservation()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Priced());
        var name = Name("settle");
        string secret;
        await using (var ds = NpgsqlDataSource.Create(gw.DatabaseConnectionString))
        {
            secret = (await new ApiKeyStore(ds).CreateAsync(name, "client", null, 100_000, null, null, DateTimeOffset.UtcNow,
                budget: Budget.Create(5m, "daily"))).Secret;
        }
        var client = gw.WithKey(secret);

        // 200 tokens reserved for the answer; the simulator uses a few, and the rest comes back with the cost's rest.
        var response = await client.PostAsync("/v1/chat/completions", Chat(maxTokens: 200));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var row = (await gw.LedgerRowsAsync(1)).Single(r => r.KeyName == name);
        var used = row.PromptTokens + row.CompletionTokens;
        Assert.True(row.CompletionTokens < 200, $"the simulator answered {row.CompletionTokens} tokens");

        await CounterSettlesAtAsync($"helixagent:budget:{{k:{name}}}:k:*", used * 1_000_000L);
        await CounterSettlesAtAsync($"helixagent:rl:{{k:{name}}}:*:t:*", used);
    }

    [Fact]
    public async Task Two_gateways_sharing_redis_hold_one_budget_between_them()
    {
        await using var a = await GatewayHarness.StartAsync(postgres, redis, Priced());
        await using var b = await GatewayHarness.StartAsync(postgres, redis, Priced(), databaseConnectionString: a.DatabaseConnectionString);
        var name = Name("two");
        var key = await KeyAsync(a, name, Budget.Create(0.3m, "daily"));
        var clients = new[] { a.WithKey(key), b.WithKey(key) };

        var responses = await Task.WhenAll(Enumerable.Range(0, 64).Select(i => clients[i % 2].PostAsync("/v1/chat/completions", Chat())));

        var ok = responses.Count(r => r.StatusCode == HttpStatusCode.OK);
        Assert.Equal(64 - ok, responses.Count(r => r.StatusCode == HttpStatusCode.TooManyRequests));
        await a.LedgerRowsAsync(ok + 0);
        await b.LedgerRowsAsync(ok);
        var spent = await SpentAsync(a, "key_name", name);
        // A budget held per replica would let each spend 0.3.
        Assert.True(spent <= 0.3m, $"spent {spent} of a 0.3 USD budget through two gateways");
        Assert.True(spent > 0.15m, $"spent {spent}: the budget admitted too little ({ok} requests)");
    }

    [Fact]
    public async Task A_key_is_held_to_its_own_budget_and_its_teams_and_the_refusal_names_which()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Priced());
        var team = Name("team");
        await TeamAsync(gw, team, Budget.Create(0.15m, "monthly"));
        var small = Name("small");
        var roomy = Name("roomy");
        var smallKey = gw.WithKey(await KeyAsync(gw, small, Budget.Create(0.04m, "daily"), team));
        var roomyKey = gw.WithKey(await KeyAsync(gw, roomy, Budget.Create(100m, "monthly"), team));

        HttpResponseMessage last;
        var smallOk = 0;
        while ((last = await smallKey.PostAsync("/v1/chat/completions", Chat())).StatusCode == HttpStatusCode.OK)
        {
            smallOk++;
        }
        Assert.Contains($"key '{small}'", (await ErrorOf(last))["message"]!.GetValue<string>());
        var roomyOk = 0;
        while ((last = await roomyKey.PostAsync("/v1/chat/completions", Chat())).StatusCode == HttpStatusCode.OK)
        {
            roomyOk++;
        }
        var message = (await ErrorOf(last))["message"]!.GetValue<string>();
        Assert.Contains($"team '{team}'", message);
        Assert.Contains("0.15 USD monthly", message);

        await gw.LedgerRowsAsync(smallOk + roomyOk);
        Assert.True(smallOk >= 1 && roomyOk >= 1, $"{smallOk} and {roomyOk} admitted");
        Assert.True(await SpentAsync(gw, "key_name", small) <= 0.04m);
        var teamSpent = await SpentAsync(gw, "team", team);
        Assert.True(teamSpent is > 0.1m and <= 0.15m, $"the team spent {teamSpent} of 0.15");
        Assert.Equal(await SpentAsync(gw, "key_name", small) + await SpentAsync(gw, "key_name", roomy), teamSpent);
    }

    [Fact]
    public async Task A_redis_flush_mid_period_keeps_the_spend_rebuilt_from_completions()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Priced());
        var name = Name("flush");
        var client = gw.WithKey(await KeyAsync(gw, name, Budget.Create(0.1m, "monthly")));
        var ok = 0;
        while ((await client.PostAsync("/v1/chat/completions", Chat())).StatusCode == HttpStatusCode.OK)
        {
            ok++;
        }
        await gw.LedgerRowsAsync(ok);
        var spent = await SpentAsync(gw, "key_name", name);

        await FlushRedisAsync();
        var after = await client.PostAsync("/v1/chat/completions", Chat());

        // An empty Redis is not a fresh budget: the counter is rebuilt from the ledger before the request is decided.
        Assert.Equal(HttpStatusCode.TooManyRequests, after.StatusCode);
        Assert.Equal("budget_exceeded", (await ErrorOf(after))["code"]!.GetValue<string>());
        await CounterSettlesAtAsync($"helixagent:budget:{{k:{name}}}:k:*", (long)(spent * 1_000_000_000m));
        Assert.True(gw.Factory.Services.GetRequiredService<ClusterRateLimiter>().BudgetCountersRebuilt >= 1);
        Assert.Equal(ok, (await gw.LedgerRowsAsync(0)).Count(r => r.KeyName == name));
    }

    /// <summary>The real clock moved by <see cref="Offset"/>: timers and timestamps stay real, only "now" moves.</summary>
    private sealed class ShiftedClock : TimeProvider
    {
        public TimeSpan Offset { get; set; }

        public override DateTimeOffset GetUtcNow() => System.GetUtcNow() + Offset;
    }

    [Fact]
    public async Task A_daily_budget_spent_today_admits_again_the_next_day()
    {
        var clock = new ShiftedClock();
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Priced(), services => services.AddSingleton<TimeProvider>(clock));
        var name = Name("daily");
        var client = gw.WithKey(await KeyAsync(gw, name, Budget.Create(0.05m, "daily")));
        var ok = 0;
        HttpResponseMessage last;
        while ((last = await client.PostAsync("/v1/chat/completions", Chat())).StatusCode == HttpStatusCode.OK)
        {
            ok++;
        }
        Assert.True(ok >= 1);
        var midnight = new DateTimeOffset(clock.GetUtcNow().UtcDateTime.Date, TimeSpan.Zero).AddDays(1);
        Assert.Contains($"It resets at {midnight.UtcDateTime:yyyy-MM-ddTHH:mm:ssZ}", (await ErrorOf(last))["message"]!.GetValue<string>());

        clock.Offset = midnight - DateTimeOffset.UtcNow + TimeSpan.FromMinutes(1);
        var nextDay = await client.PostAsync("/v1/chat/completions", Chat());

        Assert.Equal(HttpStatusCode.OK, nextDay.StatusCode);
    }

    [Fact]
    public async Task The_openai_sdk_sees_insufficient_quota_when_the_budget_is_spent()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Priced());
        var name = Name("sdk");
        var key = await KeyAsync(gw, name, Budget.Create(0m, "total"));
        var sdk = new OpenAI.OpenAIClient(new ApiKeyCredential(key), new OpenAI.OpenAIClientOptions
        {
            Endpoint = new Uri(gw.Client.BaseAddress!, "/v1"),
            Transport = new System.ClientModel.Primitives.HttpClientPipelineTransport(gw.Factory.CreateClient()),
            RetryPolicy = new System.ClientModel.Primitives.ClientRetryPolicy(0),
        });

        var failure = await Assert.ThrowsAsync<ClientResultException>(() => sdk.GetChatClient("sim-small").CompleteChatAsync([new UserChatMessage("hi")]));

        Assert.Equal(429, failure.Status);
        Assert.Contains("insufficient_quota", failure.Message);
        Assert.Contains("budget_exceeded", failure.Message);
        Assert.Contains("total budget and does not reset", failure.Message);
        Assert.Null(failure.GetRawResponse()!.Headers.TryGetValue("Retry-After", out var retry) ? retry : null);
    }

    [Fact]
    public async Task The_admin_api_sets_team_and_key_budgets_and_reports_spent_remaining_and_reset()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Priced());
        var admin = gw.WithKey(gw.AdminKey);
        var team = Name("ateam");
        var name = Name("akey");
        static StringContent Json(JsonObject o) => new(o.ToJsonString(), Encoding.UTF8, "application/json");

        var createdTeam = await admin.PostAsync("/admin/teams", Json(new JsonObject { ["name"] = team, ["budget_usd"] = 5, ["budget_period"] = "daily" }));
        Assert.Equal(HttpStatusCode.Created, createdTeam.StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await admin.PostAsync("/admin/teams", Json(new JsonObject { ["name"] = team }))).StatusCode);
        var created = await admin.PostAsync("/admin/keys", Json(new JsonObject { ["name"] = name, ["team"] = team, ["budget_usd"] = 1.5 }));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var key = JsonNode.Parse(await created.Content.ReadAsStringAsync())!;
        Assert.Equal((team, 1.5m, "monthly"), (key["team"]!.GetValue<string>(), key["budget_usd"]!.GetValue<decimal>(), key["budget_period"]!.GetValue<string>()));

        var used = await gw.WithKey(key["key"]!.GetValue<string>()).PostAsync("/v1/chat/completions", Chat());
        Assert.Equal(HttpStatusCode.OK, used.StatusCode);
        var cost = decimal.Parse(used.Headers.GetValues("x-helixagent-cost-usd").Single(), System.Globalization.CultureInfo.InvariantCulture);
        await gw.LedgerRowsAsync(1);

        var listed = JsonNode.Parse(await admin.GetStringAsync("/admin/keys"))!["data"]!.AsArray().Single(k => k!["name"]!.GetValue<string>() == name)!;
        Assert.Equal((cost, 1.5m - cost), (listed["budget"]!["spent_usd"]!.GetValue<decimal>(), listed["budget"]!["remaining_usd"]!.GetValue<decimal>()));
        Assert.NotNull(listed["budget"]!["resets_at"]);
        Assert.Equal(cost, listed["team_budget"]!["spent_usd"]!.GetValue<decimal>());
        var teams = JsonNode.Parse(await admin.GetStringAsync("/admin/teams"))!["data"]!.AsArray().Single(t => t!["name"]!.GetValue<string>() == team)!;
        Assert.Equal((1, 5m - cost), (teams["keys"]!.GetValue<int>(), teams["budget"]!["remaining_usd"]!.GetValue<decimal>()));

        var cleared = await admin.PatchAsync($"/admin/keys/{name}", Json(new JsonObject { ["budget_usd"] = null, ["team"] = null }));
        Assert.Equal(HttpStatusCode.OK, cleared.StatusCode);
        var after = JsonNode.Parse(await cleared.Content.ReadAsStringAsync())!;
        Assert.Null(after["budget_usd"]);
        Assert.Null(after["team"]);
        var teamBudget = await admin.PatchAsync($"/admin/teams/{team}", Json(new JsonObject { ["budget_usd"] = 7.25, ["budget_period"] = "total" }));
        Assert.Equal(HttpStatusCode.OK, teamBudget.StatusCode);
        Assert.Null(JsonNode.Parse(await teamBudget.Content.ReadAsStringAsync())!["budget"]!["resets_at"]);

        foreach (var (path, body, param) in new[]
        {
            ($"/admin/keys/{name}", new JsonObject { ["budget_usd"] = "lots" }, "budget_usd"),
            ($"/admin/keys/{name}", new JsonObject { ["budget_usd"] = -1 }, "budget_usd"),
            ($"/admin/keys/{name}", new JsonObject { ["budget_usd"] = 3, ["budget_period"] = "weekly" }, "budget_period"),
            ($"/admin/keys/{name}", new JsonObject { ["team"] = "no-such-team" }, "team"),
            ($"/admin/teams/{team}", new JsonObject { ["budget_period"] = "daily" }, "budget_period"),
        })
        {
            var bad = await admin.PatchAsync(path, Json(body));
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
            Assert.Equal(param, (await ErrorOf(bad))["param"]?.GetValue<string>());
        }
        Assert.Equal(HttpStatusCode.NotFound, (await admin.PatchAsync("/admin/keys/no-such-key", Json(new JsonObject { ["budget_usd"] = 1 }))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.PatchAsync("/admin/teams/no-such-team", Json(new JsonObject { ["budget_usd"] = 1 }))).StatusCode);
    }

    [Fact]
    public async Task The_cli_creates_teams_and_budgeted_keys_lists_their_spend_and_rejects_bad_amounts()
    {
        var cs = await postgres.CreateDatabaseAsync("budgetcli");
        var env = new Dictionary<string, string> { ["ConnectionStrings__helixagent-db"] = cs };
        Assert.Equal(0, (await ApiProcess.RunCliAsync(env, "migrate", "up")).ExitCode);

        var team = await ApiProcess.RunCliAsync(env, "teams", "create", "--name", "search", "--budget", "200", "--budget-period", "monthly");
        Assert.Equal(0, team.ExitCode);
        Assert.Contains("budget 200 USD monthly", team.Stdout);
        var key = await ApiProcess.RunCliAsync(env, "keys", "create", "--name", "app", "--team", "search", "--budget", "50", "--budget-period", "monthly");
        Assert.Equal(0, key.ExitCode);
        Assert.Contains("50 USD monthly", key.Stdout);
        await using (var ds = NpgsqlDataSource.Create(cs))
        {
            await using var cmd = ds.CreateCommand(
                "INSERT INTO completions (request_id, key_name, team, model, provider, endpoint, status, prompt_tokens, completion_tokens, latency_ms, cache_hit, stream, attempts, created_at, cost_usd) "
                + "VALUES ('r1', 'app', 'search', 'm', 'p', 'chat', 200, 1, 1, 1, false, false, 1, now(), 12.5)");
            await cmd.ExecuteNonQueryAsync();
        }

        var teams = await ApiProcess.RunCliAsync(env, "teams", "list");
        Assert.Equal(0, teams.ExitCode);
        var row = teams.Stdout.Split('\n').Single(l => l.StartsWith("search", StringComparison.Ordinal));
        Assert.Contains("200 USD monthly", row);
        Assert.Contains("12.5", row);
        Assert.Contains("187.5", row);
        var keys = await ApiProcess.RunCliAsync(env, "keys", "list");
        Assert.Contains("37.5", keys.Stdout.Split('\n').Last(l => l.StartsWith("app", StringComparison.Ordinal)));

        var cleared = await ApiProcess.RunCliAsync(env, "keys", "update", "--name", "app", "--budget", "none", "--team", "none");
        Assert.Equal(0, cleared.ExitCode);
        Assert.Contains("team none, budget none", cleared.Stdout);

        foreach (var args in new[]
        {
            new[] { "keys", "update", "--name", "app", "--budget", "lots" },
            ["keys", "update", "--name", "app", "--budget", "5", "--budget-period", "weekly"],
            ["keys", "update", "--name", "app", "--team", "nobody"],
            ["teams", "update", "--name", "nobody", "--budget", "5"],
            ["keys", "update", "--name", "app"],
        })
        {
            var bad = await ApiProcess.RunCliAsync(env, args);
            Assert.Equal(2, bad.ExitCode);
            Assert.StartsWith("helixagent: ", bad.Stderr);
            Assert.DoesNotContain("   at ", bad.Stderr);
        }
    }
}
