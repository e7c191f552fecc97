using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway;

namespace HelixAgent.Tests.Gateway.Providers;

/// <summary>One request the adapter sent: method, URL, headers and JSON body.</summary>
internal sealed record CapturedRequest(HttpMethod Method, Uri Uri, Dictionary<string, string> Headers, string? ContentType, string? Body)
{
    public JsonObject Json => (JsonObject)JsonNode.Parse(Body ?? "null")!;

    public string? Header(string name) => Headers.TryGetValue(name, out var value) ? value : null;
}

/// <summary>
/// An <see cref="HttpMessageHandler"/> answering with canned upstream bodies and recording what was sent, so adapter
/// tests can check both directions of the translation without a server.
/// </summary>
internal sealed class CapturingHandler(Func<HttpResponseMessage> respond) : HttpMessageHandler
{
    public List<CapturedRequest> Requests { get; } = [];

    public CapturedRequest Last => Requests[^1];

    public HttpClient Client() => new(this, disposeHandler: false);

    public static CapturingHandler Json(string body, HttpStatusCode status = HttpStatusCode.OK, Action<HttpResponseMessage>? configure = null) =>
        new(() =>
        {
            var response = new HttpResponseMessage(status) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            configure?.Invoke(response);
            return response;
        });

    public static CapturingHandler Sse(string body) =>
        new(() => new HttpResponseMessage(HttpStatusCode.OK) { Content = new StringContent(body, Encoding.UTF8, "text/event-stream") });

    public static CapturingHandler Ndjson(string body) =>
        new(() => new HttpResponseMessage(HttpStatusCode.OK) { Content = new StringContent(body, Encoding.UTF8, "application/x-ndjson") });

    /// <summary>Sends <paramref name="prefix"/> and then fails the read, like a connection reset mid-stream.</summary>
    public static CapturingHandler Broken(string prefix, string mediaType) =>
        new(() => new HttpResponseMessage(HttpStatusCode.OK) { Content = new StreamContent(new BreakingStream(Encoding.UTF8.GetBytes(prefix))) { Headers = { { "Content-Type", mediaType } } } });

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, values) in request.Headers)
        {
            headers[name] = string.Join(",", values);
        }
        var body = request.Content is null ? null : await request.Content.ReadAsStringAsync(cancellationToken);
        Requests.Add(new CapturedRequest(request.Method, request.RequestUri!, headers, request.Content?.Headers.ContentType?.MediaType, body));
        var response = respond();
        response.RequestMessage = request;
        return response;
    }

    private sealed class BreakingStream(byte[] prefix) : Stream
    {
        private int _position;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            if (_position >= prefix.Length)
            {
                throw new IOException("connection reset by peer");
            }
            var n = Math.Min(count, prefix.Length - _position);
            Array.Copy(prefix, _position, buffer, offset, n);
            _position += n;
            return n;
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

internal static class ProviderTestHelpers
{
    public static JsonObject Request(string json) => (JsonObject)JsonNode.Parse(json)!;

    public static ChatCall Call(string json, string model) => new(Request(json), model, "req1");

    public static async Task<List<ChatChunk>> CollectAsync(IAsyncEnumerable<ChatChunk> stream)
    {
        var chunks = new List<ChatChunk>();
        await foreach (var chunk in stream)
        {
            chunks.Add(chunk);
        }
        return chunks;
    }

    /// <summary>The single choice's delta of a chunk.</summary>
    public static JsonObject Delta(ChatChunk chunk) => (JsonObject)chunk.Chunk["choices"]![0]!["delta"]!;

    public static string? Finish(ChatChunk chunk) =>
        chunk.Chunk["choices"] is JsonArray { Count: > 0 } choices ? (string?)choices[0]!["finish_reason"] : null;

    /// <summary>Every content delta of the stream joined.</summary>
    public static string Text(IEnumerable<ChatChunk> chunks) =>
        string.Concat(chunks.Where(c => c.Chunk["choices"] is JsonArray { Count: > 0 }).Select(c => (string?)Delta(c)["content"] ?? ""));

    /// <summary>The tool-call argument fragments of one tool index joined.</summary>
    public static string ToolArguments(IEnumerable<ChatChunk> chunks, int index) => string.Concat(
        chunks.Where(c => c.Chunk["choices"] is JsonArray { Count: > 0 })
            .SelectMany(c => Delta(c)["tool_calls"] as JsonArray ?? [])
            .Where(t => (int)t!["index"]! == index)
            .Select(t => (string?)t!["function"]!["arguments"] ?? ""));
}
