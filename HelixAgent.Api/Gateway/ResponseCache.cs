using System.ComponentModel.DataAnnotations;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
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

/// <summary>A cached answer: the exact JSON body the client got, and its usage for the ledger.</summary>
public sealed record CachedAnswer(string Body, TokenUsage Usage);

/// <summary>
/// The response cache in Redis (shared by every replica): the key is a SHA-256 of the endpoint, the route, the API key
/// (unless shared) and the request body with the fields that do not change the answer removed. Lookups wait at most
/// <see cref="CacheOptions.LookupTimeoutMs"/>; writes never wait. Redis down means no caching, never failed requests.
/// Clients skip it with <c>Cache-Control: no-cache</c> (or <c>no-store</c>); answers carry <c>x-helixagent-cache</c>.
/// </summary>
public sealed partial class ResponseCache(IServiceProvider services, IOptions<CacheOptions> options, GatewayMetrics metrics, ILogger<ResponseCache> logger)
{
    public const string Prefix = "helixagent:cache:";
    private static readonly string[] Irrelevant = ["stream", "stream_options", "user", "metadata"];
    private readonly CacheOptions _options = options.Value;

    /// <summary>The cache key for this request, or null when it must not be cached.</summary>
    public string? KeyFor(HttpRequest request, string endpoint, ModelRoute route, JsonObject body, Guid? keyId)
    {
        if (_options.Mode == "off" || NoCache(request))
        {
            return null;
        }
        if (_options.Mode == "deterministic" && endpoint != "embeddings" && !Deterministic(body))
        {
            return null;
        }
        var canonical = (JsonObject)body.DeepClone();
        foreach (var field in Irrelevant)
        {
            canonical.Remove(field);
        }
        var scope = _options.SharedAcrossKeys ? "*" : keyId?.ToString("N") ?? "-";
        var material = $"{endpoint}\n{route.Id}\n{scope}\n{canonical.ToJsonString()}";
        return Prefix + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(material)));
    }

    public async ValueTask<CachedAnswer?> GetAsync(string key, CancellationToken cancellationToken)
    {
        var redis = Redis();
        if (redis is null)
        {
            metrics.CacheLookup(hit: false);
            return null;
        }
        try
        {
            var value = await redis.GetDatabase().StringGetAsync(key)
                .WaitAsync(TimeSpan.FromMilliseconds(_options.LookupTimeoutMs), cancellationToken);
            var answer = value.HasValue ? Decode(value.ToString()) : null;
            metrics.CacheLookup(hit: answer is not null);
            return answer;
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            metrics.CacheLookup(hit: false);
            LogUnavailable(logger, ex.Message);
            return null;
        }
    }

    /// <summary>Stores an answer without waiting (fire and forget).</summary>
    public void Set(string key, string body, TokenUsage usage)
    {
        if (body.Length > _options.MaxEntryBytes || Redis() is not { } redis)
        {
            return;
        }
        try
        {
            redis.GetDatabase().StringSet(key, $"{usage.PromptTokens}|{usage.CompletionTokens}|{body}",
                TimeSpan.FromSeconds(_options.TtlSeconds), flags: CommandFlags.FireAndForget);
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
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

    private static CachedAnswer? Decode(string value)
    {
        var first = value.IndexOf('|');
        var second = first < 0 ? -1 : value.IndexOf('|', first + 1);
        if (second < 0 || !int.TryParse(value.AsSpan(0, first), out var prompt) || !int.TryParse(value.AsSpan(first + 1, second - first - 1), out var completion))
        {
            return null;
        }
        return new CachedAnswer(value[(second + 1)..], new TokenUsage(prompt, completion));
    }

    private IConnectionMultiplexer? Redis() => services.GetService<IConnectionMultiplexer>() is { IsConnected: true } redis ? redis : null;

    [LoggerMessage(60, LogLevel.Debug, "Response cache bypassed: {Reason}")]
    private static partial void LogUnavailable(ILogger logger, string reason);
}
