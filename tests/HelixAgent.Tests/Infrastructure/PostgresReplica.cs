using System.Diagnostics;
using System.Text;
using Npgsql;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>A real streaming replica of a <see cref="PostgresServer"/>, made with <c>pg_basebackup -R</c>.</summary>
public sealed class PostgresReplica : IAsyncDisposable
{
    private readonly StringBuilder _log = new();
    private readonly string _dataDir;
    private readonly PostgresServer _primary;
    private Process? _process;

    public int Port { get; } = ServerProcess.FreePort();

    private PostgresReplica(PostgresServer primary, string dataDir)
    {
        _primary = primary;
        _dataDir = dataDir;
    }

    public static async Task<PostgresReplica> StartAsync(PostgresServer primary)
    {
        var root = ServerProcess.TempDir("helixagent-replica");
        var replica = new PostgresReplica(primary, Path.Combine(root, "data"));
        var backup = ServerProcess.AsPostgres(Path.Combine(primary.Bin, "pg_basebackup"), "-h", "127.0.0.1", "-p", primary.Port.ToString(),
            "-U", "postgres", "-D", replica._dataDir, "-R", "-X", "stream", "--no-sync");
        ServerProcess.Run(backup[0], backup[1..]);
        await replica.StartAsync();
        return replica;
    }

    public async Task StartAsync()
    {
        var cmd = ServerProcess.AsPostgres(Path.Combine(_primary.Bin, "postgres"), "-D", _dataDir, "-p", Port.ToString(),
            "-k", Path.GetDirectoryName(_dataDir)!, "-c", "listen_addresses=127.0.0.1", "-c", "hot_standby=on", "-c", "fsync=off", "-c", "max_connections=200");
        _process = ServerProcess.Start(cmd, _log);
        await ServerProcess.WaitForPortAsync(Port, _process, _log, TimeSpan.FromSeconds(30));
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

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        try
        {
            Directory.Delete(Path.GetDirectoryName(_dataDir)!, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
