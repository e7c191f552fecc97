using System.Text.RegularExpressions;
using HelixAgent.Data;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Deployment;

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
