using System.Diagnostics;
using System.Reflection;
using HelixAgent.Deploy;
using k8s;
using k8s.Models;

namespace HelixAgent.Deploy.Tests;

/// <summary>
/// The committed <c>aspirate-output/</c> built by <c>kubectl kustomize</c> the way an operator would, with each
/// <c>.&lt;name&gt;.secrets</c> written from its committed <c>.secrets.example</c>. Built once per test run.
/// </summary>
public sealed class KustomizeOutput
{
    private static readonly Lazy<KustomizeOutput> Shared = new(() => new KustomizeOutput(), LazyThreadSafetyMode.ExecutionAndPublication);

    public static KustomizeOutput Instance => Shared.Value;

    public static string RepoRoot { get; } = Generation.FindRepoRoot(AppContext.BaseDirectory);

    public static string OutputDir => Path.Combine(RepoRoot, Generation.OutputFolder);

    public static string Configuration =>
        typeof(KustomizeOutput).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";

    /// <summary>The YAML stream kubectl printed.</summary>
    public string Yaml { get; }

    /// <summary>Every object, typed (strict: unknown fields throw).</summary>
    public IReadOnlyList<object> Objects { get; }

    private KustomizeOutput()
    {
        var temp = Directory.CreateTempSubdirectory("helixagent-kustomize-");
        try
        {
            CopyDirectory(OutputDir, temp.FullName);
            foreach (var example in Directory.EnumerateFiles(temp.FullName, "*.secrets.example", SearchOption.AllDirectories))
            {
                var name = Path.GetFileName(example)[..^".secrets.example".Length];
                File.Copy(example, Path.Combine(Path.GetDirectoryName(example)!, $".{name}.secrets"), overwrite: true);
            }
            Yaml = RunKubectl(["kustomize", temp.FullName]);
        }
        finally
        {
            temp.Delete(recursive: true);
        }
        Objects = KubernetesYaml.LoadAllFromString(Yaml, typeMap: null, strict: true);
    }

    public IEnumerable<T> OfType<T>() => Objects.OfType<T>();

    public V1Deployment Deployment(string name) => Assert.Single(OfType<V1Deployment>(), d => d.Metadata.Name == name);

    public static string RunKubectl(IEnumerable<string> args)
    {
        (int Exit, string Out, string Err) result;
        try
        {
            result = Run("kubectl", args);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException(
                "kubectl is not installed or not on PATH: the Kubernetes output checks need `kubectl kustomize` (kubectl 1.32 " +
                "ships Kustomize 5.5; install it from the Kubernetes release binaries, not Debian's kubernetes-client).", e);
        }
        if (result.Exit != 0)
        {
            throw new InvalidOperationException($"kubectl {string.Join(' ', args)} failed ({result.Exit}): {result.Err}");
        }
        return result.Out;
    }

    /// <summary>Runs a program to its end (60 s at most) and returns its exit code and output.</summary>
    public static (int Exit, string Out, string Err) Run(string file, IEnumerable<string> args, string? workingDirectory = null)
    {
        var list = args.ToList();
        return Task.Run(() => HelixAgent.Tests.Infrastructure.ServerProcess.RunAsync(file, list, workingDirectory, TimeSpan.FromSeconds(60)))
            .GetAwaiter().GetResult();
    }

    /// <summary>Copies the committed output, leaving out the operator's own <c>.&lt;name&gt;.secrets</c>.</summary>
    public static void CopyDirectory(string from, string to)
    {
        foreach (var dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        }
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            // the operator's own .<name>.secrets (git-ignored) must not decide whether the committed output builds
            if (Path.GetFileName(file).EndsWith(".secrets", StringComparison.Ordinal))
            {
                continue;
            }
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
        }
    }
}
