using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>Helpers to run Debian's server binaries as child processes of the test run.</summary>
internal static class ServerProcess
{
    public static bool IsRoot => Environment.UserName == "root";

    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>
    /// Starts a server on a free port: <see cref="FreePort"/> releases the port before the server binds it, so another
    /// process can take it in between; then the server exits saying so, and this tries again on another port (5 times).
    /// </summary>
    public static async Task BindWithRetryAsync(Func<int, Task> start, StringBuilder log)
    {
        for (var attempt = 1; ; attempt++)
        {
            int before;
            lock (log)
            {
                before = log.Length;
            }
            try
            {
                await start(FreePort());
                return;
            }
            catch (InvalidOperationException) when (attempt < 5 && BindFailed(log, before))
            {
            }
        }
    }

    private static bool BindFailed(StringBuilder log, int from)
    {
        string text;
        lock (log)
        {
            text = log.ToString(from, log.Length - from);
        }
        return text.Contains("Address already in use", StringComparison.OrdinalIgnoreCase) || text.Contains("could not bind", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// Starts a watchdog outside this process's tree (double fork, new session) that, once this process has gone however
    /// it went, kills <paramref name="serverPid"/> and deletes <paramref name="folder"/>.
    /// </summary>
    public static void CleanUpAfterThisProcess(int serverPid, string? folder)
    {
        var remove = folder is null ? "" : $"; rm -rf '{folder}'";
        var watchdog = $"while kill -0 {Environment.ProcessId} 2>/dev/null; do sleep 1; done; kill -9 {serverPid} 2>/dev/null; sleep 1{remove}";
        var psi = Info("sh", ["-c", $"setsid sh -c \"{watchdog}\" </dev/null >/dev/null 2>&1 &"]);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
    }

    /// <summary>A temp folder the <c>postgres</c> user can use when the tests run as root.</summary>
    public static string TempDir(string prefix)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        if (IsRoot)
        {
            Run("chown", ["postgres:postgres", dir]);
        }
        return dir;
    }

    /// <summary>
    /// The one way the tests run a command to completion: <paramref name="file"/> in <paramref name="workingDirectory"/>
    /// with <paramref name="env"/> added and <paramref name="stdin"/> written to it; kills it (and its children) and
    /// throws <see cref="TimeoutException"/> after <paramref name="timeout"/> (default 2 minutes). Never throws for an exit code.
    /// </summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string file, IEnumerable<string> args,
        string? workingDirectory = null, TimeSpan? timeout = null, IDictionary<string, string>? env = null, string? stdin = null)
    {
        var argList = args.ToList();
        var psi = Info(file, argList);
        psi.WorkingDirectory = workingDirectory ?? Path.GetTempPath();
        psi.RedirectStandardInput = stdin is not null;
        foreach (var (k, v) in env ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }
        Process p;
        try
        {
            p = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException($"{file} is not installed: ./scripts/install-deps.sh installs what the tests run", ex);
        }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (stdin is not null)
            {
                await p.StandardInput.WriteAsync(stdin);
                p.StandardInput.Close();
            }
            var limit = timeout ?? TimeSpan.FromMinutes(2);
            using var cts = new CancellationTokenSource(limit);
            try
            {
                await p.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                p.Kill(entireProcessTree: true);
                throw new TimeoutException($"{file} {string.Join(' ', argList)} took over {limit}: {await stderr}");
            }
            return (p.ExitCode, await stdout, await stderr);
        }
    }

    /// <summary><see cref="RunAsync"/> for set-up steps: throws when the command exits non-zero.</summary>
    public static string Run(string file, IEnumerable<string> args, string? stdin = null)
    {
        var argList = args.ToList();
        // On the thread pool, away from xunit's synchronization context, which a blocked caller would starve.
        var (exit, stdout, stderr) = Task.Run(() => RunAsync(file, argList, stdin: stdin)).GetAwaiter().GetResult();
        if (exit != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', argList)} exited {exit}: {stderr}{stdout}");
        }
        return stdout;
    }

    /// <summary>Runs a PostgreSQL binary, dropping root privileges (postgres refuses to run as root).</summary>
    public static string[] AsPostgres(string exe, params string[] args) =>
        IsRoot ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", exe, .. args] : [exe, .. args];

    public static Process Start(string[] command, StringBuilder log)
    {
        var psi = Info(command[0], command[1..]);
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        p.OutputDataReceived += (_, e) => { lock (log) { log.AppendLine(e.Data); } };
        p.ErrorDataReceived += (_, e) => { lock (log) { log.AppendLine(e.Data); } };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    public static async Task WaitForPortAsync(int port, Process process, StringBuilder log, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"{process.StartInfo.FileName} exited {process.ExitCode}: {log}");
            }
            try
            {
                using var c = new TcpClient();
                await c.ConnectAsync(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException)
            {
                await Task.Delay(50);
            }
        }
        throw new TimeoutException($"{process.StartInfo.FileName} did not listen on {port}: {log}");
    }

    public static string PostgresBin()
    {
        const string debian = "/usr/lib/postgresql";
        var dir = Directory.Exists(debian)
            ? Directory.GetDirectories(debian).Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "initdb")))
                .OrderByDescending(d => d, StringComparer.Ordinal).FirstOrDefault()
            : null;
        return dir ?? throw new InvalidOperationException("PostgreSQL is not installed: apt-get install -y postgresql");
    }

    private static ProcessStartInfo Info(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetTempPath(),
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        return psi;
    }
}
