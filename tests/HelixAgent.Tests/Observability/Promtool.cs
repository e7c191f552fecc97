using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Observability;

/// <summary>Runs Prometheus' <c>promtool</c> (Debian package <c>prometheus</c>, installed by scripts/install-deps.sh).</summary>
internal static class Promtool
{
    public static async Task<(int ExitCode, string Output)> RunAsync(string workingDirectory, string? stdin, params string[] args)
    {
        var (exit, stdout, stderr) = await ServerProcess.RunAsync("promtool", args, workingDirectory, TimeSpan.FromSeconds(60), stdin: stdin);
        return (exit, stdout + stderr);
    }
}
