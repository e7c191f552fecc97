using HelixAgent.Data;
using System.Collections.Concurrent;
using StackExchange.Redis;

namespace HelixAgent.Api.Access;

/// <summary>
/// Per-key requests-per-minute and tokens-per-minute limits shared by every replica through Redis: one Lua script
/// (<see cref="RateLimitScripts.Admit"/>) decides and counts atomically on the server's clock. When Redis is absent,
/// disconnected, failing or slower than <see cref="RedisTimeout"/> (several times in a row), this replica enforces the same policy alone
/// (<see cref="LocalRateLimiter"/>) and marks the decision <see cref="RateLimitDecision.Degraded"/>: never "no limits",
/// never an exception for the caller.
/// </summary>
public sealed partial class ClusterRateLimiter : IDisposable
{
    /// <summary>How long a Redis call may take before the local fallback decides.</summary>
    public static readonly TimeSpan RedisTimeout = TimeSpan.FromMilliseconds(1000);

    /// <summary>After a failed or timed-out call, Redis is left alone this long (decisions stay local) before the next try.</summary>
    private long _timeouts;
    private int _consecutiveTimeouts;

    /// <summary>Timeouts in a row after which Redis is treated as unavailable for <see cref="RedisRetryInterval"/>.</summary>
    public const int ConsecutiveTimeoutsBeforeBackoff = 3;

    /// <summary>Admissions Redis answered too slowly for, decided by this replica alone.</summary>
    public long Timeouts => Interlocked.Read(ref _timeouts);

    public static readonly TimeSpan RedisRetryInterval = TimeSpan.FromSeconds(1);

    private static readonly TimeSpan ResolveRetryInterval = TimeSpan.FromSeconds(5);

    private readonly IServiceProvider _services;
    private readonly TimeProvider _time;
    private readonly ILogger<ClusterRateLimiter> _logger;
    private readonly LocalRateLimiter _local;

    private IConnectionMultiplexer? _redis;
    private long _resolveAfter;     // TimeProvider timestamp: next attempt to resolve the multiplexer
    private long _redisSkipUntil;   // TimeProvider timestamp: decisions stay local until then
    private int _degraded;          // 1 while the last Redis call failed (or Redis was unavailable)
    private long _admitted;
    private long _rejected;
    private long _degradedDecisions;

    private readonly BudgetBook _budgets = new();

    public ClusterRateLimiter(IServiceProvider services, TimeProvider time, ILogger<ClusterRateLimiter> logger)
    {
        _services = services;
        _time = time;
        _logger = logger;
        _local = new LocalRateLimiter(time);
    }

    /// <summary>What this replica last knew of each budget (the gauges read it; the fallback admits from it).</summary>
    public BudgetBook Budgets => _budgets;

    private long _budgetRejectedKey;
    private long _budgetRejectedTeam;
    private long _budgetRebuilt;

    public long BudgetRejected(BudgetScope scope) => Interlocked.Read(ref scope == BudgetScope.Key ? ref _budgetRejectedKey : ref _budgetRejectedTeam);

    /// <summary>Budget counters this replica rebuilt from the ledger (Redis had none: a restart, a flush, a new period).</summary>
    public long BudgetCountersRebuilt => Interlocked.Read(ref _budgetRebuilt);

    /// <summary>True when the last attempt to use Redis failed: decisions are being made per replica.</summary>
    public bool IsDegraded => Volatile.Read(ref _degraded) == 1;

    public long Admitted => Interlocked.Read(ref _admitted);
    public long Rejected => Interlocked.Read(ref _rejected);
    public long DegradedDecisions => Interlocked.Read(ref _degradedDecisions);

    /// <summary>
    /// Atomically admits one request reserving <paramref name="reserveTokens"/> (prompt estimate + max tokens) against
    /// the key's limits and, with <paramref name="budget"/>, reserving its worst-case cost against the key's and its
    /// team's budgets in the same script. Throws only for invalid arguments or when <paramref name="ct"/> is cancelled.
    /// </summary>
    public async ValueTask<RateLimitDecision> AdmitAsync(string keyId, RateLimitPolicy policy, int reserveTokens, CancellationToken ct, BudgetCheck? budget = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(keyId);
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentOutOfRangeException.ThrowIfNegative(reserveTokens);

        if (budget is not null)
        {
            return Count(await AdmitWithBudgetAsync(keyId, policy, reserveTokens, budget, ct).ConfigureAwait(false));
        }
        if (policy.IsUnlimited)
        {
            Interlocked.Increment(ref _admitted);
            return new RateLimitDecision(true, null, null, null, null, TimeSpan.Zero, TimeSpan.Zero, TimeSpan.Zero,
                Degraded: false, new RateLimitTicket(keyId, -1, reserveTokens, Local: false));
        }

        var slices = SliceSize(policy);
        if (!slices.IsNone && TryAdmitFromSlice(keyId, policy, slices, reserveTokens) is { } fromSlice)
        {
            return Count(fromSlice);
        }

        var db = Database();
        if (db is not null)
        {
            try
            {
                var result = await AdmitScriptAsync(db, keyId, [RateLimitScripts.Prefix(keyId)],
                        [policy.RequestsPerMinute ?? -1, policy.TokensPerMinute ?? -1, reserveTokens], ct).ConfigureAwait(false);
                var decision = FromScript(result, keyId, policy, reserveTokens);
                Remember(keyId, decision);
                Interlocked.Exchange(ref _consecutiveTimeouts, 0);
                MarkHealthy();
                // Refused while this replica's slice (granted meanwhile) still holds admissions: those are what fills
                // the limit, so they are used now rather than left unused.
                if (!decision.Allowed && !slices.IsNone && TryAdmitFromSlice(keyId, policy, slices, reserveTokens) is { } late)
                {
                    return Count(late);
                }
                return Count(decision);
            }
            catch (Exception ex) when (!ct.IsCancellationRequested)
            {
                OnRedisFailure(ex);
            }
        }

        ct.ThrowIfCancellationRequested();
        return Count(AdmitLocally(keyId, policy, reserveTokens));
    }

    /// <summary>
    /// A call to Redis that failed. One slow answer under load is not an outage: that call is decided locally and Redis
    /// is asked again next time. Only several timeouts in a row (Redis stalled), or any other failure, make the replica
    /// stop waiting for it for a while.
    /// </summary>
    private void OnRedisFailure(Exception ex)
    {
        if (ex is TimeoutException)
        {
            Interlocked.Increment(ref _timeouts);
            if (Interlocked.Increment(ref _consecutiveTimeouts) < ConsecutiveTimeoutsBeforeBackoff)
            {
                return;
            }
        }
        MarkFailed(ex);
    }

    /// <summary>
    /// What Redis last said of a key's window: the fallback starts from it rather than from zero. One holder per key,
    /// updated in place on every decision (no allocation on the hot path); a torn read between its fields costs at most
    /// one request's worth of accuracy in a fallback that is approximate anyway.
    /// </summary>
    private sealed class LastKnown
    {
        public long At;
        public int? RemainingRequests;
        public int? RemainingTokens;
    }

    private readonly ConcurrentDictionary<string, LastKnown> _lastKnown = new(StringComparer.Ordinal);

    private void Remember(string keyId, RateLimitDecision decision)
    {
        if (decision.LimitRequests is not null || decision.LimitTokens is not null)
        {
            var known = _lastKnown.GetOrAdd(keyId, static _ => new LastKnown());
            known.RemainingRequests = decision.RemainingRequests;
            known.RemainingTokens = decision.RemainingTokens;
            Volatile.Write(ref known.At, _time.GetTimestamp());
        }
    }

    /// <summary>
    /// This replica alone (Redis unreachable) enforces its share of the key's limits: 1/N of each with N live replicas
    /// (<see cref="ReplicaHeartbeat"/>), starting from what Redis last said was used of the rolling minute (within the
    /// last minute), so an outage does not hand out a fresh minute.
    /// </summary>
    private RateLimitDecision AdmitLocally(string keyId, RateLimitPolicy policy, int reserveTokens)
    {
        var replicas = Math.Max(1, (_services.GetService(typeof(ReplicaHeartbeat)) as ReplicaHeartbeat)?.LiveReplicas ?? 1);
        var share = replicas == 1 ? policy : new RateLimitPolicy(
            policy.RequestsPerMinute is int rpm ? Math.Max(1, rpm / replicas) : null,
            policy.TokensPerMinute is int tpm ? Math.Max(1, tpm / replicas) : null);
        if (_lastKnown.TryRemove(keyId, out var known) && _time.GetElapsedTime(Volatile.Read(ref known.At)) < TimeSpan.FromMinutes(1))
        {
            _local.Seed(keyId, share,
                policy.RequestsPerMinute is int r && known.RemainingRequests is int rr ? (r - rr) / replicas : 0,
                policy.TokensPerMinute is int t && known.RemainingTokens is int tr ? ((long)t - tr) / replicas : 0);
        }
        return _local.Admit(keyId, share, reserveTokens);
    }

    /// <summary>
    /// The admission script; when Redis answers that it has not seen the key lately (-3: a restart, a flush, or 3 idle
    /// minutes), the key's buckets of this minute and the last are rebuilt from the ledger first and it runs again.
    /// </summary>
    private async Task<RedisResult[]> AdmitScriptAsync(IDatabase db, string keyId, RedisKey[] keys, RedisValue[] args, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            var values = (RedisResult[])(await EvaluateAsync(db, RateLimitScripts.AdmitSha1, RateLimitScripts.Admit, keys, args)
                .WaitAsync(RedisTimeout, _time, ct).ConfigureAwait(false))!;
            if ((long)values[0] != -3 || attempt == 2)
            {
                return (long)values[0] == -3 ? throw new RedisException("the rate-limit buckets could not be rebuilt") : values;
            }
            var window = (long)values[1];
            var (rc, tc, rp, tp) = await WindowFromLedgerAsync(keyId, window, ct).ConfigureAwait(false);
            await EvaluateAsync(db, RateLimitScripts.SeedSha1, RateLimitScripts.Seed, [keys[0]], [window, rc, tc, rp, tp])
                .WaitAsync(RedisTimeout, _time, ct).ConfigureAwait(false);
            Interlocked.Increment(ref _windowsRebuilt);
        }
    }

    private long _windowsRebuilt;

    /// <summary>Keys whose rate-limit buckets this replica rebuilt from the ledger (Redis had not seen them lately).</summary>
    public long WindowsRebuilt => Interlocked.Read(ref _windowsRebuilt);

    /// <summary>
    /// The key's requests and tokens in the ledger in minute <paramref name="window"/> and the one before (rows are
    /// stamped when the request ends, so a request still in flight is not there yet). Zeros when the ledger cannot say.
    /// </summary>
    private async Task<(long Rc, long Tc, long Rp, long Tp)> WindowFromLedgerAsync(string keyId, long window, CancellationToken ct)
    {
        if (!Guid.TryParse(keyId, out var id) || _services.GetService(typeof(Npgsql.NpgsqlDataSource)) is not Npgsql.NpgsqlDataSource db)
        {
            return default;
        }
        try
        {
            await using var cmd = db.CreateCommand("""
                SELECT count(*) FILTER (WHERE created_at >= $2),
                       coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE created_at >= $2), 0),
                       count(*) FILTER (WHERE created_at < $2),
                       coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE created_at < $2), 0)
                FROM completions WHERE key_id = $1 AND created_at >= $3
                """);
            cmd.Parameters.AddWithValue(id);
            cmd.Parameters.AddWithValue(DateTimeOffset.FromUnixTimeMilliseconds(window * SlidingWindow.WindowMs));
            cmd.Parameters.AddWithValue(DateTimeOffset.FromUnixTimeMilliseconds((window - 1) * SlidingWindow.WindowMs));
            await using var r = await cmd.ExecuteReaderAsync(ct).WaitAsync(TimeSpan.FromSeconds(2), _time, ct).ConfigureAwait(false);
            await r.ReadAsync(ct).ConfigureAwait(false);
            return (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3));
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            LogWindowLedgerFailed(ex, keyId);
            return default;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Rebuilding the rate-limit window of key {KeyId} from the ledger failed; it starts from zero")]
    private partial void LogWindowLedgerFailed(Exception ex, string keyId);

    /// <summary>
    /// <see cref="SettleAsync"/> without waiting for Redis's answer, so the client's response never waits for it. The
    /// command is queued on the multiplexer before this returns, and commands keep their order on the connection: the
    /// key's next admission is evaluated after this settlement.
    /// </summary>
    public void Settle(RateLimitTicket ticket, int actualTokens, decimal? costUsd = null)
    {
        if (ticket.Budget is { } hold)
        {
            SettleBudget(ticket, hold, actualTokens, costUsd);
            return;
        }
        var pending = SettleAsync(ticket, actualTokens);
        if (!pending.IsCompleted)
        {
            _ = pending.AsTask();
        }
    }

    /// <summary>
    /// Corrects the reservation with the actual usage (actual − reserved; negative gives tokens back) in the minute the
    /// request was admitted in. Failures are logged, never thrown.
    /// </summary>
    public async ValueTask SettleAsync(RateLimitTicket ticket, int actualTokens)
    {
        if (!ticket.HoldsReservation)
        {
            return;
        }
        var delta = (long)Math.Max(0, actualTokens) - ticket.ReservedTokens;
        if (delta == 0)
        {
            return;
        }
        if (ticket.Local)
        {
            _local.Settle(ticket.KeyId, ticket.Window, (int)Math.Clamp(delta, int.MinValue, int.MaxValue));
            return;
        }
        if (TrySettleInSlice(ticket, delta))
        {
            return;
        }

        var db = Database();
        if (db is null)
        {
            LogSettlementSkipped(ticket.KeyId, delta);
            return;
        }
        try
        {
            await EvaluateAsync(db, RateLimitScripts.SettleSha1, RateLimitScripts.Settle,
                    [ticket.Prefix], [delta, ticket.Window])
                .WaitAsync(RedisTimeout, _time).ConfigureAwait(false);
            MarkHealthy();
        }
        catch (Exception ex)
        {
            LogSettlementFailed(ex, ticket.KeyId, delta);
            MarkFailed(ex);
        }
    }

    public void Dispose() => _local.Dispose();

    /// <summary>
    /// A key held to budgets: always one round trip to Redis (no slices; the key's buckets and its budget counters in
    /// one hash slot, one script). A counter Redis lacks is rebuilt from <c>completions</c> (<see cref="BudgetLedger"/>)
    /// with SET NX and the script runs again. Redis unreachable: this replica decides the rate limit alone and spends
    /// its share of what each budget had left when it last heard from Redis (<see cref="BudgetBook.AdmitLocal"/>).
    /// </summary>
    private async Task<RateLimitDecision> AdmitWithBudgetAsync(string keyId, RateLimitPolicy policy, int reserveTokens, BudgetCheck budget, CancellationToken ct)
    {
        var prefix = RateLimitScripts.Prefix(keyId, budget.Tag);
        var lines = budget.Lines.ToArray();
        var db = Database();
        if (db is not null)
        {
            try
            {
                for (var rebuilt = 0; ; rebuilt++)
                {
                    var pending = lines.Select(_budgets.Pending).ToArray();
                    var keys = new RedisKey[1 + lines.Length];
                    keys[0] = prefix;
                    var args = new RedisValue[5 + 3 * lines.Length];
                    args[0] = policy.RequestsPerMinute ?? -1;
                    args[1] = policy.TokensPerMinute ?? -1;
                    args[2] = reserveTokens;
                    args[3] = lines.Length;
                    args[4] = budget.ReserveNano;
                    for (var i = 0; i < lines.Length; i++)
                    {
                        keys[1 + i] = lines[i].Counter;
                        args[5 + 3 * i] = lines[i].LimitNano;
                        args[6 + 3 * i] = lines[i].TtlMs;
                        args[7 + 3 * i] = pending[i];
                    }
                    var values = await AdmitScriptAsync(db, keyId, keys, args, ct).ConfigureAwait(false);
                    Interlocked.Exchange(ref _consecutiveTimeouts, 0);
                    MarkHealthy();
                    if ((long)values[0] == -2)
                    {
                        var missing = lines[(int)(long)values[1] - 1];
                        if (rebuilt >= 3 || !await RebuildAsync(db, missing, ct).ConfigureAwait(false))
                        {
                            return Refused(keyId, policy, reserveTokens, RateLimitRejection.BudgetUnknown, degraded: false);
                        }
                        continue;
                    }
                    var spent = new long[lines.Length];
                    for (var i = 0; i < lines.Length; i++)
                    {
                        spent[i] = (long)values[9 + i];
                        _budgets.Observe(lines[i], spent[i], pending[i]);
                    }
                    var over = (int)(long)values[8] - 1;
                    var outcome = new BudgetOutcome(budget, spent, over);
                    var decision = FromScript(values, keyId, policy, reserveTokens) with { Budget = outcome };
                    Remember(keyId, decision);
                    if (over >= 0 && (long)values[1] == 0 && (long)values[2] == 0)
                    {
                        Interlocked.Increment(ref lines[over].Scope == BudgetScope.Key ? ref _budgetRejectedKey : ref _budgetRejectedTeam);
                        return decision with { Rejection = RateLimitRejection.BudgetExceeded, RetryAfter = RetryAtReset(lines[over]) };
                    }
                    return decision.Allowed
                        ? decision with { Ticket = decision.Ticket with { Budget = new BudgetHold(prefix, lines, budget.ReserveNano, Local: false) } }
                        : decision;
                }
            }
            catch (Exception ex) when (!ct.IsCancellationRequested)
            {
                OnRedisFailure(ex);
            }
        }

        ct.ThrowIfCancellationRequested();
        // Alone: what a budget had left is known from Redis's last answer, else from the ledger.
        foreach (var line in lines.Where(l => !_budgets.Knows(l)))
        {
            if (await SpentFromLedgerAsync(line, ct).ConfigureAwait(false) is not { } nano)
            {
                return Refused(keyId, policy, reserveTokens, RateLimitRejection.BudgetUnknown, degraded: true);
            }
            _budgets.Rebuilt(line, nano);
        }
        var local = AdmitLocally(keyId, policy, reserveTokens);
        if (!local.Allowed)
        {
            return local;
        }
        var spentLocal = new long[lines.Length];
        var replicas = (_services.GetService(typeof(ReplicaHeartbeat)) as ReplicaHeartbeat)?.LiveReplicas ?? 1;
        var refusedBy = _budgets.AdmitLocal(budget, replicas, spentLocal);
        if (refusedBy >= 0)
        {
            _local.Settle(keyId, local.Ticket.Window, -local.Ticket.ReservedTokens);
            Interlocked.Increment(ref lines[refusedBy].Scope == BudgetScope.Key ? ref _budgetRejectedKey : ref _budgetRejectedTeam);
            return local with
            {
                Allowed = false, Rejection = RateLimitRejection.BudgetExceeded, RetryAfter = RetryAtReset(lines[refusedBy]),
                Budget = new BudgetOutcome(budget, spentLocal, refusedBy), Ticket = local.Ticket with { Window = -1 },
            };
        }
        return local with { Ticket = local.Ticket with { Budget = new BudgetHold(prefix, lines, budget.ReserveNano, Local: true) } };
    }

    private static RateLimitDecision Refused(string keyId, RateLimitPolicy policy, int reserveTokens, RateLimitRejection why, bool degraded) =>
        new(false, policy.RequestsPerMinute, null, policy.TokensPerMinute, null, TimeSpan.Zero, TimeSpan.Zero, TimeSpan.FromSeconds(5), degraded,
            new RateLimitTicket(keyId, -1, reserveTokens, Local: degraded), why, null);

    /// <summary>Until the budget's period ends (none for a total budget: retrying never helps).</summary>
    private TimeSpan RetryAtReset(BudgetLine line) =>
        line.ResetsAt is { } r ? TimeSpan.FromSeconds(Math.Max(1, Math.Ceiling((r - _time.GetUtcNow()).TotalSeconds))) : TimeSpan.Zero;

    /// <summary>
    /// Redis has no counter for <paramref name="line"/>: it is set, if still absent, to the period's spend in
    /// <c>completions</c>. False when the ledger cannot be read.
    /// </summary>
    private async Task<bool> RebuildAsync(IDatabase db, BudgetLine line, CancellationToken ct)
    {
        if (await SpentFromLedgerAsync(line, ct).ConfigureAwait(false) is not { } nano)
        {
            return false;
        }
        await db.StringSetAsync(line.Counter, nano, line.TtlMs > 0 ? TimeSpan.FromMilliseconds(line.TtlMs) : null, When.NotExists)
            .WaitAsync(RedisTimeout, _time, ct).ConfigureAwait(false);
        _budgets.Rebuilt(line, nano);
        Interlocked.Increment(ref _budgetRebuilt);
        LogBudgetRebuilt(line.ScopeName, line.Name, Budget.FormatUsd(Nano.ToUsd(nano)));
        return true;
    }

    private async Task<long?> SpentFromLedgerAsync(BudgetLine line, CancellationToken ct)
    {
        try
        {
            var db = (Npgsql.NpgsqlDataSource?)_services.GetService(typeof(Npgsql.NpgsqlDataSource));
            if (db is null)
            {
                return null;
            }
            var spent = await BudgetLedger.SpentAsync(db, line.Scope, line.Name, line.Budget, _time.GetUtcNow(), ct)
                .WaitAsync(TimeSpan.FromSeconds(5), _time, ct).ConfigureAwait(false);
            return Nano.FromUsd(spent);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            LogBudgetLedgerFailed(ex, line.ScopeName, line.Name);
            return null;
        }
    }

    /// <summary>
    /// Settles a budget key's request, without waiting for Redis: its cost reservation with the actual cost (unpriced:
    /// 0) and its token reservation with the actual usage, in one script (the admission was one script too). Admitted
    /// alone (Redis unreachable), both are settled in this replica.
    /// </summary>
    private void SettleBudget(RateLimitTicket ticket, BudgetHold hold, int actualTokens, decimal? costUsd)
    {
        var delta = Nano.FromUsd(costUsd ?? 0) - hold.ReservedNano;
        if (hold.Local)
        {
            if (delta != 0)
            {
                _budgets.SettleLocal(hold.Lines, delta);
            }
            _ = SettleAsync(ticket, actualTokens).AsTask();
            return;
        }
        var tokens = ticket.HoldsReservation ? (long)Math.Max(0, actualTokens) - ticket.ReservedTokens : 0;
        if (delta == 0 && tokens == 0)
        {
            return;
        }
        if (Database() is not { } db)
        {
            // Redis went away after the admission: the counter is corrected when it is rebuilt from the ledger.
            return;
        }
        var keys = new RedisKey[hold.Lines.Length + (tokens == 0 ? 0 : 1)];
        for (var i = 0; i < hold.Lines.Length; i++)
        {
            keys[i] = hold.Lines[i].Counter;
        }
        if (tokens != 0)
        {
            keys[^1] = hold.Prefix;
        }
        _ = SettleBudgetAsync(db, keys, delta, tokens, ticket.Window);
    }

    private async Task SettleBudgetAsync(IDatabase db, RedisKey[] keys, long delta, long tokens, long window)
    {
        try
        {
            await EvaluateAsync(db, RateLimitScripts.SettleBudgetSha1, RateLimitScripts.SettleBudget, keys, [delta, tokens, window])
                .WaitAsync(RedisTimeout, _time).ConfigureAwait(false);
            MarkHealthy();
        }
        catch (Exception ex)
        {
            LogBudgetSettlementFailed(ex, delta, tokens);
            MarkFailed(ex);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Budget counter of {Scope} {Name} rebuilt from the ledger: {SpentUsd} USD spent this period")]
    private partial void LogBudgetRebuilt(string scope, string name, string spentUsd);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The spend of {Scope} {Name} could not be read from the ledger; its requests are refused until it can")]
    private partial void LogBudgetLedgerFailed(Exception ex, string scope, string name);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Budget settlement of {Delta} nano-USD and {Tokens} tokens failed")]
    private partial void LogBudgetSettlementFailed(Exception ex, long delta, long tokens);

    /// <summary>A requests-per-minute limit this high (or none) lets a key be admitted from slices.</summary>
    public const int SliceMinimumLimit = 10_000;

    /// <summary>A tokens-per-minute limit this high (or none) lets a key be admitted from slices.</summary>
    public const int SliceMinimumTokenLimit = 1_000_000;

    /// <summary>The most requests in one slice; a slice is at most 1/200 of the key's limit.</summary>
    public const int MaxSliceSize = 100;

    /// <summary>The most tokens in one slice; a slice is at most 1/200 of the key's limit.</summary>
    public const long MaxTokenSlice = 10_000_000;

    /// <summary>A slice stops this long before its minute ends by this replica's clock (drift between it and Redis's).</summary>
    private static readonly TimeSpan SliceGuard = TimeSpan.FromMilliseconds(250);

    /// <summary>How much a replica takes from Redis at once: requests, and tokens (0 when tokens are not limited).</summary>
    internal readonly record struct SliceShape(int Requests, long Tokens)
    {
        public bool IsNone => Requests <= 0;
    }

    /// <summary>
    /// How much a replica takes from Redis at once for this policy: nothing (every admission asks Redis) unless each
    /// limit the key has is at least <see cref="SliceMinimumLimit"/> requests or <see cref="SliceMinimumTokenLimit"/>
    /// tokens per minute; then 1/200 of each limit, at most <see cref="MaxSliceSize"/> requests and
    /// <see cref="MaxTokenSlice"/> tokens. Slices are counted in Redis before they are used, so they never let the
    /// cluster exceed a limit; what a replica holds unused when a minute ends (at most one slice) is used by nobody.
    /// </summary>
    internal static SliceShape SliceSize(RateLimitPolicy policy)
    {
        if (policy.IsUnlimited || policy.RequestsPerMinute < SliceMinimumLimit || policy.TokensPerMinute < SliceMinimumTokenLimit)
        {
            return default;
        }
        return new SliceShape(
            policy.RequestsPerMinute is int rpm ? Math.Min(MaxSliceSize, rpm / 200) : MaxSliceSize,
            policy.TokensPerMinute is int tpm ? Math.Min(MaxTokenSlice, tpm / 200) : 0);
    }

    /// <summary>Admissions this replica answered from a slice, without a Redis round trip.</summary>
    public long SliceAdmissions => Interlocked.Read(ref _sliceAdmissions);

    private long _sliceAdmissions;
    private readonly ConcurrentDictionary<string, SliceHolder> _slices = new(StringComparer.Ordinal);

    /// <summary>Requests (and tokens) Redis counted for this replica ahead of use, valid in one minute of Redis's clock.</summary>
    private sealed class Slice(long window, long validUntil, int requests, long tokens, bool holdsTokens, long remainingRequests, long remainingTokens,
        long elapsedAtGrant, long grantedAt)
    {
        public readonly long Window = window;

        /// <summary>Whether the key's tokens are limited and taken with the slice (else only requests are).</summary>
        public readonly bool HoldsTokens = holdsTokens;
        public readonly long ValidUntil = validUntil;
        public readonly long RemainingRequestsAtGrant = remainingRequests;
        public readonly long RemainingTokensAtGrant = remainingTokens;
        public readonly long ElapsedAtGrant = elapsedAtGrant;
        public readonly long GrantedAt = grantedAt;

        /// <summary>Requests left; only ever decremented (below zero means spent), or emptied at once by a refill.</summary>
        public int Requests = requests;

        /// <summary>
        /// Tokens left when tokens are limited: decreased by admissions, changed by settlements (unused tokens come back),
        /// or emptied at once by a refill (below zero: spent or moved on).
        /// </summary>
        public long Tokens = tokens;
    }

    private sealed class SliceHolder
    {
        public Slice? Current;
        public int Refilling;
    }

    /// <summary>
    /// Admits from the key's slice when it has a request (and the request's tokens) left in the current minute; else
    /// null: the caller asks Redis. What a failed take used up stays counted and unused (the limit is under-used by it).
    /// </summary>
    private RateLimitDecision? TryAdmitFromSlice(string keyId, RateLimitPolicy policy, SliceShape shape, int reserveTokens)
    {
        var holder = _slices.GetOrAdd(keyId, static _ => new SliceHolder());
        var now = _time.GetTimestamp();
        var slice = Volatile.Read(ref holder.Current);
        if (slice is not null && now < slice.ValidUntil && (shape.Tokens == 0 || reserveTokens <= shape.Tokens))
        {
            var left = Interlocked.Decrement(ref slice.Requests);
            var tokensLeft = left >= 0 && shape.Tokens > 0 ? Interlocked.Add(ref slice.Tokens, -reserveTokens) : 0;
            if (left >= 0 && tokensLeft >= 0)
            {
                if (left < shape.Requests / 2 || tokensLeft < shape.Tokens / 2)
                {
                    Refill(keyId, holder, policy, shape);
                }
                Interlocked.Increment(ref _sliceAdmissions);
                var age = _time.GetElapsedTime(slice.GrantedAt, now).TotalMilliseconds;
                var reset = TimeSpan.FromMilliseconds(Math.Max(0, 2 * SlidingWindow.WindowMs - slice.ElapsedAtGrant - age));
                return new RateLimitDecision(true,
                    policy.RequestsPerMinute, policy.RequestsPerMinute is int rpm ? (int)Math.Clamp(slice.RemainingRequestsAtGrant + left, 0, rpm) : null,
                    policy.TokensPerMinute, policy.TokensPerMinute is int tpm ? (int)Math.Clamp(slice.RemainingTokensAtGrant + tokensLeft, 0, tpm) : null,
                    policy.RequestsPerMinute is null ? TimeSpan.Zero : reset, policy.TokensPerMinute is null ? TimeSpan.Zero : reset, TimeSpan.Zero,
                    Degraded: false,
                    // Limited tokens were reserved by the grant: settlement corrects them. Unlimited ones are counted
                    // at settlement (nothing reserved), as the admission script counts them for every request.
                    new RateLimitTicket(keyId, slice.Window, shape.Tokens > 0 ? reserveTokens : 0, Local: false));
            }
        }
        Refill(keyId, holder, policy, shape);
        return null;
    }

    /// <summary>Settlements this replica made against a slice, without a Redis round trip.</summary>
    public long SliceSettlements => Interlocked.Read(ref _sliceSettlements);

    private long _sliceSettlements;

    /// <summary>
    /// Settles against the key's slice when it holds tokens for the ticket's minute: tokens the request did not use go
    /// back into the slice (Redis counted them already, so later admissions here use them instead of counting more), and
    /// tokens it used beyond its reservation come out of the slice when it has them. Either way Redis's count stays at or
    /// above what was used, with no round trip; otherwise (another minute, no slice, not enough in it) the caller settles
    /// in Redis.
    /// </summary>
    private bool TrySettleInSlice(RateLimitTicket ticket, long delta)
    {
        if (!_slices.TryGetValue(ticket.KeyId, out var holder) || Volatile.Read(ref holder.Current) is not { HoldsTokens: true } slice ||
            slice.Window != ticket.Window || _time.GetTimestamp() >= slice.ValidUntil)
        {
            return false;
        }
        if (Interlocked.Add(ref slice.Tokens, -delta) < 0 && delta > 0)
        {
            Interlocked.Add(ref slice.Tokens, delta); // not enough in the slice: Redis counts the excess
            return false;
        }
        Interlocked.Increment(ref _sliceSettlements);
        return true;
    }

    /// <summary>Asks Redis for the key's next slice in the background (one request at a time per key).</summary>
    private void Refill(string keyId, SliceHolder holder, RateLimitPolicy policy, SliceShape shape)
    {
        if (Interlocked.CompareExchange(ref holder.Refilling, 1, 0) == 0)
        {
            _ = RefillAsync(keyId, holder, policy, shape);
        }
    }

    private async Task RefillAsync(string keyId, SliceHolder holder, RateLimitPolicy policy, SliceShape shape)
    {
        try
        {
            if (Database() is not { } db)
            {
                return;
            }
            var sent = _time.GetTimestamp();
            // A top-up: what the current slice still holds is carried over below, so ask only for the difference
            // (asking for a whole slice each time would count far more tokens in Redis than requests use).
            var current = Volatile.Read(ref holder.Current);
            var holding = current is not null && sent < current.ValidUntil;
            var wantRequests = shape.Requests - (holding ? Math.Max(0, Volatile.Read(ref current!.Requests)) : 0);
            var wantTokens = shape.Tokens - (holding ? Math.Max(0, Volatile.Read(ref current!.Tokens)) : 0);
            if (wantRequests <= 0 && wantTokens <= 0)
            {
                return;
            }
            var values = (RedisResult[])(await EvaluateAsync(db, RateLimitScripts.GrantSha1, RateLimitScripts.Grant,
                    [RateLimitScripts.Prefix(keyId)],
                    [policy.RequestsPerMinute ?? -1, policy.TokensPerMinute ?? -1, Math.Max(0, wantRequests), Math.Max(0, wantTokens)])
                .WaitAsync(RedisTimeout, _time).ConfigureAwait(false))!;
            MarkHealthy();
            var requests = (int)(long)values[0];
            var tokens = (long)values[1];
            if (requests <= 0 && tokens <= 0)
            {
                return; // no room left this minute: admissions ask Redis, which refuses them exactly
            }
            var window = (long)values[2];
            var elapsed = (long)values[3];
            // The minute ends 60 000 - elapsed ms after Redis ran the script, which was after `sent`: counting from
            // `sent` ends the slice early, never late.
            var validFor = (SlidingWindow.WindowMs - elapsed) / 1000.0 - SliceGuard.TotalSeconds;
            var validUntil = sent + (long)(validFor * _time.TimestampFrequency);
            var old = Volatile.Read(ref holder.Current);
            if (old is not null && old.Window == window)
            {
                // What the old slice still holds in the same minute moves to the new one (Redis counted it already).
                requests += Math.Max(0, Interlocked.Exchange(ref old.Requests, int.MinValue / 2));
                tokens += Math.Max(0, Interlocked.Exchange(ref old.Tokens, long.MinValue / 2));
            }
            Volatile.Write(ref holder.Current, new Slice(window, validUntil, requests, tokens, shape.Tokens > 0, (long)values[4], (long)values[5], elapsed, sent));
        }
        catch (Exception ex)
        {
            MarkFailed(ex);
        }
        finally
        {
            Volatile.Write(ref holder.Refilling, 0);
        }
    }

    private RateLimitDecision Count(RateLimitDecision decision)
    {
        Interlocked.Increment(ref decision.Allowed ? ref _admitted : ref _rejected);
        if (decision.Degraded)
        {
            Interlocked.Increment(ref _degradedDecisions);
        }
        return decision;
    }

    private static RateLimitDecision FromScript(RedisResult[] values, string keyId, RateLimitPolicy policy, int reserveTokens)
    {
        var allowed = (long)values[0] == 1;
        var requestWait = (long)values[1];
        var tokenWait = (long)values[2];
        var remainingRequests = (long)values[3];
        var remainingTokens = (long)values[4];
        var resetRequests = (long)values[5];
        var resetTokens = (long)values[6];
        var window = (long)values[7];

        var rejection = allowed ? RateLimitRejection.None
            : tokenWait < 0 ? RateLimitRejection.RequestExceedsTokenLimit
            : tokenWait > requestWait ? RateLimitRejection.TokensPerMinute
            : RateLimitRejection.RequestsPerMinute;
        var retry = allowed || tokenWait < 0 ? 0 : Math.Max(requestWait, tokenWait);
        return new RateLimitDecision(
            allowed,
            policy.RequestsPerMinute, policy.RequestsPerMinute is null ? null : (int)Math.Clamp(remainingRequests, 0, int.MaxValue),
            policy.TokensPerMinute, policy.TokensPerMinute is null ? null : (int)Math.Clamp(remainingTokens, 0, int.MaxValue),
            TimeSpan.FromMilliseconds(resetRequests), TimeSpan.FromMilliseconds(resetTokens), TimeSpan.FromMilliseconds(retry),
            Degraded: false,
            new RateLimitTicket(keyId, allowed ? window : -1, reserveTokens, Local: false),
            rejection);
    }

    /// <summary>EVALSHA of the script's precomputed hash; on NOSCRIPT (first use, Redis restarted or flushed) one EVAL loads it.</summary>
    private static async Task<RedisResult> EvaluateAsync(IDatabase db, byte[] sha1, string script, RedisKey[] keys, RedisValue[] args)
    {
        try
        {
            return await db.ScriptEvaluateAsync(sha1, keys, args).ConfigureAwait(false);
        }
        catch (RedisServerException ex) when (ex.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal))
        {
            return await db.ScriptEvaluateAsync(script, keys, args).ConfigureAwait(false);
        }
    }

    /// <summary>The database to use now, or null when the decision must be local (no multiplexer, not connected, backing off).</summary>
    private IDatabase? Database()
    {
        var now = _time.GetTimestamp();
        if (now < Volatile.Read(ref _redisSkipUntil))
        {
            return null;
        }
        var redis = _redis ?? Resolve(now);
        if (redis is null || !redis.IsConnected)
        {
            MarkUnavailable(redis is null ? "no Redis connection is configured" : "Redis is not connected");
            return null;
        }
        return redis.GetDatabase();
    }

    private IConnectionMultiplexer? Resolve(long now)
    {
        if (now < Volatile.Read(ref _resolveAfter))
        {
            return null;
        }
        try
        {
            var redis = _services.GetService(typeof(IConnectionMultiplexer)) as IConnectionMultiplexer;
            if (redis is not null)
            {
                _redis = redis;
                return redis;
            }
        }
        catch (Exception ex)
        {
            LogResolveFailed(ex);
        }
        Volatile.Write(ref _resolveAfter, now + (long)(ResolveRetryInterval.TotalSeconds * _time.TimestampFrequency));
        return null;
    }

    private void MarkHealthy()
    {
        if (Interlocked.Exchange(ref _degraded, 0) == 1)
        {
            LogRecovered();
        }
    }

    private void MarkUnavailable(string reason)
    {
        if (Interlocked.Exchange(ref _degraded, 1) == 0)
        {
            LogDegraded(reason);
        }
    }

    private void MarkFailed(Exception ex)
    {
        var until = _time.GetTimestamp() + (long)(RedisRetryInterval.TotalSeconds * _time.TimestampFrequency);
        Volatile.Write(ref _redisSkipUntil, until);
        if (Interlocked.Exchange(ref _degraded, 1) == 0)
        {
            LogDegradedAfterError(ex, ex is TimeoutException ? $"no answer within {RedisTimeout.TotalMilliseconds} ms" : ex.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Rate limits are enforced per replica (degraded): {Reason}")]
    private partial void LogDegraded(string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Rate limits are enforced per replica (degraded): {Reason}")]
    private partial void LogDegradedAfterError(Exception ex, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Rate limits are enforced cluster-wide through Redis again")]
    private partial void LogRecovered();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Resolving the Redis connection for rate limiting failed")]
    private partial void LogResolveFailed(Exception ex);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Rate limit settlement of {Delta} tokens for key {KeyId} failed")]
    private partial void LogSettlementFailed(Exception ex, string keyId, long delta);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Rate limit settlement of {Delta} tokens for key {KeyId} skipped: Redis unavailable")]
    private partial void LogSettlementSkipped(string keyId, long delta);
}
