using System.Buffers;
using System.Buffers.Text;
using System.ComponentModel.DataAnnotations;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Observability;
using Microsoft.Extensions.Options;
using StackExchange.Redis;

namespace HelixAgent.Api.Gateway;

public sealed class CacheOptions
{
    public const string Section = "Cache";

    /// <summary>
    /// <c>deterministic</c>: cache non-streaming answers to requests with <c>temperature: 0</c> or a <c>seed</c>, and
    /// embeddings; <c>all</c>: every non-streaming answer; <c>off</c>.
    /// </summary>
    [RegularExpression("^(deterministic|all|off)$")]
    public string Mode { get; set; } = "deterministic";

    [Range(1, 30 * 86400)]
    public int TtlSeconds { get; set; } = 3600;

    /// <summary>Answers larger than this are not cached.</summary>
    [Range(1, 64 * 1024 * 1024)]
    public int MaxEntryBytes { get; set; } = 256 * 1024;

    /// <summary>When false (default), each API key has its own cache: one tenant cannot learn what another asked.</summary>
    public bool SharedAcrossKeys { get; set; }

    /// <summary>Longest wait for Redis on a lookup; beyond it the request goes upstream.</summary>
    [Range(1, 10_000)]
    public int LookupTimeoutMs { get; set; } = 100;
}

/// <summary>A cached answer: the exact JSON body (UTF-8) the client got, and its usage for the ledger.</summary>
public sealed record CachedAnswer(ReadOnlyMemory<byte> Body, TokenUsage Usage);

/// <summary>A lookup under way: the request's cache key and the answer Redis will give (null: go upstream).</summary>
public sealed record CacheLookup(string Key, Task<CachedAnswer?> Answer);

/// <summary>
/// The response cache in Redis (shared by every replica): the key is a SHA-256 of the endpoint, the route, the API key
/// (unless shared) and the request body with the fields that do not change the answer removed. Lookups wait at most
/// <see cref="CacheOptions.LookupTimeoutMs"/>; writes never wait. Redis down means no caching, never failed requests.
/// Clients skip it with <c>Cache-Control: no-cache</c> (or <c>no-store</c>); answers carry <c>x-helixagent-cache</c>.
/// </summary>
public sealed partial class ResponseCache(IServiceProvider services, IOptions<CacheOptions> options, ILogger<ResponseCache> logger)
{
    public const string Prefix = "helixagent:cache:";
    private static readonly string[] Irrelevant = ["stream", "stream_options", "user", "metadata"];
    private readonly CacheOptions _options = options.Value;

    /// <summary>The cache key for this request, or null when it must not be cached.</summary>
    private string? KeyFor(HttpRequest request, string endpoint, ModelRoute route, JsonObject body, Guid? keyId)
    {
        if (_options.Mode == "off" || NoCache(request))
        {
            return null;
        }
        if (_options.Mode == "deterministic" && endpoint != "embeddings" && !Deterministic(body))
        {
            return null;
        }
        // SHA-256 over endpoint, route, scope and the body without the fields that do not change the answer, written
        // straight into the hash (no copy of the tree, no string).
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = true }))
        {
            writer.WriteStartObject();
            JsonBytes.WritePropertiesExcept(writer, body, static n => Array.IndexOf(Irrelevant, n) >= 0);
            writer.WriteEndObject();
        }
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var scope = _options.SharedAcrossKeys ? "*" : keyId?.ToString("N") ?? "-";
        hash.AppendData(Encoding.UTF8.GetBytes($"{endpoint}\n{route.Id}\n{scope}\n"));
        hash.AppendData(buffer.WrittenSpan);
        Span<byte> digest = stackalloc byte[32];
        hash.GetHashAndReset(digest);
        return Prefix + Convert.ToHexString(digest);
    }

    /// <summary>
    /// Starts the lookup for this request (null when it must not be cached) without waiting for it, so that it travels
    /// to Redis together with the rate-limit admission: a cache hit costs one round trip instead of two. The answer is
    /// null on a miss, when Redis is down or slower than <see cref="CacheOptions.LookupTimeoutMs"/>, or when the client
    /// left; it never throws. The caller counts the lookup (<see cref="GatewayMetrics.CacheLookup"/>) only if it uses it.
    /// </summary>
    public CacheLookup? Begin(HttpRequest request, string endpoint, ModelRoute route, JsonObject body, Guid? keyId, CancellationToken cancellationToken) =>
        KeyFor(request, endpoint, route, body, keyId) is { } key ? new CacheLookup(key, FetchAsync(key, cancellationToken)) : null;

    private async Task<CachedAnswer?> FetchAsync(string key, CancellationToken cancellationToken)
    {
        if (Redis() is not { } redis)
        {
            return null;
        }
        RedisValue value;
        try
        {
            value = await redis.GetDatabase().StringGetAsync(key)
                .WaitAsync(TimeSpan.FromMilliseconds(_options.LookupTimeoutMs), cancellationToken);
        }
        catch (Exception ex) when (RedisOutage.Is(ex))
        {
            LogUnavailable(logger, ex.Message);
            return null;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
        return value.HasValue ? Decode((byte[])value!) : null;
    }

    /// <summary>Stores an answer without waiting (fire and forget) as <c>prompt|completion|body</c>.</summary>
    public void Set(string key, ReadOnlyMemory<byte> body, TokenUsage usage)
    {
        if (body.Length > _options.MaxEntryBytes || Redis() is not { } redis)
        {
            return;
        }
        var header = Encoding.ASCII.GetBytes($"{usage.PromptTokens}|{usage.CompletionTokens}|");
        var value = new byte[header.Length + body.Length];
        header.CopyTo(value, 0);
        body.Span.CopyTo(value.AsSpan(header.Length));
        try
        {
            redis.GetDatabase().StringSet(key, value, TimeSpan.FromSeconds(_options.TtlSeconds), flags: CommandFlags.FireAndForget);
        }
        catch (Exception ex) when (RedisOutage.Is(ex))
        {
            LogUnavailable(logger, ex.Message);
        }
    }

    /// <summary>Deletes every cached answer (all replicas share them); returns how many.</summary>
    public async Task<long> FlushAsync()
    {
        var redis = Redis() ?? throw new RedisConnectionException(ConnectionFailureType.UnableToConnect, "Redis is not connected");
        long deleted = 0;
        foreach (var endpoint in redis.GetEndPoints())
        {
            var server = redis.GetServer(endpoint);
            if (server.IsReplica)
            {
                continue;
            }
            var batch = new List<RedisKey>(500);
            await foreach (var key in server.KeysAsync(pattern: Prefix + "*", pageSize: 500))
            {
                batch.Add(key);
                if (batch.Count == 500)
                {
                    deleted += await redis.GetDatabase().KeyDeleteAsync([.. batch]);
                    batch.Clear();
                }
            }
            if (batch.Count > 0)
            {
                deleted += await redis.GetDatabase().KeyDeleteAsync([.. batch]);
            }
        }
        return deleted;
    }

    private static bool NoCache(HttpRequest request)
    {
        foreach (var value in request.Headers.CacheControl)
        {
            if (value is not null && (value.Contains("no-cache", StringComparison.OrdinalIgnoreCase) || value.Contains("no-store", StringComparison.OrdinalIgnoreCase)))
            {
                return true;
            }
        }
        return false;
    }

    private static bool Deterministic(JsonObject body) =>
        (body["temperature"] is JsonValue t && t.TryGetValue<double>(out var temperature) && temperature == 0) || body["seed"] is JsonValue;

    private static CachedAnswer? Decode(byte[] value)
    {
        var first = Array.IndexOf(value, (byte)'|');
        var second = first < 0 ? -1 : Array.IndexOf(value, (byte)'|', first + 1);
        if (second < 0 ||
            !Utf8Parser.TryParse(value.AsSpan(0, first), out int prompt, out var n1) || n1 != first ||
            !Utf8Parser.TryParse(value.AsSpan(first + 1, second - first - 1), out int completion, out var n2) || n2 != second - first - 1)
        {
            return null;
        }
        return new CachedAnswer(value.AsMemory(second + 1), new TokenUsage(prompt, completion));
    }

    private IConnectionMultiplexer? Redis() => services.GetService<IConnectionMultiplexer>() is { IsConnected: true } redis ? redis : null;

    [LoggerMessage(60, LogLevel.Debug, "Response cache bypassed: {Reason}")]
    private static partial void LogUnavailable(ILogger logger, string reason);
}
