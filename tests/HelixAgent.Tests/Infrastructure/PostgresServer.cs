using System.Diagnostics;
using System.Text;
using Npgsql;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>
/// A real PostgreSQL server for the tests: <c>initdb</c> in a temp folder, <c>postgres</c> on a free port, stopped
/// and deleted at the end. Tests can stop and restart it (same port, same data) to simulate an outage.
/// </summary>
public sealed class PostgresServer : IAsyncLifetime
{
    private readonly StringBuilder _log = new();
    private string _dataDir = "";
    private Process? _process;

    public int Port { get; } = ServerProcess.FreePort();
    public string Bin { get; } = ServerProcess.PostgresBin();

    public async Task InitializeAsync()
    {
        var root = ServerProcess.TempDir("helixagent-pg");
        _dataDir = Path.Combine(root, "data");
        var init = ServerProcess.AsPostgres(Path.Combine(Bin, "initdb"), "-D", _dataDir, "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync");
        ServerProcess.Run(init[0], init[1..]);
        await StartAsync();
    }

    public async Task StartAsync() =>
        _process = await RunPostgresAsync(Bin, _dataDir, Port, _log,
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200");

    /// <summary>Fast shutdown (SIGINT): open connections are cut, as in a real outage.</summary>
    public async Task StopAsync()
    {
        await StopPostgresAsync(_process);
        _process = null;
    }

    /// <summary>Starts <c>postgres</c> on <paramref name="dataDir"/> and returns once it accepts queries, not just TCP.</summary>
    internal static async Task<Process> RunPostgresAsync(string bin, string dataDir, int port, StringBuilder log, params string[] settings)
    {
        var cmd = ServerProcess.AsPostgres(Path.Combine(bin, "postgres"), ["-D", dataDir, "-p", port.ToString(),
            "-k", Path.GetDirectoryName(dataDir)!, "-c", "listen_addresses=127.0.0.1", .. settings]);
        var process = ServerProcess.Start(cmd, log);
        await ServerProcess.WaitForPortAsync(port, process, log, TimeSpan.FromSeconds(30));
        for (var i = 0; ; i++)
        {
            try
            {
                await using var conn = new NpgsqlConnection($"Host=127.0.0.1;Port={port};Username=postgres;Database=postgres;Timeout=5;Pooling=false");
                await conn.OpenAsync();
                return process;
            }
            catch (PostgresException) when (i < 100)
            {
                await Task.Delay(50);
            }
        }
    }

    internal static async Task StopPostgresAsync(Process? process)
    {
        if (process is { HasExited: false } p)
        {
            ServerProcess.Run("kill", ["-INT", p.Id.ToString()]);
            await p.WaitForExitAsync();
        }
    }

    public string ConnectionString(string database) =>
        $"Host=127.0.0.1;Port={Port};Username=postgres;Database={database};Timeout=5";

    /// <summary>A fresh database for one test class, so no test counts rows another wrote.</summary>
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
        await StopAsync();
        try
        {
            Directory.Delete(Path.GetDirectoryName(_dataDir)!, recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }
}
