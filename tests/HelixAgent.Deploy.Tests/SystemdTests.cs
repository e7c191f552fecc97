using System.Diagnostics;

namespace HelixAgent.Deploy.Tests;

/// <summary>deploy/systemd units: the keys the runbook's systemctl/journalctl lines rely on, and systemd's own check.</summary>
public sealed class SystemdTests
{
    private static string Dir => Path.Combine(KustomizeOutput.RepoRoot, "deploy", "systemd");

    /// <summary>section → key → values (a key may repeat).</summary>
    private static Dictionary<string, Dictionary<string, List<string>>> Parse(string unit)
    {
        var result = new Dictionary<string, Dictionary<string, List<string>>>(StringComparer.Ordinal);
        Dictionary<string, List<string>>? section = null;
        foreach (var raw in File.ReadAllLines(Path.Combine(Dir, unit)))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#') || line.StartsWith(';'))
            {
                continue;
            }
            if (line.StartsWith('[') && line.EndsWith(']'))
            {
                section = result[line[1..^1]] = new Dictionary<string, List<string>>(StringComparer.Ordinal);
                continue;
            }
            Assert.NotNull(section);
            var eq = line.IndexOf('=', StringComparison.Ordinal);
            Assert.True(eq > 0, $"{unit}: not a key=value line: {line}");
            var key = line[..eq].Trim();
            if (!section.TryGetValue(key, out var values))
            {
                section[key] = values = [];
            }
            values.Add(line[(eq + 1)..].Trim());
        }
        return result;
    }

    [Theory]
    [InlineData("helixagent.service", "/usr/lib/helixagent/helixagent", "8080")]
    [InlineData("helixagent-worker.service", "/usr/lib/helixagent-worker/helixagent-worker", "8081")]
    public void Unit_has_the_keys_operations_rely_on(string unit, string execStart, string port)
    {
        var u = Parse(unit);
        var service = u["Service"];
        Assert.Equal(execStart, Assert.Single(service["ExecStart"]));
        Assert.Equal("/etc/helixagent/helixagent.env", Assert.Single(service["EnvironmentFile"]));
        Assert.True(int.Parse(Assert.Single(service["TimeoutStopSec"]), System.Globalization.CultureInfo.InvariantCulture) >= 30,
            "the runbook allows at least 30 s for graceful shutdown");
        Assert.Equal("SIGTERM", Assert.Single(service["KillSignal"]));
        Assert.Equal("journal", Assert.Single(service["StandardOutput"]));
        Assert.Equal("journal", Assert.Single(service["StandardError"]));
        Assert.Equal(Path.GetFileNameWithoutExtension(unit), Assert.Single(service["SyslogIdentifier"]));
        Assert.Contains(service["Environment"], e => e.Split(' ').Contains($"HTTP_PORTS={port}"));
        Assert.Equal("multi-user.target", Assert.Single(u["Install"]["WantedBy"]));
        Assert.False(string.IsNullOrWhiteSpace(Assert.Single(u["Unit"]["Description"])));
    }

    [Fact]
    public void Api_unit_writes_the_runbooks_log_file_into_a_folder_systemd_makes_for_the_service_user()
    {
        var service = Parse("helixagent.service")["Service"];
        // runbook "Provider Failures": grep "provider error" /var/log/helixagent/app.log
        Assert.Contains(service["Environment"], e => e.Split(' ').Contains("Logging__File__Path=/var/log/helixagent/app.log"));
        Assert.Equal("helixagent", Assert.Single(service["LogsDirectory"]));
    }

    [Fact]
    public void Api_unit_keeps_the_ledger_journal_in_the_state_directory_systemd_makes_for_the_service_user()
    {
        var service = Parse("helixagent.service")["Service"];
        Assert.Equal("helixagent", Assert.Single(service["StateDirectory"]));
        // StateDirectory=helixagent is /var/lib/helixagent, kept across restarts and owned by User=.
        Assert.Contains(service["Environment"], e => e.Split(' ').Contains("Ledger__Journal__Path=/var/lib/helixagent/ledger"));
    }

    [Fact]
    public void Env_example_sets_the_connection_strings_but_not_the_ports()
    {
        var keys = File.ReadAllLines(Path.Combine(Dir, "helixagent.env.example"))
            .Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l[..l.IndexOf('=', StringComparison.Ordinal)]).ToList();
        Assert.Contains("ConnectionStrings__helixagent-db", keys);
        Assert.Contains("ConnectionStrings__redis", keys);
        Assert.DoesNotContain("HTTP_PORTS", keys); // EnvironmentFile= would override each unit's own port
    }

    /// <summary>
    /// <c>systemd-analyze verify</c> (the binaries are not installed here, so ExecStart is pointed at /bin/true in a copy).
    /// scripts/install-deps.sh installs it (Debian's systemd package); without it this test fails rather than pass unchecked.
    /// </summary>
    [Theory]
    [InlineData("helixagent.service")]
    [InlineData("helixagent-worker.service")]
    public async Task Systemd_analyze_verify_finds_nothing(string unit)
    {
        var analyze = new[] { "/usr/bin/systemd-analyze", "/bin/systemd-analyze" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("systemd-analyze is not installed: ./scripts/install-deps.sh installs it (apt-get install systemd)");
        var temp = Directory.CreateTempSubdirectory("helixagent-systemd-");
        try
        {
            var copy = Path.Combine(temp.FullName, unit);
            File.WriteAllLines(copy, File.ReadAllLines(Path.Combine(Dir, unit))
                .Select(l => l.StartsWith("ExecStart=", StringComparison.Ordinal) ? "ExecStart=/bin/true" : l));
            var (exit, output, err) = await HelixAgent.Tests.Infrastructure.ServerProcess.RunAsync(analyze, ["verify", copy], timeout: TimeSpan.FromSeconds(30));
            // messages about the host (no systemd as PID 1, unknown dependencies) are not about the unit's syntax
            var problems = (err + output).Split('\n')
                .Where(l => l.Contains(unit, StringComparison.Ordinal) && !l.Contains("Unit ", StringComparison.Ordinal))
                .ToList();
            Assert.True(exit == 0 && problems.Count == 0, $"systemd-analyze verify {unit}: {err}{output}");
        }
        finally
        {
            temp.Delete(recursive: true);
        }
    }
}
