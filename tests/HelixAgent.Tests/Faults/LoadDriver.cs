using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace HelixAgent.Tests.Faults;

/// <summary>One client request of a load: where it goes and what it asks.</summary>
internal sealed record LoadRequest(int Id, Uri Instance, JsonObject Body, string Path = "/v1/chat/completions")
{
    public bool Stream => Body["stream"] is JsonValue v && v.GetValue<bool>();

    /// <summary>A chat request whose text carries <see cref="Marker"/>, so fakes and tests can tell which request it is.</summary>
    public static LoadRequest Chat(int id, Uri instance, string model, bool stream, string extra = "") => new(id, instance, new JsonObject
    {
        ["model"] = model,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = $"{Marker(id)} {extra}".TrimEnd() }),
        ["stream"] = stream,
    });

    public static string Marker(int id) => $"load-request-{id}-end";

    /// <summary>The id in a body that carries <see cref="Marker"/>, or null.</summary>
    public static int? IdIn(string body)
    {
        var start = body.IndexOf("load-request-", StringComparison.Ordinal);
        if (start < 0)
        {
            return null;
        }
        start += "load-request-".Length;
        var end = body.IndexOf("-end", start, StringComparison.Ordinal);
        return end > start && int.TryParse(body.AsSpan(start, end - start), out var id) ? id : null;
    }
}

/// <summary>
/// What one client saw, judged the way an OpenAI client would: a whole answer, a clean OpenAI error (JSON, or an
/// error event ending a stream), or something else (<see cref="Problem"/>): a hung request, a broken connection, a
/// 500 from the gateway's own code, a body that is not the OpenAI shape, a stream that stops without a word.
/// </summary>
internal sealed record Outcome(
    int Id,
    Uri Instance,
    bool Stream,
    int Status,
    string? RequestId,
    string? Provider,
    int? Attempts,
    string Content,
    bool Done,
    string? ErrorCode,
    string? RetryAfter,
    DateTimeOffset Started,
    TimeSpan Elapsed,
    string? Problem)
{
    /// <summary>200 with the whole answer (for a stream: up to <c>[DONE]</c>).</summary>
    public bool Answered => Problem is null && Status == 200 && ErrorCode is null;

    /// <summary>A stream that started and then ended with an OpenAI error event.</summary>
    public bool EndedWithStreamError => Problem is null && Status == 200 && Stream && ErrorCode is not null;

    /// <summary>The gateway's <c>x-request-id</c> header: present on every request that reached routing.</summary>
    public bool ReachedRouting => RequestId is not null;

    public DateTimeOffset Finished => Started + Elapsed;

    public override string ToString() =>
        $"#{Id} {(Stream ? "stream" : "plain")} -> {Instance.Port} {Status} provider={Provider} attempts={Attempts} " +
        $"error={ErrorCode} {Elapsed.TotalMilliseconds:0} ms{(Problem is null ? "" : " PROBLEM: " + Problem)}";
}

/// <summary>
/// A sustained client load over real HTTP: <c>concurrency</c> workers each sending one request after another, every
/// request bounded by <see cref="ClientTimeout"/> (a request that reaches it is reported as hung, never awaited forever).
/// </summary>
internal sealed class LoadDriver : IDisposable
{
    public static readonly TimeSpan ClientTimeout = TimeSpan.FromSeconds(30);

    private readonly HttpClient _http;

    public LoadDriver(string apiKey)
    {
        _http = new HttpClient(new SocketsHttpHandler
        {
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            ConnectTimeout = TimeSpan.FromSeconds(5),
        })
        {
            Timeout = Timeout.InfiniteTimeSpan, // bounded per request below
        };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
    }

    /// <summary>Requests <c>0 .. count-1</c>, made by <paramref name="make"/>, by <paramref name="concurrency"/> workers.</summary>
    public Task<List<Outcome>> RunAsync(int count, int concurrency, Func<int, LoadRequest> make) =>
        RunAsync(concurrency, make, id => id < count, TimeSpan.Zero, CancellationToken.None);

    /// <summary>
    /// Requests until <paramref name="stop"/> is cancelled, each worker pausing <paramref name="pause"/> between its
    /// requests (a paced load). Requests in flight when it is cancelled run to their end.
    /// </summary>
    public Task<List<Outcome>> RunUntilAsync(CancellationToken stop, int concurrency, TimeSpan pause, Func<int, LoadRequest> make) =>
        RunAsync(concurrency, make, _ => !stop.IsCancellationRequested, pause, stop);

    private async Task<List<Outcome>> RunAsync(int concurrency, Func<int, LoadRequest> make, Func<int, bool> more, TimeSpan pause, CancellationToken stop)
    {
        var outcomes = new ConcurrentBag<Outcome>();
        var next = -1;
        var workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            for (var id = Interlocked.Increment(ref next); more(id); id = Interlocked.Increment(ref next))
            {
                outcomes.Add(await SendAsync(make(id)));
                if (pause > TimeSpan.Zero)
                {
                    await Task.Delay(pause, stop).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                }
            }
        }));
        await Task.WhenAll(workers);
        return [.. outcomes.OrderBy(o => o.Id)];
    }

    /// <summary>Sends one request and reads the whole answer; never throws, never waits longer than <see cref="ClientTimeout"/>.</summary>
    public async Task<Outcome> SendAsync(LoadRequest request)
    {
        using var timeout = new CancellationTokenSource(ClientTimeout);
        var started = DateTimeOffset.UtcNow;
        var clock = Stopwatch.StartNew();
        Outcome Failed(string problem) =>
            new(request.Id, request.Instance, request.Stream, 0, null, null, null, "", false, null, null, started, clock.Elapsed, problem);
        try
        {
            using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(request.Instance, request.Path))
            {
                Content = new StringContent(request.Body.ToJsonString(), Encoding.UTF8, "application/json"),
            };
            using var response = await _http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            var body = await response.Content.ReadAsStringAsync(timeout.Token);
            return Judge(request, response, body, started, clock.Elapsed);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            return Failed($"no complete answer within {ClientTimeout.TotalSeconds:0} s (hung connection)");
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException)
        {
            return Failed($"the connection failed: {ex.GetType().Name}: {ex.Message}");
        }
    }

    private static Outcome Judge(LoadRequest request, HttpResponseMessage response, string body, DateTimeOffset started, TimeSpan elapsed)
    {
        var status = (int)response.StatusCode;
        string? Header(string name) => response.Headers.TryGetValues(name, out var v) ? string.Join(",", v) : null;
        var attempts = int.TryParse(Header("x-helixagent-attempts"), out var a) ? a : (int?)null;
        var mediaType = response.Content.Headers.ContentType?.MediaType;
        var content = "";
        var done = false;
        string? errorCode = null;
        string? problem = null;
        try
        {
            if (status == 200 && mediaType == "text/event-stream")
            {
                (content, done, errorCode, problem) = JudgeStream(body);
            }
            else if (status == 200 && mediaType == "application/json")
            {
                var choice = JsonNode.Parse(body)?["choices"]?[0];
                var text = choice?["message"]?["content"] ?? choice?["text"];
                if (text is JsonValue t && t.TryGetValue<string>(out var s))
                {
                    content = s;
                }
                else
                {
                    problem = $"200 without an answer: {Cut(body)}";
                }
            }
            else if (status >= 400)
            {
                var error = mediaType == "application/json" ? JsonNode.Parse(body)?["error"] : null;
                errorCode = error?["code"]?.GetValue<string>();
                if (error?["message"] is not JsonValue || error["type"] is not JsonValue)
                {
                    problem = $"{status} that is not an OpenAI error ({mediaType}): {Cut(body)}";
                }
                else if (status == 500)
                {
                    problem = $"500 from the gateway's own code: {Cut(body)}";
                }
                else if (status is 429 or 503 && response.Headers.RetryAfter is null)
                {
                    problem = $"{status} without Retry-After: {Cut(body)}";
                }
            }
            else
            {
                problem = $"unexpected {status} ({mediaType}): {Cut(body)}";
            }
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            problem = $"{status} with an unreadable body ({ex.Message}): {Cut(body)}";
        }
        return new Outcome(request.Id, request.Instance, request.Stream, status, Header("x-request-id"), Header("x-helixagent-provider"),
            attempts, content, done, errorCode, Header("Retry-After"), started, elapsed, problem);
    }

    /// <summary>An OpenAI SSE stream: <c>data:</c> frames of chunks, then <c>[DONE]</c> or one error event, nothing after.</summary>
    private static (string Content, bool Done, string? ErrorCode, string? Problem) JudgeStream(string raw)
    {
        var content = new StringBuilder();
        var done = false;
        string? errorCode = null;
        foreach (var block in raw.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            var line = block.Trim();
            if (done || errorCode is not null)
            {
                return (content.ToString(), done, errorCode, $"a frame after the stream's end: {Cut(line)}");
            }
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
            {
                return (content.ToString(), done, errorCode, $"not an SSE data frame: {Cut(line)}");
            }
            var data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                done = true;
                continue;
            }
            var frame = JsonNode.Parse(data)!;
            if (frame["error"] is JsonObject error)
            {
                errorCode = error["code"]?.GetValue<string>() ?? "(no code)";
                if (error["message"] is not JsonValue || error["type"] is not JsonValue)
                {
                    return (content.ToString(), done, errorCode, $"an error event that is not the OpenAI shape: {Cut(data)}");
                }
                continue;
            }
            var choice = frame["choices"]?.AsArray().FirstOrDefault();
            if ((choice?["delta"]?["content"] ?? choice?["text"]) is JsonValue piece && piece.TryGetValue<string>(out var text))
            {
                content.Append(text);
            }
        }
        return done || errorCode is not null
            ? (content.ToString(), done, errorCode, null)
            : (content.ToString(), false, null, $"the stream stopped without [DONE] or an error event: {Cut(raw)}");
    }

    private static string Cut(string text) => text.Length > 300 ? text[..300] + "..." : text;

    public void Dispose() => _http.Dispose();
}

/// <summary>
/// What a load balancer does with readiness: requests go round-robin to the instances whose <c>/ready</c> last answered
/// 200; an instance that answers anything else (or refuses the connection) is taken out of rotation for good.
/// </summary>
internal sealed class ReadinessRotation : IAsyncDisposable
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(2) };
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<Uri, DateTimeOffset> _removedAt = new();
    private readonly Task _poller;
    private volatile Uri[] _ready;
    private int _next = -1;

    public ReadinessRotation(params Uri[] instances)
    {
        _ready = instances;
        _poller = Task.Run(PollAsync);
    }

    /// <summary>When each instance left the rotation.</summary>
    public IReadOnlyDictionary<Uri, DateTimeOffset> RemovedAt => _removedAt;

    /// <summary>The next instance in rotation.</summary>
    public Uri Next()
    {
        var ready = _ready;
        return ready.Length == 0 ? throw new InvalidOperationException("no instance is ready") : ready[(int)((uint)Interlocked.Increment(ref _next) % ready.Length)];
    }

    private async Task PollAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            foreach (var instance in _ready)
            {
                bool ready;
                try
                {
                    using var response = await _http.GetAsync(new Uri(instance, "/ready"), _stop.Token);
                    ready = response.IsSuccessStatusCode;
                }
                catch (HttpRequestException)
                {
                    ready = false;
                }
                catch (OperationCanceledException) when (!_stop.IsCancellationRequested)
                {
                    ready = true; // a slow answer is not a "no"
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                if (!ready && _removedAt.TryAdd(instance, DateTimeOffset.UtcNow))
                {
                    _ready = [.. _ready.Where(i => i != instance)];
                }
            }
            await Task.Delay(100, _stop.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _poller.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _stop.Dispose();
        _http.Dispose();
    }
}
