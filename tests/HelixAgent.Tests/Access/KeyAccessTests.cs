using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Api.Access;
using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Npgsql;

namespace HelixAgent.Tests.Access;

/// <summary>API keys: authentication, scopes, rotation grace, revocation across replicas, and a corpus of bad inputs.</summary>
public sealed class KeyAccessTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static Dictionary<string, string?> Settings()
    {
        var s = GatewayHarness.SimulatorSettings();
        s["Providers:sim:LatencyMs"] = "0"; // no timers: some tests drive a fake clock
        return s;
    }

    private static StringContent ChatBody() =>
        new(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "application/json");

    private static async Task<(long Completions, long Keys, string KeysDigest)> DatabaseStateAsync(string cs)
    {
        await using var conn = new NpgsqlConnection(cs + ";Pooling=false");
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            "SELECT (SELECT count(*) FROM completions), (SELECT count(*) FROM api_keys), (SELECT coalesce(string_agg(id::text || coalesce(revoked_at::text,'') || coalesce(expires_at::text,''), ',' ORDER BY id), '') FROM api_keys)", conn);
        await using var r = await cmd.ExecuteReaderAsync();
        await r.ReadAsync();
        return (r.GetInt64(0), r.GetInt64(1), r.GetString(2));
    }

    private static async Task<string> ErrorCodeAsync(HttpResponseMessage response)
    {
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("error").GetProperty("code").GetString()!;
    }

    public static TheoryData<string, int, string> BadRequests() => new()
    {
        { "no key", 401, "missing_api_key" },
        { "malformed key", 401, "invalid_api_key" },
        { "unknown key", 401, "invalid_api_key" },
        { "revoked key", 401, "invalid_api_key" },
        { "empty bearer", 401, "missing_api_key" },
        { "key in the query string", 401, "missing_api_key" },
        { "two keys in two headers", 401, "missing_api_key" },
        { "client key on an admin route", 403, "insufficient_scope" },
        { "malformed json", 400, "invalid_json" },
        { "wrong content type", 400, "invalid_content_type" },
        { "oversized body", 413, "request_too_large" },
        { "key with non-ASCII characters", 401, "invalid_api_key" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task Bad_inputs_get_their_status_and_change_nothing_in_the_database(string kind, int status, string code)
    {
        var settings = Settings();
        settings["Gateway:MaxRequestBodyBytes"] = "4096";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        string revoked;
        await using (var ds = NpgsqlDataSource.Create(gw.DatabaseConnectionString))
        {
            var store = new ApiKeyStore(ds);
            revoked = (await store.CreateAsync("to-revoke", "client", null, null, null, null, DateTimeOffset.UtcNow)).Secret;
            await store.RevokeAsync("to-revoke", DateTimeOffset.UtcNow);
        }
        var before = await DatabaseStateAsync(gw.DatabaseConnectionString);

        var anonymous = gw.Anonymous();
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = ChatBody() };
        switch (kind)
        {
            case "malformed key": request.Headers.Add("X-API-Key", "hello"); break;
            case "unknown key": request.Headers.Add("X-API-Key", ApiKeyStore.NewSecret()); break;
            case "revoked key": request.Headers.Add("X-API-Key", revoked); break;
            case "empty bearer": request.Headers.TryAddWithoutValidation("Authorization", "Bearer "); break;
            case "key in the query string": request.RequestUri = new Uri($"/v1/chat/completions?api_key={gw.ClientKey}", UriKind.Relative); break;
            case "two keys in two headers": request.Headers.Add("X-API-Key", new[] { gw.ClientKey, gw.ClientKey }); break;
            case "client key on an admin route":
                request = new HttpRequestMessage(HttpMethod.Get, "/admin/keys");
                request.Headers.Add("X-API-Key", gw.ClientKey);
                break;
            case "malformed json":
                request.Headers.Add("X-API-Key", gw.ClientKey);
                request.Content = new StringContent("{\"model\": [", Encoding.UTF8, "application/json");
                break;
            case "wrong content type":
                request.Headers.Add("X-API-Key", gw.ClientKey);
                request.Content = new StringContent(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "text/plain");
                break;
            case "oversized body":
                request.Headers.Add("X-API-Key", gw.ClientKey);
                request.Content = new StringContent(GatewayHarness.Chat("sim-small", new string('a', 8000)).ToJsonString(), Encoding.UTF8, "application/json");
                break;
            case "key with non-ASCII characters": request.Headers.TryAddWithoutValidation("X-API-Key", gw.ClientKey + "\u00e9x"); break;
        }
        var response = await anonymous.SendAsync(request);

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal(code, await ErrorCodeAsync(response));
        await gw.LedgerRowsAsync(0); // a (wrong) ledger row would be written by now
        Assert.Equal(before, await DatabaseStateAsync(gw.DatabaseConnectionString));
    }

    [Fact]
    public async Task Keys_work_in_x_api_key_and_bearer_and_a_wrong_method_is_405_not_401()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Settings());

        Assert.Equal(HttpStatusCode.OK, (await gw.WithKey(gw.ClientKey).PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await gw.Client.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
        // The runbook's check: curl -H "X-API-Key: new-key" /v1/completions tells a valid key (405) from an invalid one (401).
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await gw.WithKey(gw.ClientKey).GetAsync("/v1/completions")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await gw.WithKey(ApiKeyStore.NewSecret()).GetAsync("/v1/completions")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await gw.WithKey(gw.AdminKey).GetAsync("/admin/keys")).StatusCode);
        // Public routes need no key.
        Assert.Equal(HttpStatusCode.OK, (await gw.Anonymous().GetAsync("/v1/providers")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await gw.Anonymous().GetAsync("/health")).StatusCode);

        var rows = await gw.LedgerRowsAsync(2);
        Assert.Equal(2, rows.Count);
        Assert.All(rows, r => Assert.Equal("harness-client", r.KeyName));
    }

    [Fact]
    public async Task A_rotated_key_keeps_working_through_its_grace_then_gets_401_while_the_new_one_works()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Settings(), s => s.AddSingleton<TimeProvider>(clock));
        var admin = gw.WithKey(gw.AdminKey);
        var old = gw.WithKey(gw.ClientKey);
        Assert.Equal(HttpStatusCode.OK, (await old.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);

        var rotated = await admin.PostAsync("/admin/keys/harness-client/rotate", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, rotated.StatusCode);
        var newKey = JsonNode.Parse(await rotated.Content.ReadAsStringAsync())!["key"]!.GetValue<string>();
        var fresh = gw.WithKey(newKey);

        clock.Advance(TimeSpan.FromHours(23.9));
        Assert.Equal(HttpStatusCode.OK, (await old.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await fresh.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);

        clock.Advance(TimeSpan.FromHours(0.2));
        var expired = await old.PostAsync("/v1/chat/completions", ChatBody());
        Assert.Equal(HttpStatusCode.Unauthorized, expired.StatusCode);
        Assert.Equal("invalid_api_key", await ErrorCodeAsync(expired));
        Assert.Equal(HttpStatusCode.OK, (await fresh.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);

        var listed = JsonNode.Parse(await admin.GetStringAsync("/admin/keys"))!["data"]!.AsArray()
            .Where(k => k!["name"]!.GetValue<string>() == "harness-client").Select(k => k!["status"]!.GetValue<string>()).Order().ToList();
        Assert.Equal(["active", "expired"], listed);
        Assert.DoesNotContain(gw.ClientKey, await admin.GetStringAsync("/admin/keys"));
    }

    [Fact]
    public async Task Made_up_keys_are_forgotten_after_the_negative_cache_time_so_a_flood_of_them_cannot_grow_memory()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Settings(), s => s.AddSingleton<TimeProvider>(clock));
        var cache = gw.Factory.Services.GetRequiredService<KeyAuthenticator>();
        var known = gw.WithKey(gw.ClientKey);
        Assert.Equal(HttpStatusCode.OK, (await known.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
        var before = cache.CachedEntries;

        // Anyone can present keys: 300 well-formed, made-up ones are each refused, and each is remembered as unknown.
        for (var i = 0; i < 300; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await gw.WithKey(ApiKeyStore.NewSecret()).PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
        }
        Assert.Equal(before + 300, cache.CachedEntries);

        // Past the negative-cache time (5 s) and a sweep, they are gone; the known key stays cached, even stale
        // (it is what serves while PostgreSQL is unreachable).
        clock.Advance(TimeSpan.FromSeconds(31));
        await Eventually.ValueAsync(() =>
        {
            clock.Advance(cache.SweepInterval); // each advance lets the sweep timer run once more
            return Task.FromResult(cache.CachedEntries);
        }, n => n == before, $"the sweep leaving {before} entries");
        Assert.Equal(HttpStatusCode.OK, (await known.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
    }

    [Fact]
    public async Task A_revocation_on_one_replica_takes_effect_on_another_within_a_second()
    {
        await using var a = await GatewayHarness.StartAsync(postgres, redis, Settings());
        await using var b = await GatewayHarness.StartAsync(postgres, redis, Settings(), databaseConnectionString: a.DatabaseConnectionString);
        string key;
        await using (var ds = NpgsqlDataSource.Create(a.DatabaseConnectionString))
        {
            key = (await new ApiKeyStore(ds).CreateAsync("shared-app", "client", null, null, null, null, DateTimeOffset.UtcNow)).Secret;
        }
        // Both replicas have the key cached (30 s by default).
        Assert.Equal(HttpStatusCode.OK, (await a.WithKey(key).PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await b.WithKey(key).PostAsync("/v1/chat/completions", ChatBody())).StatusCode);

        var revoke = await a.WithKey(a.AdminKey).PostAsync("/admin/keys/shared-app/revoke", null);
        Assert.Equal(HttpStatusCode.OK, revoke.StatusCode);
        Assert.True(JsonNode.Parse(await revoke.Content.ReadAsStringAsync())!["all_replicas_notified"]!.GetValue<bool>());

        var started = DateTime.UtcNow;
        HttpStatusCode status;
        do
        {
            status = (await b.WithKey(key).PostAsync("/v1/chat/completions", ChatBody())).StatusCode;
        }
        while (status == HttpStatusCode.OK && DateTime.UtcNow - started < TimeSpan.FromSeconds(1));
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await a.WithKey(key).PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
    }

    [Fact]
    public async Task A_key_limited_to_some_models_gets_403_for_others()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, Settings());
        var created = await gw.WithKey(gw.AdminKey).PostAsync("/admin/keys",
            new StringContent("""{"name":"narrow","allowed_models":["sim-small"]}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var narrow = gw.WithKey(JsonNode.Parse(await created.Content.ReadAsStringAsync())!["key"]!.GetValue<string>());

        Assert.Equal(HttpStatusCode.OK, (await narrow.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
        var other = await narrow.PostAsync("/v1/chat/completions",
            new StringContent(GatewayHarness.Chat("sim-error").ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Forbidden, other.StatusCode);
        Assert.Equal("model_not_allowed", await ErrorCodeAsync(other));
    }

    [Fact]
    public async Task Maintenance_mode_turns_client_routes_to_503_on_every_replica_while_health_and_admin_keep_working()
    {
        await using var a = await GatewayHarness.StartAsync(postgres, redis, Settings());
        await using var b = await GatewayHarness.StartAsync(postgres, redis, Settings(), databaseConnectionString: a.DatabaseConnectionString);
        var admin = a.WithKey(a.AdminKey);
        try
        {
            Assert.Equal(HttpStatusCode.OK, (await admin.PostAsync("/admin/maintenance",
                new StringContent("""{"enabled":true}""", Encoding.UTF8, "application/json"))).StatusCode);

            var onA = await a.Client.PostAsync("/v1/chat/completions", ChatBody());
            Assert.Equal(HttpStatusCode.ServiceUnavailable, onA.StatusCode);
            Assert.NotNull(onA.Headers.RetryAfter);
            Assert.Equal("maintenance_mode", await ErrorCodeAsync(onA));

            var started = DateTime.UtcNow;
            HttpStatusCode onB;
            do
            {
                onB = (await b.Client.PostAsync("/v1/chat/completions", ChatBody())).StatusCode;
            }
            while (onB == HttpStatusCode.OK && DateTime.UtcNow - started < TimeSpan.FromSeconds(3));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, onB);

            Assert.Equal(HttpStatusCode.OK, (await b.Anonymous().GetAsync("/health")).StatusCode);
            var ready = await b.Anonymous().GetAsync("/ready");
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
            Assert.True(JsonNode.Parse(await ready.Content.ReadAsStringAsync())!["maintenance"]!.GetValue<bool>());
            Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/admin/keys")).StatusCode);
        }
        finally
        {
            Assert.Equal(HttpStatusCode.OK, (await admin.PostAsync("/admin/maintenance",
                new StringContent("""{"enabled":false}""", Encoding.UTF8, "application/json"))).StatusCode);
        }
        Assert.Equal(HttpStatusCode.OK, (await a.Client.PostAsync("/v1/chat/completions", ChatBody())).StatusCode);
    }
}
