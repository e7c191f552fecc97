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
        usage: helixagent keys create --name NAME [--scope client|admin] [--rpm N] [--tpm N] [--models a,b] [--expires 30d] [--quiet]
               helixagent keys rotate --name NAME [--grace 24h] [--quiet]
               helixagent keys revoke --name NAME | --id ID
               helixagent keys list
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
                        flags.Int("rpm"), flags.Int("tpm"), flags.List("models"), expires is { } e ? now + e : null, now);
                    if (flags.Has("quiet"))
                    {
                        await @out.WriteLineAsync(issued.Secret);
                        return 0;
                    }
                    await @out.WriteLineAsync($"Created {issued.Info.Scope} key '{issued.Info.Name}' ({issued.Info.Id}). Store it now; it is not shown again:");
                    await @out.WriteLineAsync(issued.Secret);
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
                    await @out.WriteLineAsync($"{"NAME",-24} {"PREFIX",-14} {"SCOPE",-7} {"STATUS",-9} {"CREATED",-21} {"EXPIRES",-21} {"RPM",7} {"TPM",9}  ID");
                    foreach (var k in keys)
                    {
                        await @out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                            $"{k.Name,-24} {k.Prefix + "…",-14} {k.Scope,-7} {k.StatusAt(now),-9} {k.CreatedAt,-21:u} {(k.ExpiresAt is { } x ? x.ToString("u", CultureInfo.InvariantCulture) : "-"),-21} {(k.RpmLimit?.ToString(CultureInfo.InvariantCulture) ?? "-"),7} {(k.TpmLimit?.ToString(CultureInfo.InvariantCulture) ?? "-"),9}  {k.Id}"));
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
