using System.Net;
using System.Net.Sockets;
using System.Text;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Access;

/// <summary>Limits only the real server enforces (the in-process test server does not): the real binary over TCP.</summary>
public sealed class KestrelLimitTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Oversized_headers_chunked_oversized_bodies_and_raw_header_injection_are_refused_without_stack_traces()
    {
        var db = await TestDatabase.CreateAsync(postgres, "limits");
        var cs = db.ConnectionString;
        var key = await db.CreateKeyAsync("limits");
        await using var api = await ApiProcess.StartAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Providers__sim__Type"] = "simulator",
            ["Providers__sim__Models__0"] = "sim-small",
            ["Gateway__MaxRequestBodyBytes"] = "4096",
        });

        // 64 KB of headers: Kestrel's limit is 32 KB.
        var headers = await RawAsync(api.Port, $"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {new string('a', 64 * 1024)}\r\nConnection: close\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 431", headers);

        // A chunked body (no Content-Length) larger than the limit: 413 in OpenAI's shape.
        var chunk = "{\"model\":\"sim-small\",\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('x', 8000) + "\"}]}";
        var chunked = await RawAsync(api.Port,
            $"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
            $"{Encoding.UTF8.GetByteCount(chunk):x}\r\n{chunk}\r\n0\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 413", chunked);
        Assert.Contains("\"request_too_large\"", chunked);

        // A header value smuggling a second header line: the request is rejected as malformed, nothing reaches routing.
        var injected = await RawAsync(api.Port,
            $"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\rX-Injected: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        Assert.StartsWith("HTTP/1.1 400", injected);

        foreach (var response in new[] { headers, chunked, injected })
        {
            Assert.DoesNotContain("   at ", response);
            Assert.DoesNotContain("<html", response, StringComparison.OrdinalIgnoreCase);
        }
        // Read once the process holds nothing unwritten: a wrongly recorded row would be there by now.
        Assert.Empty(await db.WaitForRowsAsync(0, TimeSpan.FromSeconds(10), api));
    }

    private static async Task<string> RawAsync(int port, string request)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        var stream = client.GetStream();
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        }
        catch (IOException)
        {
            // the server may close the connection before reading everything
        }
        using var reader = new StreamReader(stream, Encoding.UTF8);
        try
        {
            return await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (IOException ex)
        {
            return "connection reset: " + ex.Message;
        }
    }
}
