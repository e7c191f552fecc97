using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HelixAgent.Fakes;

/// <summary>
/// A real HTTP server on loopback (Kestrel, <c>http://127.0.0.1:{random port}</c>) speaking one LLM provider's wire
/// protocol, with deterministic answers, failure injection and a record of what it received.
/// Thread-safe: any number of concurrent requests; every setting may be changed while requests run.
/// </summary>
public sealed partial class FakeUpstream : IAsyncDisposable
{
    /// <summary>How long the stall faults wait for the client to give up.</summary>
    public static readonly TimeSpan StallLimit = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long <see cref="FakeFault.CutMidStream"/> waits after flushing before it aborts the connection. The abort is
    /// a TCP reset, and a reset makes the client's kernel drop bytes it has not read yet: on a loaded 2-core CI machine
    /// 100 ms was sometimes too short for the client to read the frames sent before the cut.
    /// </summary>
    private static readonly TimeSpan CutGrace = TimeSpan.FromMilliseconds(400);

    private readonly WebApplication _app;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private readonly List<RecordedRequest> _requests = [];
    private readonly List<Exception> _errors = [];
    private readonly List<(int Count, TaskCompletionSource Done)> _requestWaiters = [];
    private readonly List<(int Count, TaskCompletionSource Done)> _cancelWaiters = [];
    private readonly List<(int Count, TaskCompletionSource Done)> _stallWaiters = [];
    private int _stalledCount;
    private readonly Queue<FaultPlan> _faults = new();
    private Func<RecordedRequest, FakeFault>? _chooseFault;
    private int _requestCount;
    private int _cancelledCount;
    private int _sequence;
    private FakeToolCall? _nextToolCall;
    private string _reply;
    private TimeSpan _chunkDelay = TimeSpan.Zero;
    private TimeSpan _latency = TimeSpan.Zero;
    private int _retryAfterSeconds = 1;
    private int _embeddingDimensions = 8;
    private string? _expectedApiKey;
    private bool _strict = true;
    private IReadOnlyList<string> _models;

    private sealed class FaultPlan(FakeFault fault, int times, Func<RecordedRequest, bool>? when)
    {
        public FakeFault Fault { get; } = fault;
        public int Remaining { get; set; } = times;
        public Func<RecordedRequest, bool>? When { get; } = when;
    }

    private FakeUpstream(FakeProtocol protocol, WebApplication app)
    {
        Protocol = protocol;
        _app = app;
        _reply = $"Hello from {protocol}";
        _models = protocol switch
        {
            FakeProtocol.OpenAI => ["gpt-4o-mini", "text-embedding-3-small"],
            FakeProtocol.Anthropic => ["claude-sonnet-4-5", "claude-haiku-4-5"],
            FakeProtocol.Gemini => ["gemini-2.0-flash", "text-embedding-004"],
            _ => ["llama3.2:latest", "nomic-embed-text:latest"],
        };
    }

    /// <summary>
    /// A bare Kestrel host on <c>127.0.0.1</c>:<paramref name="port"/> (0: OS-assigned) without logging; nothing from
    /// appsettings or the environment (e.g. <c>ASPNETCORE_URLS</c>, Kestrel sections) may move the endpoint.
    /// </summary>
    internal static WebApplicationBuilder LoopbackBuilder(string environmentName, int port)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = typeof(FakeUpstream).Assembly.GetName().Name,
            EnvironmentName = environmentName,
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Configuration.Sources.Clear();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(IPAddress.Loopback, port);
            k.AddServerHeader = false;
        });
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(2));
        return builder;
    }

    /// <summary>Starts a fake on <c>127.0.0.1</c>, on <paramref name="port"/> or an OS-assigned one (0).</summary>
    public static async Task<FakeUpstream> StartAsync(FakeProtocol protocol, int port = 0)
    {
        var app = LoopbackBuilder("FakeUpstream", port).Build();
        var fake = new FakeUpstream(protocol, app);
        app.Run(fake.HandleAsync);
        await app.StartAsync();

        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("Kestrel reported no address.");
        fake.Port = new Uri(address).Port;
        fake.Root = new Uri($"http://127.0.0.1:{fake.Port}");
        fake.BaseUrl = protocol switch
        {
            FakeProtocol.OpenAI => new Uri($"http://127.0.0.1:{fake.Port}/v1"),
            FakeProtocol.Gemini => new Uri($"http://127.0.0.1:{fake.Port}/v1beta"),
            _ => fake.Root,
        };
        return fake;
    }

    public FakeProtocol Protocol { get; }

    /// <summary>Keep every request for <see cref="Requests"/> (tests); off for long runs (benchmarks) so memory stays flat.</summary>
    public bool RecordRequests { get; set; } = true;

    /// <summary>The bound port.</summary>
    public int Port { get; private set; }

    /// <summary><c>http://127.0.0.1:{port}</c>, without any API version path.</summary>
    public Uri Root { get; private set; } = null!;

    /// <summary>
    /// What a gateway provider config uses as <c>BaseUrl</c>: OpenAI <c>…/v1</c>, Anthropic the root, Gemini
    /// <c>…/v1beta</c>, Ollama the root.
    /// </summary>
    public Uri BaseUrl { get; private set; } = null!;

    /// <summary>
    /// Of each answer's prompt tokens, this many were read from the provider's prompt cache, reported as the protocol
    /// does (OpenAI <c>prompt_tokens_details.cached_tokens</c> and <c>input_tokens_details.cached_tokens</c>, Anthropic
    /// <c>cache_read_input_tokens</c>, Gemini <c>cachedContentTokenCount</c>). At most the prompt's own count.
    /// </summary>
    public int CachedPromptTokens { get; set; }

    /// <summary>Anthropic only: of each prompt, this many were written to the cache (<c>cache_creation_input_tokens</c>).</summary>
    public int CacheWritePromptTokens { get; set; }

    /// <summary>The assistant text every chat answer carries (streamed one word per chunk).</summary>
    public string Reply
    {
        get => Volatile.Read(ref _reply);
        set => Volatile.Write(ref _reply, value ?? "");
    }

    /// <summary>Pause between consecutive stream frames (zero by default).</summary>
    public TimeSpan ChunkDelay
    {
        get { lock (_gate) { return _chunkDelay; } }
        set { lock (_gate) { _chunkDelay = value; } }
    }

    /// <summary>
    /// Pause before the first byte of every answer (JSON or stream; not the fault answers), like a real provider's
    /// processing time. Zero by default.
    /// </summary>
    public TimeSpan Latency
    {
        get { lock (_gate) { return _latency; } }
        set { lock (_gate) { _latency = value; } }
    }

    /// <summary><c>Retry-After</c> seconds sent with <see cref="FakeFault.Status429"/> (default 1).</summary>
    public int RetryAfterSeconds
    {
        get => Volatile.Read(ref _retryAfterSeconds);
        set => Volatile.Write(ref _retryAfterSeconds, value);
    }

    /// <summary>Embedding length unless the request asks for one (OpenAI <c>dimensions</c>, Gemini <c>outputDimensionality</c>). Default 8.</summary>
    public int EmbeddingDimensions
    {
        get => Volatile.Read(ref _embeddingDimensions);
        set => Volatile.Write(ref _embeddingDimensions, value);
    }

    /// <summary>
    /// When set, requests must carry this key the protocol's way (OpenAI/Ollama <c>Authorization: Bearer</c>,
    /// Anthropic <c>x-api-key</c>, Gemini <c>x-goog-api-key</c> or <c>?key=</c>) or get the protocol's 401.
    /// </summary>
    public string? ExpectedApiKey
    {
        get => Volatile.Read(ref _expectedApiKey);
        set => Volatile.Write(ref _expectedApiKey, value);
    }

    /// <summary>
    /// When true (default) requests missing what the real API requires get its 400 (e.g. Anthropic without
    /// <c>anthropic-version</c> or <c>max_tokens</c>, OpenAI without <c>model</c>/<c>messages</c>).
    /// </summary>
    public bool Strict
    {
        get => Volatile.Read(ref _strict);
        set => Volatile.Write(ref _strict, value);
    }

    /// <summary>Models the list endpoint reports (names as the protocol spells them, without Gemini's <c>models/</c>).</summary>
    public IReadOnlyList<string> Models
    {
        get => Volatile.Read(ref _models);
        set => Volatile.Write(ref _models, value.ToArray());
    }

    /// <summary>
    /// When set, the next chat request that gets an answer is answered with this tool call in the protocol's native
    /// shape instead of <see cref="Reply"/>; it is then cleared (one-shot).
    /// </summary>
    public FakeToolCall? NextToolCall
    {
        get => Volatile.Read(ref _nextToolCall);
        set => Volatile.Write(ref _nextToolCall, value);
    }

    /// <summary>Snapshot of every request received so far, in arrival order.</summary>
    public IReadOnlyList<RecordedRequest> Requests
    {
        get { lock (_gate) { return _requests.ToArray(); } }
    }

    public int RequestCount => Volatile.Read(ref _requestCount);

    /// <summary>Exceptions the fake itself threw while handling a request (answered as a bare 500); empty when all is well.</summary>
    public IReadOnlyList<Exception> Errors
    {
        get { lock (_gate) { return _errors.ToArray(); } }
    }

    /// <summary>
    /// Requests whose client went away (<c>RequestAborted</c> fired) while the fake was still producing the answer
    /// (stalling, between chunks, writing). Aborts the fake itself causes (reset/cut faults, disposal) do not count.
    /// </summary>
    public int CancelledCount => Volatile.Read(ref _cancelledCount);

    /// <summary>
    /// Applies <paramref name="fault"/> to the next <paramref name="times"/> requests (all of them by default),
    /// counting only requests matching <paramref name="when"/> if given (e.g. to spare <c>/models</c> probes).
    /// Replaces any fault set before.
    /// </summary>
    public void Fail(FakeFault fault, int times = int.MaxValue, Func<RecordedRequest, bool>? when = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(times);
        lock (_gate)
        {
            _faults.Clear();
            _chooseFault = null;
            if (fault != FakeFault.None && times > 0)
            {
                _faults.Enqueue(new FaultPlan(fault, times, when));
            }
        }
    }

    /// <summary>Applies each fault once, in order, to the next requests (replacing any fault set before).</summary>
    public void FailSequence(params FakeFault[] faults)
    {
        lock (_gate)
        {
            _faults.Clear();
            _chooseFault = null;
            foreach (var f in faults)
            {
                _faults.Enqueue(new FaultPlan(f, 1, null));
            }
        }
    }

    /// <summary>
    /// Lets each request choose its own fault (<see cref="FakeFault.None"/> for a normal answer), e.g. from a marker in
    /// its body: under concurrent load the same request always gets the same fault, whatever the arrival order.
    /// Replaces any fault set before; <see cref="Reset"/> removes it.
    /// </summary>
    public void FailEach(Func<RecordedRequest, FakeFault> choose)
    {
        ArgumentNullException.ThrowIfNull(choose);
        lock (_gate)
        {
            _faults.Clear();
            _chooseFault = choose;
        }
    }

    /// <summary>Stops failure injection (the recorded requests and counters are kept).</summary>
    public void Reset()
    {
        lock (_gate)
        {
            _faults.Clear();
            _chooseFault = null;
        }
    }

    /// <summary>Completes once at least <paramref name="count"/> requests were received; throws <see cref="TimeoutException"/> after <paramref name="timeout"/> (default 10 s).</summary>
    public Task WaitForRequestsAsync(int count = 1, TimeSpan? timeout = null) =>
        WaitAsync(_requestWaiters, () => _requestCount, count, timeout);

    /// <summary>
    /// Requests the fake has begun to stall (<see cref="FakeFault.StallBeforeFirstByte"/>, <see cref="FakeFault.StallMidStream"/>),
    /// counted once it has sent (flushed) whatever comes before the stall.
    /// </summary>
    public int StalledCount => Volatile.Read(ref _stalledCount);

    /// <summary>Completes once <see cref="StalledCount"/> reaches <paramref name="count"/>; throws <see cref="TimeoutException"/> after <paramref name="timeout"/> (default 10 s).</summary>
    public Task WaitForStallAsync(int count = 1, TimeSpan? timeout = null) =>
        WaitAsync(_stallWaiters, () => _stalledCount, count, timeout);

    /// <summary>Completes once <see cref="CancelledCount"/> reaches <paramref name="count"/>; throws <see cref="TimeoutException"/> after <paramref name="timeout"/> (default 10 s).</summary>
    public Task WaitForCancellationAsync(int count = 1, TimeSpan? timeout = null) =>
        WaitAsync(_cancelWaiters, () => _cancelledCount, count, timeout);

    private Task WaitAsync(List<(int Count, TaskCompletionSource Done)> waiters, Func<int> current, int count, TimeSpan? timeout)
    {
        Task task;
        lock (_gate)
        {
            if (current() >= count)
            {
                return Task.CompletedTask;
            }
            var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            waiters.Add((count, tcs));
            task = tcs.Task;
        }
        return task.WaitAsync(timeout ?? TimeSpan.FromSeconds(10));
    }

    private static void Release(List<(int Count, TaskCompletionSource Done)> waiters, int value)
    {
        for (var i = waiters.Count - 1; i >= 0; i--)
        {
            if (waiters[i].Count <= value)
            {
                waiters[i].Done.TrySetResult();
                waiters.RemoveAt(i);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try
        {
            await _app.StopAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            // connections were aborted
        }
        await _app.DisposeAsync();
        _stopping.Dispose();
    }

    // ---------------------------------------------------------------- pipeline

    private sealed record Incoming(string Method, string Path, IQueryCollection Query, IHeaderDictionary Headers, JsonObject? Json, RecordedRequest Recorded);

    private abstract record Answer;

    /// <summary>A whole JSON body.</summary>
    private sealed record JsonAnswer(int Status, JsonNode Body, string? RetryAfter = null) : Answer;

    private enum StreamFormat { Sse, SseCrLf, Ndjson, JsonArray }

    /// <summary>One stream frame: SSE event name (or null), its data, and whether it carries content the user sees.</summary>
    private readonly record struct Frame(string? Event, string Data, bool IsContent);

    private sealed record StreamAnswer(StreamFormat Format, IReadOnlyList<Frame> Frames) : Answer;

    private sealed class RequestState
    {
        public volatile bool SelfAborted;
        public volatile bool Finished;
        public volatile bool Completed;
        public int Counted;
    }

    private async Task HandleAsync(HttpContext ctx)
    {
        var state = new RequestState();
        // Counted from the callback (promptly) and again, once, when the handler unwinds: the callback alone can miss,
        // because the linked token below may resume the handler inline and dispose this registration first.
        using var registration = ctx.RequestAborted.Register(() =>
        {
            if (!state.Finished)
            {
                CountCancellation(ctx, state);
            }
        });
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, _stopping.Token);
        var token = linked.Token;
        try
        {
            var incoming = await ReadAsync(ctx, token);
            var fault = TakeFault(incoming.Recorded);
            ctx.Response.Headers[Protocol == FakeProtocol.Anthropic ? "request-id" : "x-request-id"] = $"req_fake_{NextId()}";

            switch (fault)
            {
                case FakeFault.ResetConnection:
                    state.SelfAborted = true;
                    ctx.Abort();
                    return;
                case FakeFault.StallBeforeFirstByte:
                    await StallAsync(token);
                    return;
                case FakeFault.Status500 or FakeFault.Status503 or FakeFault.Status429 or FakeFault.Status400 or FakeFault.Status401 or FakeFault.Overloaded529:
                    await WriteJsonAsync(ctx, FaultError(fault), FakeFault.None, state, token);
                    state.Completed = true;
                    return;
            }

            Answer answer;
            if (ExpectedApiKey is { } key && !HasApiKey(incoming, key))
            {
                answer = Error(401, ErrorKind.Authentication, "Invalid API key provided.");
            }
            else if (incoming.Method == "POST" && incoming.Json is null)
            {
                answer = Error(400, ErrorKind.InvalidRequest, "The request body is not a JSON object.");
            }
            else
            {
                answer = Route(incoming);
            }

            var latency = Latency;
            if (latency > TimeSpan.Zero)
            {
                await Task.Delay(latency, token);
            }
            switch (answer)
            {
                case JsonAnswer json:
                    await WriteJsonAsync(ctx, json, fault, state, token);
                    break;
                case StreamAnswer stream:
                    await WriteStreamAsync(ctx, stream, fault, state, token);
                    break;
            }
            state.Completed = true;
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // the client went away (counted by the registration) or the fake is stopping
        }
        catch (IOException) when (token.IsCancellationRequested || state.SelfAborted)
        {
            // write to a connection the client closed
        }
        catch (Exception ex)
        {
            // A bug in the fake (or a request shape it does not expect): keep it visible to the test, answer 500.
            lock (_gate)
            {
                _errors.Add(ex);
            }
            throw;
        }
        finally
        {
            if (!state.Completed)
            {
                CountCancellation(ctx, state);
            }
            state.Finished = true;
        }
    }

    private void CountCancellation(HttpContext ctx, RequestState state)
    {
        if (ctx.RequestAborted.IsCancellationRequested && !state.SelfAborted && !_stopping.IsCancellationRequested &&
            Interlocked.Exchange(ref state.Counted, 1) == 0)
        {
            lock (_gate)
            {
                Release(_cancelWaiters, ++_cancelledCount);
            }
        }
    }

    private async Task<Incoming> ReadAsync(HttpContext ctx, CancellationToken token)
    {
        string body;
        using (var reader = new StreamReader(ctx.Request.Body, Encoding.UTF8))
        {
            body = await reader.ReadToEndAsync(token);
        }
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in ctx.Request.Headers)
        {
            headers[name] = value.ToString();
        }
        var recorded = new RecordedRequest(ctx.Request.Method, ctx.Request.Path.Value + ctx.Request.QueryString.Value, headers, body, DateTimeOffset.UtcNow);
        lock (_gate)
        {
            if (RecordRequests)
            {
                _requests.Add(recorded);
            }
            Release(_requestWaiters, ++_requestCount);
        }
        JsonObject? json = null;
        if (body.Length > 0)
        {
            try
            {
                json = JsonNode.Parse(body) as JsonObject;
            }
            catch (JsonException)
            {
                // stays null: answered with the protocol's 400
            }
        }
        return new Incoming(ctx.Request.Method, ctx.Request.Path.Value ?? "/", ctx.Request.Query, ctx.Request.Headers, json, recorded);
    }

    private FakeFault TakeFault(RecordedRequest request)
    {
        Func<RecordedRequest, FakeFault>? choose;
        lock (_gate)
        {
            choose = _chooseFault;
        }
        if (choose is not null)
        {
            return choose(request);
        }
        lock (_gate)
        {
            while (_faults.TryPeek(out var plan))
            {
                if (plan.Remaining <= 0)
                {
                    _faults.Dequeue();
                    continue;
                }
                if (plan.When is { } when && !when(request))
                {
                    return FakeFault.None;
                }
                if (plan.Remaining != int.MaxValue)
                {
                    plan.Remaining--;
                }
                if (plan.Remaining == 0)
                {
                    _faults.Dequeue();
                }
                return plan.Fault;
            }
            return FakeFault.None;
        }
    }

    private bool HasApiKey(Incoming r, string key) => Protocol switch
    {
        FakeProtocol.Anthropic => r.Headers["x-api-key"].ToString() == key,
        FakeProtocol.Gemini => r.Headers["x-goog-api-key"].ToString() == key || r.Query["key"].ToString() == key,
        _ => r.Headers.Authorization.ToString() == "Bearer " + key,
    };

    private Answer Route(Incoming r) => Protocol switch
    {
        FakeProtocol.OpenAI => RouteOpenAI(r),
        FakeProtocol.Anthropic => RouteAnthropic(r),
        FakeProtocol.Gemini => RouteGemini(r),
        _ => RouteOllama(r),
    };

    private JsonAnswer FaultError(FakeFault fault) => fault switch
    {
        FakeFault.Status500 => Error(500, ErrorKind.Server, "The server had an error while processing your request."),
        FakeFault.Status503 => Error(503, ErrorKind.Unavailable, "The service is temporarily unavailable."),
        FakeFault.Status429 => Error(429, ErrorKind.RateLimit, "Rate limit reached. Please try again later.") with
        {
            RetryAfter = RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
        },
        FakeFault.Status400 => Error(400, ErrorKind.InvalidRequest, "The request is invalid."),
        FakeFault.Status401 => Error(401, ErrorKind.Authentication, "Invalid API key provided."),
        FakeFault.Overloaded529 => Error(529, ErrorKind.Overloaded, "Overloaded"),
        _ => throw new ArgumentOutOfRangeException(nameof(fault)),
    };

    private enum ErrorKind { InvalidRequest, Authentication, NotFound, RateLimit, Server, Unavailable, Overloaded }

    /// <summary>The protocol's real error body.</summary>
    private JsonAnswer Error(int status, ErrorKind kind, string message) => Protocol switch
    {
        FakeProtocol.OpenAI => new JsonAnswer(status, new JsonObject
        {
            ["error"] = new JsonObject
            {
                ["message"] = message,
                ["type"] = kind switch
                {
                    ErrorKind.InvalidRequest or ErrorKind.Authentication or ErrorKind.NotFound => "invalid_request_error",
                    ErrorKind.RateLimit => "requests",
                    _ => "server_error",
                },
                ["param"] = null,
                ["code"] = kind switch
                {
                    ErrorKind.Authentication => "invalid_api_key",
                    ErrorKind.RateLimit => "rate_limit_exceeded",
                    ErrorKind.NotFound => "not_found",
                    ErrorKind.Unavailable or ErrorKind.Overloaded => "service_unavailable",
                    _ => null,
                },
            },
        }),
        FakeProtocol.Anthropic => new JsonAnswer(status, new JsonObject
        {
            ["type"] = "error",
            ["error"] = new JsonObject
            {
                ["type"] = kind switch
                {
                    ErrorKind.InvalidRequest => "invalid_request_error",
                    ErrorKind.Authentication => "authentication_error",
                    ErrorKind.NotFound => "not_found_error",
                    ErrorKind.RateLimit => "rate_limit_error",
                    ErrorKind.Overloaded => "overloaded_error",
                    _ => "api_error",
                },
                ["message"] = message,
            },
            ["request_id"] = $"req_fake_{NextId()}",
        }),
        FakeProtocol.Gemini => new JsonAnswer(status, new JsonObject
        {
            ["error"] = new JsonObject
            {
                ["code"] = status,
                ["message"] = message,
                ["status"] = kind switch
                {
                    ErrorKind.InvalidRequest => "INVALID_ARGUMENT",
                    ErrorKind.Authentication => "UNAUTHENTICATED",
                    ErrorKind.NotFound => "NOT_FOUND",
                    ErrorKind.RateLimit => "RESOURCE_EXHAUSTED",
                    ErrorKind.Server => "INTERNAL",
                    _ => "UNAVAILABLE",
                },
            },
        }),
        _ => new JsonAnswer(status, new JsonObject { ["error"] = message }),
    };

    private JsonAnswer NotFound(Incoming r) => Error(404, ErrorKind.NotFound, $"Invalid URL ({r.Method} {r.Path})");

    // ---------------------------------------------------------------- writing

    private const string MalformedJson = "{\"id\": \"fake\", \"choices\": [{\"oops\": tru";

    private async Task WriteJsonAsync(HttpContext ctx, JsonAnswer answer, FakeFault fault, RequestState state, CancellationToken token)
    {
        var bytes = Encoding.UTF8.GetBytes(fault == FakeFault.MalformedJson ? MalformedJson : answer.Body.ToJsonString());
        var response = ctx.Response;
        response.StatusCode = answer.Status;
        response.ContentType = "application/json";
        response.ContentLength = bytes.Length;
        if (answer.RetryAfter is { } retryAfter)
        {
            response.Headers.RetryAfter = retryAfter;
        }
        if (fault is FakeFault.CutMidStream or FakeFault.StallMidStream)
        {
            await response.Body.WriteAsync(bytes.AsMemory(0, bytes.Length / 2), token);
            await response.Body.FlushAsync(token);
            await BreakAsync(ctx, fault, state, token);
            return;
        }
        await response.Body.WriteAsync(bytes, token);
        await response.Body.FlushAsync(token);
    }

    private async Task WriteStreamAsync(HttpContext ctx, StreamAnswer answer, FakeFault fault, RequestState state, CancellationToken token)
    {
        var response = ctx.Response;
        response.StatusCode = 200;
        response.ContentType = answer.Format switch
        {
            StreamFormat.Ndjson => "application/x-ndjson",
            StreamFormat.JsonArray => "application/json; charset=UTF-8",
            StreamFormat.SseCrLf => "text/event-stream",
            _ => "text/event-stream; charset=utf-8",
        };
        response.Headers.CacheControl = "no-cache";
        await response.StartAsync(token);

        var frames = answer.Frames;
        var breakAfter = -1;
        if (fault is FakeFault.CutMidStream or FakeFault.StallMidStream)
        {
            var contentSeen = 0;
            for (var i = 0; i < frames.Count && breakAfter < 0; i++)
            {
                if (frames[i].IsContent && ++contentSeen == 2)
                {
                    breakAfter = i;
                }
            }
            if (breakAfter < 0)
            {
                var lastContent = frames.Select((f, i) => (f, i)).LastOrDefault(x => x.f.IsContent, (default, 0)).Item2;
                breakAfter = lastContent;
            }
        }

        var delay = ChunkDelay;
        for (var i = 0; i < frames.Count; i++)
        {
            if (i > 0 && delay > TimeSpan.Zero)
            {
                await Task.Delay(delay, token);
            }
            var frame = frames[i];
            var data = i == 0 && fault == FakeFault.MalformedJson ? MalformedJson : frame.Data;
            var text = answer.Format switch
            {
                StreamFormat.Sse => (frame.Event is null ? "" : $"event: {frame.Event}\n") + $"data: {data}\n\n",
                StreamFormat.SseCrLf => $"data: {data}\r\n\r\n",
                StreamFormat.Ndjson => data + "\n",
                _ => (i == 0 ? "[" : ",\r\n") + data + (i == frames.Count - 1 ? "]" : ""),
            };
            await response.Body.WriteAsync(Encoding.UTF8.GetBytes(text), token);
            await response.Body.FlushAsync(token);
            if (i == breakAfter)
            {
                await BreakAsync(ctx, fault, state, token);
                return;
            }
        }
    }

    private async Task BreakAsync(HttpContext ctx, FakeFault fault, RequestState state, CancellationToken token)
    {
        if (fault == FakeFault.CutMidStream)
        {
            // Kestrel's FlushAsync completes once the bytes are in its output pipe, not on the wire, and Abort()
            // discards what the transport has not sent yet: give it a moment so the client really gets the frames.
            await Task.Delay(CutGrace, token);
            state.SelfAborted = true;
            ctx.Abort();
            return;
        }
        await StallAsync(token);
    }

    /// <summary>Hangs (until <see cref="StallLimit"/> or the client leaves), counted in <see cref="StalledCount"/>.</summary>
    private Task StallAsync(CancellationToken token)
    {
        lock (_gate)
        {
            Release(_stallWaiters, ++_stalledCount);
        }
        return Task.Delay(StallLimit, token);
    }

    // ---------------------------------------------------------------- shared helpers for the protocols

    private int NextId() => Interlocked.Increment(ref _sequence);

    private static long UnixNow => DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>Takes the one-shot tool call, if any.</summary>
    private FakeToolCall? TakeToolCall() => Interlocked.Exchange(ref _nextToolCall, null);

    private static int CompletionTokens(string reply, FakeToolCall? tool) =>
        tool is null ? FakeText.CountWords(reply) : Math.Max(1, FakeText.CountWords(tool.ArgumentsJson));

    private static JsonNode ParseArguments(FakeToolCall tool)
    {
        try
        {
            return JsonNode.Parse(tool.ArgumentsJson) ?? new JsonObject();
        }
        catch (JsonException)
        {
            return new JsonObject();
        }
    }

    private static string? Str(JsonNode? node) => node is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    private static bool Bool(JsonNode? node, bool fallback) => node is JsonValue v && v.TryGetValue<bool>(out var b) ? b : fallback;

    private static int? Int(JsonNode? node) => node is JsonValue v && v.TryGetValue<int>(out var i) ? i : null;

    private static string Json(JsonNode node) => node.ToJsonString();
}
