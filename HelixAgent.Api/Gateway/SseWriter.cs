using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway;

/// <summary>Writes server-sent events (<c>data: {json}\n\n</c>) straight into the response pipe, flushing each frame.</summary>
internal sealed class SseWriter(HttpResponse response) : IDisposable
{
    private readonly Utf8JsonWriter _json = new(response.BodyWriter, new JsonWriterOptions { SkipValidation = true });
    private bool _started;

    public bool Started => _started;

    public void Start()
    {
        if (_started)
        {
            return;
        }
        _started = true;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
    }

    public async ValueTask WriteAsync(JsonNode node, CancellationToken cancellationToken)
    {
        Start();
        var pipe = response.BodyWriter;
        pipe.Write("data: "u8);
        _json.Reset(pipe);
        node.WriteTo(_json);
        _json.Flush();
        pipe.Write("\n\n"u8);
        await pipe.FlushAsync(cancellationToken);
    }

    public async ValueTask WriteDoneAsync(CancellationToken cancellationToken)
    {
        Start();
        response.BodyWriter.Write("data: [DONE]\n\n"u8);
        await response.BodyWriter.FlushAsync(cancellationToken);
    }

    public void Dispose() => _json.Dispose();
}
