using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// Stored Responses while PostgreSQL is down: the reads that need it answer 503 with <c>Retry-After</c>, never a 500,
/// and requests that need no stored response are still served. Alone (it stops the class's own PostgreSQL).
/// </summary>
[Collection(Faults.FaultSuite.Name)]
public sealed class StoredResponsesOutageTests(OwnPostgresServer postgres, RedisServer redis)
    : IClassFixture<OwnPostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task With_postgresql_down_stored_lookups_answer_503_with_retry_after_and_store_false_requests_are_served()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        using var made = await gw.PostJsonAsync("/v1/responses", new JsonObject { ["model"] = "sim-small", ["input"] = "keep me" });
        var id = JsonNode.Parse(await made.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
        await Eventually.TrueAsync(async () => (await gw.Client.GetAsync($"/v1/responses/{id}")).StatusCode == HttpStatusCode.OK, "the stored response to be readable");
        await gw.LedgerRowsAsync(1);

        await postgres.StopAsync();
        try
        {
            using var read = await gw.Client.GetAsync($"/v1/responses/{id}");
            using var continued = await gw.PostJsonAsync("/v1/responses",
                new JsonObject { ["model"] = "sim-small", ["input"] = "and?", ["previous_response_id"] = id });
            using var unstored = await gw.PostJsonAsync("/v1/responses", new JsonObject { ["model"] = "sim-small", ["input"] = "no store", ["store"] = false });

            foreach (var response in new[] { read, continued })
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
                Assert.True(response.Headers.RetryAfter is not null, "no Retry-After on the 503");
                Assert.Equal("store_unavailable", JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
            }
            Assert.Equal(HttpStatusCode.OK, unstored.StatusCode);
        }
        finally
        {
            await postgres.StartAsync();
        }
        await Eventually.TrueAsync(async () => (await gw.Client.GetAsync($"/v1/responses/{id}")).StatusCode == HttpStatusCode.OK,
            "the stored response readable again", TimeSpan.FromSeconds(30));
    }
}
