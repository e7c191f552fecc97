using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Fakes;

/// <summary>
/// The benchmark's null proxy (<c>helixagent-fake-upstream --proxy-to</c>), whose figures the README subtracts from the
/// gateway's: it must be a faithful pass-through, or its column means nothing.
/// </summary>
public sealed class NullProxyTests
{
    private static StringContent Body(bool stream) => new(new JsonObject
    {
        ["model"] = "gpt-4o-mini",
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Say something short." }),
        ["stream"] = stream,
    }.ToJsonString(), Encoding.UTF8, "application/json");

    [Fact]
    public async Task The_null_proxy_passes_a_plain_and_a_streaming_chat_completion_through_unchanged()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var port = ServerProcess.FreePort();
        var log = new StringBuilder();
        using var proxy = ServerProcess.Start(["dotnet", Path.Combine(AppContext.BaseDirectory, "helixagent-fake-upstream.dll"),
            "--proxy-to", upstream.Root.ToString(), "--port", port.ToString()], log);
        try
        {
            await ServerProcess.WaitForPortAsync(port, proxy, log, TimeSpan.FromSeconds(30));
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
            const string path = "/v1/chat/completions"; // as bench/run.sh calls it

            var plain = await http.PostAsync(path, Body(stream: false));
            Assert.Equal(HttpStatusCode.OK, plain.StatusCode);
            Assert.Equal("application/json", plain.Content.Headers.ContentType?.MediaType);
            var answer = JsonNode.Parse(await plain.Content.ReadAsStringAsync())!;
            Assert.Equal(upstream.Reply, answer["choices"]![0]!["message"]!["content"]!.GetValue<string>());

            var streamed = await http.PostAsync(path, Body(stream: true));
            Assert.Equal(HttpStatusCode.OK, streamed.StatusCode);
            Assert.Equal("text/event-stream", streamed.Content.Headers.ContentType?.MediaType);
            var frames = await Sse.ReadAsync(streamed);
            Assert.True(frames.Done);
            Assert.Equal(upstream.Reply, frames.Content);

            var unknown = await http.PostAsync("/no/such/route", Body(stream: false));
            Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
            Assert.Equal(3, upstream.RequestCount);
        }
        finally
        {
            proxy.Kill(entireProcessTree: true);
            await proxy.WaitForExitAsync();
        }
    }
}
