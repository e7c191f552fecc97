using System.ClientModel;
using System.ClientModel.Primitives;
using HelixAgent.Tests.Infrastructure;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Embeddings;

namespace HelixAgent.Tests.Gateway;

/// <summary>The official OpenAI .NET SDK, unmodified, as the gateway's client.</summary>
public sealed class OpenAiSdkTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    internal static OpenAIClient Sdk(GatewayHarness gw) => new(new ApiKeyCredential(gw.ClientKey), new OpenAIClientOptions
    {
        Endpoint = new Uri(gw.Client.BaseAddress!, "/v1"),
        Transport = new HttpClientPipelineTransport(gw.Factory.CreateClient()),
        NetworkTimeout = TimeSpan.FromSeconds(30),
        RetryPolicy = new ClientRetryPolicy(0),
    });

    [Fact]
    public async Task The_openai_sdk_completes_a_chat_through_the_gateway()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var chat = Sdk(gw).GetChatClient("sim-small");

        ChatCompletion completion = await chat.CompleteChatAsync([new SystemChatMessage("be brief"), new UserChatMessage("hello sdk")]);

        Assert.Equal("Simulated answer to: hello sdk", completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
        Assert.Equal(4, completion.Usage.InputTokenCount);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
    }

    [Fact]
    public async Task The_openai_sdk_streams_a_chat_through_the_gateway_with_usage()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var chat = Sdk(gw).GetChatClient("sim-small");

        var text = new System.Text.StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("stream to me")]))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
            }
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }

        Assert.Equal("Simulated answer to: stream to me", text.ToString());
        Assert.Equal(ChatFinishReason.Stop, finish);
        Assert.NotNull(usage);
        Assert.Equal(6, usage.OutputTokenCount);
    }

    [Fact]
    public async Task The_openai_sdk_sees_gateway_errors_as_api_errors_with_the_status()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var chat = Sdk(gw).GetChatClient("no-such-model");

        var ex = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("x")]));
        Assert.Equal(404, ex.Status);
        Assert.Contains("no-such-model", ex.Message);
    }

    [Fact]
    public async Task The_openai_sdk_gets_embeddings_through_the_gateway()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var embeddings = Sdk(gw).GetEmbeddingClient("sim-small");

        OpenAIEmbeddingCollection result = await embeddings.GenerateEmbeddingsAsync(["one", "two"]);

        Assert.Equal(2, result.Count);
        Assert.Equal(16, result[0].ToFloats().Length);
    }
}
