using System.Diagnostics;
using System.Xml.Linq;

namespace HelixAgent.Deploy;

/// <summary>Runs the AppHost's manifest publisher and writes <c>aspirate-output/</c> from it.</summary>
public static class Generation
{
    public const string OutputFolder = "aspirate-output";

    /// <summary>The folder holding HelixAgent.sln, searched upwards from <paramref name="start"/>.</summary>
    public static string FindRepoRoot(string start)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "HelixAgent.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException($"no HelixAgent.sln above {start}");
    }

    /// <summary>&lt;Version&gt; from Directory.Build.props: the image tag of the project workloads.</summary>
    public static string ReadVersion(string repoRoot)
    {
        var props = XDocument.Load(Path.Combine(repoRoot, "Directory.Build.props"));
        return props.Descendants("Version").Select(v => v.Value.Trim()).FirstOrDefault(v => v.Length > 0)
            ?? throw new InvalidOperationException("Directory.Build.props has no <Version>");
    }

    /// <summary>
    /// <c>dotnet run --project HelixAgent.AppHost --no-build --no-launch-profile -- --publisher manifest</c> in Production,
    /// with <c>Parameters__*</c> removed from the environment so the manifest depends on the code only.
    /// </summary>
    public static async Task<string> PublishManifestAsync(string repoRoot, string configuration, bool build, TextWriter log, CancellationToken ct = default)
    {
        if (build)
        {
            await RunDotnetAsync(repoRoot, ["build", "HelixAgent.AppHost", "-c", configuration, "--nologo", "-v", "q"], log, ct);
        }
        var dir = Directory.CreateTempSubdirectory("helixagent-manifest-");
        try
        {
            var path = Path.Combine(dir.FullName, "manifest.json");
            await RunDotnetAsync(repoRoot,
                ["run", "--project", "HelixAgent.AppHost", "-c", configuration, "--no-build", "--no-launch-profile", "--",
                 "--publisher", "manifest", "--output-path", path], log, ct);
            return await File.ReadAllTextAsync(path, ct);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>aspirate-output/ files, relative to that folder.</summary>
    public static SortedDictionary<string, string> Generate(string manifestJson, string version) =>
        new KustomizeGenerator(new AspireManifest(manifestJson), version).Generate();

    /// <summary>docker-compose.yml and .env.example, relative to the repository root.</summary>
    public static SortedDictionary<string, string> GenerateCompose(string manifestJson, string version) =>
        new ComposeGenerator(new AspireManifest(manifestJson), version).Generate();

    /// <summary>Writes files relative to <paramref name="dir"/> (UTF-8 without BOM, content as given: LF).</summary>
    public static void WriteFiles(string dir, SortedDictionary<string, string> files)
    {
        foreach (var (relative, content) in files)
        {
            var path = Path.Combine(dir, relative.Replace('/', Path.DirectorySeparatorChar));
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(content));
        }
    }

    /// <summary>
    /// Replaces the generated files in <paramref name="outputDir"/>: every file not starting with a dot is removed first
    /// (so renamed resources leave nothing behind); the operator's git-ignored <c>.&lt;name&gt;.secrets</c> stay.
    /// </summary>
    public static void Write(string outputDir, SortedDictionary<string, string> files)
    {
        if (Directory.Exists(outputDir))
        {
            foreach (var file in Directory.EnumerateFiles(outputDir, "*", SearchOption.AllDirectories))
            {
                if (!Path.GetFileName(file).StartsWith('.'))
                {
                    File.Delete(file);
                }
            }
            foreach (var dir in Directory.EnumerateDirectories(outputDir, "*", SearchOption.AllDirectories).OrderByDescending(d => d.Length))
            {
                if (!Directory.EnumerateFileSystemEntries(dir).Any())
                {
                    Directory.Delete(dir);
                }
            }
        }
        WriteFiles(outputDir, files);
    }

    private static async Task RunDotnetAsync(string workingDir, string[] args, TextWriter log, CancellationToken ct)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingDir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        foreach (var key in psi.Environment.Keys.ToList())
        {
            if (key.StartsWith("Parameters__", StringComparison.OrdinalIgnoreCase) ||
                key.StartsWith("Infrastructure__", StringComparison.OrdinalIgnoreCase) ||
                key.StartsWith("Demo__", StringComparison.OrdinalIgnoreCase))
            {
                psi.Environment.Remove(key);
            }
        }
        psi.Environment["DOTNET_ENVIRONMENT"] = "Production";
        psi.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("dotnet did not start");
        var stdout = p.StandardOutput.ReadToEndAsync(ct);
        var stderr = p.StandardError.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        if (p.ExitCode != 0)
        {
            await log.WriteLineAsync(await stdout);
            await log.WriteLineAsync(await stderr);
            throw new InvalidOperationException($"dotnet {string.Join(' ', args)} exited with {p.ExitCode}");
        }
    }
}
