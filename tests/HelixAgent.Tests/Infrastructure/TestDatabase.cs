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

    /// <summary>
    /// The rows of <c>completions</c> once the gateway processes in <paramref name="writers"/> are quiescent (no request in
    /// flight, nothing queued in the ledger, read from each one's <c>/debug/pprof/goroutine</c> and <c>/metrics</c>) and
    /// the table holds <paramref name="expected"/> rows or more. See <see cref="QuiescentRowsAsync"/>.
    /// </summary>
    public Task<List<LedgerRow>> WaitForRowsAsync(int expected, TimeSpan timeout, params ApiProcess[] writers) =>
        QuiescentRowsAsync(ConnectionString, expected, async () =>
        {
            var activity = new LedgerActivity(0, 0);
            foreach (var api in writers.Where(w => !w.HasExited))
            {
                activity += await LedgerActivity.OfAsync(api.BaseAddress);
            }
            return activity;
        }, timeout);

    /// <summary>
    /// The one ledger wait of the tests. Polls until the writer is quiescent (<paramref name="activity"/>: no client request
    /// in flight, so every answered one has recorded its row, and none queued, so every recorded row is written) and
    /// <c>completions</c> holds at least <paramref name="expected"/> rows; then returns every row, so a surplus row (a
    /// duplicate, a row nobody asked for) is there for the caller to see. Fails at the deadline naming what it saw.
    /// </summary>
    public static async Task<List<LedgerRow>> QuiescentRowsAsync(string connectionString, int expected, Func<Task<LedgerActivity>> activity,
        TimeSpan? timeout = null)
    {
        var (rows, _) = await Eventually.ValueAsync(async () =>
            {
                // Quiet first, rows second: every row recorded before the quiet moment is in the table when it is read.
                var now = await activity();
                return (Rows: now.Quiet ? await GatewayHarness.ReadLedgerAsync(connectionString) : [], Activity: now);
            },
            seen => seen.Activity.Quiet && seen.Rows.Count >= expected,
            $"{expected} row(s) in completions with no request in flight and no row queued", timeout,
            seen => $"{seen.Rows.Count} rows, {seen.Activity}");
        return rows;
    }
}

/// <summary>What a gateway has yet to put in <c>completions</c>: client requests in flight and rows queued in its ledger.</summary>
public readonly record struct LedgerActivity(int InFlight, int Queued)
{
    public bool Quiet => InFlight == 0 && Queued == 0;

    public static LedgerActivity operator +(LedgerActivity a, LedgerActivity b) => new(a.InFlight + b.InFlight, a.Queued + b.Queued);

    /// <summary>A running process's: its in-flight count (<c>/debug/pprof/goroutine?debug=1</c>, open on loopback) and <c>helixagent_ledger_unshipped_rows</c>.</summary>
    public static async Task<LedgerActivity> OfAsync(Uri instance)
    {
        using var http = new HttpClient { BaseAddress = instance, Timeout = TimeSpan.FromSeconds(10) };
        var threads = await http.GetStringAsync("/debug/pprof/goroutine?debug=1");
        var line = threads.Split('\n').Single(l => l.StartsWith("in-flight requests: ", StringComparison.Ordinal));
        var inFlight = int.Parse(line["in-flight requests: ".Length..], System.Globalization.CultureInfo.InvariantCulture);
        var queued = (int)(await ScrapedMetrics.ScrapeAsync(http)).Sum("helixagent_ledger_unshipped_rows");
        return new LedgerActivity(inFlight, queued);
    }

    public override string ToString() => $"{InFlight} request(s) in flight, {Queued} row(s) queued";
}
