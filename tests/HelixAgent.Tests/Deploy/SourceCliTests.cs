using System.Text.RegularExpressions;
using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Deploy;

/// <summary>
/// The repository's <c>./helixagent</c> script: the runbook's "API Key Rotation" line, typed in a source checkout.
/// Alone after the parallel tests: <c>dotnet run</c> checks the build.
/// </summary>
[Collection(DeploymentScriptsCollection.Name)]
public sealed partial class SourceCliTests(PostgresServer postgres) : IClassFixture<PostgresServer>
{
    [Fact]
    public async Task The_runbooks_dot_slash_helixagent_keys_rotate_line_works_from_the_repository_root()
    {
        var db = await TestDatabase.CreateAsync(postgres, "sourcecli");
        var cs = db.ConnectionString;
        var old = await db.CreateKeyAsync("production-app");

        // ./helixagent keys rotate --name production-app
        var (exit, stdout, stderr) = await ServerProcess.RunAsync(Path.Combine(RepoPaths.Root, "helixagent"),
            ["keys", "rotate", "--name", "production-app"], RepoPaths.Root, TimeSpan.FromMinutes(3),
            new Dictionary<string, string>
            {
                ["ConnectionStrings__helixagent-db"] = cs,
                // never the developer's own AppHost database
                ["HELIXAGENT_DATA_DIR"] = Path.Combine(Path.GetTempPath(), "helixagent-no-local-" + Guid.NewGuid().ToString("N")),
            });

        Assert.True(exit == 0, stdout + stderr);
        // the new key in full (the old one's prefix may be named too)
        var fresh = KeyPattern().Matches(stdout).Select(m => m.Value).MaxBy(k => k.Length) ?? "";
        Assert.NotEqual(old, fresh);
        await using var ds = NpgsqlDataSource.Create(cs);
        var store = new ApiKeyStore(ds);
        var rotated = await store.FindByHashAsync(ApiKeyStore.Hash(fresh));
        Assert.Equal("production-app", rotated?.Name);
        // the old key keeps its 24 h grace
        var previous = await store.FindByHashAsync(ApiKeyStore.Hash(old));
        Assert.NotNull(previous?.ExpiresAt);
        Assert.InRange(previous.ExpiresAt.Value - DateTimeOffset.UtcNow, TimeSpan.FromHours(23.9), TimeSpan.FromHours(24.1));
    }

    [GeneratedRegex(@"hxa_[A-Za-z0-9_\-]+")]
    private static partial Regex KeyPattern();
}

/// <summary>The README's first-request <c>psql</c> line, verbatim, for root and non-root data directories alike.</summary>
public sealed class EnvCommandTests(PostgresServer postgres) : IClassFixture<PostgresServer>
{
    [Fact]
    public async Task The_readmes_psql_line_reads_the_local_environment_through_helixagent_env()
    {
        var db = await TestDatabase.CreateAsync(postgres, "envcmd");
        var cs = new Npgsql.NpgsqlConnectionStringBuilder(db.ConnectionString);
        var dataDir = Path.Combine(Path.GetTempPath(), "helixagent-env-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dataDir);
        await File.WriteAllTextAsync(Path.Combine(dataDir, "helixagent.env"), $"""
            export PGHOST={cs.Host}
            export PGPORT={cs.Port}
            export PGUSER={cs.Username}
            export PGPASSWORD={cs.Password}
            export PGDATABASE={cs.Database}
            """);
        var readme = await File.ReadAllTextAsync(Path.Combine(RepoPaths.Root, "README.md"));
        var line = readme.Split('\n').Single(l => l.StartsWith("(eval \"$(./helixagent env)\"; psql", StringComparison.Ordinal));
        var command = line[..line.IndexOf("   #", StringComparison.Ordinal)].Trim();

        var (exit, stdout, stderr) = await ServerProcess.RunAsync("bash", ["-c", command], RepoPaths.Root, TimeSpan.FromMinutes(3),
            new Dictionary<string, string> { ["HELIXAGENT_DATA_DIR"] = dataDir });

        Assert.True(exit == 0, $"{command}\n{stdout}{stderr}");
        Assert.Contains("count", stdout);
        Assert.Matches(@"\n\s+0\n", stdout);

        var (missingExit, _, missingErr) = await ServerProcess.RunAsync(Path.Combine(RepoPaths.Root, "helixagent"), ["env"], RepoPaths.Root,
            TimeSpan.FromMinutes(3), new Dictionary<string, string> { ["HELIXAGENT_DATA_DIR"] = dataDir + "-absent" });
        Assert.Equal(2, missingExit);
        Assert.Contains("start HelixAgent first", missingErr);
    }
}
