using System.Collections.Concurrent;
using System.ComponentModel.DataAnnotations;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Data;
using Microsoft.Extensions.Options;
using StackExchange.Redis;

namespace HelixAgent.Api.Access;

public sealed class AuthOptions
{
    public const string Section = "Auth";

    /// <summary>How long a key looked up in PostgreSQL is trusted in memory (revocations also arrive through Redis at once).</summary>
    [Range(0, 3600)]
    public double CacheSeconds { get; set; } = 30;

    /// <summary>How long an unknown key is remembered as unknown (shields the database from a client retrying a bad key).</summary>
    [Range(0, 3600)]
    public double NegativeCacheSeconds { get; set; } = 5;
}

/// <summary>
/// Checks presented API keys. A hit costs a SHA-256 and a dictionary lookup: no database round trip on the hot path.
/// A miss reads PostgreSQL once and caches the answer. Revocations and rotations are published on a Redis channel
/// that every replica listens to, so they take effect everywhere within milliseconds (within the cache time when
/// Redis is down). Expiry (rotation grace) is checked against the clock on every request.
/// </summary>
public sealed partial class KeyAuthenticator : IHostedService
{
    public static readonly RedisChannel RevocationChannel = RedisChannel.Literal("helixagent:keys:changed");

    private readonly ConcurrentDictionary<string, Entry> _cache = new(StringComparer.Ordinal);
    private readonly ApiKeyStore _store;
    private readonly IServiceProvider _services;
    private readonly AuthOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<KeyAuthenticator> _logger;
    private readonly CancellationTokenSource _stopping = new();
    private Task? _subscription;
    private Task? _sweeper;

    public KeyAuthenticator(ApiKeyStore store, IServiceProvider services, IOptions<AuthOptions> options, TimeProvider time, ILogger<KeyAuthenticator> logger)
    {
        _store = store;
        _services = services;
        _options = options.Value;
        _time = time;
        _logger = logger;
    }

    private sealed record Entry(ApiKeyInfo? Key, long CachedAtTicks);

    /// <summary>The key's record when it is known, unrevoked and unexpired; else null.</summary>
    public async ValueTask<ApiKeyInfo?> AuthenticateAsync(string presented, CancellationToken ct)
    {
        if (!ApiKeyStore.LooksLikeKey(presented))
        {
            return null;
        }
        var hash = ApiKeyStore.Hash(presented);
        var id = Convert.ToHexString(hash);
        var now = _time.GetUtcNow();
        if (!_cache.TryGetValue(id, out var entry) || Stale(entry, now))
        {
            try
            {
                var key = await _store.FindByHashAsync(hash, ct);
                entry = new Entry(key, now.UtcTicks);
                _cache[id] = entry;
            }
            catch (Exception ex) when (ex is Npgsql.NpgsqlException or TimeoutException)
            {
                // PostgreSQL is down: keep serving keys we already know (revocations still arrive through Redis).
                if (entry is null)
                {
                    throw new KeyStoreUnavailableException(ex);
                }
                LogServingStale(_logger, ex.Message);
            }
        }
        return entry.Key is { } k && k.IsUsableAt(now) ? k : null;
    }

    /// <summary>Forgets cached keys by hash (hex), or all of them for "*".</summary>
    public void Evict(string hashHex)
    {
        if (hashHex == "*")
        {
            _cache.Clear();
        }
        else
        {
            _cache.TryRemove(hashHex, out _);
        }
    }

    /// <summary>Tells every replica (through Redis) to forget these keys. Returns false when Redis is unreachable.</summary>
    public static async Task<bool> PublishChangeAsync(IConnectionMultiplexer? redis, IEnumerable<byte[]> hashes)
    {
        if (redis is null || !redis.IsConnected)
        {
            return false;
        }
        try
        {
            foreach (var hash in hashes)
            {
                await redis.GetSubscriber().PublishAsync(RevocationChannel, Convert.ToHexString(hash));
            }
            return true;
        }
        catch (Exception ex) when (RedisOutage.Is(ex))
        {
            return false;
        }
    }

    private bool Stale(Entry entry, DateTimeOffset now)
    {
        var ttl = entry.Key is null ? _options.NegativeCacheSeconds : _options.CacheSeconds;
        return now.UtcTicks - entry.CachedAtTicks >= TimeSpan.FromSeconds(ttl).Ticks;
    }

    /// <summary>Entries in the key cache: known keys, plus unknown ones remembered for <see cref="AuthOptions.NegativeCacheSeconds"/>.</summary>
    internal int CachedEntries => _cache.Count;

    /// <summary>How often unknown keys past their negative-cache time are dropped.</summary>
    internal TimeSpan SweepInterval => TimeSpan.FromSeconds(Math.Clamp(_options.NegativeCacheSeconds, 1, 60));

    /// <summary>
    /// Subscribes to revocations in the background (a slow or absent Redis never delays or fails the start) and sweeps
    /// unknown keys out of the cache.
    /// </summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        _subscription = Task.Run(() => SubscribeAsync(_stopping.Token), CancellationToken.None);
        _sweeper = SweepAsync(_stopping.Token);
        return Task.CompletedTask;
    }

    /// <summary>
    /// Every presented key that looks like one gets an entry, and anyone can present random ones: without this, a flood
    /// of made-up keys would grow the cache until the process runs out of memory. Unknown keys are dropped once their
    /// negative-cache time is over, so they hold at most what arrives within that time plus one interval. Known keys
    /// stay (bounded by the keys in PostgreSQL): a stale one still serves while PostgreSQL is unreachable.
    /// </summary>
    private async Task SweepAsync(CancellationToken stopping)
    {
        using var timer = new PeriodicTimer(SweepInterval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stopping).ConfigureAwait(false))
            {
                var now = _time.GetUtcNow();
                foreach (var entry in _cache)
                {
                    if (entry.Value.Key is null && Stale(entry.Value, now))
                    {
                        _cache.TryRemove(entry); // only if no newer lookup replaced it meanwhile
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    private async Task SubscribeAsync(CancellationToken stopping)
    {
        var redis = _services.GetService<IConnectionMultiplexer>();
        if (redis is null)
        {
            return;
        }
        await RedisSubscription.SubscribeUntilDoneAsync(redis, RevocationChannel, (_, message) =>
        {
            if (message.HasValue)
            {
                Evict(message.ToString());
            }
        }, reason => LogNoFanOut(_logger, reason, _options.CacheSeconds), stopping);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        if (_subscription is not null)
        {
            await _subscription.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
        if (_sweeper is not null)
        {
            await _sweeper.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    [LoggerMessage(31, LogLevel.Warning, "Key store unreachable ({Reason}); using the cached key")]
    private static partial void LogServingStale(ILogger logger, string reason);

    [LoggerMessage(30, LogLevel.Warning, "Key revocations cannot be received through Redis ({Reason}); they apply within {Seconds}s")]
    private static partial void LogNoFanOut(ILogger logger, string reason, double seconds);
}

/// <summary>A key could not be checked because PostgreSQL is unreachable and the key is not cached.</summary>
public sealed class KeyStoreUnavailableException(Exception inner) : Exception("The key store is unreachable.", inner);
