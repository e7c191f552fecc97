using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;

namespace HelixAgent.AppHost;

/// <summary>PostgreSQL run by Aspire as a local process; its connection string points at <c>helixagent_db</c>.</summary>
public sealed class LocalPostgresResource(string name, string command, string workingDirectory, int port, ParameterResource password)
    : ExecutableResource(name, command, workingDirectory), IResourceWithConnectionString
{
    public int Port { get; } = port;

    public ReferenceExpression ConnectionStringExpression => ReferenceExpression.Create(
        $"Host=localhost;Port={Port.ToString(System.Globalization.CultureInfo.InvariantCulture)};Username={KnownResourceNames.DatabaseUser};Password={password};Database={KnownResourceNames.DatabaseName}");
}

/// <summary>Redis run by Aspire as a local process.</summary>
public sealed class LocalRedisResource(string name, string command, string workingDirectory, int port)
    : ExecutableResource(name, command, workingDirectory), IResourceWithConnectionString
{
    public int Port { get; } = port;

    public ReferenceExpression ConnectionStringExpression => ReferenceExpression.Create(
        $"localhost:{Port.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
}

/// <summary>
/// The no-container mode: Debian's <c>postgres</c> and <c>redis-server</c> as processes under Aspire, with their data
/// in <see cref="LocalDevEnvironment.DataDirectory"/> so it survives restarts. PostgreSQL gets role
/// <c>helixagent</c> (password kept in <c>postgres-password</c> beside the data) and databases <c>helixagent_db</c> and
/// <c>helixagent</c> (the runbook's <c>psql -h localhost -U helixagent</c> connects to it). Ports 5432 and 6379 when
/// free, else the next free ones.
/// </summary>
public static class LocalServers
{
    private const string InstallHint =
        "install them with: sudo apt-get install -y postgresql redis-server " +
        "(or run with Infrastructure__Mode=external and ConnectionStrings__helixagent-db / ConnectionStrings__redis pointing at existing servers)";

    public static Infrastructure Add(IDistributedApplicationBuilder builder)
    {
        var postgresBin = FindPostgresBin();
        var redisServer = FindOnPath("redis-server");
        if (postgresBin is null || redisServer is null)
        {
            var missing = string.Join(" and ", new[] { postgresBin is null ? "PostgreSQL (postgres, initdb)" : null, redisServer is null ? "Redis (redis-server)" : null }.OfType<string>());
            Console.Error.WriteLine($"HelixAgent: no container runtime answers and {missing} is not installed; {InstallHint}.");
            Environment.Exit(2);
        }

        var root = LocalDevEnvironment.DataDirectory;
        Directory.CreateDirectory(root);
        var asRoot = Environment.UserName == "root";

        // PostgreSQL
        var pgData = Path.Combine(root, "postgres");
        var pgRun = Path.Combine(root, "postgres-run");
        Directory.CreateDirectory(pgRun);
        if (asRoot)
        {
            Run("chown", ["postgres:postgres", pgRun]);
        }
        var password = ReadOrCreatePassword(Path.Combine(root, "postgres-password"));
        WaitForPreviousPostmaster(pgData);
        if (!File.Exists(Path.Combine(pgData, "PG_VERSION")))
        {
            InitCluster(postgresBin!, pgData, password, asRoot);
        }
        var pgPort = FreePort(5432);
        var passwordParameter = builder.AddParameter("postgres-password", password, secret: true);
        var postgresExe = Path.Combine(postgresBin!, "postgres");
        var pgArgs = new List<string> { "-D", pgData, "-p", pgPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "-k", pgRun, "-c", "listen_addresses=localhost" };
        var pgResource = new LocalPostgresResource(KnownResourceNames.Postgres, asRoot ? "setpriv" : postgresExe, root, pgPort, passwordParameter.Resource);
        var postgres = builder.AddResource(pgResource)
            .WithArgs(asRoot ? [.. DropToPostgres, postgresExe, .. pgArgs] : [.. pgArgs])
            .WithHealthCheck(AddCheck(builder, "postgres-local", ct => PostgresAnswers(pgPort, password, ct)))
            .WithIconName("Database");

        // Redis
        var redisData = Path.Combine(root, "redis");
        Directory.CreateDirectory(redisData);
        var redisPort = FreePort(6379);
        var redis = builder.AddResource(new LocalRedisResource(KnownResourceNames.Redis, redisServer!, redisData, redisPort))
            .WithArgs("--port", redisPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1",
                "--dir", redisData, "--appendonly", "yes", "--save", "3600 1", "--daemonize", "no")
            .WithHealthCheck(AddCheck(builder, "redis-local", ct => RedisAnswers(redisPort, ct)))
            .WithIconName("Memory");

        WriteEnvFile(pgPort, password, redisPort);
        Console.WriteLine($"HelixAgent: PostgreSQL on localhost:{pgPort} (role {KnownResourceNames.DatabaseUser}, database {KnownResourceNames.DatabaseName}, data {pgData}), Redis on localhost:{redisPort} (data {redisData}).");
        Console.WriteLine($"HelixAgent: the PostgreSQL password is in {Path.Combine(root, "postgres-password")}; `. {LocalDevEnvironment.EnvFile}` sets PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE for psql.");
        return new Infrastructure(postgres, postgres, redis);
    }

    private static readonly string[] DropToPostgres = ["--reuid=postgres", "--regid=postgres", "--init-groups"];

    private static string AddCheck(IDistributedApplicationBuilder builder, string name, Func<CancellationToken, Task<bool>> probe)
    {
        builder.Services.AddHealthChecks().AddAsyncCheck(name, async ct =>
            await probe(ct) ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy());
        return name;
    }

    private static async Task<bool> PostgresAnswers(int port, string password, CancellationToken ct)
    {
        var cs = new NpgsqlConnectionStringBuilder
        {
            Host = "localhost", Port = port, Username = KnownResourceNames.DatabaseUser, Password = password,
            Database = KnownResourceNames.DatabaseName, Timeout = 2, Pooling = false,
        };
        try
        {
            await using var conn = new NpgsqlConnection(cs.ConnectionString);
            await conn.OpenAsync(ct);
            return true;
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            return false;
        }
    }

    private static async Task<bool> RedisAnswers(int port, CancellationToken ct)
    {
        try
        {
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, port, ct);
            var stream = client.GetStream();
            await stream.WriteAsync("PING\r\n"u8.ToArray(), ct);
            var buffer = new byte[16];
            var n = await stream.ReadAsync(buffer, ct);
            return Encoding.ASCII.GetString(buffer, 0, n).StartsWith("+PONG", StringComparison.Ordinal);
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static void InitCluster(string bin, string pgData, string password, bool asRoot)
    {
        Console.WriteLine($"HelixAgent: creating the local PostgreSQL cluster in {pgData} ...");
        var staging = pgData + ".init";
        if (Directory.Exists(staging))
        {
            Directory.Delete(staging, recursive: true);
        }
        var pwFile = Path.Combine(Path.GetDirectoryName(pgData)!, ".pwfile");
        File.WriteAllText(pwFile, password + "\n");
        try
        {
            if (asRoot)
            {
                Directory.CreateDirectory(staging);
                Run("chown", ["postgres:postgres", staging, pwFile]);
            }
            string[] initdb = [Path.Combine(bin, "initdb"), "-D", staging, "-U", KnownResourceNames.DatabaseUser,
                $"--pwfile={pwFile}", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"];
            RunAs(asRoot, initdb);
            RunAs(asRoot, [Path.Combine(bin, "postgres"), "--single", "-D", staging, "-c", "exit_on_error=true", "postgres"],
                stdin: $"CREATE DATABASE {KnownResourceNames.DatabaseName};\nCREATE DATABASE {KnownResourceNames.DatabaseUser};\n");
            Directory.Move(staging, pgData);
        }
        finally
        {
            File.Delete(pwFile);
        }
    }

    /// <summary>DCP stops the previous run's processes a little after its AppHost exits: wait for the old postmaster.</summary>
    private static void WaitForPreviousPostmaster(string pgData)
    {
        var pidFile = Path.Combine(pgData, "postmaster.pid");
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (File.Exists(pidFile) && DateTime.UtcNow < deadline)
        {
            var first = File.ReadLines(pidFile).FirstOrDefault();
            if (!int.TryParse(first, out var pid) || !ProcessAlive(pid))
            {
                return; // stale: postgres removes it itself at start
            }
            Thread.Sleep(500);
        }
        if (File.Exists(pidFile) && int.TryParse(File.ReadLines(pidFile).FirstOrDefault(), out var still) && ProcessAlive(still))
        {
            Console.Error.WriteLine($"HelixAgent: PostgreSQL (pid {still}) still runs on {pgData}; stop it (or the previous AppHost) first.");
            Environment.Exit(2);
        }
    }

    private static bool ProcessAlive(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    private static void RunAs(bool asRoot, string[] command, string? stdin = null) =>
        Run(asRoot ? "setpriv" : command[0], asRoot ? [.. DropToPostgres, .. command] : command[1..], stdin);

    private static void Run(string file, string[] args, string? stdin = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
            WorkingDirectory = "/",
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi) ?? throw new DistributedApplicationException($"could not start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            p.StandardInput.Write(stdin);
            p.StandardInput.Close();
        }
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new DistributedApplicationException(
                $"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr.Result}{stdout.Result}");
        }
    }

    private static string ReadOrCreatePassword(string path)
    {
        if (File.Exists(path))
        {
            return File.ReadAllText(path).Trim();
        }
        var password = Convert.ToHexString(RandomNumberGenerator.GetBytes(18)).ToLowerInvariant();
        File.WriteAllText(path, password + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        return password;
    }

    private static void WriteEnvFile(int pgPort, string password, int redisPort)
    {
        var text = $"""
            # Written by the HelixAgent AppHost (local mode). `. {LocalDevEnvironment.EnvFile}` points psql at the local database.
            export PGHOST=localhost
            export PGPORT={pgPort}
            export PGUSER={KnownResourceNames.DatabaseUser}
            export PGPASSWORD={password}
            export PGDATABASE={KnownResourceNames.DatabaseName}
            export REDIS_PORT={redisPort}

            """;
        File.WriteAllText(LocalDevEnvironment.EnvFile, text);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(LocalDevEnvironment.EnvFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }

    private static int FreePort(int preferred)
    {
        for (var port = preferred; port < preferred + 100; port++)
        {
            try
            {
                using var l = new TcpListener(IPAddress.Loopback, port);
                l.Start();
                return port;
            }
            catch (SocketException)
            {
                // taken: try the next one
            }
        }
        throw new DistributedApplicationException($"no free port in {preferred}..{preferred + 99}");
    }

    private static string? FindPostgresBin()
    {
        var onPath = FindOnPath("postgres");
        if (onPath is not null)
        {
            var dir = Path.GetDirectoryName(new FileInfo(onPath).ResolveLinkTarget(true)?.FullName ?? onPath)!;
            if (File.Exists(Path.Combine(dir, "initdb")))
            {
                return dir;
            }
        }
        const string debian = "/usr/lib/postgresql";
        if (!Directory.Exists(debian))
        {
            return null;
        }
        return Directory.GetDirectories(debian)
            .Select(d => (Dir: Path.Combine(d, "bin"), Version: int.TryParse(Path.GetFileName(d), out var v) ? v : 0))
            .Where(x => File.Exists(Path.Combine(x.Dir, "postgres")) && File.Exists(Path.Combine(x.Dir, "initdb")))
            .OrderByDescending(x => x.Version)
            .Select(x => x.Dir)
            .FirstOrDefault();
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);
}
