using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>HTTP plumbing every adapter shares: sending with failure classification, Retry-After, SSE and NDJSON reading.</summary>
public static class UpstreamHttp
{
    public const string JsonMediaType = "application/json";

    /// <summary>
    /// Sends <paramref name="request"/> reading only the headers, and turns every failure into an
    /// <see cref="UpstreamException"/>: connect errors, non-success statuses (with the upstream's error message and
    /// <c>Retry-After</c>). Cancellation of <paramref name="cancellationToken"/> propagates as
    /// <see cref="OperationCanceledException"/> so the caller can tell a timeout from a client disconnect.
    /// </summary>
    public static async Task<HttpResponseMessage> SendAsync(HttpClient http, HttpRequestMessage request, string provider, CancellationToken cancellationToken)
    {
        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        }
        catch (HttpRequestException ex)
        {
            throw new UpstreamException(UpstreamFailure.Connect, $"{provider}: {ex.Message}", inner: ex);
        }
        catch (IOException ex)
        {
            throw new UpstreamException(UpstreamFailure.Connect, $"{provider}: {ex.Message}", inner: ex);
        }
        if (response.IsSuccessStatusCode)
        {
            return response;
        }
        using (response)
        {
            var status = (int)response.StatusCode;
            var message = await ReadErrorMessageAsync(response, cancellationToken);
            var kind = Classify(status);
            throw new UpstreamException(kind, $"{provider} answered {status}: {message}", status, RetryAfter(response));
        }
    }

    public static UpstreamFailure Classify(int status) => status switch
    {
        429 => UpstreamFailure.RateLimited,
        401 or 403 => UpstreamFailure.Unauthorized,
        400 or 404 or 409 or 413 or 422 => UpstreamFailure.BadRequest,
        408 => UpstreamFailure.Timeout,
        >= 500 => UpstreamFailure.ServerError, // includes Anthropic's 529 overloaded
        _ => UpstreamFailure.ServerError,
    };

    /// <summary><c>Retry-After</c> as delta-seconds or HTTP date; also <c>retry-after-ms</c> (OpenAI) when present.</summary>
    public static TimeSpan? RetryAfter(HttpResponseMessage response)
    {
        if (response.Headers.TryGetValues("retry-after-ms", out var ms) &&
            double.TryParse(ms.FirstOrDefault(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var msValue))
        {
            return TimeSpan.FromMilliseconds(msValue);
        }
        var ra = response.Headers.RetryAfter;
        if (ra?.Delta is { } delta)
        {
            return delta;
        }
        if (ra?.Date is { } date)
        {
            var wait = date - DateTimeOffset.UtcNow;
            return wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
        }
        return null;
    }

    /// <summary>The <c>error.message</c> of an OpenAI/Anthropic/Gemini error body, else the first 300 characters of it.</summary>
    public static async Task<string> ReadErrorMessageAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        string body;
        try
        {
            body = await response.Content.ReadAsStringAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException)
        {
            return response.ReasonPhrase ?? "error";
        }
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind == JsonValueKind.Object &&
                doc.RootElement.TryGetProperty("error", out var error))
            {
                if (error.ValueKind == JsonValueKind.String)
                {
                    return error.GetString() ?? "";
                }
                if (error.ValueKind == JsonValueKind.Object && error.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String)
                {
                    return m.GetString() ?? "";
                }
            }
        }
        catch (JsonException)
        {
            // not JSON: fall through
        }
        body = body.Trim();
        return body.Length > 300 ? body[..300] : body.Length == 0 ? response.ReasonPhrase ?? "error" : body;
    }

    /// <summary>One server-sent event: its <c>event:</c> name (null when absent) and its joined <c>data:</c> lines.</summary>
    public readonly record struct SseEvent(string? Event, string Data);

    /// <summary>
    /// Reads server-sent events until the stream ends. A read failure (reset, cut) becomes a
    /// <see cref="UpstreamException"/> of kind <see cref="UpstreamFailure.Protocol"/>.
    /// </summary>
    public static async IAsyncEnumerable<SseEvent> ReadSseAsync(Stream stream, string provider, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: false, bufferSize: 4096, leaveOpen: true);
        string? eventName = null;
        var data = new StringBuilder();
        while (true)
        {
            string? line;
            try
            {
                line = await reader.ReadLineAsync(cancellationToken);
            }
            catch (Exception ex) when (ex is IOException or HttpRequestException or SocketException)
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: stream broke off: {ex.Message}", inner: ex);
            }
            if (line is null)
            {
                if (data.Length > 0)
                {
                    yield return new SseEvent(eventName, data.ToString());
                }
                yield break;
            }
            if (line.Length == 0)
            {
                if (data.Length > 0 || eventName is not null)
                {
                    yield return new SseEvent(eventName, data.ToString());
                }
                eventName = null;
                data.Clear();
                continue;
            }
            if (line[0] == ':')
            {
                continue; // comment / keep-alive
            }
            var colon = line.IndexOf(':');
            var field = colon < 0 ? line : line[..colon];
            var value = colon < 0 ? "" : line[(colon + 1)..];
            if (value.StartsWith(' '))
            {
                value = value[1..];
            }
            if (field == "data")
            {
                if (data.Length > 0)
                {
                    data.Append('\n');
                }
                data.Append(value);
            }
            else if (field == "event")
            {
                eventName = value;
            }
        }
    }

    /// <summary>Reads newline-delimited JSON (Ollama's native streaming), one line at a time.</summary>
    public static async IAsyncEnumerable<string> ReadLinesAsync(Stream stream, string provider, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: false, bufferSize: 4096, leaveOpen: true);
        while (true)
        {
            string? line;
            try
            {
                line = await reader.ReadLineAsync(cancellationToken);
            }
            catch (Exception ex) when (ex is IOException or HttpRequestException or SocketException)
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: stream broke off: {ex.Message}", inner: ex);
            }
            if (line is null)
            {
                yield break;
            }
            if (line.Length > 0)
            {
                yield return line;
            }
        }
    }

    /// <summary>Reads a whole JSON body, turning a cut connection into a protocol failure.</summary>
    /// <summary>The whole body as bytes; a body that breaks off becomes an <see cref="UpstreamException"/> (protocol).</summary>
    public static async Task<byte[]> ReadBytesAsync(HttpResponseMessage response, string provider, CancellationToken cancellationToken)
    {
        try
        {
            return await response.Content.ReadAsByteArrayAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or HttpRequestException)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: response broke off: {ex.Message}", inner: ex);
        }
    }

    public static async Task<JsonDocument> ReadJsonAsync(HttpResponseMessage response, string provider, CancellationToken cancellationToken)
    {
        try
        {
            await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
            return await JsonDocument.ParseAsync(stream, cancellationToken: cancellationToken);
        }
        catch (JsonException ex)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: answered invalid JSON: {ex.Message}", inner: ex);
        }
        catch (Exception ex) when (ex is IOException or HttpRequestException)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: response broke off: {ex.Message}", inner: ex);
        }
    }
}
