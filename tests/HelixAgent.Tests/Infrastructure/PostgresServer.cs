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

    public async Task StartAsync()
    {
        var cmd = ServerProcess.AsPostgres(Path.Combine(Bin, "postgres"), "-D", _dataDir, "-p", Port.ToString(),
            "-k", Path.GetDirectoryName(_dataDir)!, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200");
        _process = ServerProcess.Start(cmd, _log);
        await ServerProcess.WaitForPortAsync(Port, _process, _log, TimeSpan.FromSeconds(30));
        // Accepting TCP is not the same as accepting queries: wait for a real connection.
        for (var i = 0; ; i++)
        {
            try
            {
                await using var conn = new NpgsqlConnection(ConnectionString("postgres") + ";Pooling=false");
                await conn.OpenAsync();
                return;
            }
            catch (PostgresException) when (i < 100)
            {
                await Task.Delay(50);
            }
        }
    }

    /// <summary>Fast shutdown (SIGINT): open connections are cut, as in a real outage.</summary>
    public async Task StopAsync()
    {
        if (_process is { HasExited: false } p)
        {
            ServerProcess.Run("kill", ["-INT", p.Id.ToString()]);
            await p.WaitForExitAsync();
        }
        _process = null;
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
