using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// The cost of every request: the price table applied to the usage each protocol reports, cached and cache-write
/// tokens included, in exact decimals, in <c>completions.cost_usd</c>, the <c>x-helixagent-cost-usd</c> header and
/// <c>helixagent_spend_usd_total</c>.
/// </summary>
public sealed class PricingTests(PostgresServer postgres, RedisServer redis) : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public void A_price_applies_to_uncached_cache_read_cache_write_and_output_tokens_each_at_its_own_rate()
    {
        // claude-sonnet-4-5 from the built-in table: $3 input, $0.30 cache read, $3.75 cache write, $15 output per MTok.
        var sonnet = PriceTable.Defaults["claude-sonnet-4-5"];
        // 12,000 prompt tokens of which 8,000 read from the cache and 2,000 written to it; 500 output:
        // 2,000 × 3 + 8,000 × 0.30 + 2,000 × 3.75 + 500 × 15 = 6,000 + 2,400 + 7,500 + 7,500 = 23,400 µ$ = $0.0234.
        Assert.Equal(0.0234m, sonnet.Cost(new TokenUsage(12_000, 500, CachedTokens: 8_000, CacheWriteTokens: 2_000)));
        // gpt-4o-mini: $0.15 input, $0.075 cached, $0.60 output. 1,234 prompt (1,024 cached), 77 output:
        // 210 × 0.15 + 1,024 × 0.075 + 77 × 0.60 = 31.5 + 76.8 + 46.2 = 154.5 µ$.
        Assert.Equal(0.0001545m, PriceTable.Defaults["gpt-4o-mini"].Cost(new TokenUsage(1_234, 77, CachedTokens: 1_024)));
        // Without a cache price, a cache read costs the input price; one token of a $0.10 model is $0.0000001.
        Assert.Equal(0.0000001m, new ModelPrice { InputPerMTok = 0.10m, OutputPerMTok = 0.40m }.Cost(new TokenUsage(1, 0, CachedTokens: 1)));
        Assert.Equal(0m, sonnet.Cost(default));
        Assert.All(PriceTable.Defaults.Values, p => Assert.Contains(", as of ", p.Source));
    }

    private static readonly ModelPrice Price = new() { InputPerMTok = 2.50m, OutputPerMTok = 10m, CachedInputPerMTok = 1.25m, CacheWritePerMTok = 3.75m };

    private static async Task<(decimal? Cost, decimal? Saved, int Prompt, int Completion)> RowAsync(GatewayHarness gw, string requestId)
    {
        await gw.LedgerRowsAsync(0);
        await using var ds = NpgsqlDataSource.Create(gw.DatabaseConnectionString);
        await using var cmd = ds.CreateCommand("SELECT cost_usd, cost_saved_usd, prompt_tokens, completion_tokens FROM completions WHERE request_id = $1");
        cmd.Parameters.AddWithValue(requestId);
        await using var r = await cmd.ExecuteReaderAsync();
        Assert.True(await r.ReadAsync(), $"no row for {requestId}");
        return (r.IsDBNull(0) ? null : r.GetDecimal(0), r.IsDBNull(1) ? null : r.GetDecimal(1), r.GetInt32(2), r.GetInt32(3));
    }

    public static TheoryData<FakeProtocol, bool> Protocols => new()
    {
        { FakeProtocol.OpenAI, false }, { FakeProtocol.OpenAI, true },
        { FakeProtocol.Anthropic, false }, { FakeProtocol.Anthropic, true },
        { FakeProtocol.Gemini, false }, { FakeProtocol.Gemini, true },
    };

    [Theory]
    [MemberData(nameof(Protocols))]
    public async Task The_cost_of_each_protocols_usage_with_its_cached_tokens_is_the_hand_computed_decimal(FakeProtocol protocol, bool stream)
    {
        await using var upstream = await FakeUpstream.StartAsync(protocol);
        upstream.Reply = "a priced answer of several words";
        upstream.CachedPromptTokens = 3;
        upstream.CacheWritePromptTokens = protocol == FakeProtocol.Anthropic ? 2 : 0; // only Anthropic reports cache writes
        var settings = GatewayHarness.RouteOver([upstream]);
        settings["Pricing:Models:m:InputPerMTok"] = "2.50";
        settings["Pricing:Models:m:OutputPerMTok"] = "10";
        settings["Pricing:Models:m:CachedInputPerMTok"] = "1.25";
        settings["Pricing:Models:m:CacheWritePerMTok"] = "3.75";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        var body = GatewayHarness.Chat("m", "What does this cost, roughly, in tokens?", stream);
        if (stream)
        {
            body["stream_options"] = new JsonObject { ["include_usage"] = true };
        }

        using var response = await gw.PostJsonAsync("/v1/chat/completions", body);
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var id = response.Headers.GetValues("x-request-id").Single();
        var row = await RowAsync(gw, id);
        Assert.True(row.Prompt > 5 && row.Completion > 0, $"usage {row.Prompt}/{row.Completion}");
        var write = upstream.CacheWritePromptTokens;
        // By hand: uncached input, cache reads, cache writes and output, each at its price per million tokens.
        var expected = ((row.Prompt - 3 - write) * 2.50m + 3 * 1.25m + write * 3.75m + row.Completion * 10m) / 1_000_000m;
        Assert.Equal(expected, row.Cost);
        Assert.Equal(Price.Cost(new TokenUsage(row.Prompt, row.Completion, 3, write)), row.Cost);
        if (!stream)
        {
            Assert.Equal(PriceTable.Format(expected), response.Headers.GetValues("x-helixagent-cost-usd").Single());
        }
        else
        {
            // The stream's final usage chunk carries it: {"usage": {...}, "helixagent": {"cost_usd": "..."}}.
            var usageChunk = text.Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal))
                .Select(l => JsonNode.Parse(l["data: ".Length..])!).Single(c => c["usage"] is JsonObject);
            Assert.Equal(PriceTable.Format(expected), usageChunk["helixagent"]!["cost_usd"]!.GetValue<string>());
        }
        var spend = (await ScrapedMetrics.ScrapeAsync(gw.Anonymous())).Sum("helixagent_spend_usd_total", ("model", "m"));
        Assert.Equal((double)expected, spend, 12);
    }

    [Fact]
    public async Task A_model_without_a_price_costs_null_never_zero_and_is_counted_as_unpriced()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.RouteOver([upstream], "house-model-unpriced"));

        using var response = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("house-model-unpriced"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(response.Headers.Contains("x-helixagent-cost-usd"));
        var row = await RowAsync(gw, response.Headers.GetValues("x-request-id").Single());
        Assert.Null(row.Cost);
        Assert.True(row.Prompt > 0);
        var metrics = await ScrapedMetrics.ScrapeAsync(gw.Anonymous());
        Assert.Equal(1, metrics.Sum("helixagent_unpriced_requests_total", ("model", "house-model-unpriced")));
        Assert.Equal(0, metrics.Sum("helixagent_spend_usd_total"));
        // What the start's warning lists: the route, and the ensemble whose member it is.
        Assert.Equal(["house-model-unpriced", "helixagent-ensemble"],
            gw.Factory.Services.GetRequiredService<PriceTable>().Unpriced(gw.Factory.Services.GetRequiredService<ProviderRegistry>()));
    }

    [Fact]
    public async Task A_dated_model_name_takes_its_familys_built_in_price_and_a_provider_may_name_its_own()
    {
        await using var anthropic = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        await using var local = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var settings = new Dictionary<string, string?>
        {
            ["Gateway:ProbeIntervalSeconds"] = "0",
            ["Ledger:FlushIntervalMs"] = "10",
            ["Providers:claude:Type"] = "anthropic",
            ["Providers:claude:BaseUrl"] = anthropic.BaseUrl.ToString(),
            ["Providers:claude:ApiKey"] = "k",
            ["Providers:claude:Models:0"] = "claude-sonnet-4-5-20250929",
            ["Providers:house:Type"] = "openai",
            ["Providers:house:BaseUrl"] = local.BaseUrl.ToString(),
            ["Providers:house:Models:0"] = "gpt-4o-mini", // a self-hosted server under a well-known name: free here
            ["Providers:house:Pricing:gpt-4o-mini:InputPerMTok"] = "0",
            ["Providers:house:Pricing:gpt-4o-mini:OutputPerMTok"] = "0",
        };
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);

        using var dated = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("claude-sonnet-4-5-20250929"));
        using var free = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("gpt-4o-mini"));

        var row = await RowAsync(gw, dated.Headers.GetValues("x-request-id").Single());
        Assert.Equal(PriceTable.Defaults["claude-sonnet-4-5"].Cost(new TokenUsage(row.Prompt, row.Completion)), row.Cost);
        Assert.True(row.Cost > 0);
        Assert.Equal(0m, (await RowAsync(gw, free.Headers.GetValues("x-request-id").Single())).Cost);
        Assert.Equal("0", free.Headers.GetValues("x-helixagent-cost-usd").Single());
    }

    [Fact]
    public async Task A_cache_hit_costs_nothing_and_records_what_it_saved()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var model = "priced-cached-" + Guid.NewGuid().ToString("N")[..8];
        var settings = GatewayHarness.RouteOver([upstream], model);
        settings[$"Pricing:Models:{model}:InputPerMTok"] = "2.50";
        settings[$"Pricing:Models:{model}:OutputPerMTok"] = "10";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, settings);
        var body = GatewayHarness.Chat(model, "Cache this priced answer.");
        body["temperature"] = 0;

        using var first = await gw.PostJsonAsync("/v1/chat/completions", body);
        using var second = await gw.PostJsonAsync("/v1/chat/completions", body);

        Assert.Equal("hit", second.Headers.GetValues("x-helixagent-cache").Single());
        var paid = await RowAsync(gw, first.Headers.GetValues("x-request-id").Single());
        var hit = await RowAsync(gw, second.Headers.GetValues("x-request-id").Single());
        Assert.True(paid.Cost > 0);
        Assert.Equal((0m, paid.Cost), (hit.Cost, hit.Saved));
        Assert.Equal("0", second.Headers.GetValues("x-helixagent-cost-usd").Single());
        Assert.Equal(PriceTable.Format(paid.Cost!.Value), second.Headers.GetValues("x-helixagent-cost-saved-usd").Single());
    }
}
