using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Faults;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>Clients that hang up while still sending their request, over real TCP to the real <c>helixagent</c> binary.</summary>
public sealed class ClientHangUpTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    /// <summary>Sends the headers and part of a body that announces 400 bytes, then closes (a FIN, or a RST when <paramref name="reset"/>).</summary>
    private static async Task HangUpMidBodyAsync(int port, string key, bool reset)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        var partial = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
            $"X-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n" +
            """{"model":"m","messages":[{"role":"user","content":"half a ques""";
        await socket.SendAsync(Encoding.ASCII.GetBytes(partial));
        // The gateway is reading the body: the request is in flight.
        await Eventually.TrueAsync(async () => (await LedgerActivity.OfAsync(new Uri($"http://127.0.0.1:{port}"))).InFlight == 1, "the half-sent request in flight");
        if (reset)
        {
            socket.LingerState = new LingerOption(true, 0);
        }
        socket.Close();
    }

    [Fact]
    public async Task A_client_hanging_up_mid_body_costs_no_upstream_call_no_ledger_row_and_no_error_and_the_next_request_is_served()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var db = await TestDatabase.CreateAsync(postgres, "faults");
        var key = await db.CreateKeyAsync("hang-up");
        await using var api = await ApiProcess.StartAsync(FaultEnvironment.For(db, redis).WithProvider("p0", upstream, "m"));

        for (var i = 0; i < 20; i++)
        {
            await HangUpMidBodyAsync(api.Port, key, reset: i % 2 == 1);
        }
        using var http = new HttpClient { BaseAddress = api.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        http.DefaultRequestHeaders.Add("X-API-Key", key);
        var answer = await http.PostAsync("/v1/chat/completions", new StringContent(
            """{"model":"m","messages":[{"role":"user","content":"a whole question"}]}""", Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal(upstream.Reply, JsonNode.Parse(await answer.Content.ReadAsStringAsync())!["choices"]![0]!["message"]!["content"]!.GetValue<string>());
        Assert.Equal(1, upstream.RequestCount);
        Assert.Single(await db.WaitForRowsAsync(1, TimeSpan.FromSeconds(10), api));
        Assert.False(api.HasExited);
        var errors = api.LoggedErrors();
        Assert.True(errors.Length == 0, $"a client's hang-up is not the gateway's error:\n{errors}");
    }
}
