using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace HelixAgent.LoadGen;

/// <summary>
/// <c>helixagent-loadgen --url URL --rate N --duration 10s [--body JSON | --body-file PATH] [--key KEY] [--stream]
/// [--connections 64] [--warmup 2s] [--timeout 30s] [--header name=value] [--expect-header name=value] [--label TEXT]
/// [--dump PATH] [--ids PATH]</c>. <c>--header</c> adds one request header (e.g. <c>anthropic-version=2023-06-01</c>).
/// <para>
/// Open loop: request <c>i</c> is due at <c>start + i / rate</c> and is sent then, whether or not earlier answers came
/// back (wrk2's model). Latency is measured from the due time, so a server (or a generator) that falls behind shows up
/// as latency rather than silently lowering the rate ("coordinated omission"); <c>svc_*</c> is measured from the
/// actual send and <c>late_*</c> (send minus due) shows whether the generator kept up.
/// </para>
/// <para>
/// Prints one line of <c>key=value</c> pairs on stdout (microseconds; percentiles over 2xx answers only), e.g.
/// <c>label=gw rate=1000 sent=10000 ok=10000 non2xx=0 errors=0 achieved_rps=1000.0 p50_us=412 ... late_p99_us=61</c>.
/// With <c>--stream</c> the body must ask for a stream; <c>ttft_*</c> is the time until the first SSE data event
/// whose <c>choices[].delta.content</c> is a non-empty string, and <c>p*</c> the time until the stream ended.
/// </para>
/// <para>
/// <c>--dump PATH</c> also writes every measured request as a tab-separated line (due time from the start of the run,
/// latency, time from the actual send, status; microseconds), to see whether slow requests come together in time.
/// <c>--ids PATH</c> writes the <c>x-request-id</c> of every 2xx answer read to its end (the crash parity check of
/// <c>bench/run.sh --kill</c>). A request still in flight when the server dies counts as an error, not as answered.
/// </para>
/// </summary>
internal static class LoadGenProgram
{
    private const string InlineCompletions = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    public static async Task<int> Main(string[] args)
    {
        Options options;
        try
        {
            options = Options.Parse(args);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or IOException)
        {
            Console.Error.WriteLine($"loadgen: {ex.Message}");
            Console.Error.WriteLine(Options.Usage);
            return 2;
        }

        // Response continuations run on the socket engine's epoll thread instead of being queued to the thread pool:
        // a third of the generator's CPU at 5,000 requests/s, on a machine it shares with what it measures. Read once,
        // when the first socket is created, so it works from here. Safe because nothing here blocks in a continuation.
        if (Environment.GetEnvironmentVariable(InlineCompletions) is null)
        {
            Environment.SetEnvironmentVariable(InlineCompletions, "1");
        }
        using var client = CreateClient(options);
        var runner = new Runner(client, options);
        await runner.PrewarmAsync();
        if (options.Warmup > TimeSpan.Zero)
        {
            await runner.RunAsync(options.Warmup); // JIT, connection pool, server caches: measured and thrown away
        }
        var result = await runner.RunAsync(options.Duration);
        Console.WriteLine(result.Format(options));
        if (options.DumpPath is { } dump)
        {
            result.Dump(dump);
        }
        if (options.IdsPath is { } ids)
        {
            result.WriteIds(ids);
        }
        if (result.FirstError is { } error)
        {
            Console.Error.WriteLine($"loadgen {options.Label}: first error: {error}");
        }
        return 0;
    }

    private static HttpClient CreateClient(Options options)
    {
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = options.Connections,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(10),
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            UseProxy = false,
            UseCookies = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = System.Net.DecompressionMethods.None,
            // No traceparent: the gateway's sampler decides for itself, as for a client without tracing.
            ActivityHeadersPropagator = DistributedContextPropagator.CreateNoOutputPropagator(),
        };
        return new HttpClient(handler) { Timeout = options.Timeout };
    }
}

internal sealed class Options
{
    public const string Usage =
        "usage: helixagent-loadgen --url URL --rate N --duration 10s [--body JSON | --body-file PATH] [--key KEY] [--stream]\n" +
        "       [--connections 64] [--warmup 2s] [--timeout 30s] [--expect-header name=value] [--label TEXT] [--dump PATH] [--ids PATH]";

    public required Uri Url { get; init; }
    public required byte[] Body { get; init; }
    public string? Key { get; init; }
    public required double Rate { get; init; }
    public required TimeSpan Duration { get; init; }
    public TimeSpan Warmup { get; init; }
    public int Connections { get; init; } = 64;
    public bool Stream { get; init; }
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);
    public string? ExpectHeaderName { get; init; }
    public string? ExpectHeaderValue { get; init; }
    public string Label { get; init; } = "run";
    public string? HeaderName { get; init; }
    public string? HeaderValue { get; init; }
    public string? DumpPath { get; init; }
    public string? IdsPath { get; init; }

    public static Options Parse(string[] args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var stream = false;
        for (var i = 0; i < args.Length; i++)
        {
            var name = args[i].StartsWith("--", StringComparison.Ordinal) ? args[i][2..] : throw new ArgumentException($"unexpected argument '{args[i]}'");
            if (name == "stream")
            {
                stream = true;
                continue;
            }
            if (i + 1 >= args.Length)
            {
                throw new ArgumentException($"--{name} needs a value");
            }
            values[name] = args[++i];
        }
        string Required(string name) => values.GetValueOrDefault(name) ?? throw new ArgumentException($"--{name} is required");

        var body = values.TryGetValue("body-file", out var file) ? File.ReadAllBytes(file)
            : values.TryGetValue("body", out var text) ? Encoding.UTF8.GetBytes(text)
            : throw new ArgumentException("--body or --body-file is required");
        static (string? Name, string? Value) NameValue(Dictionary<string, string> values, string option)
        {
            if (!values.TryGetValue(option, out var text))
            {
                return (null, null);
            }
            var eq = text.IndexOf('=', StringComparison.Ordinal);
            return eq > 0 ? (text[..eq], text[(eq + 1)..]) : throw new ArgumentException($"--{option} is name=value");
        }
        var (headerName, headerValue) = NameValue(values, "expect-header");
        var (sendName, sendValue) = NameValue(values, "header");
        var options = new Options
        {
            Url = new Uri(Required("url")),
            Body = body,
            Key = values.GetValueOrDefault("key") is { Length: > 0 } key ? key : null,
            Rate = double.Parse(Required("rate"), CultureInfo.InvariantCulture),
            Duration = ParseTime(Required("duration")),
            Warmup = values.TryGetValue("warmup", out var warmup) ? ParseTime(warmup) : TimeSpan.Zero,
            Connections = values.TryGetValue("connections", out var c) ? int.Parse(c, CultureInfo.InvariantCulture) : 64,
            Stream = stream,
            Timeout = values.TryGetValue("timeout", out var t) ? ParseTime(t) : TimeSpan.FromSeconds(30),
            HeaderName = sendName,
            HeaderValue = sendValue,
            ExpectHeaderName = headerName,
            ExpectHeaderValue = headerValue,
            Label = values.GetValueOrDefault("label") ?? "run",
            DumpPath = values.GetValueOrDefault("dump"),
            IdsPath = values.GetValueOrDefault("ids"),
        };
        if (options.Rate <= 0 || options.Duration <= TimeSpan.Zero || options.Connections <= 0)
        {
            throw new ArgumentException("--rate, --duration and --connections must be positive");
        }
        return options;
    }

    /// <summary><c>10</c> or <c>10s</c> (seconds), <c>500ms</c>, <c>5m</c>.</summary>
    private static TimeSpan ParseTime(string text)
    {
        static double Number(string s) => double.Parse(s, CultureInfo.InvariantCulture);
        return text.EndsWith("ms", StringComparison.Ordinal) ? TimeSpan.FromMilliseconds(Number(text[..^2]))
            : text.EndsWith('s') ? TimeSpan.FromSeconds(Number(text[..^1]))
            : text.EndsWith('m') ? TimeSpan.FromMinutes(Number(text[..^1]))
            : TimeSpan.FromSeconds(Number(text));
    }
}

/// <summary>What one measured run saw; every array is indexed by request number and preallocated.</summary>
internal sealed class RunResult(int count)
{
    /// <summary>HTTP status, or 0 for a transport error / timeout / stream without content.</summary>
    public readonly short[] Status = new short[count];
    public readonly long[] Due = new long[count];
    public readonly long[] Sent = new long[count];
    public readonly long[] Done = new long[count];
    public readonly long[] FirstToken = new long[count];
    public readonly bool[] HeaderMatched = new bool[count];
    public readonly string?[] RequestIds = new string?[count];
    public int Count => Status.Length;
    public string? FirstError;

    /// <summary>Requests not answered yet; <see cref="Finished"/> completes when it reaches zero.</summary>
    public int Pending = count;
    public readonly TaskCompletionSource Finished = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public string Format(Options options)
    {
        static long Us(long ticks) => ticks * 1_000_000 / Stopwatch.Frequency;
        int ok = 0, non2xx = 0, errors = 0, matched = 0;
        for (var i = 0; i < Count; i++)
        {
            if (Status[i] == 0)
            {
                errors++;
            }
            else if (Status[i] is >= 200 and < 300)
            {
                ok++;
            }
            else
            {
                non2xx++;
            }
            if (HeaderMatched[i])
            {
                matched++;
            }
        }
        var total = new long[ok];
        var service = new long[ok];
        var ttft = new long[ok];
        var late = new long[Count];
        long lastDone = Due[0];
        for (int i = 0, k = 0; i < Count; i++)
        {
            late[i] = Us(Sent[i] - Due[i]);
            lastDone = Math.Max(lastDone, Done[i]);
            if (Status[i] is >= 200 and < 300)
            {
                total[k] = Us(Done[i] - Due[i]);
                service[k] = Us(Done[i] - Sent[i]);
                ttft[k] = Us(FirstToken[i] - Due[i]);
                k++;
            }
        }
        var sendSpan = (double)(Sent[Count - 1] - Sent[0]) / Stopwatch.Frequency;
        var doneSpan = (double)(lastDone - Due[0]) / Stopwatch.Frequency;
        var sb = new StringBuilder();
        void Add(string key, object value) => sb.Append(sb.Length == 0 ? "" : " ").Append(key).Append('=')
            .Append(Convert.ToString(value, CultureInfo.InvariantCulture));
        Add("label", options.Label);
        Add("mode", options.Stream ? "stream" : "plain");
        Add("rate", options.Rate);
        Add("connections", options.Connections);
        Add("sent", Count);
        Add("ok", ok);
        Add("non2xx", non2xx);
        Add("errors", errors);
        Add("achieved_rps", (Count > 1 && sendSpan > 0 ? (Count - 1) / sendSpan : 0).ToString("F1", CultureInfo.InvariantCulture));
        Add("ok_rps", (doneSpan > 0 ? ok / doneSpan : 0).ToString("F1", CultureInfo.InvariantCulture));
        AddPercentiles(Add, "", total);
        AddPercentiles(Add, "svc_", service);
        if (options.Stream)
        {
            AddPercentiles(Add, "ttft_", ttft);
        }
        AddPercentiles(Add, "late_", late);
        if (options.ExpectHeaderName is { } header)
        {
            Add("header", $"{header}={options.ExpectHeaderValue}");
            Add("header_matched", matched);
        }
        return sb.ToString();
    }

    /// <summary>A comment with the first due time (UTC), then one line per request: due (from the first due time), latency, service time, status; microseconds.</summary>
    /// <summary><c>--ids PATH</c>: the <c>x-request-id</c> of every 2xx answer read to its end, one a line.</summary>
    public void WriteIds(string path) =>
        File.WriteAllLines(path, Enumerable.Range(0, Status.Length).Where(i => Status[i] is >= 200 and < 300 && RequestIds[i] is not null).Select(i => RequestIds[i]!));

    public void Dump(string path)
    {
        static long Us(long ticks) => ticks * 1_000_000 / Stopwatch.Frequency;
        using var writer = new StreamWriter(path);
        var firstDue = DateTime.UtcNow - Stopwatch.GetElapsedTime(Due[0]);
        writer.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# first due {firstDue:yyyy-MM-ddTHH:mm:ss.ffffffZ} stopwatch {Due[0]} frequency {Stopwatch.Frequency}"));
        writer.WriteLine("due_us\tlatency_us\tservice_us\tstatus");
        for (var i = 0; i < Count; i++)
        {
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{Us(Due[i] - Due[0])}\t{Us(Done[i] - Due[i])}\t{Us(Done[i] - Sent[i])}\t{Status[i]}"));
        }
    }

    private static void AddPercentiles(Action<string, object> add, string prefix, long[] values)
    {
        Array.Sort(values);
        // Nearest rank: the smallest value with at least p of the samples at or below it; -1 without samples.
        long At(double p) => values.Length == 0 ? -1 : values[Math.Clamp((int)Math.Ceiling(p * values.Length) - 1, 0, values.Length - 1)];
        add(prefix + "p50_us", At(0.50));
        add(prefix + "p90_us", At(0.90));
        add(prefix + "p99_us", At(0.99));
        add(prefix + "p999_us", At(0.999));
        add(prefix + "max_us", values.Length == 0 ? -1 : values[^1]);
    }
}

internal sealed class Runner(HttpClient client, Options options)
{
    private const int BufferSize = 64 * 1024;
    private static readonly HttpMethod Post = HttpMethod.Post;

    /// <summary>Opens the connection pool: as many concurrent requests as connections, before anything is measured.</summary>
    public async Task PrewarmAsync()
    {
        var scratch = new RunResult(options.Connections);
        var now = Stopwatch.GetTimestamp();
        await Task.WhenAll(Enumerable.Range(0, options.Connections).Select(i => SendAsync(scratch, i, now)));
        if (scratch.FirstError is { } error)
        {
            Console.Error.WriteLine($"loadgen {options.Label}: prewarm error: {error}");
        }
    }

    public async Task<RunResult> RunAsync(TimeSpan duration)
    {
        var count = Math.Max(1, (int)Math.Round(duration.TotalSeconds * options.Rate));
        var result = new RunResult(count);
        // The pacer gets its own thread: it must not wait behind response continuations in the thread pool.
        var pacer = new Thread(() =>
        {
            Pacing.ReduceTimerSlack();
            var interval = Stopwatch.Frequency / options.Rate;
            var start = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 1000;
            for (var i = 0; i < count; i++)
            {
                var due = start + (long)(i * interval);
                Pacing.SleepUntil(due);
                _ = SendAsync(result, i, due);
            }
        })
        { IsBackground = true, Name = "pacer" };
        pacer.Start();
        await result.Finished.Task;
        pacer.Join();
        return result;
    }

    /// <summary>
    /// Sends request <paramref name="i"/> (called on the pacer thread: runs synchronously up to the first wait, which
    /// is the write of the request on an idle pooled connection) and records its outcome. Never throws.
    /// </summary>
    private async Task SendAsync(RunResult result, int i, long due)
    {
        result.Due[i] = due;
        result.Sent[i] = Stopwatch.GetTimestamp();
        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        try
        {
            using var request = new HttpRequestMessage(Post, options.Url) { Content = new ByteArrayContent(options.Body) };
            request.Content.Headers.TryAddWithoutValidation("Content-Type", "application/json");
            if (options.Key is { } key)
            {
                request.Headers.TryAddWithoutValidation("X-API-Key", key);
            }
            if (options.HeaderName is { } extra)
            {
                request.Headers.TryAddWithoutValidation(extra, options.HeaderValue);
            }
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).ConfigureAwait(false);
            var status = (short)response.StatusCode;
            if (options.ExpectHeaderName is { } header && response.Headers.NonValidated.TryGetValues(header, out var values))
            {
                foreach (var value in values)
                {
                    if (string.Equals(value, options.ExpectHeaderValue, StringComparison.OrdinalIgnoreCase))
                    {
                        result.HeaderMatched[i] = true;
                    }
                }
            }
            await using var body = await response.Content.ReadAsStreamAsync().ConfigureAwait(false);
            if (options.Stream && response.IsSuccessStatusCode)
            {
                var first = await ReadStreamAsync(body, buffer).ConfigureAwait(false);
                result.Done[i] = Stopwatch.GetTimestamp();
                if (first == 0)
                {
                    Fail(result, i, "the stream carried no data event with non-empty delta content");
                    return;
                }
                result.FirstToken[i] = first;
            }
            else
            {
                while (await body.ReadAsync(buffer).ConfigureAwait(false) > 0)
                {
                }
                result.Done[i] = Stopwatch.GetTimestamp();
                result.FirstToken[i] = result.Done[i];
            }
            if (options.IdsPath is not null && response.Headers.NonValidated.TryGetValues("x-request-id", out var ids))
            {
                result.RequestIds[i] = ids.ToString();
            }
            result.Status[i] = status;
        }
        catch (Exception ex)
        {
            result.Done[i] = Stopwatch.GetTimestamp();
            Fail(result, i, ex.GetType().Name + ": " + ex.Message);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            if (Interlocked.Decrement(ref result.Pending) == 0)
            {
                result.Finished.TrySetResult();
            }
        }
    }

    private static void Fail(RunResult result, int i, string error)
    {
        result.Status[i] = 0;
        Interlocked.CompareExchange(ref result.FirstError, error, null);
    }

    /// <summary>Reads an SSE stream to its end; returns the timestamp the first content event arrived, 0 if none.</summary>
    private static async Task<long> ReadStreamAsync(Stream body, byte[] buffer)
    {
        long first = 0;
        var filled = 0;
        while (true)
        {
            if (filled == buffer.Length)
            {
                filled = 0; // a line longer than the buffer: not an event we look for
            }
            var read = await body.ReadAsync(buffer.AsMemory(filled)).ConfigureAwait(false);
            if (read == 0)
            {
                return first;
            }
            if (first != 0)
            {
                continue; // draining
            }
            var arrived = Stopwatch.GetTimestamp();
            filled += read;
            var consumed = 0;
            while (buffer.AsSpan(consumed, filled - consumed).IndexOf((byte)'\n') is var nl and >= 0)
            {
                var line = buffer.AsSpan(consumed, nl).TrimEnd((byte)'\r');
                consumed += nl + 1;
                if (line.StartsWith("data:"u8) && HasDeltaContent(line[5..].TrimStart((byte)' ')))
                {
                    first = arrived;
                    break;
                }
            }
            if (first != 0)
            {
                filled = 0;
                continue;
            }
            buffer.AsSpan(consumed, filled - consumed).CopyTo(buffer);
            filled -= consumed;
        }
    }

    /// <summary>True when the JSON event has a <c>delta</c> object whose <c>content</c> is a non-empty string.</summary>
    internal static bool HasDeltaContent(ReadOnlySpan<byte> json)
    {
        if (json.IsEmpty || json[0] != (byte)'{')
        {
            return false; // e.g. [DONE]
        }
        var reader = new Utf8JsonReader(json);
        var deltaDepth = -1;
        try
        {
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.PropertyName when deltaDepth < 0 && reader.ValueTextEquals("delta"u8):
                        if (reader.Read() && reader.TokenType == JsonTokenType.StartObject)
                        {
                            deltaDepth = reader.CurrentDepth;
                        }
                        break;
                    case JsonTokenType.PropertyName when deltaDepth >= 0 && reader.CurrentDepth == deltaDepth + 1 && reader.ValueTextEquals("content"u8):
                        if (reader.Read() && reader.TokenType == JsonTokenType.String && reader.ValueSpan.Length > 0)
                        {
                            return true;
                        }
                        break;
                    case JsonTokenType.EndObject when reader.CurrentDepth == deltaDepth:
                        deltaDepth = -1;
                        break;
                }
            }
        }
        catch (JsonException)
        {
            // not JSON: no content
        }
        return false;
    }
}

/// <summary>Sleeping until a due time with sub-millisecond precision without spinning a core.</summary>
internal static class Pacing
{
    private const int PrSetTimerSlack = 29;
    private static readonly long MaxSleepTicks = Stopwatch.Frequency / 1000; // re-check at least every millisecond

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [DllImport("libc", EntryPoint = "nanosleep", SetLastError = false)]
    private static extern int NanoSleep(ref TimeSpec request, IntPtr remaining);

    [DllImport("libc", EntryPoint = "prctl", SetLastError = false)]
    private static extern int Prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);

    /// <summary>Linux adds up to 50 µs "timer slack" to every sleep of a normal thread; ask for 1 µs on this one.</summary>
    public static void ReduceTimerSlack()
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                Prctl(PrSetTimerSlack, 1_000, 0, 0, 0);
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
            {
                // default slack: late_* shows it
            }
        }
    }

    /// <summary>Returns at or after <paramref name="due"/> (a <see cref="Stopwatch"/> timestamp).</summary>
    public static void SleepUntil(long due)
    {
        while (Stopwatch.GetTimestamp() is var now && now < due)
        {
            var ticks = Math.Min(due - now, MaxSleepTicks);
            if (OperatingSystem.IsLinux())
            {
                var spec = new TimeSpec { Seconds = 0, Nanoseconds = ticks * 1_000_000_000 / Stopwatch.Frequency };
                NanoSleep(ref spec, IntPtr.Zero);
            }
            else
            {
                Thread.Sleep(1);
            }
        }
    }
}
