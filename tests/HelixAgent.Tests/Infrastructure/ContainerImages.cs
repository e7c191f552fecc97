using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>
/// The repository's <c>Dockerfile</c>, built as the runbook builds it (<c>docker build -t helixagent:v1.2.0 .</c>, and
/// <c>--target helixagent-worker</c> for the worker) with buildah: it needs no daemon, and these machines have no Docker
/// engine. Builds go to a container storage of the tests' own (never the machine's default one). Microsoft's base
/// images cannot be pulled here, so <c>scripts/local-base-images.sh</c> first puts stand-ins under the same names into
/// that storage: Debian 12 with this machine's .NET and the official images' user and environment. The Dockerfile
/// itself is used unchanged. The NuGet packages folder is lent to the build so restore does not download them again.
/// As root buildah runs rootful; as any other user rootless (it needs the user's range in /etc/subuid).
/// </summary>
public sealed class ContainerImages : IAsyncLifetime
{
    public const string ApiImage = "helixagent:v1.2.0";
    public const string WorkerImage = "helixagent-worker:1.0.0";
    /// <summary>As root a machine-wide cache; as anyone else (rootless buildah) one in the user's home.</summary>
    private static readonly string Storage = ServerProcess.IsRoot
        ? "/var/tmp/helixagent-test-containers"
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "helixagent-test-containers");
    private static readonly string StorageRoot = Path.Combine(Storage, "storage");
    private static readonly string RunRoot = Path.Combine(Storage, "run");

    private readonly List<string> _containers = [];

    public string BuildLog { get; private set; } = "";

    public async Task InitializeAsync()
    {
        await RunAsync("bash", [Path.Combine(RepoPaths.Root, "scripts", "local-base-images.sh"), "--root", StorageRoot, "--runroot", RunRoot],
            RepoPaths.Root, TimeSpan.FromMinutes(10));
        var nuget = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string[] common = ["bud", "--isolation", "chroot", "--layers", "-v", $"{nuget}:/root/.nuget/packages"];
        var api = await BuildahAsync([.. common, "-t", ApiImage, "."], TimeSpan.FromMinutes(10));
        var worker = await BuildahAsync([.. common, "--target", "helixagent-worker", "-t", WorkerImage, "."], TimeSpan.FromMinutes(10));
        BuildLog = api + worker;
    }

    public async Task DisposeAsync()
    {
        foreach (var name in _containers)
        {
            await BuildahAsync(["rm", name], TimeSpan.FromMinutes(1), check: false);
        }
    }

    /// <summary>The image's OCI config (<c>User</c>, <c>Entrypoint</c>, <c>Env</c>, <c>ExposedPorts</c>, ...).</summary>
    public async Task<JsonElement> ConfigAsync(string image)
    {
        var json = await BuildahAsync(["inspect", "--type", "image", image], TimeSpan.FromMinutes(1));
        return JsonDocument.Parse(json).RootElement.GetProperty("OCIv1").GetProperty("config").Clone();
    }

    /// <summary>A container of <paramref name="image"/>, not started yet: <see cref="Container.StartAsync"/>.</summary>
    public async Task<Container> CreateAsync(string image)
    {
        var name = "helixagent-test-" + Guid.NewGuid().ToString("N")[..12];
        await BuildahAsync(["from", "--name", name, image], TimeSpan.FromMinutes(1));
        _containers.Add(name);
        var config = await ConfigAsync(image);
        var entrypoint = config.GetProperty("Entrypoint").EnumerateArray().Select(e => e.GetString()!).ToArray();
        return new Container(this, name, entrypoint);
    }

    /// <summary>
    /// <c>docker run --rm IMAGE COMMAND</c>: the command in a container of its own, removed afterwards. (A second
    /// <c>buildah run</c> in a container that is already running breaks rootless buildah 1.28's clean-up.)
    /// </summary>
    public async Task<(int ExitCode, string Output)> RunOnceAsync(string image, IDictionary<string, string> env, params string[] command)
    {
        await using var container = await CreateAsync(image);
        return await container.ExecAsync(env, command);
    }

    internal string[] Buildah(params string[] args) => ["buildah", "--root", StorageRoot, "--runroot", RunRoot, "--storage-driver", "overlay", .. args];

    internal Task<string> BuildahAsync(string[] args, TimeSpan timeout, bool check = true)
    {
        var command = Buildah(args);
        return RunAsync(command[0], command[1..], RepoPaths.Root, timeout, check);
    }

    private static async Task<string> RunAsync(string file, string[] args, string workingDirectory, TimeSpan timeout, bool check = true)
    {
        var (code, stdout, stderr) = await ServerProcess.RunAsync(file, args, workingDirectory, timeout);
        if (check && code != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {code}:\n{stdout}\n{stderr}");
        }
        return stdout;
    }
}

/// <summary>
/// One container, run the way <c>docker run --network host</c> runs it: the image's entrypoint as its user, in its
/// working directory, with its environment plus the given one.
/// </summary>
public sealed class Container(ContainerImages images, string name, string[] entrypoint) : IAsyncDisposable
{
    private Process? _process;

    public StringBuilder Log { get; } = new();

    public string Name => name;

    public void Start(IDictionary<string, string> env) => _process = ServerProcess.Start(Run(env, entrypoint), Log);

    public bool HasExited => _process is { HasExited: true };

    public string LogText()
    {
        lock (Log)
        {
            return Log.ToString();
        }
    }

    /// <summary>
    /// Runs a command in the container's filesystem, as its user; returns its exit code and output. Not while the
    /// entrypoint runs (see <see cref="ContainerImages.RunOnceAsync"/>).
    /// </summary>
    public async Task<(int ExitCode, string Output)> ExecAsync(IDictionary<string, string> env, params string[] command)
    {
        var run = Run(env, command);
        var (code, stdout, stderr) = await ServerProcess.RunAsync(run[0], run[1..], Path.GetTempPath(), TimeSpan.FromMinutes(1));
        return (code, stdout + stderr);
    }

    /// <summary>SIGTERM to the entrypoint's process, as <c>docker stop</c> and Kubernetes send it.</summary>
    public void Terminate()
    {
        var pid = EntrypointProcess() ?? throw new InvalidOperationException($"{entrypoint[0]} is not running in {name}: {LogText()}");
        ServerProcess.Run("kill", ["-TERM", pid.ToString(CultureInfo.InvariantCulture)]);
    }

    /// <summary>The entrypoint's exit code (buildah run passes it on).</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        var p = _process ?? throw new InvalidOperationException("not started");
        await p.WaitForExitAsync(new CancellationTokenSource(timeout).Token);
        return p.ExitCode;
    }

    /// <summary>A file in the container's filesystem, read by the image's user (after the entrypoint has exited).</summary>
    public async Task<string> ReadFileAsync(string path)
    {
        var (code, output) = await ExecAsync(new Dictionary<string, string>(), "cat", path);
        return code == 0 ? output : throw new FileNotFoundException(output, path);
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is { HasExited: false } p)
        {
            // The entrypoint first: buildah's chroot runner does not always go down with buildah, and a container left
            // running would hold its port and database after the test.
            if (EntrypointProcess() is { } pid)
            {
                ServerProcess.Run("kill", ["-KILL", pid.ToString(CultureInfo.InvariantCulture)]);
            }
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
        }
        _process?.Dispose();
    }

    /// <summary>The <c>buildah run</c> command line for <paramref name="command"/> in this container.</summary>
    private string[] Run(IDictionary<string, string> env, string[] command)
    {
        var args = new List<string> { "run", "--isolation", "chroot", "--network", "host" };
        foreach (var (k, v) in env)
        {
            args.Add("-e");
            args.Add($"{k}={v}");
        }
        args.Add(name);
        args.Add("--");
        args.AddRange(command);
        return images.Buildah([.. args]);
    }

    /// <summary>The entrypoint's pid: the descendant of the buildah process with the entrypoint's name.</summary>
    private int? EntrypointProcess()
    {
        if (_process is null)
        {
            return null;
        }
        var parents = new Dictionary<int, int>();
        var names = new Dictionary<int, string>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
            {
                continue;
            }
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var close = stat.LastIndexOf(')');
                names[pid] = stat[(stat.IndexOf('(') + 1)..close];
                parents[pid] = int.Parse(stat[(close + 2)..].Split(' ')[1], CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
                // gone meanwhile
            }
        }
        var comm = Path.GetFileName(entrypoint[0]);
        comm = comm[..Math.Min(15, comm.Length)];
        foreach (var (pid, processName) in names)
        {
            if (processName != comm)
            {
                continue;
            }
            for (var p = pid; parents.TryGetValue(p, out var parent); p = parent)
            {
                if (parent == _process.Id)
                {
                    return pid;
                }
            }
        }
        return null;
    }
}
