using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Functional;

/// <summary>A stream the client leaves after some chunks spent tokens: its row counts them, marked as estimated.</summary>
public sealed class AbortedStreamUsageTests(PostgresServer postgres, RedisServer redis) : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task A_stream_the_client_leaves_records_the_streamed_completion_tokens_as_estimated()
    {
        var db = await TestDatabase.CreateAsync(postgres, "abortusage");
        var key = await db.CreateKeyAsync("abort");
        await using var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = db.ConnectionString,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Providers__sim__Type"] = "simulator",
            ["Providers__sim__Models__0"] = "sim-small",
            ["Providers__sim__TokensPerSecond"] = "20",
            ["Providers__sim__LatencyMs"] = "1",
            ["Ledger__FlushIntervalMs"] = "10",
        });
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Add("X-API-Key", key);
        var words = string.Join(' ', Enumerable.Range(1, 200).Select(i => $"word{i}"));
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(GatewayHarness.Chat("sim-small", words, stream: true).ToJsonString(), System.Text.Encoding.UTF8, "application/json"),
        })
        {
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var content = 0;
            while (content < 5 && await reader.ReadLineAsync() is { } line)
            {
                if (line.Contains("\"content\":\"", StringComparison.Ordinal))
                {
                    content++;
                }
            }
            Assert.Equal(5, content);
        } // the client leaves here, mid-stream

        (short Status, int Prompt, int Completion, bool Estimated)? row = null;
        await Eventually.TrueAsync(async () =>
        {
            await using var conn = new NpgsqlConnection(db.ConnectionString + ";Pooling=false");
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand("SELECT status, prompt_tokens, completion_tokens, usage_estimated FROM completions", conn);
            await using var r = await cmd.ExecuteReaderAsync();
            if (await r.ReadAsync())
            {
                row = (r.GetInt16(0), r.GetInt32(1), r.GetInt32(2), r.GetBoolean(3));
            }
            return row is not null;
        }, TimeSpan.FromSeconds(20), "the aborted stream's row");
        Assert.Equal((short)499, row!.Value.Status);
        Assert.True(row.Value.Completion >= 2, $"completion_tokens {row.Value.Completion}: five content chunks were streamed");
        Assert.True(row.Value.Completion < 200, $"completion_tokens {row.Value.Completion}: the client left long before the 200 words");
        Assert.True(row.Value.Prompt > 0);
        Assert.True(row.Value.Estimated);
    }
}
