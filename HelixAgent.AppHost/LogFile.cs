namespace HelixAgent.AppHost;

/// <summary>
/// The API's log file in a local run, so the runbook's <c>grep "provider error" /var/log/helixagent/app.log</c> works
/// against the AppHost too: that path where this user may write it (root, or a folder made for them with
/// <c>sudo install -d -o $USER /var/log/helixagent</c>), else <c>logs/app.log</c> in the data folder. <c>LogFile</c>
/// in the AppHost's configuration picks another path; <c>LogFile=off</c> none. Never in publish mode: the container
/// image and the systemd unit set it themselves.
/// </summary>
public static class LogFile
{
    public const string RunbookPath = "/var/log/helixagent/app.log";

    public static IResourceBuilder<ProjectResource> WithLogFile(this IResourceBuilder<ProjectResource> api)
    {
        var builder = api.ApplicationBuilder;
        if (builder.ExecutionContext.IsPublishMode)
        {
            return api;
        }
        var configured = builder.Configuration["LogFile"];
        if (string.Equals(configured, "off", StringComparison.OrdinalIgnoreCase))
        {
            return api;
        }
        var path = string.IsNullOrWhiteSpace(configured)
            ? Writable(RunbookPath) ? RunbookPath : Path.Combine(LocalDevEnvironment.DataDirectory, "logs", "app.log")
            : Path.GetFullPath(configured);
        Console.WriteLine(path == RunbookPath
            ? $"HelixAgent: the API also logs to {path} (runbook: grep \"provider error\" {path})."
            : $"HelixAgent: the API also logs to {path}; {Path.GetDirectoryName(RunbookPath)} is not writable for {Environment.UserName} " +
              $"(sudo install -d -o {Environment.UserName} {Path.GetDirectoryName(RunbookPath)} makes the runbook's path work).");
        return api.WithEnvironment("Logging__File__Path", path);
    }

    /// <summary>Whether the file's folder exists or can be made, and a file can be created in it.</summary>
    private static bool Writable(string file)
    {
        var dir = Path.GetDirectoryName(file)!;
        try
        {
            Directory.CreateDirectory(dir);
            var probe = Path.Combine(dir, $".write-test-{Environment.ProcessId}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
            return true;
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException or IOException)
        {
            return false;
        }
    }
}
