using System.Diagnostics;
using System.Text;
using Npgsql;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>
/// A real PostgreSQL server for a test class. This one is the test assembly's shared server: one <c>initdb</c> per run,
/// started on first use and stopped (its folder deleted) when the test process ends; each test still gets its own database
/// (<see cref="CreateDatabaseAsync"/>). A class that stops or restarts its server takes <see cref="OwnPostgresServer"/>.
/// </summary>
public class PostgresServer : IAsyncLifetime
{
    private static readonly Lazy<Task<PostgresInstance>> Shared = new(async () =>
    {
        var shared = await PostgresInstance.CreateAsync();
        // The test host can be ended before an exit handler could delete gigabytes of test databases: a watchdog
        // outside it stops the server and deletes the folder once this process is gone, however it went.
        ServerProcess.CleanUpAfterThisProcess(shared.ProcessId, shared.Folder);
        return shared;
    });

    private PostgresInstance? _instance;

    /// <summary>Whether this class has a server of its own, which it may stop and start.</summary>
    protected virtual bool Own => false;

    private PostgresInstance Instance => _instance ?? throw new InvalidOperationException("the fixture is not initialized");

    public int Port => Instance.Port;
    public string Bin => PostgresInstance.Bin;

    public async Task InitializeAsync() => _instance = Own ? await PostgresInstance.CreateAsync() : await Shared.Value;

    /// <summary>Starts the server again after <see cref="StopAsync"/> (same port, same data).</summary>
    public Task StartAsync() => Own ? Instance.StartAsync() : throw NotOwn();

    /// <summary>Fast shutdown (SIGINT): open connections are cut, as in a real outage.</summary>
    public Task StopAsync() => Own ? Instance.StopAsync() : throw NotOwn();

    private static InvalidOperationException NotOwn() =>
        new("This class shares the test assembly's PostgreSQL server: take OwnPostgresServer to stop or start one.");

    public string ConnectionString(string database) =>
        $"Host=127.0.0.1;Port={Port};Username=postgres;Database={database};Timeout=5";

    /// <summary>A fresh database for one test, so no test counts rows another wrote.</summary>
    public async Task<string> CreateDatabaseAsync(string prefix = "t")
    {
        var name = $"{prefix}_{Guid.NewGuid():N}"[..Math.Min(40, prefix.Length + 33)].ToLowerInvariant();
        await using var conn = new NpgsqlConnection(ConnectionString("postgres") + ";Pooling=false");
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand($"CREATE DATABASE \"{name}\"", conn);
        await cmd.ExecuteNonQueryAsync();
        return ConnectionString(name);
    }

    public async Task DisposeAsync()
    {
        if (Own && _instance is not null)
        {
            await _instance.DisposeAsync();
        }
    }

    /// <summary>Starts <c>postgres</c> on <paramref name="dataDir"/> and returns once it accepts queries, not just TCP.</summary>
    internal static async Task<Process> RunPostgresAsync(string bin, string dataDir, int port, StringBuilder log, params string[] settings)
    {
        var cmd = ServerProcess.AsPostgres(Path.Combine(bin, "postgres"), ["-D", dataDir, "-p", port.ToString(),
            "-k", Path.GetDirectoryName(dataDir)!, "-c", "listen_addresses=127.0.0.1", .. settings]);
        var process = ServerProcess.Start(cmd, log);
        await ServerProcess.WaitForPortAsync(port, process, log, TimeSpan.FromSeconds(30));
        // "the database system is starting up" until it is: Eventually retries the failed open.
        await Eventually.TrueAsync(async () =>
        {
            await using var conn = new NpgsqlConnection($"Host=127.0.0.1;Port={port};Username=postgres;Database=postgres;Timeout=5;Pooling=false");
            await conn.OpenAsync();
            return true;
        }, $"postgres on port {port} accepting queries", TimeSpan.FromSeconds(10), () => log.ToString());
        return process;
    }

    internal static async Task StopPostgresAsync(Process? process)
    {
        if (process is { HasExited: false } p)
        {
            ServerProcess.Run("kill", ["-INT", p.Id.ToString()]);
            await p.WaitForExitAsync();
        }
    }
}

/// <summary>A PostgreSQL server of the class's own, which its tests stop and start (outages).</summary>
public sealed class OwnPostgresServer : PostgresServer
{
    protected override bool Own => true;
}

/// <summary>One <c>postgres</c> process: <c>initdb</c> in a temp folder, a free port (another one if the bind loses a race), deleted at the end.</summary>
internal sealed class PostgresInstance
{
    public static string Bin { get; } = ServerProcess.PostgresBin();

    private readonly StringBuilder _log = new();
    private readonly string _dataDir;
    private Process? _process;

    private PostgresInstance(string dataDir) => _dataDir = dataDir;

    public int Port { get; private set; }

    public int ProcessId => _process?.Id ?? 0;

    /// <summary>The folder holding the data directory (and the server's socket).</summary>
    public string Folder => Path.GetDirectoryName(_dataDir)!;

    public static async Task<PostgresInstance> CreateAsync()
    {
        var root = ServerProcess.TempDir("helixagent-pg");
        var instance = new PostgresInstance(Path.Combine(root, "data"));
        var init = ServerProcess.AsPostgres(Path.Combine(Bin, "initdb"), "-D", instance._dataDir, "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync");
        ServerProcess.Run(init[0], init[1..]);
        await ServerProcess.BindWithRetryAsync(port =>
        {
            instance.Port = port;
            return instance.StartAsync();
        }, instance._log);
        return instance;
    }

    public async Task StartAsync() =>
        _process = await PostgresServer.RunPostgresAsync(Bin, _dataDir, Port, _log,
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300");

    public async Task StopAsync()
    {
        await PostgresServer.StopPostgresAsync(_process);
        _process = null;
    }

    public async Task DisposeAsync()
    {
        await StopAsync();
        try
        {
            Directory.Delete(Folder, recursive: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // best effort
        }
    }
}
