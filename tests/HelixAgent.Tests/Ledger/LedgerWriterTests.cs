using System.Net;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Npgsql;

namespace HelixAgent.Tests.Ledger;

/// <summary>The usage ledger's writer when PostgreSQL refuses a row rather than being unreachable.</summary>
public sealed class LedgerWriterTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private async Task<(GatewayHarness Gw, FakeUpstream Upstream)> StartAsync(params string[] models)
    {
        var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var s = new Dictionary<string, string?>
        {
            ["Providers:up:Type"] = "openai",
            ["Providers:up:BaseUrl"] = upstream.BaseUrl.ToString(),
            ["Gateway:ProbeIntervalSeconds"] = "0",
            ["Ledger:FlushIntervalMs"] = "1000", // every request below lands in the same batch
        };
        for (var i = 0; i < models.Length; i++)
        {
            s[$"Providers:up:Models:{i}"] = models[i];
        }
        return (await GatewayHarness.StartAsync(postgres, redis, s), upstream);
    }

    [Fact]
    public async Task A_row_postgres_refuses_is_counted_lost_and_the_rows_batched_with_it_are_still_written()
    {
        var (gw, upstream) = await StartAsync("good-model", "refused-model");
        await using var _ = gw;
        await using var __ = upstream;
        // As if an operator had added a constraint the gateway's rows can break.
        await using (var ds = NpgsqlDataSource.Create(gw.DatabaseConnectionString))
        {
            await ds.CreateCommand("ALTER TABLE completions ADD CONSTRAINT no_refused_model CHECK (model <> 'refused-model')").ExecuteNonQueryAsync();
        }

        var models = new[] { "good-model", "good-model", "refused-model", "good-model", "good-model" };
        var ids = new List<string>();
        foreach (var model in models)
        {
            var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat(model));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            ids.Add(response.Headers.GetValues("x-request-id").Single());
        }

        var rows = await gw.LedgerRowsAsync(4);
        Assert.Equal(new[] { ids[0], ids[1], ids[3], ids[4] }.Order(), rows.Select(r => r.RequestId).Order());
        // The refused row is counted lost, once; the ledger is quiescent already, so the count is final.
        Assert.Equal(1, (await ScrapedMetrics.ScrapeAsync(gw.Anonymous())).Sum("helixagent_ledger_rows_lost_total"));

        // The writer goes on: a later request is written too.
        var later = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("good-model"));
        var laterId = later.Headers.GetValues("x-request-id").Single();
        Assert.Contains(laterId, (await gw.LedgerRowsAsync(5)).Select(r => r.RequestId));
    }

    [Fact]
    public async Task Without_the_journal_a_full_ledger_queue_counts_every_row_it_cannot_keep_and_writes_the_rest()
    {
        var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var __ = upstream;
        var s = new Dictionary<string, string?>
        {
            ["Providers:up:Type"] = "openai",
            ["Providers:up:BaseUrl"] = upstream.BaseUrl.ToString(),
            ["Providers:up:Models:0"] = "m",
            ["Gateway:ProbeIntervalSeconds"] = "0",
            ["Ledger:Journal:Enabled"] = "false", // the in-memory queue (the DropWrite regression: full was silent)
            ["Ledger:Capacity"] = "5",
            ["Ledger:FlushIntervalMs"] = "0",
        };
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, s);
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        await gw.LedgerRowsAsync(1);

        // The table is locked: the writer's insert waits, the queue fills.
        await using var locker = new NpgsqlConnection(gw.DatabaseConnectionString);
        await locker.OpenAsync();
        var tx = await locker.BeginTransactionAsync();
        await new NpgsqlCommand("LOCK TABLE completions IN ACCESS EXCLUSIVE MODE", locker, tx).ExecuteNonQueryAsync();
        const int sent = 20;
        for (var i = 0; i < sent; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        }
        var lost = (await ScrapedMetrics.ScrapeAsync(gw.Anonymous())).Sum("helixagent_ledger_rows_lost_total");
        await tx.CommitAsync();

        var rows = await gw.LedgerRowsAsync(1 + sent - (int)lost);
        Assert.True(lost > 0, "a full queue lost no row: the test did not fill it");
        Assert.Equal(1 + sent, rows.Count + lost);
        var after = await ScrapedMetrics.ScrapeAsync(gw.Anonymous());
        Assert.Equal(lost, after.Sum("helixagent_ledger_rows_lost_total"));
        Assert.Equal(0, after.Sum("helixagent_ledger_unshipped_rows"));
    }

    [Fact]
    public async Task A_nul_character_in_a_model_name_is_written_as_a_replacement_character_instead_of_losing_the_row()
    {
        var (gw, upstream) = await StartAsync("odd\0model");
        await using var _ = gw;
        await using var __ = upstream;

        var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("odd\0model"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal((response.Headers.GetValues("x-request-id").Single(), "odd\uFFFDmodel"), (row.RequestId, row.Model));
    }
}
