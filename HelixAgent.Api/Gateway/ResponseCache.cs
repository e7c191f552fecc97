using System.Buffers;
using System.Buffers.Text;
using System.ComponentModel.DataAnnotations;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Observability;
using Microsoft.Extensions.Caching.Memory;
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

    /// <summary>
    /// Memory each replica gives to local copies of answers it served or found in Redis, so a repeated hit needs no
    /// Redis round trip (least recently used copies go first); 0 turns the local copies off.
    /// </summary>
    [Range(0, 4L * 1024 * 1024 * 1024)]
    public long LocalMaxBytes { get; set; } = 32 * 1024 * 1024;

    /// <summary>
    /// Longest a local copy is used (never past the Redis entry's own expiry): bounds how long a copy outlives an entry
    /// deleted in Redis by other means than <c>DELETE /admin/cache</c>, which clears every replica's copies at once.
    /// </summary>
    [Range(1, 86400)]
    public int LocalSeconds { get; set; } = 60;
}

/// <summary>A cached answer: the exact JSON body (UTF-8) the client got, and its usage for the ledger.</summary>
public sealed record CachedAnswer(ReadOnlyMemory<byte> Body, TokenUsage Usage);

/// <summary>
/// A lookup under way: the request's cache key and the answer Redis will give (null: go upstream). <c>Local</c>: the
/// answer is this replica's copy, already there.
/// </summary>
public sealed record CacheLookup(string Key, Task<CachedAnswer?> Answer, bool Local = false);

/// <summary>
/// The response cache in Redis (shared by every replica): the key is a SHA-256 of the endpoint, the route, the API key
/// (unless shared) and the request body with the fields that do not change the answer removed. Lookups wait at most
/// <see cref="CacheOptions.LookupTimeoutMs"/>; writes never wait. Redis down means no caching, never failed requests.
/// Clients skip it with <c>Cache-Control: no-cache</c> (or <c>no-store</c>); answers carry <c>x-helixagent-cache</c>.
/// <para>
/// Each replica also keeps local copies (<see cref="CacheOptions.LocalMaxBytes"/>) of the answers it stored or found,
/// until the Redis entry expires (at most <see cref="CacheOptions.LocalSeconds"/>): a repeated hit costs no round trip.
/// Copies are used only while Redis is connected and this replica listens on <see cref="FlushChannel"/>; a flush
/// clears them on every replica, and so does a lost or restored Redis connection (a flush may have been missed).
/// </para>
/// </summary>
public sealed partial class ResponseCache : IHostedService
{
    public const string Prefix = "helixagent:cache:";
    public static readonly RedisChannel FlushChannel = RedisChannel.Literal("helixagent:cache:flushed");
    private static readonly string[] Irrelevant = ["stream", "stream_options", "user", "metadata"];
    private readonly IServiceProvider _services;
    private readonly CacheOptions _options;
    private readonly ILogger<ResponseCache> _logger;
    private readonly MemoryCache? _local;
    private readonly CancellationTokenSource _stopping = new();
    private Task? _subscription;
    private volatile bool _listening;
    private long _generation;

    public ResponseCache(IServiceProvider services, IOptions<CacheOptions> options, ILogger<ResponseCache> logger)
    {
        _services = services;
        _options = options.Value;
        _logger = logger;
        if (_options.Mode != "off" && _options.LocalMaxBytes > 0)
        {
            _local = new MemoryCache(new MemoryCacheOptions
            {
                SizeLimit = _options.LocalMaxBytes,
                CompactionPercentage = 0.25,
                TrackStatistics = true,
            });
        }
    }

    /// <summary>Whether hits are being answered from local copies now (Redis connected, flushes heard).</summary>
    public bool LocalActive => _local is not null && _listening && Redis() is not null;

    /// <summary>Copies this replica holds now.</summary>
    public long LocalEntries => _local?.Count ?? 0;

    /// <summary>Bytes the copies take, as counted against <see cref="CacheOptions.LocalMaxBytes"/>.</summary>
    public long LocalBytes => _local?.GetCurrentStatistics()?.CurrentEstimatedSize ?? 0;

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
    public CacheLookup? Begin(HttpRequest request, string endpoint, ModelRoute route, JsonObject body, Guid? keyId, CancellationToken cancellationToken)
    {
        if (KeyFor(request, endpoint, route, body, keyId) is not { } key)
        {
            return null;
        }
        if (_local is not null && _listening && Redis() is not null && _local.TryGetValue(key, out Task<CachedAnswer?>? copy) && copy is not null)
        {
            return new CacheLookup(key, copy, Local: true);
        }
        return new CacheLookup(key, FetchAsync(key, cancellationToken));
    }

    private async Task<CachedAnswer?> FetchAsync(string key, CancellationToken cancellationToken)
    {
        if (Redis() is not { } redis)
        {
            return null;
        }
        var generation = Volatile.Read(ref _generation);
        RedisValue value;
        TimeSpan? expiry = null;
        try
        {
            var timeout = TimeSpan.FromMilliseconds(_options.LookupTimeoutMs);
            if (_local is not null && _listening)
            {
                // GET and PTTL in one round trip: the local copy expires when the Redis entry does.
                var found = await redis.GetDatabase().StringGetWithExpiryAsync(key).WaitAsync(timeout, cancellationToken);
                (value, expiry) = (found.Value, found.Expiry);
            }
            else
            {
                value = await redis.GetDatabase().StringGetAsync(key).WaitAsync(timeout, cancellationToken);
            }
        }
        catch (Exception ex) when (RedisOutage.Is(ex))
        {
            LogUnavailable(_logger, ex.Message);
            return null;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
        if (!value.HasValue || Decode((byte[])value!) is not { } answer)
        {
            return null;
        }
        if (expiry is { } left && left > TimeSpan.Zero)
        {
            KeepLocal(key, answer, left, generation);
        }
        return answer;
    }

    /// <summary>
    /// Keeps a copy unless a flush (or a change of connection) happened since <paramref name="generation"/> was read:
    /// a copy read from Redis before a flush must not outlive it.
    /// </summary>
    private void KeepLocal(string key, CachedAnswer answer, TimeSpan redisTtl, long generation)
    {
        if (_local is null || !_listening || generation != Volatile.Read(ref _generation))
        {
            return;
        }
        var lifetime = TimeSpan.FromSeconds(_options.LocalSeconds);
        _local.Set(key, Task.FromResult<CachedAnswer?>(answer), new MemoryCacheEntryOptions
        {
            AbsoluteExpirationRelativeToNow = redisTtl < lifetime ? redisTtl : lifetime,
            Size = answer.Body.Length + key.Length * 2 + 200, // the body, the key and the entry's own objects
        });
        if (generation != Volatile.Read(ref _generation))
        {
            _local.Remove(key);
        }
    }

    /// <summary>Forgets every local copy (after a flush, or when the Redis connection fails or comes back).</summary>
    private void ClearLocal()
    {
        Interlocked.Increment(ref _generation);
        _local?.Clear();
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
        var generation = Volatile.Read(ref _generation);
        try
        {
            redis.GetDatabase().StringSet(key, value, TimeSpan.FromSeconds(_options.TtlSeconds), flags: CommandFlags.FireAndForget);
            KeepLocal(key, new CachedAnswer(value.AsMemory(header.Length), usage), TimeSpan.FromSeconds(_options.TtlSeconds), generation);
        }
        catch (Exception ex) when (RedisOutage.Is(ex))
        {
            LogUnavailable(_logger, ex.Message);
        }
    }

    /// <summary>
    /// Deletes every cached answer (all replicas share them) and tells every replica to forget its local copies;
    /// returns how many entries Redis held.
    /// </summary>
    public async Task<long> FlushAsync()
    {
        var redis = Redis() ?? throw new RedisConnectionException(ConnectionFailureType.UnableToConnect, "Redis is not connected");
        ClearLocal();
        try
        {
            return await DeleteEntriesAsync(redis);
        }
        finally
        {
            // Also after a failure half-way: whatever was deleted must not live on in another replica's memory.
            ClearLocal();
            await redis.GetSubscriber().PublishAsync(FlushChannel, "flushed");
        }
    }

    private static async Task<long> DeleteEntriesAsync(IConnectionMultiplexer redis)
    {
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

    private IConnectionMultiplexer? _multiplexer;

    /// <summary>The multiplexer while it is connected. Resolved on first use (resolving it connects), then kept.</summary>
    private IConnectionMultiplexer? Redis() => (_multiplexer ??= _services.GetService<IConnectionMultiplexer>()) is { IsConnected: true } redis ? redis : null;

    /// <summary>Listens for flushes in the background: a slow or absent Redis never delays or fails the start.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (_local is not null)
        {
            _subscription = Task.Run(() => ListenAsync(_stopping.Token), CancellationToken.None);
        }
        return Task.CompletedTask;
    }

    private async Task ListenAsync(CancellationToken stopping)
    {
        if (_services.GetService<IConnectionMultiplexer>() is not { } redis)
        {
            return;
        }
        redis.ConnectionFailed += (_, _) => ClearLocal();
        redis.ConnectionRestored += (_, _) => ClearLocal();
        if (await RedisSubscription.SubscribeUntilDoneAsync(redis, FlushChannel, (_, _) => ClearLocal(),
                reason => LogUnavailable(_logger, $"no local copies until flushes can be heard: {reason}"), stopping))
        {
            ClearLocal(); // whatever was kept before now was kept without hearing flushes
            _listening = true;
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _listening = false;
        await _stopping.CancelAsync();
        if (_subscription is not null)
        {
            await _subscription.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    [LoggerMessage(60, LogLevel.Debug, "Response cache bypassed: {Reason}")]
    private static partial void LogUnavailable(ILogger logger, string reason);
}
