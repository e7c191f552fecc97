using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Access;

/// <summary>
/// The runbook's <c>curl localhost:8080/debug/pprof/heap</c> and <c>/debug/pprof/goroutine?debug=1</c>, against the built
/// binary on real sockets: open to loopback callers (not through a proxy header), to admin keys from anywhere, and an
/// unknown route to everyone else.
/// </summary>
public sealed class PprofTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Heap_from_loopback_is_a_gcdump_that_dotnet_gcdump_report_reads()
    {
        var (api, _, _) = await StartAsync("heap");
        await using var _api = api;
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromMinutes(3) };

        var response = await http.GetAsync("/debug/pprof/heap");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var file = Path.Combine(Path.GetTempPath(), $"pprof-test-{Guid.NewGuid():N}.gcdump");
        await File.WriteAllBytesAsync(file, await response.Content.ReadAsByteArrayAsync());
        try
        {
            // The heap report of the same tool an operator runs: object counts by type, the gateway's own among them.
            var (exit, report, error) = await ServerProcess.RunAsync("dotnet", [GcDumpTool, "report", file], Path.GetTempPath(), TimeSpan.FromMinutes(2));
            Assert.True(exit == 0, report + error);
            Assert.Contains("System.String", report, StringComparison.Ordinal);
            Assert.Contains("HelixAgent.Api", report, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(file);
        }
        Assert.Empty(Directory.GetFiles(Path.GetTempPath(), $"helixagent-{api.Id}-*.gcdump"));
    }

    [Fact]
    public async Task Goroutine_view_lists_threads_the_thread_pool_and_the_requests_in_flight()
    {
        var (api, _, clientKey) = await StartAsync("threads", new()
        {
            ["Providers__sim__Type"] = "simulator",
            ["Providers__sim__Models__0"] = "sim-slow",
            ["Providers__sim__TokensPerSecond"] = "5",
        });
        await using var _api = api;
        using var http = new HttpClient { BaseAddress = api.BaseAddress };
        using var client = new HttpClient { BaseAddress = api.BaseAddress };
        client.DefaultRequestHeaders.Add("X-API-Key", clientKey);
        var body = """{"model":"sim-slow","stream":true,"messages":[{"role":"user","content":"one two three four five six seven"}]}""";
        using var slow = await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(body, Encoding.UTF8, "application/json"),
        }, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, slow.StatusCode);

        var response = await http.GetAsync("/debug/pprof/goroutine?debug=1");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.ToString(), StringComparison.Ordinal);
        var text = await response.Content.ReadAsStringAsync();
        Assert.Contains("thread pool: ", text, StringComparison.Ordinal);
        Assert.Contains("in-flight requests: 1", text, StringComparison.Ordinal);
        Assert.Contains("POST /v1/chat/completions", text, StringComparison.Ordinal);
        var threads = text.Split('\n').Where(l => l.StartsWith("  tid ", StringComparison.Ordinal)).ToList();
        Assert.True(threads.Count >= 5, text);
        Assert.Contains($"pid {api.Id}", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Through_a_proxy_header_or_from_another_host_only_an_admin_key_opens_debug()
    {
        var (api, adminKey, clientKey) = await StartAsync("remote");
        await using var _api = api;
        using var loopback = new HttpClient { BaseAddress = api.BaseAddress };
        var unknownRoute = await (await loopback.GetAsync("/debug/pprof/nothing-here-at-all")).Content.ReadAsStringAsync();

        // A proxy on the same host (it adds X-Forwarded-For or Forwarded) opens nothing.
        foreach (var (header, value) in new[] { ("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9") })
        {
            var forwarded = await SendAsync(loopback, "/debug/pprof/goroutine?debug=1", (header, value));
            Assert.Equal(HttpStatusCode.NotFound, forwarded.StatusCode);
            Assert.Equal(unknownRoute.Replace("nothing-here-at-all", "goroutine", StringComparison.Ordinal),
                await forwarded.Content.ReadAsStringAsync());
            Assert.Equal(HttpStatusCode.OK, (await SendAsync(loopback, "/debug/pprof/goroutine?debug=1", (header, value), ("X-API-Key", adminKey))).StatusCode);
        }

        // From this machine's network address, not loopback: no key, a client key or a wrong key is an unknown route.
        using var remote = new HttpClient { BaseAddress = new Uri($"http://{NetworkAddress()}:{api.Port}") };
        Assert.Equal(HttpStatusCode.NotFound, (await remote.GetAsync("/debug/pprof/goroutine?debug=1")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(remote, "/debug/pprof/heap", ("X-API-Key", clientKey))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(remote, "/debug/pprof/heap", ("Authorization", "Bearer sk-helix-not-a-key"))).StatusCode);
        var admitted = await SendAsync(remote, "/debug/pprof/goroutine?debug=1", ("Authorization", $"Bearer {adminKey}"));
        Assert.Equal(HttpStatusCode.OK, admitted.StatusCode);
        Assert.Contains("thread pool: ", await admitted.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        // Refusals are answers, not failures: nothing was logged as an exception.
        Assert.DoesNotContain("Exception", api.Log.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task With_loopback_access_switched_off_debug_needs_an_admin_key_even_from_loopback()
    {
        var (api, adminKey, clientKey) = await StartAsync("keyonly", new() { ["Diagnostics__AllowLoopbackWithoutKey"] = "false" });
        await using var _api = api;
        using var http = new HttpClient { BaseAddress = api.BaseAddress };

        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/debug/pprof/goroutine?debug=1")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(http, "/debug/pprof/goroutine?debug=1", ("X-API-Key", clientKey))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await SendAsync(http, "/debug/pprof/goroutine?debug=1", ("X-API-Key", adminKey))).StatusCode);
        var error = JsonNode.Parse(await (await http.GetAsync("/debug/pprof/heap")).Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("Unknown route: GET /debug/pprof/heap", error["message"]!.GetValue<string>());
    }

    private static string GcDumpTool => Path.Combine(Path.GetDirectoryName(RepoPaths.ApiDll)!, "tools", "dotnet-gcdump", "dotnet-gcdump.dll");

    /// <summary>The built binary on all interfaces (HTTP_PORTS, as in the image), with an admin and a client key.</summary>
    private async Task<(ApiProcess Api, string AdminKey, string ClientKey)> StartAsync(string name, Dictionary<string, string>? extra = null)
    {
        var db = await TestDatabase.CreateAsync(postgres, $"pprof_{name}");
        var adminKey = await db.CreateKeyAsync("ops", scope: "admin");
        var clientKey = await db.CreateKeyAsync("app");
        var env = new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = db.ConnectionString,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
        };
        foreach (var (k, v) in extra ?? [])
        {
            env[k] = v;
        }
        return (await ApiProcess.StartAsync(env, plainPortsOnly: true), adminKey, clientKey);
    }

    private static Task<HttpResponseMessage> SendAsync(HttpClient http, string path, params (string Name, string Value)[] headers)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        foreach (var (name, value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }
        return http.SendAsync(request);
    }

    /// <summary>An IPv4 address of this machine that is not loopback (connections to it come from it, not from 127.0.0.1).</summary>
    private static IPAddress NetworkAddress() => NetworkInterface.GetAllNetworkInterfaces()
        .Where(n => n.OperationalStatus == OperationalStatus.Up && n.NetworkInterfaceType != NetworkInterfaceType.Loopback)
        .SelectMany(n => n.GetIPProperties().UnicastAddresses)
        .Select(a => a.Address)
        .First(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a));
}
