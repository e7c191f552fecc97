using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using HelixAgent.AppHost;
using Microsoft.Extensions.DependencyInjection;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.AppHost.Tests;

[Collection(LocalAppHostCollection.Name)]
public sealed class LocalModeEndToEndTests(LocalAppHostFixture fixture)
{
    [Theory]
    [InlineData(KnownResourceNames.Postgres)]
    [InlineData(KnownResourceNames.Redis)]
    [InlineData(KnownResourceNames.Worker)]
    [InlineData(KnownResourceNames.Api)]
    [InlineData("fake-anthropic")]
    public async Task Every_resource_becomes_healthy_without_a_container_runtime(string resource)
    {
        using var cts = new CancellationTokenSource(LocalAppHostFixture.StartTimeout);
        await fixture.App.ResourceNotifications.WaitForResourceHealthyAsync(resource, cts.Token);
    }

    [Fact]
    public async Task Health_through_the_apphost_reports_real_database_and_redis()
    {
        using var client = fixture.App.CreateHttpClient(KnownResourceNames.Api);
        var response = await client.GetAsync("/health");

        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var components = doc.RootElement.GetProperty("components");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("healthy", components.GetProperty("database").GetProperty("status").GetString());
        Assert.Equal("healthy", components.GetProperty("redis").GetProperty("status").GetString());
        Assert.Equal("healthy", doc.RootElement.GetProperty("status").GetString());
        Assert.True(components.GetProperty("providers").GetProperty("active").GetInt32() >= 1);
        Assert.True(components.GetProperty("database").GetProperty("latency_ms").GetDouble() > 0);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/ready")).StatusCode);
    }

    [Fact]
    public async Task The_api_is_declared_on_port_8080_like_the_runbook_expects_and_this_run_serves_it_on_its_own_port()
    {
        // What a developer's `dotnet run` binds: the api's http endpoint as the AppHost declares it.
        var model = fixture.App.Services.GetRequiredService<DistributedApplicationModel>();
        var declared = model.Resources.Single(r => r.Name == KnownResourceNames.Api).Annotations.OfType<EndpointAnnotation>().Single(e => e.Name == "http");
        Assert.Equal(KnownResourceNames.ApiPort, declared.Port);

        // This run's ports are randomized, so it does not collide with a developer's AppHost on 8080.
        var endpoint = fixture.App.GetEndpoint(KnownResourceNames.Api, "http");
        Assert.NotEqual(KnownResourceNames.ApiPort, endpoint.Port);
        using var client = new HttpClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync(new Uri(endpoint, "/alive"))).StatusCode);
    }

    [Fact]
    public void Auto_mode_finds_no_container_runtime_and_runs_postgres_and_redis_as_local_processes()
    {
        // The fixture leaves Infrastructure:Mode at auto; no engine answers `docker info` or `podman info` here.
        var model = fixture.App.Services.GetRequiredService<DistributedApplicationModel>();
        Assert.IsType<LocalPostgresResource>(model.Resources.Single(r => r.Name == KnownResourceNames.Postgres));
        Assert.IsType<LocalRedisResource>(model.Resources.Single(r => r.Name == KnownResourceNames.Redis));
        Assert.DoesNotContain(model.Resources, r => r is ContainerResource);
    }

    [Fact]
    public async Task The_env_file_lets_psql_and_the_cli_reach_the_migrated_database_as_helixagent()
    {
        var env = LocalDevEnvironment.ReadEnvFile();
        var cs = new NpgsqlConnectionStringBuilder
        {
            Host = env["PGHOST"], Port = int.Parse(env["PGPORT"]), Username = env["PGUSER"],
            Password = env["PGPASSWORD"], Database = env["PGDATABASE"], Pooling = false,
        };
        Assert.Equal(("helixagent", "helixagent_db"), (cs.Username, cs.Database));
        Assert.Equal(env["PGPASSWORD"], File.ReadAllText(Path.Combine(fixture.DataDirectory, "postgres-password")).Trim());

        await using var conn = new NpgsqlConnection(cs.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT max(version) FROM schema_migrations", conn);
        Assert.Equal(HelixAgent.Data.SchemaMigrator.ExpectedVersion, await cmd.ExecuteScalarAsync());

        // `make migrate-status` runs the CLI with no connection string: it must find the AppHost's database.
        var (exit, stdout) = await RunCliAsync("migrate", "status");
        Assert.Equal(0, exit);
        Assert.Contains("initial", stdout);
        Assert.DoesNotContain("pending", stdout);
    }

    [Fact]
    public async Task A_chat_completion_through_the_apphost_is_served_by_the_simulator_and_lands_in_the_ledger()
    {
        // The first key comes from the CLI, as the README tells a new user.
        var (exit, key) = await RunCliAsync("keys", "create", "--name", "e2e-" + Guid.NewGuid().ToString("N")[..8], "--quiet");
        Assert.Equal(0, exit);
        using var client = fixture.App.CreateHttpClient(KnownResourceNames.Api);
        client.DefaultRequestHeaders.Add("X-API-Key", key.Trim());
        var content = new StringContent("""{"model":"sim-small","messages":[{"role":"user","content":"hello aspire"}]}""",
            System.Text.Encoding.UTF8, "application/json");
        var response = await client.PostAsync("/v1/chat/completions", content);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("Simulated answer to: hello aspire",
            doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        var requestId = response.Headers.GetValues("x-request-id").Single();

        var env = LocalDevEnvironment.ReadEnvFile();
        var cs = $"Host={env["PGHOST"]};Port={env["PGPORT"]};Username={env["PGUSER"]};Password={env["PGPASSWORD"]};Database={env["PGDATABASE"]};Pooling=false";
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        await Eventually.TrueAsync(async () =>
        {
            await using var cmd = new NpgsqlCommand("SELECT count(*) FROM completions WHERE request_id = $1", conn);
            cmd.Parameters.AddWithValue(requestId);
            return (long)(await cmd.ExecuteScalarAsync())! == 1;
        }, $"the ledger row of {requestId}", TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task In_demo_mode_a_chat_completion_goes_through_the_anthropic_protocol_to_the_fake_upstream()
    {
        var (exit, key) = await RunCliAsync("keys", "create", "--name", "demo-" + Guid.NewGuid().ToString("N")[..8], "--quiet");
        Assert.Equal(0, exit);
        using var client = fixture.App.CreateHttpClient(KnownResourceNames.Api);
        client.DefaultRequestHeaders.Add("X-API-Key", key.Trim());

        var plain = await client.PostAsync("/v1/chat/completions", new StringContent(
            """{"model":"claude-demo","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}""",
            System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, plain.StatusCode);
        using var doc = JsonDocument.Parse(await plain.Content.ReadAsStringAsync());
        Assert.Equal("Hello from a fake Anthropic upstream, translated by HelixAgent.",
            doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("claude-demo", plain.Headers.GetValues("x-helixagent-provider").Single());

        var streamed = await client.PostAsync("/v1/chat/completions", new StringContent(
            """{"model":"claude-demo","stream":true,"messages":[{"role":"user","content":"hi"}]}""",
            System.Text.Encoding.UTF8, "application/json"));
        var sse = await streamed.Content.ReadAsStringAsync();
        Assert.Contains("\"role\":\"assistant\"", sse);
        Assert.Contains("translated", sse);
        Assert.EndsWith("data: [DONE]", sse.TrimEnd());
    }

    [Fact]
    public async Task In_demo_mode_the_readmes_team_budget_prices_each_answer_and_refuses_with_insufficient_quota_once_spent()
    {
        // The README's steps: a team with a daily budget of 0.001 USD, a key in it, requests to the priced claude-demo.
        var team = "demo-" + Guid.NewGuid().ToString("N")[..8];
        var (teamExit, teamOut) = await RunCliAsync("teams", "create", "--name", team, "--budget", "0.001", "--budget-period", "daily");
        Assert.Equal(0, teamExit);
        Assert.Contains("budget 0.001 USD daily", teamOut);
        var (exit, key) = await RunCliAsync("keys", "create", "--name", team + "-app", "--team", team, "--quiet");
        Assert.Equal(0, exit);
        using var client = fixture.App.CreateHttpClient(KnownResourceNames.Api);
        client.DefaultRequestHeaders.Add("X-API-Key", key.Trim().Split('\n')[^1]);

        var costs = new List<decimal>();
        HttpResponseMessage? refused = null;
        for (var i = 0; i < 20 && refused is null; i++)
        {
            var response = await client.PostAsync("/v1/chat/completions", new StringContent(
                """{"model":"claude-demo","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}""", System.Text.Encoding.UTF8, "application/json"));
            if (response.StatusCode == HttpStatusCode.OK)
            {
                costs.Add(decimal.Parse(response.Headers.GetValues("x-helixagent-cost-usd").Single(), System.Globalization.CultureInfo.InvariantCulture));
            }
            else
            {
                refused = response;
            }
        }

        Assert.NotNull(refused);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.InRange(costs.Count, 1, 19);
        Assert.All(costs, c => Assert.True(c > 0, $"a priced answer cost {c}"));
        Assert.True(costs.Sum() <= 0.001m, $"{costs.Count} answers spent {costs.Sum()} of a 0.001 USD budget");
        using var error = JsonDocument.Parse(await refused.Content.ReadAsStringAsync());
        Assert.Equal("insufficient_quota", error.RootElement.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal("budget_exceeded", error.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains($"team '{team}'", error.RootElement.GetProperty("error").GetProperty("message").GetString());
        Assert.Equal("false", refused.Headers.GetValues("x-should-retry").Single());
    }

    [Fact]
    public async Task A_failover_through_the_apphost_is_found_by_the_runbooks_provider_error_grep_of_the_log_file()
    {
        // The fixture's own log file (LogFile=...): the runbook's /var/log/helixagent/app.log is a developer's AppHost's.
        var logFile = fixture.LogFile;
        var (exit, key) = await RunCliAsync("keys", "create", "--name", "logs-" + Guid.NewGuid().ToString("N")[..8], "--quiet");
        Assert.Equal(0, exit);
        using var client = fixture.App.CreateHttpClient(KnownResourceNames.Api);
        client.DefaultRequestHeaders.Add("X-API-Key", key.Trim());

        // sim-failover: the simulator's sim-error answers 500, then sim-small answers.
        var response = await client.PostAsync("/v1/chat/completions", new StringContent(
            """{"model":"sim-failover","messages":[{"role":"user","content":"hi"}]}""", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var requestId = response.Headers.GetValues("x-request-id").Single();

        // grep "provider error" <log file> (the file is flushed every second)
        var grep = await Eventually.ValueAsync(async () => File.Exists(logFile)
                ? (await ReadSharedAsync(logFile)).Split('\n').Where(l => l.Contains("provider error", StringComparison.Ordinal)).ToList()
                : [],
            lines => lines.Any(l => l.Contains(requestId, StringComparison.Ordinal)), $"a provider error line for {requestId} in {logFile}",
            TimeSpan.FromSeconds(10), lines => $"{lines.Count} provider error lines");
        Assert.DoesNotContain(grep, l => l.Contains(key.Trim(), StringComparison.Ordinal));
    }

    /// <summary>Reads a file another process keeps open for writing.</summary>
    private static async Task<string> ReadSharedAsync(string path)
    {
        await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        return await reader.ReadToEndAsync();
    }

    private async Task<(int ExitCode, string Stdout)> RunCliAsync(params string[] args)
    {
        var (exit, stdout, _) = await HelixAgent.Tests.Infrastructure.ServerProcess.RunAsync("dotnet",
            [Path.Combine(RepoRoot(), "HelixAgent.Api", "bin", Configuration(), "net10.0", "helixagent.dll"), .. args], timeout: TimeSpan.FromSeconds(60),
            env: new Dictionary<string, string> { ["HELIXAGENT_DATA_DIR"] = fixture.DataDirectory });
        return (exit, stdout);
    }

    private static string Configuration() =>
        AppContext.BaseDirectory.Contains("/Release/") ? "Release" : "Debug";

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(dir!.FullName, "HelixAgent.sln")))
        {
            dir = dir.Parent;
        }
        return dir.FullName;
    }
}
