using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Api.Access;
using HelixAgent.Api.Ledger;
using HelixAgent.Data;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>A gateway (in-process, real HTTP pipeline) on its own migrated database, plus ledger queries.</summary>
public sealed class GatewayHarness : IAsyncDisposable
{
    /// <summary>The simulator under several model names, no pacing, tiny latency, quick backoff.</summary>
    public static Dictionary<string, string?> SimulatorSettings() => new()
    {
        ["Providers:sim:Type"] = "simulator",
        ["Providers:sim:Models:0"] = "sim-small",
        ["Providers:sim:Models:1"] = "sim-error",
        ["Providers:sim:Models:2"] = "sim-ratelimit",
        ["Providers:sim:Models:3"] = "sim-stall",
        ["Providers:sim:Models:4"] = "sim-cut",
        ["Providers:sim:Models:5"] = "sim-badrequest",
        ["Providers:sim:LatencyMs"] = "1",
        ["Providers:sim:TokensPerSecond"] = "0",
        ["Providers:sim:FirstTokenTimeoutSeconds"] = "0.5",
        ["Gateway:BackoffMs"] = "1",
        ["Gateway:ProbeIntervalSeconds"] = "0",
        ["Ledger:FlushIntervalMs"] = "10",
    };

    /// <summary>
    /// Settings of a gateway with one route, <paramref name="model"/>, over the given fakes in order (each as provider
    /// <c>p0</c>, <c>p1</c>, ... serving upstream model <paramref name="model"/>), short timeouts, quick backoff.
    /// </summary>
    public static Dictionary<string, string?> RouteOver(IReadOnlyList<HelixAgent.Fakes.FakeUpstream> upstreams, string model = "m")
    {
        var s = new Dictionary<string, string?>
        {
            ["Gateway:BackoffMs"] = "1",
            ["Gateway:ProbeIntervalSeconds"] = "0",
            ["Ledger:FlushIntervalMs"] = "10",
        };
        for (var i = 0; i < upstreams.Count; i++)
        {
            s[$"Providers:p{i}:Type"] = upstreams[i].Protocol switch
            {
                HelixAgent.Fakes.FakeProtocol.OpenAI => "openai",
                HelixAgent.Fakes.FakeProtocol.Anthropic => "anthropic",
                HelixAgent.Fakes.FakeProtocol.Gemini => "gemini",
                _ => "ollama",
            };
            s[$"Providers:p{i}:BaseUrl"] = upstreams[i].BaseUrl.ToString();
            s[$"Providers:p{i}:ApiKey"] = $"upstream-key-{i}";
            s[$"Providers:p{i}:Models:0"] = model;
            s[$"Providers:p{i}:TimeoutSeconds"] = "2";
            s[$"Providers:p{i}:FirstTokenTimeoutSeconds"] = "1";
            s[$"Routes:{model}:Targets:{i}"] = $"p{i}/{model}";
        }
        return s;
    }

    public GatewayFactory Factory { get; }
    public HttpClient Client { get; }
    public string DatabaseConnectionString { get; }

    /// <summary>A client key created for this harness; <see cref="Client"/> sends it.</summary>
    public string ClientKey { get; }

    /// <summary>An admin key created for this harness.</summary>
    public string AdminKey { get; }

    private GatewayHarness(GatewayFactory factory, string cs, string clientKey, string adminKey)
    {
        Factory = factory;
        DatabaseConnectionString = cs;
        ClientKey = clientKey;
        AdminKey = adminKey;
        Client = factory.CreateClient();
        Client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", clientKey);
    }

    /// <summary>A client without any key.</summary>
    public HttpClient Anonymous() => Factory.CreateClient();

    /// <summary>A client sending <paramref name="key"/> in X-API-Key.</summary>
    public HttpClient WithKey(string key)
    {
        var client = Factory.CreateClient();
        client.DefaultRequestHeaders.Add("X-API-Key", key);
        return client;
    }

    public static async Task<GatewayHarness> StartAsync(PostgresServer postgres, RedisServer redis, IDictionary<string, string?> settings,
        Action<Microsoft.Extensions.DependencyInjection.IServiceCollection>? services = null, string? databaseConnectionString = null,
        string? redisConnectionString = null)
    {
        var db = databaseConnectionString is null ? await TestDatabase.CreateAsync(postgres, "gw") : await TestDatabase.OpenAsync(databaseConnectionString);
        var cs = db.ConnectionString;
        var clientKey = await db.CreateKeyAsync("harness-client");
        var adminKey = await db.CreateKeyAsync("harness-admin", scope: "admin");
        return new GatewayHarness(new GatewayFactory(cs, redisConnectionString ?? redis.ConnectionString, settings, services), cs, clientKey, adminKey);
    }

    public Task<HttpResponseMessage> PostJsonAsync(string path, JsonObject body) =>
        Client.PostAsync(path, new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));

    public static JsonObject Chat(string model, string text = "hello there gateway", bool stream = false) => new()
    {
        ["model"] = model,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
        ["stream"] = stream,
    };

    /// <summary>
    /// Every row of <c>completions</c> once this gateway is quiescent (no request in flight, no row queued, from its own
    /// <see cref="InFlightRequests"/> and <see cref="CompletionLedger.PendingRows"/>) and at least
    /// <paramref name="expected"/> rows are there: <c>LedgerRowsAsync(0)</c> is "whatever was written", surplus rows
    /// included. See <see cref="TestDatabase.QuiescentRowsAsync"/>.
    /// </summary>
    public Task<List<LedgerRow>> LedgerRowsAsync(int expected, TimeSpan? timeout = null) =>
        TestDatabase.QuiescentRowsAsync(DatabaseConnectionString, expected, () => Task.FromResult(Activity()), timeout);

    /// <summary>This gateway's requests in flight and ledger rows queued.</summary>
    public LedgerActivity Activity() => new(Factory.Services.GetRequiredService<InFlightRequests>().Count,
        Factory.Services.GetRequiredService<CompletionLedger>().PendingRows);

    /// <summary>Every row of <c>completions</c> in the database at <paramref name="connectionString"/>, oldest first.</summary>
    public static async Task<List<LedgerRow>> ReadLedgerAsync(string connectionString)
    {
        await using var conn = new NpgsqlConnection(connectionString + ";Pooling=false");
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            "SELECT request_id, model, provider, endpoint, status, error_type, prompt_tokens, completion_tokens, stream, attempts, ttft_ms, key_name FROM completions ORDER BY id", conn);
        await using var r = await cmd.ExecuteReaderAsync();
        var rows = new List<LedgerRow>();
        while (await r.ReadAsync())
        {
            rows.Add(new LedgerRow(r.GetString(0), r.GetString(1), r.IsDBNull(2) ? null : r.GetString(2), r.GetString(3), r.GetInt16(4),
                r.IsDBNull(5) ? null : r.GetString(5), r.GetInt32(6), r.GetInt32(7), r.GetBoolean(8), r.GetInt16(9), r.IsDBNull(10) ? null : r.GetDouble(10), r.IsDBNull(11) ? null : r.GetString(11)));
        }
        return rows;
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Factory.DisposeAsync();
    }
}

public sealed record LedgerRow(string RequestId, string Model, string? Provider, string Endpoint, short Status, string? ErrorType,
    int PromptTokens, int CompletionTokens, bool Stream, short Attempts, double? TtftMs, string? KeyName);
