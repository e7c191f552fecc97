using System.Globalization;
using HelixAgent.Api.Access;
using HelixAgent.Data;
using Npgsql;
using StackExchange.Redis;

namespace HelixAgent.Api.Cli;

/// <summary><c>helixagent keys ...</c> and <c>helixagent maintenance ...</c>.</summary>
internal static class AccessCommands
{
    public const string KeysUsage = """
        usage: helixagent keys create --name NAME [--scope client|admin] [--rpm N] [--tpm N] [--models a,b] [--expires 30d]
                                     [--team TEAM] [--budget USD] [--budget-period daily|monthly|total] [--quiet]
               helixagent keys update --name NAME [--team TEAM|none] [--budget USD|none] [--budget-period daily|monthly|total] [--rpm N] [--tpm N]
               helixagent keys rotate --name NAME [--grace 24h] [--quiet]
               helixagent keys revoke --name NAME | --id ID
               helixagent keys list
        """;

    public const string TeamsUsage = """
        usage: helixagent teams create --name TEAM [--budget USD] [--budget-period daily|monthly|total]
               helixagent teams update --name TEAM --budget USD|none [--budget-period daily|monthly|total]
               helixagent teams list
        """;

    public const string MaintenanceUsage = "usage: helixagent maintenance on|off|status";

    public static async Task<int> KeysAsync(string[] args, TextWriter @out, TextWriter err, TimeProvider time)
    {
        if (args.Length == 0)
        {
            throw new CommandLineException(KeysUsage);
        }
        var flags = Flags.Parse(args[1..], KeysUsage);
        await using var dataSource = HelixAgent.Data.DatabasePool.CreateDataSource(CommandLine.ResolveConnectionString());
        var store = new ApiKeyStore(dataSource);
        var now = time.GetUtcNow();
        try
        {
            switch (args[0])
            {
                case "create":
                {
                    var expires = flags.Duration("expires");
                    var issued = await store.CreateAsync(flags.Required("name"), flags.Get("scope") ?? "client",
                        flags.Int("rpm"), flags.Int("tpm"), flags.List("models"), expires is { } e ? now + e : null, now,
                        team: flags.Get("team"), budget: flags.Budget(allowNone: false)?.Budget);
                    if (flags.Has("quiet"))
                    {
                        await @out.WriteLineAsync(issued.Secret);
                        return 0;
                    }
                    await @out.WriteLineAsync($"Created {issued.Info.Scope} key '{issued.Info.Name}' ({issued.Info.Id}). Store it now; it is not shown again:");
                    await @out.WriteLineAsync(issued.Secret);
                    await WriteBudgetsAsync(@out, dataSource, issued.Info, now);
                    return 0;
                }
                case "update":
                {
                    var team = flags.Get("team");
                    var budget = flags.Budget(allowNone: true);
                    if (team is null && budget is null && !flags.Has("rpm") && !flags.Has("tpm"))
                    {
                        throw new CommandLineException($"nothing to change: give --team, --budget, --rpm or --tpm\n{KeysUsage}");
                    }
                    var updated = await store.UpdateAsync(flags.Required("name"), new ApiKeyStore.KeyChanges(
                        Team: team is null or "none" ? null : team, LeaveTeam: team == "none",
                        Budget: budget?.Budget, ClearBudget: budget is { Budget: null }, Rpm: flags.Int("rpm"), Tpm: flags.Int("tpm")));
                    var info = updated[^1].Key;
                    await @out.WriteLineAsync($"Updated key '{info.Name}' ({updated.Count} version{(updated.Count == 1 ? "" : "s")}): team {info.Team ?? "none"}, "
                        + $"budget {info.Budget?.ToString() ?? "none"}, rpm {info.RpmLimit?.ToString(CultureInfo.InvariantCulture) ?? "-"}, tpm {info.TpmLimit?.ToString(CultureInfo.InvariantCulture) ?? "-"}.");
                    await WriteBudgetsAsync(@out, dataSource, info, now);
                    if (!await PublishAsync(updated.Select(u => u.Hash)))
                    {
                        await err.WriteLineAsync(
                            "helixagent: warning: Redis is unreachable, so running replicas apply the change when their key cache expires (Auth:CacheSeconds, 30 s by default).");
                    }
                    return 0;
                }
                case "rotate":
                {
                    var grace = flags.Duration("grace") ?? TimeSpan.FromHours(24);
                    var (issued, retiring) = await store.RotateAsync(flags.Required("name"), grace, now);
                    if (flags.Has("quiet"))
                    {
                        await @out.WriteLineAsync(issued.Secret);
                    }
                    else
                    {
                        await @out.WriteLineAsync($"New key for '{issued.Info.Name}' ({issued.Info.Id}). Store it now; it is not shown again:");
                        await @out.WriteLineAsync(issued.Secret);
                        foreach (var (old, _) in retiring)
                        {
                            await @out.WriteLineAsync($"The previous key {old.Prefix}… keeps working until {old.ExpiresAt:u}, then gets 401.");
                        }
                    }
                    // The retiring keys' expiry changed: running replicas drop them from their key caches, as on revoke.
                    if (retiring.Count > 0 && !await PublishAsync(retiring.Select(r => r.Hash)))
                    {
                        await err.WriteLineAsync(
                            "helixagent: warning: Redis is unreachable, so running replicas learn of the new expiry when their key cache expires (Auth:CacheSeconds, 30 s by default).");
                    }
                    return 0;
                }
                case "revoke":
                {
                    var target = flags.Get("id") ?? flags.Required("name");
                    var revoked = await store.RevokeAsync(target, now);
                    foreach (var (key, _) in revoked)
                    {
                        await @out.WriteLineAsync($"Revoked {key.Prefix}… ('{key.Name}', {key.Id}).");
                    }
                    if (!await PublishAsync(revoked.Select(r => r.Hash)))
                    {
                        await err.WriteLineAsync(
                            "helixagent: warning: Redis is unreachable, so running replicas learn of the revocation when their key cache expires (Auth:CacheSeconds, 30 s by default).");
                    }
                    return 0;
                }
                case "list":
                {
                    var keys = await store.ListAsync();
                    await @out.WriteLineAsync($"{"NAME",-24} {"PREFIX",-14} {"SCOPE",-7} {"STATUS",-9} {"CREATED",-21} {"EXPIRES",-21} {"RPM",7} {"TPM",9} {"TEAM",-16} {"BUDGET",-22}  ID");
                    foreach (var k in keys)
                    {
                        await @out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                            $"{k.Name,-24} {k.Prefix + "…",-14} {k.Scope,-7} {k.StatusAt(now),-9} {k.CreatedAt,-21:u} {(k.ExpiresAt is { } x ? x.ToString("u", CultureInfo.InvariantCulture) : "-"),-21} {(k.RpmLimit?.ToString(CultureInfo.InvariantCulture) ?? "-"),7} {(k.TpmLimit?.ToString(CultureInfo.InvariantCulture) ?? "-"),9} {k.Team ?? "-",-16} {k.Budget?.ToString() ?? "-",-22}  {k.Id}"));
                    }
                    // Each key name's budget once: what it spent, what remains, when it resets.
                    var budgeted = keys.Where(k => k.Budget is not null && k.StatusAt(now) is "active" or "expiring").GroupBy(k => k.Name).Select(g => g.First()).ToList();
                    if (budgeted.Count > 0)
                    {
                        await @out.WriteLineAsync();
                        await WriteBudgetHeaderAsync(@out, "KEY");
                        foreach (var k in budgeted)
                        {
                            await WriteBudgetRowAsync(@out, dataSource, BudgetScope.Key, k.Name, k.Budget!, now);
                        }
                    }
                    return 0;
                }
                default:
                    throw new CommandLineException(KeysUsage);
            }
        }
        catch (ApiKeyException ex)
        {
            throw new CommandLineException(ex.Message);
        }
    }

    /// <summary><c>helixagent teams create|update|list</c>.</summary>
    public static async Task<int> TeamsAsync(string[] args, TextWriter @out, TextWriter err, TimeProvider time)
    {
        if (args.Length == 0)
        {
            throw new CommandLineException(TeamsUsage);
        }
        var flags = Flags.Parse(args[1..], TeamsUsage);
        await using var dataSource = HelixAgent.Data.DatabasePool.CreateDataSource(CommandLine.ResolveConnectionString());
        var teams = new TeamStore(dataSource);
        var now = time.GetUtcNow();
        try
        {
            switch (args[0])
            {
                case "create":
                {
                    var team = await teams.CreateAsync(flags.Required("name"), flags.Budget(allowNone: false)?.Budget, now);
                    await @out.WriteLineAsync($"Created team '{team.Name}' ({team.Id}), budget {team.Budget?.ToString() ?? "none"}. "
                        + $"Add keys with: helixagent keys create --name NAME --team {team.Name}");
                    return 0;
                }
                case "update":
                {
                    var budget = flags.Budget(allowNone: true) ?? throw new CommandLineException($"--budget is required\n{TeamsUsage}");
                    var (team, hashes) = await teams.UpdateBudgetAsync(flags.Required("name"), budget.Budget);
                    await @out.WriteLineAsync($"Updated team '{team.Name}': budget {team.Budget?.ToString() ?? "none"} for its {team.Keys} key{(team.Keys == 1 ? "" : "s")}.");
                    if (team.Budget is { } b)
                    {
                        await WriteBudgetHeaderAsync(@out, "TEAM");
                        await WriteBudgetRowAsync(@out, dataSource, BudgetScope.Team, team.Name, b, now);
                    }
                    if (hashes.Count > 0 && !await PublishAsync(hashes))
                    {
                        await err.WriteLineAsync(
                            "helixagent: warning: Redis is unreachable, so running replicas apply the new budget when their key cache expires (Auth:CacheSeconds, 30 s by default).");
                    }
                    return 0;
                }
                case "list":
                {
                    var list = await teams.ListAsync();
                    await @out.WriteLineAsync($"{"TEAM",-24} {"KEYS",5} {"BUDGET",-22} {"SPENT",14} {"REMAINING",14} {"RESETS AT",-21}");
                    foreach (var t in list)
                    {
                        if (t.Budget is not { } b)
                        {
                            await @out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"{t.Name,-24} {t.Keys,5} {"-",-22} {"-",14} {"-",14} {"-",-21}"));
                            continue;
                        }
                        var spent = await BudgetLedger.SpentAsync(dataSource, BudgetScope.Team, t.Name, b, now);
                        await @out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                            $"{t.Name,-24} {t.Keys,5} {b.ToString(),-22} {Budget.FormatUsd(spent),14} {Budget.FormatUsd(Math.Max(0, b.Usd - spent)),14} {Resets(b, now),-21}"));
                    }
                    return 0;
                }
                default:
                    throw new CommandLineException(TeamsUsage);
            }
        }
        catch (ApiKeyException ex)
        {
            throw new CommandLineException(ex.Message);
        }
    }

    private static string Resets(Budget b, DateTimeOffset now) => b.ResetsAt(now) is { } r ? r.ToString("u", CultureInfo.InvariantCulture) : "never (total)";

    private static Task WriteBudgetHeaderAsync(TextWriter @out, string what) =>
        @out.WriteLineAsync($"{what,-24} {"BUDGET",-22} {"SPENT",14} {"REMAINING",14} {"RESETS AT",-21}");

    private static async Task WriteBudgetRowAsync(TextWriter @out, NpgsqlDataSource db, BudgetScope scope, string name, Budget b, DateTimeOffset now)
    {
        var spent = await BudgetLedger.SpentAsync(db, scope, name, b, now);
        await @out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
            $"{name,-24} {b.ToString(),-22} {Budget.FormatUsd(spent),14} {Budget.FormatUsd(Math.Max(0, b.Usd - spent)),14} {Resets(b, now),-21}"));
    }

    /// <summary>The budgets a key is held to (its own, its team's), with their spend, after a create or an update.</summary>
    private static async Task WriteBudgetsAsync(TextWriter @out, NpgsqlDataSource db, ApiKeyInfo key, DateTimeOffset now)
    {
        if (key.Budget is null && key.TeamBudget is null)
        {
            return;
        }
        await WriteBudgetHeaderAsync(@out, "BUDGET OF");
        if (key.Budget is { } own)
        {
            await WriteBudgetRowAsync(@out, db, BudgetScope.Key, key.Name, own, now);
        }
        if (key.TeamBudget is { } shared && key.Team is { } team)
        {
            await WriteBudgetRowAsync(@out, db, BudgetScope.Team, "team " + team, shared, now);
        }
    }

    public static async Task<int> MaintenanceAsync(string[] args, TextWriter @out)
    {
        if (args.Length != 1 || args[0] is not ("on" or "off" or "status"))
        {
            throw new CommandLineException(MaintenanceUsage);
        }
        await using var redis = await ConnectRedisAsync()
            ?? throw new CommandLineException("maintenance mode lives in Redis (shared by every replica), and no Redis is configured: set ConnectionStrings__redis");
        if (!redis.IsConnected)
        {
            throw new CommandLineException("Redis is unreachable; maintenance mode is shared through Redis and cannot be switched now");
        }
        if (args[0] == "status")
        {
            await @out.WriteLineAsync(await MaintenanceMode.ReadAsync(redis) ? "maintenance mode is on" : "maintenance mode is off");
            return 0;
        }
        await MaintenanceMode.SetAsync(redis, args[0] == "on");
        await @out.WriteLineAsync(args[0] == "on"
            ? "maintenance mode is on: client routes answer 503 on every replica"
            : "maintenance mode is off");
        return 0;
    }

    private static async Task<bool> PublishAsync(IEnumerable<byte[]> hashes)
    {
        await using var redis = await ConnectRedisAsync();
        return await KeyAuthenticator.PublishChangeAsync(redis, hashes);
    }

    private static async Task<ConnectionMultiplexer?> ConnectRedisAsync()
    {
        var cs = CommandLine.Configuration().GetConnectionString(KnownResourceNames.Redis);
        if (string.IsNullOrWhiteSpace(cs) && LocalDevEnvironment.ReadEnvFile().TryGetValue("REDIS_PORT", out var port))
        {
            cs = $"localhost:{port}";
        }
        if (string.IsNullOrWhiteSpace(cs))
        {
            return null;
        }
        var options = ConfigurationOptions.Parse(cs);
        options.AbortOnConnectFail = false;
        options.ConnectTimeout = 2000;
        options.ConnectRetry = 1;
        return await ConnectionMultiplexer.ConnectAsync(options);
    }

    /// <summary><c>--name value</c> style flags.</summary>
    private sealed class Flags
    {
        private readonly Dictionary<string, string?> _values = new(StringComparer.Ordinal);
        private readonly string _usage;

        private Flags(string usage) => _usage = usage;

        public static Flags Parse(string[] args, string usage)
        {
            var flags = new Flags(usage);
            for (var i = 0; i < args.Length; i++)
            {
                if (!args[i].StartsWith("--", StringComparison.Ordinal) || args[i].Length < 3)
                {
                    throw new CommandLineException($"unexpected argument '{args[i]}'\n{usage}");
                }
                var name = args[i][2..];
                var eq = name.IndexOf('=');
                if (eq > 0)
                {
                    flags._values[name[..eq]] = name[(eq + 1)..];
                }
                else if (name == "quiet")
                {
                    flags._values[name] = null;
                }
                else if (i + 1 < args.Length)
                {
                    flags._values[name] = args[++i];
                }
                else
                {
                    throw new CommandLineException($"--{name} needs a value\n{usage}");
                }
            }
            return flags;
        }

        public bool Has(string name) => _values.ContainsKey(name);
        public string? Get(string name) => _values.GetValueOrDefault(name);
        public string Required(string name) => Get(name) is { Length: > 0 } v ? v : throw new CommandLineException($"--{name} is required\n{_usage}");

        public int? Int(string name) => Get(name) is not { } v ? null
            : int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n
            : throw new CommandLineException($"--{name} must be a positive whole number, not '{v}'");

        /// <summary>
        /// <c>--budget USD</c> with <c>--budget-period</c> (monthly by default): null when not given; with
        /// <paramref name="allowNone"/>, <c>--budget none</c> gives a null budget (clear it).
        /// </summary>
        public (Budget? Budget, bool Given)? Budget(bool allowNone)
        {
            if (Get("budget") is not { } v)
            {
                return Has("budget-period") ? throw new CommandLineException($"--budget-period needs --budget\n{_usage}") : null;
            }
            if (allowNone && v == "none")
            {
                return (null, true);
            }
            if (!decimal.TryParse(v, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var usd))
            {
                throw new CommandLineException($"--budget must be an amount in USD like 50 or 12.5{(allowNone ? " (or none)" : "")}, not '{v}'");
            }
            return (HelixAgent.Data.Budget.Create(usd, Get("budget-period")), true);
        }

        public string[]? List(string name) => Get(name)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

        public TimeSpan? Duration(string name)
        {
            if (Get(name) is not { } v)
            {
                return null;
            }
            return ParseDuration(v) ?? throw new CommandLineException($"--{name} must be a duration like 24h, 30m, 7d or 90s, not '{v}'");
        }
    }

    internal static TimeSpan? ParseDuration(string text)
    {
        if (text.Length < 2 || !double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var n) || n < 0)
        {
            return null;
        }
        return text[^1] switch
        {
            's' => TimeSpan.FromSeconds(n),
            'm' => TimeSpan.FromMinutes(n),
            'h' => TimeSpan.FromHours(n),
            'd' => TimeSpan.FromDays(n),
            _ => null,
        };
    }
}
