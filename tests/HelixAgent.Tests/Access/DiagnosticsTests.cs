using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Access;

/// <summary>The .NET counterparts of the runbook's pprof views, for admin keys only.</summary>
public sealed class DiagnosticsTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Memory_threads_and_in_flight_requests_are_reported_to_admins_only()
    {
        var settings = GatewayHarness.SimulatorSettings();
        settings["Providers:sim:Models:6"] = "sim-slow";
        settings["Providers:sim:TokensPerSecond"] = "5";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        var admin = gw.WithKey(gw.AdminKey);

        var memory = JsonNode.Parse(await admin.GetStringAsync("/admin/diagnostics/memory"))!;
        Assert.True(memory["gc_heap_bytes"]!.GetValue<long>() > 0);
        Assert.Equal(5, memory["generations"]!.AsArray().Count);
        var threads = JsonNode.Parse(await admin.GetStringAsync("/admin/diagnostics/threads"))!;
        Assert.True(threads["thread_pool_threads"]!.GetValue<int>() > 0);
        Assert.NotNull(threads["lock_contention_count"]);

        // A slow stream in flight shows up with its age.
        var slow = gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-slow", "one two three four five six", stream: true));
        var inflight = await Eventually.ValueAsync(async () => JsonNode.Parse(await admin.GetStringAsync("/admin/diagnostics/requests"))!,
            r => r["count"]!.GetValue<int>() > 0, "the slow stream in /admin/diagnostics/requests", describe: r => r.ToJsonString());
        var request = Assert.Single(inflight["requests"]!.AsArray());
        Assert.Equal("/v1/chat/completions", request!["path"]!.GetValue<string>());
        Assert.True(request["age_ms"]!.GetValue<double>() >= 0);
        await (await slow).Content.ReadAsStringAsync();
        Assert.Equal(0, JsonNode.Parse(await admin.GetStringAsync("/admin/diagnostics/requests"))!["count"]!.GetValue<int>());

        Assert.Equal(HttpStatusCode.Forbidden, (await gw.Client.GetAsync("/admin/diagnostics/memory")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await gw.Anonymous().GetAsync("/admin/diagnostics/threads")).StatusCode);
    }

    [Fact]
    public async Task An_admin_can_download_a_process_dump_that_dotnet_dump_can_open()
    {
        var db = await TestDatabase.CreateAsync(postgres, "dump");
        var cs = db.ConnectionString;
        var adminKey = await db.CreateKeyAsync("ops", scope: "admin");
        await using var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
        });
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromMinutes(2) };
        http.DefaultRequestHeaders.Add("X-API-Key", adminKey);

        var response = await http.PostAsync("/admin/diagnostics/dump", null);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var bytes = await response.Content.ReadAsByteArrayAsync();
        Assert.True(bytes.Length > 1024 * 1024, $"a dump of a running .NET process is megabytes, not {bytes.Length} bytes");
        Assert.Equal("\u007fELF"u8.ToArray(), bytes[..4]); // a Linux core file
        Assert.Empty(Directory.GetFiles(Path.GetTempPath(), $"helixagent-{api.Id}-*.dmp"));

        // The runbook's next step: dotnet-dump analyze opens it and lists the process's managed threads.
        var file = Path.Combine(Path.GetTempPath(), $"helixagent-test-{Guid.NewGuid():N}.dmp");
        await File.WriteAllBytesAsync(file, bytes);
        try
        {
            var tool = typeof(DiagnosticsTests).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
                .Cast<System.Reflection.AssemblyMetadataAttribute>().Single(a => a.Key == "DotnetDumpDll").Value!;
            var (exit, stdout, stderr) = await ServerProcess.RunAsync("dotnet", ["exec", "--roll-forward", "Major", tool, "analyze", file,
                "-c", "clrthreads"], Path.GetTempPath(), TimeSpan.FromMinutes(2));
            Assert.True(exit == 0, $"dotnet-dump analyze exited {exit}: {stderr}{stdout}");
            Assert.Matches(@"ThreadCount:\s+[1-9]", stdout);
            Assert.Contains("(Finalizer)", stdout, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
