using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Ledger;

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

        var row = Assert.Single(await db.WaitForRowsAsync(1, TimeSpan.FromSeconds(20), api));
        await using var conn = new NpgsqlConnection(db.ConnectionString + ";Pooling=false");
        await conn.OpenAsync();
        var estimated = (bool)(await new NpgsqlCommand("SELECT usage_estimated FROM completions", conn).ExecuteScalarAsync())!;
        Assert.Equal((short)499, row.Status);
        Assert.True(row.CompletionTokens >= 2, $"completion_tokens {row.CompletionTokens}: five content chunks were streamed");
        Assert.True(row.CompletionTokens < 200, $"completion_tokens {row.CompletionTokens}: the client left long before the 200 words");
        Assert.True(row.PromptTokens > 0);
        Assert.True(estimated);
    }
}
