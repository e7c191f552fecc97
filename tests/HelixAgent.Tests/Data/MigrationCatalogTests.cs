using HelixAgent.Data;

namespace HelixAgent.Tests.Data;

public sealed class MigrationCatalogTests
{
    [Fact]
    public void Every_embedded_migration_has_up_and_down_scripts_in_increasing_versions()
    {
        Assert.NotEmpty(SchemaMigrator.All);
        Assert.Equal(SchemaMigrator.All.OrderBy(m => m.Version).Select(m => m.Version), SchemaMigrator.All.Select(m => m.Version));
        Assert.All(SchemaMigrator.All, m =>
        {
            Assert.False(string.IsNullOrWhiteSpace(m.Up));
            Assert.False(string.IsNullOrWhiteSpace(m.Down));
        });
        Assert.Equal(SchemaMigrator.All[^1].Version, SchemaMigrator.ExpectedVersion);
    }

    [Fact]
    public void The_first_migration_creates_the_contract_tables()
    {
        var first = SchemaMigrator.All[0];
        Assert.Contains("CREATE TABLE api_keys", first.Up);
        Assert.Contains("CREATE TABLE completions", first.Up);
        Assert.Contains("key_hash", first.Up);
        Assert.DoesNotContain("key_plain", first.Up);
    }
}
