namespace HelixAgent.Tests.Infrastructure;

internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    /// <summary>The built <c>helixagent</c> binary of the same configuration as this test assembly.</summary>
    public static string ApiDll => Built("HelixAgent.Api", "helixagent.dll");

    /// <summary>The built <c>helixagent-worker</c> binary of the same configuration as this test assembly.</summary>
    public static string WorkerDll => Built("HelixAgent.Worker", "helixagent-worker.dll");

    private static string Built(string project, string file)
    {
        var config = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
        var dll = Path.Combine(Root, project, "bin", config, "net10.0", file);
        return File.Exists(dll) ? dll : throw new FileNotFoundException("build the solution first", dll);
    }

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "HelixAgent.sln")))
        {
            dir = dir.Parent;
        }
        return dir?.FullName ?? throw new InvalidOperationException("HelixAgent.sln not found above " + AppContext.BaseDirectory);
    }
}
