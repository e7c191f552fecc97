using System.Diagnostics;
using System.Text;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>
/// The built <c>helixagent</c> binary (or another of ours, such as <c>helixagent-worker</c>) as a real OS process: for
/// signals, exit codes and the CLI.
/// </summary>
internal sealed partial class ApiProcess : IAsyncDisposable
{
    private readonly Process _process;
    public StringBuilder Log { get; } = new();
    public int Port { get; private set; }
    public Uri BaseAddress => new($"http://127.0.0.1:{Port}");
    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    private ApiProcess(Process process, int port)
    {
        _process = process;
        Port = port;
    }

    /// <summary>
    /// Plain HTTP on <see cref="Port"/> and HTTPS on <paramref name="httpsPort"/>, the way the Kubernetes manifests
    /// configure it (<c>HTTP_PORTS</c>, <c>HTTPS_PORTS</c>; no <c>ASPNETCORE_URLS</c>); the certificate comes from
    /// <paramref name="env"/> (<c>Kestrel__Certificates__Default__Path</c>, <c>KeyPath</c>).
    /// </summary>
    public static Task<ApiProcess> StartWithHttpsAsync(IDictionary<string, string> env, int httpsPort) =>
        StartAsync(new Dictionary<string, string>(env) { ["HTTPS_PORTS"] = httpsPort.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            plainPortsOnly: true);

    /// <summary>
    /// Starts the binary on <c>http://127.0.0.1:0</c>: Kestrel binds a free port itself and logs it ("Now listening on"),
    /// so no other process can take the port in between. With <paramref name="plainPortsOnly"/> (HTTP_PORTS, as in the
    /// manifests) the port is picked beforehand.
    /// </summary>
    public static async Task<ApiProcess> StartAsync(IDictionary<string, string> env, string? dll = null, bool plainPortsOnly = false)
    {
        var port = plainPortsOnly ? ServerProcess.FreePort() : 0;
        dll ??= RepoPaths.ApiDll;
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            // As installed (systemd WorkingDirectory, the image's WORKDIR): the content root, and so appsettings.json,
            // is the binary's own folder. The test folder's appsettings.json is the API's or the worker's, whichever
            // the build copied last.
            WorkingDirectory = Path.GetDirectoryName(dll)!,
        };
        psi.ArgumentList.Add(dll);
        psi.Environment["ASPNETCORE_URLS"] = plainPortsOnly ? "" : $"http://127.0.0.1:{port}";
        if (plainPortsOnly)
        {
            psi.Environment["HTTP_PORTS"] = port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        psi.Environment["ASPNETCORE_ENVIRONMENT"] = "Testing";
        psi.Environment["Health__CacheSeconds"] = "0";
        // Kestrel's "Now listening on" line tells the port, whatever the test's own log levels.
        psi.Environment["Logging__LogLevel__Microsoft.Hosting.Lifetime"] = "Information";
        // Each process its own ledger journal (one process per folder), unless the test names one (to restart on it).
        var ownJournal = !env.ContainsKey("Ledger__Journal__Path");
        psi.Environment["Ledger__Journal__Path"] = Path.Combine(Path.GetTempPath(), "helixagent-ledger-" + Guid.NewGuid().ToString("N"));
        foreach (var (k, v) in env)
        {
            psi.Environment[k] = v;
        }
        var p = new Process { StartInfo = psi };
        var api = new ApiProcess(p, port) { JournalPath = psi.Environment["Ledger__Journal__Path"]!, _ownJournal = ownJournal };
        p.OutputDataReceived += (_, e) => api.Append(e.Data);
        p.ErrorDataReceived += (_, e) => api.Append(e.Data);
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (plainPortsOnly)
        {
            await ServerProcess.WaitForPortAsync(port, p, api.Log, TimeSpan.FromSeconds(60));
            return api;
        }
        api.Port = await Eventually.ValueAsync(() =>
        {
            var match = ListeningOn().Match(api.LogText());
            if (!match.Success && p.HasExited)
            {
                Assert.Fail($"{Path.GetFileName(dll)} exited {p.ExitCode} before listening: {api.LogText()}");
            }
            return Task.FromResult(match.Success ? int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : 0);
        }, listening => listening > 0, $"{Path.GetFileName(dll)} to log the port Kestrel bound", TimeSpan.FromSeconds(60), _ => api.LogText());
        return api;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"Now listening on: http://127\.0\.0\.1:(\d+)")]
    private static partial System.Text.RegularExpressions.Regex ListeningOn();

    private string LogText()
    {
        lock (Log)
        {
            return Log.ToString();
        }
    }

    private readonly List<(string Text, TaskCompletionSource Seen)> _logWaiters = [];

    private void Append(string? line)
    {
        lock (Log)
        {
            Log.AppendLine(line);
            foreach (var waiter in _logWaiters.Where(w => line?.Contains(w.Text, StringComparison.Ordinal) == true).ToList())
            {
                waiter.Seen.TrySetResult();
                _logWaiters.Remove(waiter);
            }
        }
    }

    /// <summary>Completes when the process logs a line containing <paramref name="text"/> (at once if it already has); fails after <paramref name="timeout"/>, naming the text.</summary>
    public async Task WaitForLogAsync(string text, TimeSpan timeout)
    {
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (Log)
        {
            if (Log.ToString().Contains(text, StringComparison.Ordinal))
            {
                return;
            }
            _logWaiters.Add((text, seen));
        }
        try
        {
            await seen.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"The process logged no line with '{text}' within {timeout.TotalSeconds:0.#} s.");
        }
    }

    /// <summary>The process's ledger journal folder.</summary>
    public string JournalPath { get; private init; } = "";

    private bool _ownJournal;

    public void Signal(string signal) => ServerProcess.Run("kill", [$"-{signal}", _process.Id.ToString()]);

    public Task WaitForExitAsync(TimeSpan timeout) => _process.WaitForExitAsync(new CancellationTokenSource(timeout).Token);

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        if (_ownJournal && Directory.Exists(JournalPath))
        {
            Directory.Delete(JournalPath, recursive: true);
        }
    }

    /// <summary>Runs <c>helixagent &lt;args&gt;</c> to completion (at most a minute); returns exit code and output.</summary>
    public static Task<(int ExitCode, string Stdout, string Stderr)> RunCliAsync(IDictionary<string, string> env, params string[] args) =>
        ServerProcess.RunAsync("dotnet", [RepoPaths.ApiDll, .. args], Path.GetDirectoryName(RepoPaths.ApiDll)!, TimeSpan.FromSeconds(60),
            new Dictionary<string, string>(env)
            {
                // Never fall back to a developer's local AppHost database from a test (unless the test says where).
                ["HELIXAGENT_DATA_DIR"] = env.TryGetValue("HELIXAGENT_DATA_DIR", out var dir) ? dir
                    : Path.Combine(Path.GetTempPath(), "helixagent-no-local-" + Guid.NewGuid().ToString("N")),
            });

}
