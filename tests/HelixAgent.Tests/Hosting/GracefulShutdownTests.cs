using System.Net;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Hosting;

/// <summary>SIGTERM on the real <c>helixagent</c> process: readiness flips at once, the process exits 0.</summary>
public sealed class GracefulShutdownTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Sigterm_turns_ready_503_immediately_while_still_serving_then_exits_zero()
    {
        var cs = (await TestDatabase.CreateAsync(postgres, "drain")).ConnectionString;
        await using var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Shutdown__DrainDelaySeconds"] = "3",
        });
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(5) };
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/ready")).StatusCode);

        api.Signal("TERM");
        await api.WaitForLogAsync("Shutdown started", TimeSpan.FromSeconds(10));

        var ready = await http.GetAsync("/ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.Contains("\"draining\":true", await ready.Content.ReadAsStringAsync());
        Assert.True(ready.Headers.Contains("Retry-After"));
        // Liveness and health keep answering during the drain.
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/alive")).StatusCode);

        await api.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, api.ExitCode);
        Assert.Contains("Shutdown started", api.Log.ToString());
    }

    [Fact]
    public async Task Sigterm_lets_an_in_flight_stream_finish_and_flushes_its_ledger_row_before_exit()
    {
        var db = await TestDatabase.CreateAsync(postgres, "drainstream");
        var cs = db.ConnectionString;
        var key = await db.CreateKeyAsync("drain");
        await using var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Providers__sim__Type"] = "simulator",
            ["Providers__sim__Models__0"] = "sim-small",
            ["Providers__sim__TokensPerSecond"] = "10",
            ["Providers__sim__LatencyMs"] = "1",
            ["Ledger__FlushIntervalMs"] = "1000",
        });
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Add("X-API-Key", key);
        var words = string.Join(' ', Enumerable.Range(1, 20).Select(i => $"w{i}"));
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(GatewayHarness.Chat("sim-small", words, stream: true).ToJsonString(), System.Text.Encoding.UTF8, "application/json"),
        };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        using var reader = new StreamReader(body);
        var first = await reader.ReadLineAsync();
        Assert.StartsWith("data: ", first);

        api.Signal("TERM");
        var rest = await reader.ReadToEndAsync();

        Assert.Contains("w20", rest);
        Assert.EndsWith("data: [DONE]", rest.TrimEnd());
        await api.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, api.ExitCode);
        await using var conn = new NpgsqlConnection(cs + ";Pooling=false");
        await conn.OpenAsync();
        await using var count = new NpgsqlCommand("SELECT count(*) FROM completions WHERE status = 200 AND stream", conn);
        Assert.Equal(1L, await count.ExecuteScalarAsync());
    }
}
