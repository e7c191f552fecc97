using HelixAgent.Api.Infrastructure;
using HelixAgent.Data;
using Npgsql;
using StackExchange.Redis;

namespace HelixAgent.Api.Cli;

/// <summary>
/// The <c>helixagent</c> command line: the API's own binary run with a verb (<c>helixagent migrate up</c>).
/// It talks to the database directly, so it works inside the pod and on a developer machine alike.
/// </summary>
internal static class CommandLine
{
    private static readonly HashSet<string> Verbs = ["migrate", "keys", "teams", "maintenance", "env", "help", "--help", "-h", "version", "--version"];

    public static bool IsCommand(string[] args) => args.Length > 0 && Verbs.Contains(args[0]);

    public static async Task<int> RunAsync(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        var @out = stdout ?? Console.Out;
        var err = stderr ?? Console.Error;
        try
        {
            return args[0] switch
            {
                "migrate" => await MigrateAsync(args[1..], @out, err),
                "keys" => await AccessCommands.KeysAsync(args[1..], @out, err, TimeProvider.System),
                "teams" => await AccessCommands.TeamsAsync(args[1..], @out, err, TimeProvider.System),
                "maintenance" => await AccessCommands.MaintenanceAsync(args[1..], @out),
                "env" => await EnvAsync(@out),
                "version" or "--version" => Print(@out, Health.HealthReporter.Version),
                _ => Print(@out, Usage),
            };
        }
        catch (NpgsqlException ex)
        {
            await err.WriteLineAsync($"helixagent: database error: {ex.Message}");
            return 3;
        }
        catch (Exception ex) when (RedisOutage.Is(ex))
        {
            await err.WriteLineAsync($"helixagent: redis error: {ex.Message}");
            return 3;
        }
        catch (CommandLineException ex)
        {
            await err.WriteLineAsync($"helixagent: {ex.Message}");
            return 2;
        }
    }

    private const string Usage = """
        usage: helixagent [command]

          (no command)            run the gateway
          migrate up              apply every pending schema migration
          migrate down            revert the newest applied migration (one step)
          migrate status          list migrations and when they were applied
          keys create --name N    issue a key (--scope client|admin, --rpm, --tpm, --models a,b, --expires 30d,
                                  --team T, --budget USD, --budget-period daily|monthly|total)
          keys update --name N    change a key's team, budget, rpm or tpm (--team none, --budget none clear them)
          keys rotate --name N    issue a new key; the old one works for --grace (24h), then gets 401
          keys revoke --name N    revoke every key of that name now (or --id ID)
          keys list               list keys (never their secrets) and what each budget spent
          teams create|update|list  teams and their budgets (list: spent, remaining, resets at)
          maintenance on|off      client routes answer 503 on every replica (status: show it)
          env                     print the local database and Redis settings the AppHost wrote, as shell
                                  exports: (eval "$(./helixagent env)"; psql -c "SELECT 1")
          version                 print the version

        The database comes from ConnectionStrings__helixagent-db, else from the file the AppHost writes
        for local development (see README).
        """;

    /// <summary>
    /// The exports of the AppHost's local environment file (<c>PGHOST</c>, <c>PGPORT</c>, ..., <c>REDIS_PORT</c>), for
    /// <c>eval "$(helixagent env)"</c>: the file is in the user's data directory, which differs for root
    /// (<c>/var/lib/helixagent-dev</c>) and everyone else (<c>~/.local/share/helixagent</c>).
    /// </summary>
    private static async Task<int> EnvAsync(TextWriter @out)
    {
        var file = LocalDevEnvironment.EnvFile;
        if (!File.Exists(file))
        {
            throw new CommandLineException($"no local environment at {file}: start HelixAgent first (dotnet run --project HelixAgent.AppHost)");
        }
        await @out.WriteAsync(await File.ReadAllTextAsync(file));
        return 0;
    }

    private static async Task<int> MigrateAsync(string[] args, TextWriter @out, TextWriter err)
    {
        if (args.Length != 1 || args[0] is not ("up" or "down" or "status"))
        {
            throw new CommandLineException("usage: helixagent migrate up|down|status");
        }
        await using var dataSource = HelixAgent.Data.DatabasePool.CreateDataSource(ResolveConnectionString());
        var migrator = new SchemaMigrator(dataSource);
        switch (args[0])
        {
            case "up":
                var applied = await migrator.UpAsync();
                await @out.WriteLineAsync(applied.Count == 0
                    ? $"schema is up to date at version {SchemaMigrator.ExpectedVersion}"
                    : $"applied {string.Join(", ", applied)}; schema at version {SchemaMigrator.ExpectedVersion}");
                break;
            case "down":
                var reverted = await migrator.DownAsync();
                await @out.WriteLineAsync(reverted is null ? "nothing to revert: no migration is applied" : $"reverted {reverted}");
                break;
            default:
                foreach (var s in await migrator.StatusAsync())
                {
                    await @out.WriteLineAsync($"{s.Version,6}  {s.Name,-30} {(s.AppliedAt is { } at ? at.ToString("u") : "pending")}");
                }
                break;
        }
        return 0;
    }

    internal static string ResolveConnectionString()
    {
        var cs = Configuration().GetConnectionString(KnownResourceNames.Database);
        if (!string.IsNullOrWhiteSpace(cs))
        {
            return cs;
        }
        var local = LocalDevEnvironment.ReadEnvFile();
        if (local.TryGetValue("PGPORT", out var port) && local.TryGetValue("PGPASSWORD", out var password))
        {
            return new NpgsqlConnectionStringBuilder
            {
                Host = local.GetValueOrDefault("PGHOST", "localhost"),
                Port = int.Parse(port, System.Globalization.CultureInfo.InvariantCulture),
                Username = local.GetValueOrDefault("PGUSER", KnownResourceNames.DatabaseUser),
                Password = password,
                Database = local.GetValueOrDefault("PGDATABASE", KnownResourceNames.DatabaseName),
            }.ConnectionString;
        }
        throw new CommandLineException(
            $"no database configured: set ConnectionStrings__{KnownResourceNames.Database}, or start the AppHost once so it writes {LocalDevEnvironment.EnvFile}");
    }

    internal static IConfiguration Configuration() => new ConfigurationBuilder()
        .SetBasePath(AppContext.BaseDirectory)
        .AddJsonFile("appsettings.json", optional: true)
        .AddEnvironmentVariables()
        .Build();

    private static int Print(TextWriter w, string text)
    {
        w.WriteLine(text);
        return 0;
    }
}

internal sealed class CommandLineException(string message) : Exception(message);
