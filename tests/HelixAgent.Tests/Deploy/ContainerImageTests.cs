using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using HelixAgent.Data;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Deploy;

/// <summary>
/// Building the images takes both cores for a while, so these tests run alone, after the parallel ones.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ContainerImageCollection : ICollectionFixture<ContainerImages>
{
    public const string Name = "Container images";
}

/// <summary>
/// The images the runbook's "Deploying Updates" builds (<c>docker build -t helixagent:v1.2.0 .</c>) and the worker's,
/// run against real PostgreSQL and Redis and a fake OpenAI upstream, the way Docker Compose and Kubernetes run them.
/// </summary>
[Collection(ContainerImageCollection.Name)]
public sealed partial class ContainerImageTests(ContainerImages images, PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Both_images_run_their_binary_from_app_as_the_non_root_user_1654_on_port_8080()
    {
        foreach (var (image, binary) in new[] { (ContainerImages.ApiImage, "/app/helixagent"), (ContainerImages.WorkerImage, "/app/helixagent-worker") })
        {
            var config = await images.ConfigAsync(image);
            Assert.Equal("1654", config.GetProperty("User").GetString());
            Assert.Equal("/app", config.GetProperty("WorkingDir").GetString());
            Assert.Equal([binary], config.GetProperty("Entrypoint").EnumerateArray().Select(e => e.GetString()));
            Assert.True(config.GetProperty("ExposedPorts").TryGetProperty("8080/tcp", out _), image);
            Assert.Contains("ASPNETCORE_HTTP_PORTS=8080", config.GetProperty("Env").EnumerateArray().Select(e => e.GetString()));
        }
        var container = await images.CreateAsync(ContainerImages.ApiImage);
        var (code, id) = await container.ExecAsync(new Dictionary<string, string>(), "id", "-u");
        Assert.Equal((0, "1654"), (code, id.Trim()));
        // The ledger's journal folder exists in the image, writable by the app user (a volume mounted there inherits it).
        var (statCode, owner) = await container.ExecAsync(new Dictionary<string, string>(), "stat", "-c", "%u", "/var/lib/helixagent/ledger");
        Assert.Equal((0, "1654"), (statCode, owner.Trim()));
        Assert.Contains("Ledger__Journal__Path=/var/lib/helixagent/ledger", (await images.ConfigAsync(ContainerImages.ApiImage)).GetProperty("Env").EnumerateArray().Select(e => e.GetString()));
                // `docker exec helixagent helixagent ...`: the CLI is on the PATH.
        var (versionCode, version) = await container.ExecAsync(new Dictionary<string, string>(), "helixagent", "version");
        Assert.Equal(0, versionCode);
        Assert.Contains("1.0.0", version);
    }

    [Fact]
    public async Task The_worker_image_migrates_an_empty_database_then_the_api_image_serves_a_keyed_completion_and_exits_zero_on_sigterm_with_a_clean_log()
    {
        var cs = await postgres.CreateDatabaseAsync("image");
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var database = new Dictionary<string, string> { ["ConnectionStrings__helixagent-db"] = cs };

        // The worker first, as in docker-compose.yml: it owns the schema.
        var workerPort = ServerProcess.FreePort();
        await using var worker = await images.CreateAsync(ContainerImages.WorkerImage);
        worker.Start(new Dictionary<string, string>(database) { ["ASPNETCORE_HTTP_PORTS"] = workerPort.ToString() });
        await Until(async () => await SchemaVersionAsync(cs) == SchemaMigrator.ExpectedVersion, worker, "the worker migrating the database");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var workerMetrics = "";
        await Until(async () => (workerMetrics = await TryGetAsync(http, $"http://127.0.0.1:{workerPort}/metrics")).Contains("helixagent_worker_job_duration_seconds_count"),
            worker, "job runs on the worker's /metrics");

        var apiPort = ServerProcess.FreePort();
        await using var api = await images.CreateAsync(ContainerImages.ApiImage);
        api.Start(new Dictionary<string, string>(database)
        {
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["ASPNETCORE_HTTP_PORTS"] = apiPort.ToString(),
            ["Providers__openai__Type"] = "openai",
            ["Providers__openai__BaseUrl"] = upstream.BaseUrl.ToString(),
            ["Providers__openai__ApiKey"] = "upstream-secret",
            ["Providers__openai__Models__0"] = "gpt-image-test",
            // Priced, so that the start logs no "no price" warning: the log below must be clean.
            ["Pricing__Models__gpt-image-test__InputPerMTok"] = "1",
            ["Pricing__Models__gpt-image-test__OutputPerMTok"] = "2",
        });
        var gateway = new Uri($"http://127.0.0.1:{apiPort}");
        await Until(async () => (await TryStatusAsync(http, new Uri(gateway, "/ready"))) == HttpStatusCode.OK, api, "/ready answering 200");

        // The first key from the CLI in the image (`docker run --rm helixagent:v1.2.0 helixagent keys create ...`).
        var (created, output) = await images.RunOnceAsync(ContainerImages.ApiImage, database, "helixagent", "keys", "create", "--name", "image-test");
        Assert.True(created == 0, output);
        var key = KeyPattern().Match(output).Value;
        Assert.StartsWith("hxa_", key);

        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(gateway, "/v1/chat/completions"))
        {
            Content = JsonContent.Create(GatewayHarness.Chat("gpt-image-test")),
        };
        request.Headers.Add("X-API-Key", key);
        using var response = await http.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        Assert.Equal(upstream.Reply, (string?)JsonNode.Parse(body)!["choices"]![0]!["message"]!["content"]);
        Assert.Equal("Bearer upstream-secret", Assert.Single(upstream.Requests, r => r.Method == "POST").Headers["Authorization"]);

        foreach (var container in new[] { api, worker })
        {
            container.Terminate();
            var exit = await container.WaitForExitAsync(TimeSpan.FromSeconds(45));
            Assert.True(exit == 0, $"exit code {exit} after SIGTERM. Container log:\n{container.LogText()}");
        }

        // The ledger row was written before the API exited.
        var row = Assert.Single(await GatewayHarness.ReadLedgerAsync(cs));
        Assert.Equal(("gpt-image-test", "openai", (short)200, "image-test"), (row.Model, row.Provider, row.Status, row.KeyName));
        // The runbook's log file, on by default in the image and written by the non-root user.
        Assert.Contains("Shutdown started", await api.ReadFileAsync("/var/log/helixagent/app.log"));
        // What an operator reads in `docker logs` / `kubectl logs` (and greps for ERROR): no warnings or errors from a
        // clean run, in the line format that grep relies on.
        foreach (var container in new[] { api, worker })
        {
            var log = container.LogText();
            Assert.Matches(@"(?m)^\S+Z INFO Microsoft\.Hosting\.Lifetime\[0\] Application started", log);
            Assert.DoesNotMatch(TroubleInLog(), log);
            Assert.DoesNotContain("upstream-secret", log);
        }
    }

    [GeneratedRegex(@"hxa_[A-Za-z0-9_\-]+")]
    private static partial Regex KeyPattern();

    [GeneratedRegex(@"(?m)^\S+ (WARN|ERROR|CRIT) |Exception|Error:|Cannot load library")]
    private static partial Regex TroubleInLog();

    /// <summary>Until <paramref name="condition"/> holds, for at most 90 s; a container that exits ends the wait. The container's log is in either failure.</summary>
    private static async Task Until(Func<Task<bool>> condition, Container container, string what)
    {
        await Eventually.TrueAsync(async () => container.HasExited || await condition(), what, TimeSpan.FromSeconds(90), () => "container log:\n" + container.LogText());
        if (container.HasExited && !await condition())
        {
            Assert.Fail($"{what}: the container exited. Container log:\n{container.LogText()}");
        }
    }

    private static async Task<long> SchemaVersionAsync(string cs)
    {
        try
        {
            await using var conn = new NpgsqlConnection(cs + ";Pooling=false");
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand("SELECT coalesce(max(version), 0) FROM schema_migrations", conn);
            return (long)(await cmd.ExecuteScalarAsync())!;
        }
        catch (PostgresException)
        {
            return 0; // not created yet
        }
    }

    private static async Task<string> TryGetAsync(HttpClient http, string url)
    {
        try
        {
            return await http.GetStringAsync(url);
        }
        catch (HttpRequestException)
        {
            return "";
        }
    }

    private static async Task<HttpStatusCode?> TryStatusAsync(HttpClient http, Uri url)
    {
        try
        {
            using var r = await http.GetAsync(url);
            return r.StatusCode;
        }
        catch (HttpRequestException)
        {
            return null;
        }
    }
}
