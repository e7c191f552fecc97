using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using CsCheck;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace HelixAgent.Tests.Fuzz;

/// <summary>
/// A fuzzer of our own request handling: valid bodies of every JSON route, mutated (truncation, invalid UTF-8, duplicate
/// keys, deep nesting, huge numbers, wrong types, flipped bytes), sent through the real pipeline in-process against real
/// PostgreSQL and Redis. Bounded for CI (<c>FUZZ_ITER</c>, default 400 cases; <c>FUZZ_SEED</c> replays a run: CsCheck
/// prints the seed of a failing case). A longer run: <c>FUZZ_ITER=20000 dotnet test --filter RequestFuzzTests</c>.
/// </summary>
public sealed class RequestFuzzTests(PostgresServer postgres, RedisServer redis, Xunit.Abstractions.ITestOutputHelper output) : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static readonly (string Method, string Path, bool Admin, bool Recorded, string Body)[] Routes =
    [
        ("POST", "/v1/chat/completions", false, true, """{"model":"sim-small","messages":[{"role":"user","content":"hello fuzz"}],"max_tokens":8,"temperature":0.5,"n":1,"stream":false,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer"}}}}}]}"""),
        ("POST", "/v1/chat/completions", false, true, """{"model":"sim-small","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"response_format":{"type":"json_object"}}"""),
        ("POST", "/v1/completions", false, true, """{"model":"sim-small","prompt":"say something","max_tokens":5}"""),
        ("POST", "/v1/embeddings", false, true, """{"model":"sim-small","input":["one","two"],"encoding_format":"base64","dimensions":4}"""),
        ("POST", "/v1/messages", false, true, """{"model":"sim-small","max_tokens":16,"system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"hello fuzz"}]},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"ok","is_error":false}]}],"tools":[{"name":"f","input_schema":{"type":"object","properties":{"a":{"type":"integer"}}}}],"tool_choice":{"type":"auto"},"temperature":0.5,"top_k":5,"thinking":{"type":"enabled","budget_tokens":1024},"metadata":{"user_id":"u1"}}"""),
        ("POST", "/v1/messages", false, true, """{"model":"sim-small","max_tokens":16,"stream":true,"stop_sequences":["\n\n"],"messages":[{"role":"user","content":"stream fuzz"}],"tools":[{"name":"g","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"g","disable_parallel_tool_use":true}}"""),
        ("POST", "/v1/messages/count_tokens", false, true, """{"model":"sim-small","system":"be brief","messages":[{"role":"user","content":"count me"}]}"""),
        ("POST", "/v1/responses", false, true, """{"model":"sim-small","store":false,"instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"hello fuzz"}]},{"type":"function_call","call_id":"c1","name":"f","arguments":"{\"a\":1}"},{"type":"function_call_output","call_id":"c1","output":"ok"}],"tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer"}}}},{"type":"namespace","name":"ns","tools":[{"type":"function","name":"g"}]}],"tool_choice":"auto","max_output_tokens":16,"temperature":0.5,"text":{"format":{"type":"json_object"}},"reasoning":{"effort":"low"}}"""),
        ("POST", "/v1/responses", false, true, """{"model":"sim-small","store":true,"stream":true,"input":"stream fuzz","tools":[{"type":"function","name":"g","parameters":{"type":"object"}}],"tool_choice":{"type":"function","name":"g"},"metadata":{"k":"v"}}"""),
        ("GET", "/v1/models", false, false, ""),
        ("POST", "/admin/keys", true, false, """{"name":"fuzz-key","scope":"client","rpm_limit":100,"tpm_limit":1000,"allowed_models":["sim-small"],"expires_in_days":3}"""),
    ];

    private static readonly string[] WrongValues = ["null", "true", "-1", "1e400", "123456789012345678901234567890", "\"\"", "[]", "{}", "\"x\"", "[[[[[[]]]]]]"];

    private static readonly Gen<Func<byte[], byte[]>> Mutation = Gen.OneOf(
        Gen.Const<Func<byte[], byte[]>>(b => b),
        Gen.Int[0, 400].Select<int, Func<byte[], byte[]>>(at => b => b[..Math.Min(at, b.Length)]),
        Gen.Select(Gen.Int[0, 400], Gen.Int[0x80, 0xFF]).Select<(int, int), Func<byte[], byte[]>>(t => b => Insert(b, t.Item1, [(byte)t.Item2])),
        Gen.Select(Gen.Int[0, 400], Gen.Byte).Select<(int, byte), Func<byte[], byte[]>>(t => b => b.Length == 0 ? b : Flip(b, t.Item1 % b.Length, t.Item2)),
        Gen.Int[0, 400].Select<int, Func<byte[], byte[]>>(at => b => DuplicateKey(b, at)),
        Gen.Int[1, 200].Select<int, Func<byte[], byte[]>>(depth => b => Nest(b, depth)),
        Gen.Select(Gen.Int[0, 400], Gen.Int[0, WrongValues.Length - 1]).Select<(int, int), Func<byte[], byte[]>>(t => b => WrongValue(b, t.Item1, WrongValues[t.Item2])));

    [Fact]
    public async Task Mutated_bodies_on_every_json_route_never_get_a_5xx_an_unshaped_error_a_ledger_row_or_a_logged_exception()
    {
        var errors = new ConcurrentQueue<string>();
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings(),
            services => services.AddSingleton<ILoggerProvider>(new ExceptionRecorder(errors)));
        var iterations = int.TryParse(Environment.GetEnvironmentVariable("FUZZ_ITER"), out var n) ? n : 400;
        var seed = Environment.GetEnvironmentVariable("FUZZ_SEED") is { Length: > 0 } s ? s : "0N0XIzNsQ0O2";
        var recorded = 0;
        var statuses = new ConcurrentDictionary<int, int>();
        using var http = gw.Anonymous();
        var gen = Gen.Select(Gen.Int[0, Routes.Length - 1], Mutation, Mutation);

        await gen.SampleAsync(async t =>
        {
            var (routeIndex, first, second) = t;
            var route = Routes[routeIndex];
            var body = second(first(Encoding.UTF8.GetBytes(route.Body)));
            using var request = new HttpRequestMessage(new HttpMethod(route.Method), route.Path);
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", route.Admin ? gw.AdminKey : gw.ClientKey);
            if (route.Method == "POST")
            {
                request.Content = new ByteArrayContent(body);
                request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            }
            using var response = await http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            var status = (int)response.StatusCode;
            statuses.AddOrUpdate(status, 1, (_, c) => c + 1);
            Assert.True(status < 500, $"{route.Method} {route.Path} answered {status}: {text}\nbody: {Encoding.UTF8.GetString(body)}");
            if (status >= 400)
            {
                var error = JsonNode.Parse(text)?["error"];
                Assert.True(error?["message"] is JsonValue m && m.GetValue<string>().Length is > 0 and < 1000, $"{route.Path} {status}: {text}");
                Assert.True(error?["type"] is JsonValue, text);
                if (route.Path.StartsWith("/v1/messages", StringComparison.Ordinal))
                {
                    Assert.True(JsonNode.Parse(text)?["type"]?.GetValue<string>() == "error", $"{route.Path} {status} is not in Anthropic's shape: {text}");
                }
            }
            else if (route.Recorded)
            {
                Interlocked.Increment(ref recorded);
            }
            Assert.True(errors.IsEmpty, string.Join('\n', errors));
        }, seed: seed, iter: iterations, threads: 1,
            print: t => $"{Routes[t.Item1].Method} {Routes[t.Item1].Path} {Encoding.UTF8.GetString(t.Item3(t.Item2(Encoding.UTF8.GetBytes(Routes[t.Item1].Body))))}");

        output.WriteLine($"seed {seed}, {iterations} cases: " + string.Join(", ", statuses.OrderBy(p => p.Key).Select(p => $"{p.Key}: {p.Value}")));
        Assert.Equal(iterations, statuses.Values.Sum());
        // Every answered LLM request is one row; no refused one is.
        var rows = await gw.LedgerRowsAsync(recorded);
        Assert.Equal(recorded, rows.Count);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await http.GetAsync("/health")).StatusCode);
        Assert.True(errors.IsEmpty, string.Join('\n', errors));
    }

    private static byte[] Insert(byte[] b, int at, byte[] what)
    {
        at = Math.Min(at, b.Length);
        return [.. b[..at], .. what, .. b[at..]];
    }

    private static byte[] Flip(byte[] b, int at, byte value)
    {
        var copy = (byte[])b.Clone();
        copy[at] = value;
        return copy;
    }

    /// <summary>Repeats the first property after the object brace nearest <paramref name="at"/>.</summary>
    private static byte[] DuplicateKey(byte[] b, int at)
    {
        var text = Encoding.UTF8.GetString(b);
        var brace = text.IndexOf('{', Math.Min(at, text.Length));
        brace = brace < 0 ? text.IndexOf('{', StringComparison.Ordinal) : brace;
        var quote = brace < 0 ? -1 : text.IndexOf('"', brace);
        var colon = quote < 0 ? -1 : text.IndexOf(':', quote);
        return colon < 0 ? b : Encoding.UTF8.GetBytes(text.Insert(brace + 1, text[quote..colon] + ":1,"));
    }

    private static byte[] Nest(byte[] b, int depth) =>
        Encoding.UTF8.GetBytes(new string('[', depth) + Encoding.UTF8.GetString(b) + new string(']', depth));

    /// <summary>Replaces the value after the first <c>:</c> at or after <paramref name="at"/> with <paramref name="value"/>.</summary>
    private static byte[] WrongValue(byte[] b, int at, string value)
    {
        var text = Encoding.UTF8.GetString(b);
        var colon = text.IndexOf(':', Math.Min(at, text.Length));
        if (colon < 0)
        {
            return b;
        }
        var end = colon + 1;
        var depth = 0;
        var inString = false;
        for (; end < text.Length; end++)
        {
            var c = text[end];
            if (inString) { if (c == '\\') { end++; } else if (c == '"') { inString = false; } continue; }
            if (c == '"') { inString = true; }
            else if (c is '[' or '{') { depth++; }
            else if (c is ']' or '}') { if (depth == 0) { break; } depth--; }
            else if (c == ',' && depth == 0) { break; }
        }
        return Encoding.UTF8.GetBytes(text[..(colon + 1)] + value + text[end..]);
    }

    /// <summary>Every log entry that carries an exception or is Error or worse, as the process's own log would show it.</summary>
    private sealed class ExceptionRecorder(ConcurrentQueue<string> errors) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new Recorder(categoryName, errors);
        public void Dispose() { }

        private sealed class Recorder(string category, ConcurrentQueue<string> errors) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
            public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;
            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (exception is not null || logLevel >= LogLevel.Error)
                {
                    errors.Enqueue($"{logLevel} {category}: {formatter(state, exception)} {exception}");
                }
            }
        }
    }
}
