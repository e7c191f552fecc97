using System.Net;
using System.Net.Sockets;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>
/// A loopback TCP proxy in front of a real server that a test can hold (bytes stop flowing both ways, so requests
/// stay in flight) and cut (every open connection is reset with a TCP RST, as when the server's host dies). New
/// connections after a cut go through again.
/// </summary>
public sealed class CuttableTcpProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<(Socket Client, Socket Server)> _connections = [];
    private readonly Task _accepting;
    private TaskCompletionSource _open = Opened();

    public CuttableTcpProxy(int targetPort)
    {
        _targetPort = targetPort;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Connections accepted so far (each is paired with one to the server).</summary>
    public int Accepted { get; private set; }

    private readonly System.Text.StringBuilder _held = new();

    /// <summary>Stops forwarding: what either side sends is held until <see cref="CutAll"/>.</summary>
    public void Hold()
    {
        lock (_held)
        {
            _held.Clear();
        }
        Interlocked.Exchange(ref _open, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
    }

    /// <summary>What arrived since <see cref="Hold"/> and is being held, as ASCII (the Redis protocol is text framed).</summary>
    public string HeldText
    {
        get
        {
            lock (_held)
            {
                return _held.ToString();
            }
        }
    }

    /// <summary>Resets every open connection (RST to the client, the server side closed) and lets traffic flow again.</summary>
    public void CutAll()
    {
        lock (_connections)
        {
            foreach (var (client, server) in _connections)
            {
                client.LingerState = new LingerOption(true, 0);
                client.Close();
                server.Close();
            }
            _connections.Clear();
        }
        Interlocked.Exchange(ref _open, Opened()).TrySetResult();
    }

    private static TaskCompletionSource Opened()
    {
        var open = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        open.SetResult();
        return open;
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            client.NoDelay = true;
            await server.ConnectAsync(IPAddress.Loopback, _targetPort, _stop.Token);
            lock (_connections)
            {
                _connections.Add((client, server));
                Accepted++;
            }
            _ = PumpAsync(client, server);
            _ = PumpAsync(server, client);
        }
    }

    private async Task PumpAsync(Socket from, Socket to)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            while (true)
            {
                var n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                if (n == 0)
                {
                    to.Shutdown(SocketShutdown.Send);
                    return;
                }
                var open = Volatile.Read(ref _open).Task;
                if (!open.IsCompleted)
                {
                    lock (_held)
                    {
                        _held.Append(System.Text.Encoding.ASCII.GetString(buffer, 0, n));
                    }
                }
                await open.WaitAsync(_stop.Token);
                await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _stop.Token);
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // The connection was cut or the proxy is stopping.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        CutAll();
        _stop.Dispose();
    }
}
