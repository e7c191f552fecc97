using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using HelixAgent.Api.Gateway;
using HelixAgent.Data;

namespace HelixAgent.Api.Access;

/// <summary>
/// Whole nano-dollars: how the gateway counts spend in Redis (an integer there, exact in Lua's doubles up to
/// <see cref="Budget.MaxUsd"/>). Reservations and seeds round up, so the count is never below the decimal spend.
/// </summary>
public static class Nano
{
    public const decimal PerUsd = 1_000_000_000m;

    public static long FromUsd(decimal usd) => usd <= 0 ? 0 : (long)Math.Ceiling(usd * PerUsd);

    public static decimal ToUsd(long nano) => nano / PerUsd;
}

/// <summary>
/// One budget a request is held to: the key's own (all versions of its name) or its team's, in the period holding
/// <c>now</c>. <see cref="Counter"/> is its Redis counter of nano-dollars spent and reserved in that period.
/// </summary>
public sealed record BudgetLine(BudgetScope Scope, string Name, Budget Budget, string Counter, long LimitNano, long TtlMs, DateTimeOffset? ResetsAt)
{
    public string ScopeName => Scope == BudgetScope.Key ? "key" : "team";
}

/// <summary>
/// The budgets a request is admitted against and what it reserves: its worst-case cost in nano-dollars. Every Redis
/// key of one check (the key's rate-limit buckets and the counters) shares one hash tag, <see cref="Tag"/> (its team,
/// else its key name), so one script reads and counts them all atomically on a Redis Cluster too.
/// </summary>
public sealed record BudgetCheck(string Tag, IReadOnlyList<BudgetLine> Lines, long ReserveNano)
{
    public const string CounterPrefix = "helixagent:budget:";

    /// <summary>The budgets that apply to <paramref name="key"/>, or null when neither it nor its team has one.</summary>
    public static BudgetCheck? For(ApiKeyInfo key, decimal reserveUsd, DateTimeOffset now)
    {
        if (key.Budget is null && key.TeamBudget is null)
        {
            return null;
        }
        var tag = key.Team is { } team ? "t:" + team : "k:" + key.Name;
        var lines = new List<BudgetLine>(2);
        if (key.Budget is { } own)
        {
            lines.Add(Line(BudgetScope.Key, key.Name, own, $"{CounterPrefix}{{{tag}}}:k:{key.Name}:{own.PeriodId(now)}", now));
        }
        if (key.TeamBudget is { } shared && key.Team is { } teamName)
        {
            lines.Add(Line(BudgetScope.Team, teamName, shared, $"{CounterPrefix}{{{tag}}}:t:{shared.PeriodId(now)}", now));
        }
        return new BudgetCheck(tag, lines, Nano.FromUsd(reserveUsd));
    }

    private static BudgetLine Line(BudgetScope scope, string name, Budget budget, string counter, DateTimeOffset now)
    {
        var resets = budget.ResetsAt(now);
        // A period's counter outlives its period by a day (a settlement of a request that crossed midnight still finds
        // it); a total budget's never expires.
        var ttl = resets is { } r ? (long)(r - now + TimeSpan.FromDays(1)).TotalMilliseconds : 0;
        return new BudgetLine(scope, name, budget, counter, Nano.FromUsd(budget.Usd), ttl, resets);
    }
}

/// <summary>What the admission script said about a request's budgets: each counter's value, and which one refused (-1: none).</summary>
public sealed record BudgetOutcome(BudgetCheck Check, long[] SpentNano, int Over)
{
    public BudgetLine? OverLine => Over >= 0 ? Check.Lines[Over] : null;

    /// <summary>The sentence of the 429: whose budget, how much, what was spent, what this request may cost, when it resets.</summary>
    public string Reason()
    {
        var line = OverLine!;
        var spent = Nano.ToUsd(SpentNano[Over]);
        var resets = line.ResetsAt is { } r ? $"It resets at {r.UtcDateTime:yyyy-MM-ddTHH:mm:ssZ}." : "It is a total budget and does not reset.";
        var raise = line.Scope == BudgetScope.Key ? $"helixagent keys update --name {line.Name} --budget <usd>" : $"helixagent teams update --name {line.Name} --budget <usd>";
        return $"Budget exceeded for {line.ScopeName} '{line.Name}': {Budget.FormatUsd(spent)} of {line.Budget} spent or reserved, and this request may cost up to "
            + $"{Budget.FormatUsd(Nano.ToUsd(Check.ReserveNano))} USD. {resets} An operator can raise it with: {raise}";
    }
}

/// <summary>
/// What a ticket holds against budgets: the counters and the nano-dollars reserved on them, settled with the actual
/// cost when the request ends. <see cref="Local"/> when this replica admitted it alone (Redis unreachable).
/// </summary>
public sealed record BudgetHold(string Prefix, BudgetLine[] Lines, long ReservedNano, bool Local);

/// <summary>
/// What this replica last knew of every budget it admitted against: the counter's value in Redis, and what it admitted
/// alone since (while Redis was unreachable, to be added to Redis when it is back). Feeds
/// <c>helixagent_budget_remaining_usd</c> and <c>helixagent_budget_limit_usd</c> for the 50 budgets nearest their limit.
/// </summary>
public sealed class BudgetBook
{
    /// <summary>The most budgets the gauges report (bounded cardinality): the nearest to their limit.</summary>
    public const int GaugeLimit = 50;

    private sealed class Entry(BudgetLine line)
    {
        public BudgetLine Line = line;
        public long KnownNano;
        public bool Known;
        /// <summary>Admitted (reserved, then settled) by this replica alone, not yet in Redis.</summary>
        public long PendingNano;
    }

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    /// <summary>One lock for every entry's amounts: a local admission reads and reserves on all its lines at once.</summary>
    private readonly Lock _gate = new();

    private Entry Of(BudgetLine line)
    {
        var entry = _entries.GetOrAdd(line.Counter, static (_, l) => new Entry(l), line);
        entry.Line = line;
        return entry;
    }

    /// <summary>Redis said the counter is at <paramref name="spentNano"/>, <paramref name="applied"/> of this replica's pending amount included.</summary>
    public void Observe(BudgetLine line, long spentNano, long applied = 0)
    {
        var e = Of(line);
        lock (_gate)
        {
            e.KnownNano = spentNano;
            e.Known = true;
            e.PendingNano -= applied;
        }
    }

    /// <summary>The counter was rebuilt from the ledger, which holds what was admitted alone: nothing is pending any more.</summary>
    public void Rebuilt(BudgetLine line, long spentNano)
    {
        var e = Of(line);
        lock (_gate)
        {
            e.KnownNano = spentNano;
            e.Known = true;
            e.PendingNano = 0;
        }
    }

    public long Pending(BudgetLine line)
    {
        if (!_entries.TryGetValue(line.Counter, out var e))
        {
            return 0;
        }
        lock (_gate)
        {
            return e.PendingNano;
        }
    }

    public bool Knows(BudgetLine line) => _entries.TryGetValue(line.Counter, out var e) && e.Known;

    /// <summary>
    /// Admits alone while Redis is unreachable: each of <paramref name="replicas"/> live replicas may spend its share of
    /// what remained when it last heard from Redis. Returns the index of the budget that refuses, or -1 (reserved).
    /// </summary>
    public int AdmitLocal(BudgetCheck check, int replicas, long[] spent)
    {
        var entries = check.Lines.Select(Of).ToArray();
        lock (_gate)
        {
            for (var i = 0; i < entries.Length; i++)
            {
                var e = entries[i];
                var share = Math.Max(0, e.Line.LimitNano - e.KnownNano) / Math.Max(1, replicas);
                spent[i] = e.KnownNano + e.PendingNano;
                if (e.PendingNano + check.ReserveNano > share)
                {
                    return i;
                }
            }
            foreach (var e in entries)
            {
                e.PendingNano += check.ReserveNano;
            }
            return -1;
        }
    }

    /// <summary>A locally admitted request ended: its pending amount becomes its actual cost.</summary>
    public void SettleLocal(BudgetLine[] lines, long delta)
    {
        lock (_gate)
        {
            foreach (var line in lines)
            {
                var e = Of(line);
                e.PendingNano = Math.Max(0, e.PendingNano + delta);
            }
        }
    }

    internal IEnumerable<Measurement<double>> Remaining() => Nearest().Select(e => new Measurement<double>(
        (double)Nano.ToUsd(Math.Max(0, e.Line.LimitNano - e.KnownNano - e.PendingNano)),
        new KeyValuePair<string, object?>("scope", e.Line.ScopeName), new KeyValuePair<string, object?>("name", e.Line.Name)));

    internal IEnumerable<Measurement<double>> Limits() => Nearest().Select(e => new Measurement<double>((double)e.Line.Budget.Usd,
        new KeyValuePair<string, object?>("scope", e.Line.ScopeName), new KeyValuePair<string, object?>("name", e.Line.Name)));

    private IEnumerable<Entry> Nearest()
    {
        // One series per budget: a period's counter replaces the previous period's (same scope and name).
        var now = DateTimeOffset.UtcNow;
        return _entries.Values.Where(e => e.Known && (e.Line.ResetsAt is null || e.Line.ResetsAt > now))
            .GroupBy(e => (e.Line.Scope, e.Line.Name)).Select(g => g.MaxBy(e => e.Line.Counter)!)
            .OrderBy(e => e.Line.LimitNano == 0 ? 0 : (double)(e.Line.LimitNano - e.KnownNano - e.PendingNano) / e.Line.LimitNano)
            .Take(GaugeLimit).ToList();
    }
}

internal static class BudgetReserve
{
    private const decimal Million = 1_000_000m;

    /// <summary>
    /// A request's worst-case cost: the prompt estimate at the higher of the input and cache-write prices plus the
    /// completion allowance at the output price, for the most expensive target it may be served by (failover), or for
    /// every member an ensemble asks. A target without a price counts 0 (its cost is unknown: NULL in the ledger).
    /// </summary>
    public static decimal Usd(PriceTable prices, ModelRoute route, bool ensemble, int promptTokens, int completionTokens)
    {
        decimal total = 0, most = 0;
        foreach (var target in route.Targets)
        {
            if (prices.For(target) is not { } p)
            {
                continue;
            }
            var cost = (promptTokens * Math.Max(p.InputPerMTok, p.CacheWritePerMTok ?? 0) + completionTokens * p.OutputPerMTok) / Million;
            total += cost;
            most = Math.Max(most, cost);
        }
        return ensemble ? total : most;
    }
}

/// <summary>
/// Counts the live replicas through Redis: each writes its heartbeat every 10 s into one sorted set and counts the
/// members heard from in the last 30 s. While Redis is unreachable, the last count stands: each replica then spends
/// its share (1/count) of a budget's remainder alone.
/// </summary>
public sealed partial class ReplicaHeartbeat(IServiceProvider services, ILogger<ReplicaHeartbeat> logger) : BackgroundService
{
    public const string Key = "helixagent:replicas";
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
    private readonly string _id = Guid.NewGuid().ToString("N");
    private int _live = 1;
    private StackExchange.Redis.IConnectionMultiplexer? _redis;

    /// <summary>Replicas heard from in the last 30 s (this one included), as last counted; 1 before the first count.</summary>
    public int LiveReplicas => Volatile.Read(ref _live);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var redis = _redis = services.GetService(typeof(StackExchange.Redis.IConnectionMultiplexer)) as StackExchange.Redis.IConnectionMultiplexer;
        if (redis is null)
        {
            return;
        }
        using var timer = new PeriodicTimer(Interval);
        do
        {
            try
            {
                var db = redis.GetDatabase();
                var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                var tx = db.CreateTransaction();
                _ = tx.SortedSetAddAsync(Key, _id, now);
                _ = tx.SortedSetRemoveRangeByScoreAsync(Key, double.NegativeInfinity, now - 30_000);
                var count = tx.SortedSetLengthAsync(Key);
                _ = tx.KeyExpireAsync(Key, TimeSpan.FromMinutes(5));
                await tx.ExecuteAsync().WaitAsync(TimeSpan.FromSeconds(2), stoppingToken);
                Volatile.Write(ref _live, (int)Math.Max(1, await count));
            }
            catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
            {
                LogHeartbeatFailed(ex.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    /// <summary>A replica that stops leaves the count at once (a rolling restart does not leave others with a smaller share for 30 s).</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        if (_redis is { IsConnected: true } redis)
        {
            try
            {
                await redis.GetDatabase().SortedSetRemoveAsync(Key, _id).WaitAsync(TimeSpan.FromSeconds(1), cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                LogHeartbeatFailed(ex.Message);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Replica heartbeat failed: {Reason}")]
    private partial void LogHeartbeatFailed(string reason);
}
