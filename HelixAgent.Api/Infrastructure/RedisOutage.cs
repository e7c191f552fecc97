using System.Net.Sockets;
using StackExchange.Redis;

namespace HelixAgent.Api.Infrastructure;

/// <summary>
/// Whether an exception from a Redis call means Redis is unreachable (stopped, restarting, too slow) rather than a bug
/// in our code. Besides its own exceptions and timeouts, StackExchange.Redis fails the commands caught in a dropped
/// connection with whatever its transport threw: Pipelines.Sockets.Unofficial's <c>ConnectionResetException</c> (an
/// <see cref="IOException"/>), a <see cref="SocketException"/>, or the pipe's <see cref="InvalidOperationException"/>
/// ("Writing is not allowed after writer was completed", and <see cref="ObjectDisposedException"/>) when a command is
/// written as the connection closes. Use it only around the Redis call itself.
/// </summary>
internal static class RedisOutage
{
    public static bool Is(Exception ex) => ex is RedisException or TimeoutException or IOException or SocketException or InvalidOperationException;
}
