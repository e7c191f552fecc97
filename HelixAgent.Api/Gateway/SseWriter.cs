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

    /// <summary>Writes <paramref name="frames"/> (then clears it) and flushes once; nothing at all when it is empty.</summary>
    public ValueTask WriteAsync(List<Dialects.SseFrame> frames, CancellationToken cancellationToken)
    {
        if (frames.Count == 0)
        {
            return ValueTask.CompletedTask;
        }
        Put(frames);
        return FlushAsync(response.BodyWriter, cancellationToken);
    }

    /// <summary>
    /// A stream's last frames, put in the response pipe without a flush: they leave when the handler returns, after
    /// the request's ledger row is in the journal, so a client never sees the end of a stream the ledger could lose.
    /// </summary>
    public void WriteLast(List<Dialects.SseFrame> frames)
    {
        if (frames.Count > 0)
        {
            Put(frames);
        }
    }

    private void Put(List<Dialects.SseFrame> frames)
    {
        Start();
        var pipe = response.BodyWriter;
        foreach (var frame in frames)
        {
            if (frame.Event is { } name)
            {
                pipe.Write("event: "u8);
                WriteText(pipe, name);
                pipe.Write("\n"u8);
            }
            if (frame.Json is { } json)
            {
                pipe.Write("data: "u8);
                _json.Reset(pipe);
                json.WriteTo(_json);
                _json.Flush();
                pipe.Write("\n"u8);
            }
            else
            {
                // Text as it came (a pass-through event): one data line per line of it.
                foreach (var line in (frame.Text ?? "").Split('\n'))
                {
                    pipe.Write("data: "u8);
                    WriteText(pipe, line);
                    pipe.Write("\n"u8);
                }
            }
            pipe.Write("\n"u8);
        }
        frames.Clear();
    }

    private static async ValueTask FlushAsync(System.IO.Pipelines.PipeWriter pipe, CancellationToken cancellationToken) => await pipe.FlushAsync(cancellationToken);

    private static void WriteText(System.IO.Pipelines.PipeWriter pipe, string text)
    {
        var span = pipe.GetSpan(System.Text.Encoding.UTF8.GetMaxByteCount(text.Length));
        pipe.Advance(System.Text.Encoding.UTF8.GetBytes(text, span));
    }

    public async ValueTask WriteDoneAsync(CancellationToken cancellationToken)
    {
        Start();
        response.BodyWriter.Write("data: [DONE]\n\n"u8);
        await response.BodyWriter.FlushAsync(cancellationToken);
    }

    public void Dispose() => _json.Dispose();
}
