using System.Diagnostics;

namespace HelixAgent.Tests.Observability;

/// <summary>Runs Prometheus' <c>promtool</c> (Debian package <c>prometheus</c>, installed by scripts/install-deps.sh).</summary>
internal static class Promtool
{
    public static async Task<(int ExitCode, string Output)> RunAsync(string workingDirectory, string? stdin, params string[] args)
    {
        var start = new ProcessStartInfo("promtool")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException("promtool not found: run ./scripts/install-deps.sh (Debian package 'prometheus')", ex);
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (stdin is not null)
            {
                await process.StandardInput.WriteAsync(stdin);
                process.StandardInput.Close();
            }
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(timeout.Token);
            return (process.ExitCode, await stdout + await stderr);
        }
    }
}
