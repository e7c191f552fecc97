using System.ClientModel;
using System.Text.Json.Nodes;
using HelixAgent.Tests.Infrastructure;
using OpenAI.Chat;
using OpenAI.Embeddings;

namespace HelixAgent.Tests.Gateway;

/// <summary>The simulator (Development's default provider) answers the features official clients use, through the OpenAI .NET SDK.</summary>
public sealed class SimulatorSdkTests(PostgresServer postgres, RedisServer redis) : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Base64_embeddings_through_the_sdk_are_the_same_vector_as_float_ones()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var client = OpenAiSdkTests.Sdk(gw).GetEmbeddingClient("sim-small");

        // The SDK's default wire format is base64, which it decodes.
        OpenAIEmbedding viaBase64 = await client.GenerateEmbeddingAsync("the same text");
        var floats = JsonNode.Parse(await (await gw.PostJsonAsync("/v1/embeddings", new JsonObject
        {
            ["model"] = "sim-small",
            ["input"] = "the same text",
            ["encoding_format"] = "float",
        })).Content.ReadAsStringAsync())!["data"]![0]!["embedding"]!.AsArray().Select(v => (float)v!.GetValue<double>()).ToArray();

        var vector = viaBase64.ToFloats().ToArray();
        Assert.Equal(16, vector.Length);
        Assert.Contains(vector, v => v != 0);
        Assert.Equal(floats, vector);

        var raw = JsonNode.Parse(await (await gw.PostJsonAsync("/v1/embeddings", new JsonObject
        {
            ["model"] = "sim-small",
            ["input"] = "the same text",
            ["encoding_format"] = "base64",
        })).Content.ReadAsStringAsync())!["data"]![0]!["embedding"]!;
        Assert.Equal(16 * sizeof(float), Convert.FromBase64String(raw.GetValue<string>()).Length);
    }

    [Fact]
    public async Task N_choices_are_answered_through_the_sdk_plain_and_streamed()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var chat = OpenAiSdkTests.Sdk(gw).GetChatClient("sim-small");
        // The .NET SDK's typed options have no n; its protocol method sends the body as given and parses the answer.
        var body = BinaryContent.Create(BinaryData.FromString("""{"model":"sim-small","n":3,"messages":[{"role":"user","content":"three ways"}]}"""));
        var result = await chat.CompleteChatAsync(body);
        var choices = JsonNode.Parse(result.GetRawResponse().Content.ToString())!["choices"]!.AsArray();
        Assert.Equal([0, 1, 2], choices.Select(c => c!["index"]!.GetValue<int>()));
        Assert.All(choices, c => Assert.Equal("Simulated answer to: three ways", c!["message"]!["content"]!.GetValue<string>()));

        var streamed = await gw.PostJsonAsync("/v1/chat/completions", new JsonObject
        {
            ["model"] = "sim-small",
            ["n"] = 2,
            ["stream"] = true,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "two ways" }),
        });
        var texts = new Dictionary<int, string>();
        var finishes = new Dictionary<int, string>();
        foreach (var line in (await streamed.Content.ReadAsStringAsync()).Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal)))
        {
            foreach (var choice in JsonNode.Parse(line[6..])!["choices"]!.AsArray())
            {
                var index = choice!["index"]!.GetValue<int>();
                texts[index] = texts.GetValueOrDefault(index, "") + (choice["delta"]?["content"]?.GetValue<string>() ?? "");
                if (choice["finish_reason"]?.GetValue<string>() is { } finish)
                {
                    finishes[index] = finish;
                }
            }
        }
        Assert.Equal(["Simulated answer to: two ways", "Simulated answer to: two ways"], [texts[0], texts[1]]);
        Assert.Equal(["stop", "stop"], [finishes[0], finishes[1]]);
    }
}
