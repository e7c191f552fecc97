using System.Diagnostics;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Health;

/// <summary>
/// <c>/health</c>, <c>/health/detailed</c> and <c>/ready</c> against real PostgreSQL and Redis that this class owns
/// (it stops and restarts them). Alone, after the parallel tests: several of these depend on a start-up or a probe
/// finishing within its timeout (2 s), which a 2-core machine busy with the parallel tests does not promise.
/// </summary>
[Collection(Faults.FaultSuite.Name)]
public sealed class HealthEndpointTests(OwnPostgresServer postgres, OwnRedisServer redis)
    : IClassFixture<OwnPostgresServer>, IClassFixture<OwnRedisServer>
{
    private static readonly Dictionary<string, string?> OneProvider = new()
    {
        ["Providers:upstream:Type"] = "simulator",
        ["Providers:upstream:Models:0"] = "sim-small",
        ["Gateway:ProbeIntervalSeconds"] = "0",
    };

    private async Task<string> MigratedDatabaseAsync() => (await TestDatabase.CreateAsync(postgres, "health")).ConnectionString;

    private static async Task<(HttpStatusCode Status, JsonElement Body)> GetJsonAsync(HttpClient client, string path)
    {
        var response = await client.GetAsync(path);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return (response.StatusCode, doc.RootElement.Clone());
    }

    [Fact]
    public async Task Health_answers_the_runbook_shape_with_measured_latencies()
    {
        await using var factory = new GatewayFactory(await MigratedDatabaseAsync(), redis.ConnectionString, OneProvider);
        var (status, body) = await FirstHealthyAsync(factory.CreateClient());

        Assert.Equal(HttpStatusCode.OK, status);
        var components = body.GetProperty("components");
        foreach (var name in new[] { "database", "redis" })
        {
            Assert.Equal("healthy", components.GetProperty(name).GetProperty("status").GetString());
            Assert.True(components.GetProperty(name).GetProperty("latency_ms").GetDouble() > 0, $"{name} latency was not measured");
        }
        Assert.Equal("healthy", components.GetProperty("providers").GetProperty("status").GetString());
        Assert.Equal(1, components.GetProperty("providers").GetProperty("active").GetInt32());
        Assert.Matches(new Regex(@"^\d+h\d+m\d+s$"), body.GetProperty("uptime").GetString());
        Assert.Equal("1.0.0", body.GetProperty("version").GetString());
        Assert.Equal(["status", "components", "uptime", "version"], body.EnumerateObject().Select(p => p.Name));
    }

    [Fact]
    public async Task The_gateway_is_connected_to_redis_before_it_starts_listening_so_its_first_health_report_is_healthy()
    {
        await using var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = await MigratedDatabaseAsync(),
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Providers__upstream__Type"] = "simulator",
            ["Providers__upstream__Models__0"] = "sim-small",
            // The Redis client's own account of its connection, in the order things happened.
            ["Logging__LogLevel__StackExchange.Redis"] = "Information",
        });
        using var http = new HttpClient { BaseAddress = api.BaseAddress };
        var (_, body) = await GetJsonAsync(http, "/health");
        Assert.Equal("healthy", body.GetProperty("components").GetProperty("redis").GetProperty("status").GetString());

        // Not left to the first request, whose thread would block on the connect while the pool grows (about 1 s on
        // 2 cores, during which /health says "redis: not connected").
        string[] lines;
        lock (api.Log)
        {
            lines = api.Log.ToString().Split('\n');
        }
        var connected = Array.FindIndex(lines, l => l.Contains("Interactive: ConnectedEstablished", StringComparison.Ordinal));
        var listening = Array.FindIndex(lines, l => l.Contains("Now listening on:", StringComparison.Ordinal));
        Assert.True(connected >= 0 && listening >= 0, string.Join('\n', lines));
        Assert.True(connected < listening, $"connected to Redis at line {connected}, listening from line {listening}:\n{string.Join('\n', lines)}");
    }

    [Fact]
    public async Task Health_is_degraded_but_200_without_providers()
    {
        await using var factory = new GatewayFactory(await MigratedDatabaseAsync(), redis.ConnectionString);
        var (status, body) = await GetJsonAsync(factory.CreateClient(), "/health");

        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("degraded", body.GetProperty("status").GetString());
        Assert.Equal(0, body.GetProperty("components").GetProperty("providers").GetProperty("active").GetInt32());
    }

    [Fact]
    public async Task Redis_outage_makes_health_degraded_with_200_and_recovery_makes_it_healthy_again()
    {
        await using var factory = new GatewayFactory(await MigratedDatabaseAsync(), redis.ConnectionString, OneProvider);
        var client = factory.CreateClient();
        await FirstHealthyAsync(client);

        await redis.StopAsync();
        try
        {
            var (status, body) = await GetJsonAsync(client, "/health");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal("degraded", body.GetProperty("status").GetString());
            Assert.Equal("unhealthy", body.GetProperty("components").GetProperty("redis").GetProperty("status").GetString());
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/ready")).StatusCode);
        }
        finally
        {
            await redis.StartAsync();
        }

        await Eventually.TrueAsync(async () => (await GetJsonAsync(client, "/health")).Body.GetProperty("status").GetString() == "healthy", "/health healthy again", TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task Postgres_outage_makes_health_unhealthy_with_503_and_recovery_makes_it_healthy_again()
    {
        await using var factory = new GatewayFactory(await MigratedDatabaseAsync(), redis.ConnectionString, OneProvider);
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health")).StatusCode);

        await postgres.StopAsync();
        try
        {
            var (status, body) = await GetJsonAsync(client, "/health");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
            Assert.Equal("unhealthy", body.GetProperty("status").GetString());
            Assert.Equal("unhealthy", body.GetProperty("components").GetProperty("database").GetProperty("status").GetString());
            Assert.Equal("healthy", body.GetProperty("components").GetProperty("redis").GetProperty("status").GetString());
        }
        finally
        {
            await postgres.StartAsync();
        }

        await Eventually.TrueAsync(async () => (await client.GetAsync("/health")).StatusCode == HttpStatusCode.OK, "/health answering 200 again", TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task A_database_that_accepts_but_does_not_answer_makes_health_503_after_the_probe_timeout()
    {
        var cs = new NpgsqlConnectionStringBuilder(await MigratedDatabaseAsync());
        await using var proxy = new CuttableTcpProxy(cs.Port);
        cs.Port = proxy.Port;
        await using var factory = new GatewayFactory(cs.ConnectionString, redis.ConnectionString,
            new Dictionary<string, string?>(OneProvider) { ["Health:DatabaseTimeoutMs"] = "300" });
        var client = factory.CreateClient();

        proxy.Hold();
        var (status, body) = await GetJsonAsync(client, "/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        var database = body.GetProperty("components").GetProperty("database");
        Assert.Equal("unhealthy", database.GetProperty("status").GetString());
        Assert.Equal("no answer within 300 ms", database.GetProperty("error").GetString());
        Assert.Equal("healthy", body.GetProperty("components").GetProperty("redis").GetProperty("status").GetString());

        proxy.CutAll();
        await Eventually.TrueAsync(async () => (await client.GetAsync("/health")).StatusCode == HttpStatusCode.OK, "/health answering 200 again", TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task Ready_is_503_until_the_schema_reaches_the_expected_version()
    {
        var cs = await postgres.CreateDatabaseAsync("ready");
        await using var factory = new GatewayFactory(cs, redis.ConnectionString, OneProvider);
        var client = factory.CreateClient();

        var before = await client.GetAsync("/ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, before.StatusCode);
        Assert.True(before.Headers.Contains("Retry-After"));
        using (var doc = JsonDocument.Parse(await before.Content.ReadAsStringAsync()))
        {
            Assert.Equal(0, doc.RootElement.GetProperty("schema_version").GetInt64());
            Assert.Equal(SchemaMigrator.ExpectedVersion, doc.RootElement.GetProperty("expected_schema_version").GetInt64());
        }

        await using (var ds = NpgsqlDataSource.Create(cs))
        {
            await new SchemaMigrator(ds).UpAsync();
        }
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/ready")).StatusCode);

        await using (var ds = NpgsqlDataSource.Create(cs))
        {
            await new SchemaMigrator(ds).DownAsync();
        }
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await client.GetAsync("/ready")).StatusCode);
    }

    [Fact]
    public async Task Detailed_health_adds_schema_pool_and_process_state_without_secrets()
    {
        var cs = await MigratedDatabaseAsync();
        await using var factory = new GatewayFactory(cs, redis.ConnectionString, OneProvider);
        var (status, body) = await GetJsonAsync(factory.CreateClient(), "/health/detailed");

        Assert.True(status == HttpStatusCode.OK, $"/health/detailed answered {(int)status}: {body.GetRawText()}");
        Assert.Equal(SchemaMigrator.ExpectedVersion, body.GetProperty("schema").GetProperty("version").GetInt64());
        Assert.True(body.GetProperty("schema").GetProperty("up_to_date").GetBoolean());
        Assert.True(body.GetProperty("ready").GetBoolean());
        Assert.False(body.GetProperty("draining").GetBoolean());
        Assert.True(body.GetProperty("database_pool").GetProperty("max").GetInt64() > 0);
        Assert.True(body.GetProperty("database_pool").GetProperty("idle").GetInt64() + body.GetProperty("database_pool").GetProperty("used").GetInt64() >= 1);
        Assert.True(body.GetProperty("process").GetProperty("working_set_bytes").GetInt64() > 0);
        // Per-provider state and circuit, and the cache's stats, as the contract lists them.
        var provider = Assert.Single(body.GetProperty("providers").EnumerateArray());
        Assert.Equal(("upstream", "simulator", "healthy", "closed"), (provider.GetProperty("name").GetString(), provider.GetProperty("type").GetString(),
            provider.GetProperty("status").GetString(), provider.GetProperty("circuit").GetString()));
        Assert.Equal(0, provider.GetProperty("error_rate").GetDouble());
        var cache = body.GetProperty("cache");
        Assert.Equal(("deterministic", 0L, 0L), (cache.GetProperty("mode").GetString(), cache.GetProperty("hits").GetInt64(), cache.GetProperty("misses").GetInt64()));
        Assert.Equal(32L * 1024 * 1024, cache.GetProperty("local_max_bytes").GetInt64());
        Assert.Equal(0, cache.GetProperty("local_entries").GetInt64());
        Assert.DoesNotContain("Password", body.GetRawText(), StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(redis.Port.ToString(), body.GetRawText());
    }

    [Fact]
    public async Task A_probe_storm_within_the_cache_interval_sends_no_query_to_the_database()
    {
        var cs = await MigratedDatabaseAsync();
        var database = new NpgsqlConnectionStringBuilder(cs).Database;
        await using var factory = new GatewayFactory(cs, redis.ConnectionString,
            new Dictionary<string, string?>(OneProvider) { ["Health:CacheSeconds"] = "30" });
        var client = factory.CreateClient();
        var queries = 0;
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == "Npgsql",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
            ActivityStopped = a =>
            {
                if (a.TagObjects.Any(t => t.Value as string == database))
                {
                    Interlocked.Increment(ref queries);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);

        await client.GetAsync("/health");
        Assert.True(Volatile.Read(ref queries) >= 1, "the first probe should have queried the database");
        var afterFirst = Volatile.Read(ref queries);

        var storm = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => client.GetAsync("/health")));

        Assert.All(storm, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal(afterFirst, Volatile.Read(ref queries));
    }

    /// <summary>
    /// The first <c>/health</c> answer that says healthy. The gateway connects to Redis before it listens (tested
    /// below), but on a starved machine that connect can outlast its 2 s timeout; the report then rightly says degraded
    /// ("not connected") until the background reconnect. 20 s is far beyond that.
    /// </summary>
    private static Task<(HttpStatusCode Status, JsonElement Body)> FirstHealthyAsync(HttpClient client) =>
        Eventually.ValueAsync(() => GetJsonAsync(client, "/health"), answer => answer.Body.GetProperty("status").GetString() == "healthy",
            "/health healthy", TimeSpan.FromSeconds(20), answer => answer.Body.GetRawText());
}
