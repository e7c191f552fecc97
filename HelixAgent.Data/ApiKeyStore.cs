using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Npgsql;

namespace HelixAgent.Data;

/// <summary>A stored key, without its secret.</summary>
public sealed record ApiKeyInfo(
    Guid Id,
    string Name,
    string Prefix,
    string Scope,
    DateTimeOffset CreatedAt,
    DateTimeOffset? ExpiresAt,
    DateTimeOffset? RevokedAt,
    Guid? RotatedFrom,
    int? RpmLimit,
    int? TpmLimit,
    string[]? AllowedModels,
    Budget? Budget = null,
    string? Team = null,
    Budget? TeamBudget = null)
{
    /// <summary><c>active</c>, <c>expiring</c> (rotated, in its grace period), <c>expired</c> or <c>revoked</c>.</summary>
    public string StatusAt(DateTimeOffset now) =>
        RevokedAt is not null ? "revoked"
        : ExpiresAt is { } e && e <= now ? "expired"
        : ExpiresAt is not null ? "expiring"
        : "active";

    public bool IsUsableAt(DateTimeOffset now) => RevokedAt is null && (ExpiresAt is null || ExpiresAt > now);
}

/// <summary>A key just issued: the secret is shown once and never stored.</summary>
public sealed record IssuedKey(string Secret, ApiKeyInfo Info);

public sealed class ApiKeyException(string message) : Exception(message);

/// <summary>
/// API keys in <c>api_keys</c>. A key is <c>hxa_</c> + 43 characters of base64url randomness (256 bits); only its
/// SHA-256 is stored (high-entropy secrets need no slow hash), with a short prefix for people to recognise it.
/// Used by the <c>helixagent keys</c> CLI, the admin API and the API's authentication.
/// </summary>
public sealed partial class ApiKeyStore(NpgsqlDataSource db)
{
    public const string SecretPrefix = "hxa_";
    public static readonly string[] Scopes = ["client", "admin"];

    public static string NewSecret() =>
        SecretPrefix + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public static byte[] Hash(string secret) => SHA256.HashData(Encoding.UTF8.GetBytes(secret));

    /// <summary>Shape check before any lookup: <c>hxa_</c> plus base64url characters, bounded length.</summary>
    public static bool LooksLikeKey(string? presented) => presented is not null && KeyShape().IsMatch(presented);

    public static void ValidateName(string name, string what = "key")
    {
        if (!NameShape().IsMatch(name))
        {
            throw new ApiKeyException($"invalid {what} name '{Echo.Clip(name)}': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit");
        }
    }

    public async Task<IssuedKey> CreateAsync(string name, string scope, int? rpm, int? tpm, string[]? models, DateTimeOffset? expiresAt,
        DateTimeOffset now, CancellationToken ct = default, string? team = null, Budget? budget = null)
    {
        ValidateName(name);
        if (!Scopes.Contains(scope))
        {
            throw new ApiKeyException($"invalid scope '{Echo.Clip(scope)}': use client or admin");
        }
        if (rpm is <= 0 || tpm is <= 0)
        {
            throw new ApiKeyException("limits must be positive numbers");
        }
        await using var conn = await db.OpenConnectionAsync(ct);
        var teamId = team is null ? null : await TeamIdAsync(conn, null, team, ct);
        var issued = await InsertAsync(conn, null, name, scope, rpm, tpm, models, expiresAt, null, now, ct, teamId, budget);
        return teamId is { } tid ? issued with { Info = issued.Info with { Team = team, TeamBudget = await TeamBudgetAsync(conn, tid, ct) } } : issued;
    }

    /// <summary>What <see cref="UpdateAsync"/> changes; a null field stays as it is.</summary>
    public sealed record KeyChanges(string? Team = null, bool LeaveTeam = false, Budget? Budget = null, bool ClearBudget = false, int? Rpm = null, int? Tpm = null);

    /// <summary>
    /// Changes the team, budget or limits of every unrevoked key of that name (all versions of a rotated key share them).
    /// Returns the keys as they are now, with their hashes: every replica's key cache must drop them, as on a revocation.
    /// </summary>
    public async Task<IReadOnlyList<(ApiKeyInfo Key, byte[] Hash)>> UpdateAsync(string name, KeyChanges changes, CancellationToken ct = default)
    {
        ValidateName(name);
        if (changes.Rpm is <= 0 || changes.Tpm is <= 0)
        {
            throw new ApiKeyException("limits must be positive numbers");
        }
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var teamId = changes.Team is { } team ? await TeamIdAsync(conn, tx, team, ct) : null;
        await using (var cmd = new NpgsqlCommand("""
            UPDATE api_keys SET
                team_id = CASE WHEN $2 THEN NULL WHEN $3::uuid IS NOT NULL THEN $3 ELSE team_id END,
                budget_usd = CASE WHEN $4 THEN NULL WHEN $5::numeric IS NOT NULL THEN $5 ELSE budget_usd END,
                budget_period = CASE WHEN $4 THEN NULL WHEN $5::numeric IS NOT NULL THEN $6 ELSE budget_period END,
                rpm_limit = coalesce($7, rpm_limit),
                tpm_limit = coalesce($8, tpm_limit)
            WHERE name = $1 AND revoked_at IS NULL
            """, conn, tx))
        {
            cmd.Parameters.AddWithValue(name);
            cmd.Parameters.AddWithValue(changes.LeaveTeam);
            cmd.Parameters.Add(new NpgsqlParameter<Guid?> { TypedValue = teamId, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Uuid });
            cmd.Parameters.AddWithValue(changes.ClearBudget);
            cmd.Parameters.Add(new NpgsqlParameter<decimal?> { TypedValue = changes.Budget?.Usd, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Numeric });
            cmd.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = changes.Budget?.Period, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
            cmd.Parameters.Add(new NpgsqlParameter<int?> { TypedValue = changes.Rpm, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
            cmd.Parameters.Add(new NpgsqlParameter<int?> { TypedValue = changes.Tpm, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
            if (await cmd.ExecuteNonQueryAsync(ct) == 0)
            {
                throw new ApiKeyException($"no unrevoked key named '{name}' (create one with: helixagent keys create --name {name})");
            }
        }
        var updated = new List<(ApiKeyInfo, byte[])>();
        await using (var cmd = new NpgsqlCommand($"SELECT {Columns}, k.key_hash FROM {Joined} WHERE k.name = $1 AND k.revoked_at IS NULL ORDER BY k.created_at", conn, tx))
        {
            cmd.Parameters.AddWithValue(name);
            await using var r = await cmd.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct))
            {
                updated.Add((Read(r), r.GetFieldValue<byte[]>(HashColumn)));
            }
        }
        await tx.CommitAsync(ct);
        return updated;
    }

    private static async Task<Guid?> TeamIdAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, string team, CancellationToken ct)
    {
        ValidateName(team, "team");
        await using var cmd = new NpgsqlCommand("SELECT id FROM teams WHERE name = $1", conn, tx);
        cmd.Parameters.AddWithValue(team);
        return await cmd.ExecuteScalarAsync(ct) is Guid id ? id
            : throw new ApiKeyException($"no team named '{Echo.Clip(team)}' (create it with: helixagent teams create --name {Echo.Clip(team)})");
    }

    private static async Task<Budget?> TeamBudgetAsync(NpgsqlConnection conn, Guid teamId, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("SELECT budget_usd, budget_period FROM teams WHERE id = $1", conn);
        cmd.Parameters.AddWithValue(teamId);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        return await r.ReadAsync(ct) && !r.IsDBNull(0) ? new Budget(r.GetDecimal(0), r.GetString(1)) : null;
    }

    /// <summary>
    /// Issues a new key for <paramref name="name"/> with the same scope and limits; every usable key of that name keeps
    /// working until now + <paramref name="grace"/> (or its own earlier expiry), then stops.
    /// </summary>
    /// The retiring keys come with their hashes: their expiry changed, so every replica's key cache must drop them (as a
    /// revocation does), or a cached key would outlive a short grace by the cache's lifetime.
    public async Task<(IssuedKey New, IReadOnlyList<(ApiKeyInfo Key, byte[] Hash)> Retiring)> RotateAsync(string name, TimeSpan grace, DateTimeOffset now, CancellationToken ct = default)
    {
        ValidateName(name);
        if (grace < TimeSpan.Zero)
        {
            throw new ApiKeyException("grace must not be negative");
        }
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        var usable = new List<(ApiKeyInfo Key, byte[] Hash)>();
        Guid? teamId = null;
        await using (var cmd = new NpgsqlCommand(
            $"SELECT {Columns}, k.key_hash, k.team_id FROM {Joined} WHERE k.name = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2) ORDER BY k.created_at DESC FOR UPDATE OF k", conn, tx))
        {
            cmd.Parameters.AddWithValue(name);
            cmd.Parameters.AddWithValue(now);
            await using var r = await cmd.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct))
            {
                usable.Add((Read(r), r.GetFieldValue<byte[]>(HashColumn)));
                teamId ??= r.IsDBNull(HashColumn + 1) ? null : r.GetGuid(HashColumn + 1);
            }
        }
        if (usable.Count == 0)
        {
            throw new ApiKeyException($"no usable key named '{name}' to rotate (create one with: helixagent keys create --name {name})");
        }
        var newest = usable[0].Key;
        var until = now + grace;
        await using (var cmd = new NpgsqlCommand(
            "UPDATE api_keys SET expires_at = LEAST(coalesce(expires_at, 'infinity'::timestamptz), $2) WHERE id = ANY($1)", conn, tx))
        {
            cmd.Parameters.AddWithValue(usable.Select(k => k.Key.Id).ToArray());
            cmd.Parameters.AddWithValue(until);
            await cmd.ExecuteNonQueryAsync(ct);
        }
        var issued = await InsertAsync(conn, tx, name, newest.Scope, newest.RpmLimit, newest.TpmLimit, newest.AllowedModels, null, newest.Id, now, ct,
            teamId, newest.Budget);
        issued = issued with { Info = issued.Info with { Team = newest.Team, TeamBudget = newest.TeamBudget } };
        await tx.CommitAsync(ct);
        var retiring = usable.Select(k => (k.Key with { ExpiresAt = k.Key.ExpiresAt is { } e && e < until ? e : until }, k.Hash)).ToList();
        return (issued, retiring);
    }

    /// <summary>Revokes every unrevoked key of that name (or the one with that id); returns their hashes for cache eviction.</summary>
    public async Task<IReadOnlyList<(ApiKeyInfo Key, byte[] Hash)>> RevokeAsync(string nameOrId, DateTimeOffset now, CancellationToken ct = default)
    {
        var byId = Guid.TryParse(nameOrId, out var id);
        if (!byId)
        {
            ValidateName(nameOrId);
        }
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand(
            $"WITH k AS (UPDATE api_keys SET revoked_at = $2 WHERE {(byId ? "id = $1" : "name = $1")} AND revoked_at IS NULL RETURNING *) SELECT {Columns}, k.key_hash FROM k LEFT JOIN teams t ON t.id = k.team_id", conn);
        if (byId)
        {
            cmd.Parameters.AddWithValue(id);
        }
        else
        {
            cmd.Parameters.AddWithValue(nameOrId);
        }
        cmd.Parameters.AddWithValue(now);
        var list = new List<(ApiKeyInfo, byte[])>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
        {
            list.Add((Read(r), r.GetFieldValue<byte[]>(HashColumn)));
        }
        if (list.Count == 0)
        {
            throw new ApiKeyException($"no unrevoked key '{Echo.Clip(nameOrId)}'");
        }
        return list;
    }

    public async Task<IReadOnlyList<ApiKeyInfo>> ListAsync(CancellationToken ct = default)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var cmd = new NpgsqlCommand($"SELECT {Columns} FROM {Joined} ORDER BY k.name, k.created_at", conn);
        var list = new List<ApiKeyInfo>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
        {
            list.Add(Read(r));
        }
        return list;
    }

    public async Task<ApiKeyInfo?> FindByHashAsync(byte[] hash, CancellationToken ct = default)
    {
        await using var cmd = db.CreateCommand($"SELECT {Columns} FROM {Joined} WHERE k.key_hash = $1");
        cmd.Parameters.AddWithValue(hash);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        return await r.ReadAsync(ct) ? Read(r) : null;
    }

    private const string Columns = "k.id, k.name, k.key_prefix, k.scope, k.created_at, k.expires_at, k.revoked_at, k.rotated_from, k.rpm_limit, k.tpm_limit, "
        + "k.allowed_models, k.budget_usd, k.budget_period, t.name, t.budget_usd, t.budget_period";

    /// <summary>Where <see cref="Columns"/> come from: the key and its team.</summary>
    private const string Joined = "api_keys k LEFT JOIN teams t ON t.id = k.team_id";

    /// <summary>The column after <see cref="Columns"/>, where a query that needs it puts <c>key_hash</c>.</summary>
    private const int HashColumn = 16;

    private static async Task<IssuedKey> InsertAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, string name, string scope, int? rpm, int? tpm,
        string[]? models, DateTimeOffset? expiresAt, Guid? rotatedFrom, DateTimeOffset now, CancellationToken ct, Guid? teamId = null, Budget? budget = null)
    {
        var secret = NewSecret();
        var info = new ApiKeyInfo(Guid.CreateVersion7(), name, secret[..12], scope, now, expiresAt, null, rotatedFrom, rpm, tpm,
            models is { Length: > 0 } ? models : null, budget);
        await using var cmd = new NpgsqlCommand("""
            INSERT INTO api_keys (id, name, key_prefix, key_hash, scope, created_at, expires_at, rotated_from, rpm_limit, tpm_limit, allowed_models,
                                  team_id, budget_usd, budget_period)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            """, conn, tx);
        cmd.Parameters.AddWithValue(info.Id);
        cmd.Parameters.AddWithValue(info.Name);
        cmd.Parameters.AddWithValue(info.Prefix);
        cmd.Parameters.AddWithValue(Hash(secret));
        cmd.Parameters.AddWithValue(info.Scope);
        cmd.Parameters.AddWithValue(now);
        cmd.Parameters.Add(new NpgsqlParameter<DateTimeOffset?> { TypedValue = expiresAt, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.TimestampTz });
        cmd.Parameters.Add(new NpgsqlParameter<Guid?> { TypedValue = rotatedFrom, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Uuid });
        cmd.Parameters.Add(new NpgsqlParameter<int?> { TypedValue = rpm, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
        cmd.Parameters.Add(new NpgsqlParameter<int?> { TypedValue = tpm, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Integer });
        cmd.Parameters.Add(new NpgsqlParameter<string[]?> { TypedValue = info.AllowedModels, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Array | NpgsqlTypes.NpgsqlDbType.Text });
        cmd.Parameters.Add(new NpgsqlParameter<Guid?> { TypedValue = teamId, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Uuid });
        cmd.Parameters.Add(new NpgsqlParameter<decimal?> { TypedValue = budget?.Usd, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Numeric });
        cmd.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = budget?.Period, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        await cmd.ExecuteNonQueryAsync(ct);
        return new IssuedKey(secret, info);
    }

    private static ApiKeyInfo Read(NpgsqlDataReader r) => new(
        r.GetGuid(0), r.GetString(1), r.GetString(2), r.GetString(3),
        r.GetFieldValue<DateTimeOffset>(4),
        r.IsDBNull(5) ? null : r.GetFieldValue<DateTimeOffset>(5),
        r.IsDBNull(6) ? null : r.GetFieldValue<DateTimeOffset>(6),
        r.IsDBNull(7) ? null : r.GetGuid(7),
        r.IsDBNull(8) ? null : r.GetInt32(8),
        r.IsDBNull(9) ? null : r.GetInt32(9),
        r.IsDBNull(10) ? null : r.GetFieldValue<string[]>(10),
        r.IsDBNull(11) ? null : new Budget(r.GetDecimal(11), r.GetString(12)),
        r.IsDBNull(13) ? null : r.GetString(13),
        r.IsDBNull(14) ? null : new Budget(r.GetDecimal(14), r.GetString(15)));

    [GeneratedRegex("^hxa_[A-Za-z0-9_-]{20,100}$")]
    private static partial Regex KeyShape();

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex NameShape();
}
