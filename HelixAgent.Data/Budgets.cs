using System.Globalization;
using Npgsql;

namespace HelixAgent.Data;

/// <summary>
/// An amount in USD (exact decimals) a key or a team may spend per period: <c>daily</c> or <c>monthly</c> (calendar
/// periods in UTC) or <c>total</c> (never resets).
/// </summary>
public sealed record Budget(decimal Usd, string Period)
{
    public static readonly string[] Periods = ["daily", "monthly", "total"];

    /// <summary>The most a budget may be: the gateway counts spend in Redis as whole nano-dollars in a double-exact range.</summary>
    public const decimal MaxUsd = 1_000_000m;

    /// <summary>A budget from its parts, or the sentence saying what is wrong with them.</summary>
    public static Budget Create(decimal usd, string? period)
    {
        period ??= "monthly";
        if (!Periods.Contains(period))
        {
            throw new ApiKeyException($"invalid budget period '{Echo.Clip(period)}': use daily, monthly or total");
        }
        if (usd < 0 || usd > MaxUsd || decimal.Round(usd, 10) != usd)
        {
            throw new ApiKeyException($"invalid budget {usd.ToString(CultureInfo.InvariantCulture)}: use an amount in USD from 0 to {MaxUsd.ToString(CultureInfo.InvariantCulture)} with at most 10 decimals");
        }
        return new Budget(usd, period);
    }

    /// <summary>When the period holding <paramref name="now"/> began (the Unix epoch for <c>total</c>: every row counts).</summary>
    public DateTimeOffset PeriodStart(DateTimeOffset now)
    {
        var utc = now.ToUniversalTime();
        return Period switch
        {
            "daily" => new DateTimeOffset(utc.Year, utc.Month, utc.Day, 0, 0, 0, TimeSpan.Zero),
            "monthly" => new DateTimeOffset(utc.Year, utc.Month, 1, 0, 0, 0, TimeSpan.Zero),
            _ => DateTimeOffset.UnixEpoch,
        };
    }

    /// <summary>When the period holding <paramref name="now"/> ends and the spend starts from 0 again; null for <c>total</c>.</summary>
    public DateTimeOffset? ResetsAt(DateTimeOffset now) => Period switch
    {
        "daily" => PeriodStart(now).AddDays(1),
        "monthly" => PeriodStart(now).AddMonths(1),
        _ => null,
    };

    /// <summary>The period's name in counter keys: <c>d20261204</c>, <c>m202612</c> or <c>t</c>.</summary>
    public string PeriodId(DateTimeOffset now) => Period switch
    {
        "daily" => "d" + now.ToUniversalTime().ToString("yyyyMMdd", CultureInfo.InvariantCulture),
        "monthly" => "m" + now.ToUniversalTime().ToString("yyyyMM", CultureInfo.InvariantCulture),
        _ => "t",
    };

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{FormatUsd(Usd)} USD {Period}");

    /// <summary>An amount as people read it: invariant, no exponent, no trailing zeros.</summary>
    public static string FormatUsd(decimal usd) => (usd / 1.0000000000m).ToString("0.##########", CultureInfo.InvariantCulture);
}

/// <summary>Whose budget: a key (all versions of one key name) or a team.</summary>
public enum BudgetScope
{
    Key,
    Team,
}

/// <summary>
/// What a key or team has spent in the current period, from <c>completions</c> (the record: Redis only keeps running
/// counters, rebuilt from this sum when it has none). Rows of unpriced requests (cost NULL) count 0.
/// </summary>
public static class BudgetLedger
{
    public static async Task<decimal> SpentAsync(NpgsqlDataSource db, BudgetScope scope, string name, Budget budget, DateTimeOffset now, CancellationToken ct = default)
    {
        await using var cmd = db.CreateCommand(scope == BudgetScope.Key
            ? "SELECT coalesce(sum(cost_usd), 0) FROM completions WHERE key_name = $1 AND created_at >= $2 AND cost_usd IS NOT NULL"
            : "SELECT coalesce(sum(cost_usd), 0) FROM completions WHERE team = $1 AND created_at >= $2 AND cost_usd IS NOT NULL");
        cmd.Parameters.AddWithValue(name);
        cmd.Parameters.AddWithValue(budget.PeriodStart(now));
        return (decimal)(await cmd.ExecuteScalarAsync(ct))!;
    }
}

/// <summary>A team: a name keys belong to, with an optional budget over all of them.</summary>
public sealed record TeamInfo(Guid Id, string Name, Budget? Budget, DateTimeOffset CreatedAt, int Keys);

/// <summary>Teams in <c>teams</c>: created, changed and listed by the CLI and the admin API.</summary>
public sealed class TeamStore(NpgsqlDataSource db)
{
    public async Task<TeamInfo> CreateAsync(string name, Budget? budget, DateTimeOffset now, CancellationToken ct = default)
    {
        ApiKeyStore.ValidateName(name, "team");
        await using var cmd = db.CreateCommand(
            "INSERT INTO teams (id, name, budget_usd, budget_period, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING");
        var id = Guid.CreateVersion7();
        cmd.Parameters.AddWithValue(id);
        cmd.Parameters.AddWithValue(name);
        cmd.Parameters.Add(new NpgsqlParameter<decimal?> { TypedValue = budget?.Usd, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Numeric });
        cmd.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = budget?.Period, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        cmd.Parameters.AddWithValue(now);
        if (await cmd.ExecuteNonQueryAsync(ct) == 0)
        {
            throw new ApiKeyException($"a team named '{name}' exists already (change it with: helixagent teams update --name {name})");
        }
        return new TeamInfo(id, name, budget, now, 0);
    }

    /// <summary>
    /// Sets (or with null clears) the team's budget. Returns the hashes of its keys: every replica's key cache must drop
    /// them, as on a revocation, so the new budget applies at once.
    /// </summary>
    public async Task<(TeamInfo Team, IReadOnlyList<byte[]> KeyHashes)> UpdateBudgetAsync(string name, Budget? budget, CancellationToken ct = default)
    {
        ApiKeyStore.ValidateName(name, "team");
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand("UPDATE teams SET budget_usd = $2, budget_period = $3 WHERE name = $1 RETURNING id, created_at", conn);
        cmd.Parameters.AddWithValue(name);
        cmd.Parameters.Add(new NpgsqlParameter<decimal?> { TypedValue = budget?.Usd, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Numeric });
        cmd.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = budget?.Period, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        Guid id;
        DateTimeOffset created;
        await using (var r = await cmd.ExecuteReaderAsync(ct))
        {
            if (!await r.ReadAsync(ct))
            {
                throw new ApiKeyException($"no team named '{Echo.Clip(name)}' (create it with: helixagent teams create --name {Echo.Clip(name)})");
            }
            id = r.GetGuid(0);
            created = r.GetFieldValue<DateTimeOffset>(1);
        }
        var hashes = new List<byte[]>();
        await using (var keys = new NpgsqlCommand("SELECT key_hash FROM api_keys WHERE team_id = $1", conn))
        {
            keys.Parameters.AddWithValue(id);
            await using var r = await keys.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct))
            {
                hashes.Add(r.GetFieldValue<byte[]>(0));
            }
        }
        return (new TeamInfo(id, name, budget, created, hashes.Count), hashes);
    }

    public async Task<IReadOnlyList<TeamInfo>> ListAsync(CancellationToken ct = default)
    {
        await using var cmd = db.CreateCommand("""
            SELECT t.id, t.name, t.budget_usd, t.budget_period, t.created_at,
                   (SELECT count(*) FROM api_keys k WHERE k.team_id = t.id AND k.revoked_at IS NULL)::int
            FROM teams t ORDER BY t.name
            """);
        var list = new List<TeamInfo>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
        {
            list.Add(new TeamInfo(r.GetGuid(0), r.GetString(1),
                r.IsDBNull(2) ? null : new Budget(r.GetDecimal(2), r.GetString(3)), r.GetFieldValue<DateTimeOffset>(4), r.GetInt32(5)));
        }
        return list;
    }
}
