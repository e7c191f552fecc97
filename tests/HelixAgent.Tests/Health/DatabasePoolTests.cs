using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace HelixAgent.Tests.Health;

/// <summary>The runbook's "Scale connection pool": <c>Database:Pool:MaxOpen</c> sizes the pool, and contention is visible.</summary>
public sealed class DatabasePoolTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Theory]
    [InlineData("Host=db;Database=d", GssEncryptionMode.Disable)]
    [InlineData("Host=db;Database=d;GSS Encryption Mode=Require", GssEncryptionMode.Require)]
    [InlineData("Host=db;Database=d;gssencryptionmode=prefer", GssEncryptionMode.Prefer)]
    public void Gss_encryption_is_off_unless_the_connection_string_asks_for_it(string connectionString, GssEncryptionMode expected)
    {
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        HelixAgent.Data.DatabasePool.Configure(builder, null);
        Assert.Equal(expected, builder.ConnectionStringBuilder.GssEncryptionMode);
        using var cli = HelixAgent.Data.DatabasePool.CreateDataSource(connectionString);
        Assert.Equal(expected, new NpgsqlConnectionStringBuilder(cli.ConnectionString).GssEncryptionMode);
    }

    [Fact]
    public async Task Max_open_sizes_the_pool_and_requests_queueing_for_it_show_as_pending()
    {
        var settings = GatewayHarness.SimulatorSettings();
        settings["Database:Pool:MaxOpen"] = "1";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        async Task<JsonNode> PoolAsync() =>
            JsonNode.Parse(await (await gw.Anonymous().GetAsync("/health/detailed")).Content.ReadAsStringAsync())!["database_pool"]!;
        Assert.Equal(1, (await PoolAsync())["max"]!.GetValue<long>());

        // Another session locks completions: the ledger's insert holds the only pooled connection while it waits.
        await using var blocker = new NpgsqlConnection(gw.DatabaseConnectionString + ";Pooling=false");
        await blocker.OpenAsync();
        await using var tx = await blocker.BeginTransactionAsync();
        await new NpgsqlCommand("LOCK TABLE completions IN ACCESS EXCLUSIVE MODE", blocker, tx).ExecuteNonQueryAsync();
        await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("sim-small"));
        var pool = gw.Factory.Services.GetRequiredService<HelixAgent.Api.Health.NpgsqlPoolMetrics>();
        await Eventually.TrueAsync(() => pool.Snapshot().Used == 1, "the ledger's insert holding the only connection");

        // The health probe now queues for the only connection: the pool reports it as pending while it waits.
        var probe = gw.Anonymous().GetAsync("/health");
        var pending = await Eventually.ValueAsync(() => Task.FromResult(pool.Snapshot().Pending), p => p > 0, "the health probe waiting for a connection");
        Assert.Equal(1, pending);
        // The runbook's `curl /metrics | grep db_pool` shows the contention.
        var metrics = await gw.Anonymous().GetStringAsync("/metrics");
        Assert.Contains("helixagent_db_pool_waiting 1\n", metrics);
        Assert.Contains("helixagent_db_pool_max 1\n", metrics);

        await tx.RollbackAsync();
        await probe;
        Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(0, pool.Snapshot().Pending);
    }
}
