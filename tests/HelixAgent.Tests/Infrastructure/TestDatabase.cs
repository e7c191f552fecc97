using HelixAgent.Data;
using Npgsql;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>A test's own database on <see cref="PostgresServer"/>, migrated to the current schema: its API keys and its ledger.</summary>
internal sealed class TestDatabase
{
    private TestDatabase(string connectionString) => ConnectionString = connectionString;

    public string ConnectionString { get; }

    public static async Task<TestDatabase> CreateAsync(PostgresServer postgres, string prefix = "t") =>
        await OpenAsync(await postgres.CreateDatabaseAsync(prefix));

    /// <summary>An existing database (another replica's, say), migrated if it is not yet (migrations are idempotent).</summary>
    public static async Task<TestDatabase> OpenAsync(string connectionString)
    {
        await using var ds = NpgsqlDataSource.Create(connectionString);
        await new SchemaMigrator(ds).UpAsync();
        return new TestDatabase(connectionString);
    }

    public async Task<string> CreateKeyAsync(string name, int? requestsPerMinute = null, string scope = "client")
    {
        await using var ds = NpgsqlDataSource.Create(ConnectionString);
        return (await new ApiKeyStore(ds).CreateAsync(name, scope, requestsPerMinute, null, null, null, DateTimeOffset.UtcNow)).Secret;
    }

    /// <summary>Polls <c>completions</c> until it holds <paramref name="expected"/> rows (or more), or the timeout passes.</summary>
    public async Task<List<LedgerRow>> WaitForRowsAsync(int expected, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var rows = await GatewayHarness.ReadLedgerAsync(ConnectionString);
            if (rows.Count >= expected || DateTime.UtcNow > deadline)
            {
                // A moment more: a surplus row (a duplicate, a row nobody asked for) would arrive with the last batch.
                await Task.Delay(300);
                return await GatewayHarness.ReadLedgerAsync(ConnectionString);
            }
            await Task.Delay(200);
        }
    }
}
