using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using OpenAI.Responses;

#pragma warning disable OPENAI001 // the Responses client is marked experimental in the SDK

namespace HelixAgent.Tests.Gateway;

/// <summary>Stored Responses: read back, continued with <c>previous_response_id</c> on another instance, deleted, private to their key.</summary>
public sealed class StoredResponsesTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static CreateResponseOptions Ask(string model, string text, string? previous = null, bool? store = null) =>
        new(model, [ResponseItem.CreateUserMessageItem(text)]) { PreviousResponseId = previous, StoredOutputEnabled = store };

    private static ResponsesClient Sdk(GatewayHarness gw, string? key = null) =>
        key is null ? ResponsesSdkTests.Sdk(gw) : new OpenAI.OpenAIClient(new ApiKeyCredential(key), new OpenAI.OpenAIClientOptions
        {
            Endpoint = new Uri(gw.Client.BaseAddress!, "/v1"),
            Transport = new System.ClientModel.Primitives.HttpClientPipelineTransport(gw.Factory.CreateClient()),
            RetryPolicy = new System.ClientModel.Primitives.ClientRetryPolicy(0),
        }).GetResponsesClient();

    [Fact]
    public async Task A_stored_response_is_read_back_with_its_input_items_then_deleted()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var sdk = Sdk(gw);

        ResponseResult made = await sdk.CreateResponseAsync(Ask("sim-small", "remember this"));
        ResponseResult read = await sdk.GetResponseAsync(made.Id);
        var items = new List<ResponseItem>();
        await foreach (var item in sdk.GetResponseInputItemsAsync(made.Id))
        {
            items.Add(item);
        }

        Assert.Equal(made.Id, read.Id);
        Assert.Equal("Simulated answer to: remember this", read.GetOutputText());
        Assert.Equal(ResponseStatus.Completed, read.Status);
        var message = Assert.IsAssignableFrom<MessageResponseItem>(Assert.Single(items));
        Assert.Equal("remember this", message.Content.Single().Text);

        ResponseDeletionResult deleted = await sdk.DeleteResponseAsync(made.Id);
        Assert.True(deleted.Deleted);
        var gone = await Assert.ThrowsAsync<ClientResultException>(() => sdk.GetResponseAsync(made.Id));
        Assert.Equal(404, gone.Status);
    }

    [Fact]
    public async Task A_conversation_continues_with_previous_response_id_on_another_instance_sharing_postgresql()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        var settings = GatewayHarness.RouteOver([upstream]);
        await using var first = await GatewayHarness.StartAsync(postgres, redis, settings);
        await using var second = await GatewayHarness.StartAsync(postgres, redis, settings, databaseConnectionString: first.DatabaseConnectionString);
        upstream.Reply = "Nice to meet you, Ada.";

        ResponseResult opening = await Sdk(first).CreateResponseAsync(Ask("m", "My name is Ada."));
        // At once, on the other instance, whose store has not seen the first one's write.
        upstream.Reply = "Your name is Ada.";
        ResponseResult next = await Sdk(second, first.ClientKey).CreateResponseAsync(Ask("m", "What is my name?", previous: opening.Id));

        Assert.Equal("Your name is Ada.", next.GetOutputText());
        Assert.Equal(opening.Id, next.PreviousResponseId);
        var sent = JsonNode.Parse(upstream.Requests[^1].Body)!["messages"]!.AsArray();
        Assert.Equal(["user", "assistant", "user"], sent.Select(m => m!["role"]!.GetValue<string>()));
        Assert.Contains("My name is Ada.", sent[0]!.ToJsonString());
        Assert.Equal("Nice to meet you, Ada.", sent[1]!["content"]!.GetValue<string>());
        Assert.DoesNotContain("previous_response_id", upstream.Requests[^1].Body);
        Assert.DoesNotContain("__helixagent", upstream.Requests[^1].Body);

        // Three turns: the chain is followed back to its start.
        upstream.Reply = "You asked my name.";
        ResponseResult third = await Sdk(first).CreateResponseAsync(Ask("m", "What did I ask?", previous: next.Id));
        Assert.Equal("You asked my name.", third.GetOutputText());
        Assert.Equal(5, JsonNode.Parse(upstream.Requests[^1].Body)!["messages"]!.AsArray().Count);
    }

    [Fact]
    public async Task A_response_with_store_false_is_kept_nowhere_and_cannot_be_continued()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var sdk = Sdk(gw);

        ResponseResult made = await sdk.CreateResponseAsync(Ask("sim-small", "forget this", store: false));

        var get = await Assert.ThrowsAsync<ClientResultException>(() => sdk.GetResponseAsync(made.Id));
        Assert.Equal(404, get.Status);
        using var continued = await gw.PostJsonAsync("/v1/responses", new JsonObject { ["model"] = "sim-small", ["input"] = "and?", ["previous_response_id"] = made.Id });
        Assert.Equal(HttpStatusCode.NotFound, continued.StatusCode);
        Assert.Equal("previous_response_id", JsonNode.Parse(await continued.Content.ReadAsStringAsync())!["error"]!["param"]!.GetValue<string>());
        await gw.LedgerRowsAsync(1);
        await using var conn = new Npgsql.NpgsqlConnection(gw.DatabaseConnectionString);
        await conn.OpenAsync();
        await using var count = new Npgsql.NpgsqlCommand("SELECT count(*) FROM responses", conn);
        Assert.Equal(0L, (long)(await count.ExecuteScalarAsync())!);
    }

    [Fact]
    public async Task Another_key_gets_404_for_a_stored_response_and_the_makers_rotated_key_still_reads_it()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        ResponseResult made = await Sdk(gw).CreateResponseAsync(Ask("sim-small", "mine alone"));
        var db = await TestDatabase.OpenAsync(gw.DatabaseConnectionString);
        var stranger = await db.CreateKeyAsync("stranger");

        var read = await Assert.ThrowsAsync<ClientResultException>(() => Sdk(gw, stranger).GetResponseAsync(made.Id));
        Assert.Equal(404, read.Status);
        var delete = await Assert.ThrowsAsync<ClientResultException>(() => Sdk(gw, stranger).DeleteResponseAsync(made.Id));
        Assert.Equal(404, delete.Status);
        var continueIt = await Assert.ThrowsAsync<ClientResultException>(() => Sdk(gw, stranger).CreateResponseAsync(Ask("sim-small", "and?", previous: made.Id)));
        Assert.Equal(404, continueIt.Status);
        Assert.DoesNotContain("mine alone", continueIt.Message);

        using var admin = gw.WithKey(gw.AdminKey);
        using var rotated = await admin.PostAsync("/admin/keys/harness-client/rotate", new StringContent("{}", Encoding.UTF8, "application/json"));
        var newKey = JsonNode.Parse(await rotated.Content.ReadAsStringAsync())!["key"]!.GetValue<string>();
        ResponseResult again = await Sdk(gw, newKey).GetResponseAsync(made.Id);
        Assert.Equal("Simulated answer to: mine alone", again.GetOutputText());
    }

    [Fact]
    public async Task A_streamed_response_is_stored_once_it_completes()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var sdk = Sdk(gw);
        var ask = Ask("sim-small", "stream and keep");
        ask.StreamingEnabled = true;

        string? id = null;
        await foreach (var update in await sdk.CreateResponseStreamingAsync(ask))
        {
            if (update is StreamingResponseCompletedUpdate completed)
            {
                id = completed.Response.Id;
            }
        }

        Assert.NotNull(id);
        ResponseResult read = await sdk.GetResponseAsync(id);
        Assert.Equal("Simulated answer to: stream and keep", read.GetOutputText());
    }
}
