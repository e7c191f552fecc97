namespace HelixAgent;

/// <summary>
/// Where the AppHost keeps the local (no-container) PostgreSQL and Redis data, and the connection file it writes
/// for the CLI, the Makefile and psql. Shared so that <c>make migrate-up</c> finds what <c>dotnet run --project
/// HelixAgent.AppHost</c> started.
/// </summary>
public static class LocalDevEnvironment
{
    /// <summary>
    /// <c>$HELIXAGENT_DATA_DIR</c>, else <c>/var/lib/helixagent-dev</c> for root (PostgreSQL runs as the
    /// <c>postgres</c> user, which cannot read /root), else <c>$XDG_DATA_HOME/helixagent</c>.
    /// </summary>
    public static string DataDirectory
    {
        get
        {
            var explicitDir = Environment.GetEnvironmentVariable("HELIXAGENT_DATA_DIR");
            if (!string.IsNullOrWhiteSpace(explicitDir))
            {
                return Path.GetFullPath(explicitDir);
            }
            if (OperatingSystem.IsLinux() && Environment.UserName == "root")
            {
                return "/var/lib/helixagent-dev";
            }
            var xdg = Environment.GetEnvironmentVariable("XDG_DATA_HOME");
            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return Path.Combine(string.IsNullOrWhiteSpace(xdg) ? Path.Combine(home, ".local", "share") : xdg, "helixagent");
        }
    }

    /// <summary>Shell file with PG* variables and the connection strings (<c>. "$file"</c> makes psql and the CLI find the database).</summary>
    public static string EnvFile => Path.Combine(DataDirectory, "helixagent.env");

    /// <summary>Reads <c>KEY=value</c> lines (optionally prefixed with <c>export</c>) of <see cref="EnvFile"/>.</summary>
    public static IReadOnlyDictionary<string, string> ReadEnvFile()
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!File.Exists(EnvFile))
        {
            return result;
        }
        foreach (var raw in File.ReadAllLines(EnvFile))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }
            if (line.StartsWith("export ", StringComparison.Ordinal))
            {
                line = line[7..];
            }
            var eq = line.IndexOf('=');
            if (eq <= 0)
            {
                continue;
            }
            result[line[..eq]] = line[(eq + 1)..].Trim('\'');
        }
        return result;
    }
}
