using System.Diagnostics;
using System.Text;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>A real <c>redis-server</c> on a free port, without persistence; can be stopped and restarted mid-test.</summary>
public sealed class RedisServer : IAsyncLifetime
{
    private readonly StringBuilder _log = new();
    private Process? _process;

    public int Port { get; } = ServerProcess.FreePort();
    public string ConnectionString => $"127.0.0.1:{Port}";

    public Task InitializeAsync() => StartAsync();

    public async Task StartAsync()
    {
        var exe = File.Exists("/usr/bin/redis-server") ? "/usr/bin/redis-server" : "redis-server";
        _process = ServerProcess.Start([exe, "--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no"], _log);
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

    public Task DisposeAsync() => StopAsync();
}
