using System.Diagnostics;
using System.Text;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>
/// A real <c>redis-server</c> for a test class, without persistence. This one is the test assembly's shared server,
/// started on first use and stopped when the test process ends: each class gets a database number of its own
/// (<c>defaultDatabase</c>) and a pub/sub channel prefix of its own (<c>channelPrefix</c>) in
/// <see cref="ConnectionString"/>, so no class sees another's keys or messages. A class that stops, pauses or restarts
/// its server, or reads server-wide counters (INFO), takes <see cref="OwnRedisServer"/>.
/// </summary>
public class RedisServer : IAsyncLifetime
{
    private static readonly Lazy<Task<RedisInstance>> Shared = new(async () =>
    {
        var shared = await RedisInstance.CreateAsync();
        ServerProcess.CleanUpAfterThisProcess(shared.ProcessId, folder: null);
        return shared;
    });

    private static int _nextDatabase;
    private RedisInstance? _instance;
    private int _database;

    /// <summary>Whether this class has a server of its own, which it may stop, pause and start.</summary>
    protected virtual bool Own => false;

    private RedisInstance Instance => _instance ?? throw new InvalidOperationException("the fixture is not initialized");

    public int Port => Instance.Port;

    public string ConnectionString => Own ? $"127.0.0.1:{Port}" : $"127.0.0.1:{Port},defaultDatabase={_database},channelPrefix=t{_database}:";

    public async Task InitializeAsync()
    {
        if (Own)
        {
            _instance = await RedisInstance.CreateAsync();
            return;
        }
        _instance = await Shared.Value;
        _database = Interlocked.Increment(ref _nextDatabase);
        if (_database >= RedisInstance.Databases)
        {
            throw new InvalidOperationException($"more than {RedisInstance.Databases - 1} classes share the test Redis: raise RedisInstance.Databases");
        }
    }

    public Task StartAsync() => Own ? Instance.StartAsync() : throw NotOwn();

    public Task StopAsync() => Own ? Instance.StopAsync() : throw NotOwn();

    private static InvalidOperationException NotOwn() =>
        new("This class shares the test assembly's Redis server: take OwnRedisServer to stop or start one.");

    public Task DisposeAsync() => Own && _instance is not null ? _instance.StopAsync() : Task.CompletedTask;
}

/// <summary>A Redis server of the class's own: its tests stop, pause or restart it, or count its commands.</summary>
public sealed class OwnRedisServer : RedisServer
{
    protected override bool Own => true;
}

/// <summary>One <c>redis-server</c> process on a free port (another one if the bind loses a race).</summary>
internal sealed class RedisInstance
{
    public const int Databases = 1000;

    private readonly StringBuilder _log = new();
    private Process? _process;

    public int Port { get; private set; }

    public int ProcessId => _process?.Id ?? 0;

    public static async Task<RedisInstance> CreateAsync()
    {
        var instance = new RedisInstance();
        await ServerProcess.BindWithRetryAsync(port =>
        {
            instance.Port = port;
            return instance.StartAsync();
        }, instance._log);
        return instance;
    }

    public async Task StartAsync()
    {
        var exe = File.Exists("/usr/bin/redis-server") ? "/usr/bin/redis-server" : "redis-server";
        _process = ServerProcess.Start([exe, "--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--databases", Databases.ToString()], _log);
        await ServerProcess.WaitForPortAsync(Port, _process, _log, TimeSpan.FromSeconds(15));
    }

    public async Task StopAsync()
    {
        if (_process is { HasExited: false } p)
        {
            p.Kill();
            await p.WaitForExitAsync();
        }
        _process = null;
    }
}
