using System.Diagnostics;
using System.Text;

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

    public async Task StartAsync() =>
        _process = await PostgresServer.RunPostgresAsync(_primary.Bin, _dataDir, Port, _log,
            "-c", "hot_standby=on", "-c", "fsync=off", "-c", "max_connections=300"); // at least the primary's

    public async Task StopAsync()
    {
        await PostgresServer.StopPostgresAsync(_process);
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
