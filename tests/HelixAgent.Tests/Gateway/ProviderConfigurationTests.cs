using System.Net;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;

namespace HelixAgent.Tests.Gateway;

/// <summary>Provider configuration: well-known environment variables, start-up validation, active probes.</summary>
public sealed class ProviderConfigurationTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public void Well_known_environment_variables_enable_providers_with_their_defaults()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ANTHROPIC_API_KEY"] = "sk-ant-test",
            ["GROQ_API_KEY"] = "gsk-test",
            ["OLLAMA_BASE_URL"] = "http://gpu-box:11434",
            ["OLLAMA_MODELS"] = "llama3.2, qwen2.5",
        }).Build();

        var providers = ProviderRegistry.WellKnownFromEnvironment(config).ToDictionary(p => p.Name, p => p.Options);

        Assert.Equal(["claude", "groq", "ollama"], providers.Keys.Order());
        Assert.Equal(("anthropic", "https://api.anthropic.com", "sk-ant-test"), (providers["claude"].Type, providers["claude"].BaseUrl, providers["claude"].ApiKey));
        Assert.Equal(("openai", "https://api.groq.com/openai/v1"), (providers["groq"].Type, providers["groq"].BaseUrl));
        Assert.Equal(["llama3.2", "qwen2.5"], providers["ollama"].Models);
    }

    [Fact]
    public async Task The_runbooks_claude_health_line_answers_for_the_provider_ANTHROPIC_API_KEY_enables_and_it_serves_claude_models()
    {
        await using var anthropic = await FakeUpstream.StartAsync(FakeProtocol.Anthropic);
        anthropic.ExpectedApiKey = "sk-ant-test";
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, new Dictionary<string, string?>
        {
            ["ANTHROPIC_API_KEY"] = "sk-ant-test",
            // as the official SDKs read it: the well-known provider pointed at another server
            ["ANTHROPIC_BASE_URL"] = anthropic.BaseUrl.ToString(),
            ["Gateway:ProbeIntervalSeconds"] = "0",
        });

        // curl http://localhost:8080/v1/providers/claude/health (runbook: Provider Health, Provider Failures)
        var health = await gw.Anonymous().GetAsync("/v1/providers/claude/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Equal("claude", JsonNode.Parse(await health.Content.ReadAsStringAsync())!["name"]!.GetValue<string>());

        var answer = await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("claude-sonnet-4-5"));
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal("claude", answer.Headers.GetValues("x-helixagent-provider").Single());
        Assert.Equal(1, anthropic.RequestCount);
    }

    [Theory]
    [InlineData("Providers__bad__Type", "grpc", "Providers:bad:Type 'grpc' is not one of")]
    [InlineData("Providers__bad__BaseUrl", "not a url", "Providers:bad:BaseUrl 'not a url' is not an absolute http(s) URL")]
    [InlineData("Routes__smart__Targets__0", "ghost/model", "Routes:smart:Targets names provider 'ghost'")]
    [InlineData("Ensemble__Members__0", "ghost/model", "Ensemble:Members:0 names provider 'ghost'")]
    public Task An_invalid_provider_configuration_stops_the_start_with_a_clear_message(string key, string value, string message) =>
        AssertStartRefusedAsync(new() { [key] = value }, message);

    [Fact]
    public Task An_ensemble_member_named_only_by_a_provider_that_lists_only_embedding_models_stops_the_start() =>
        AssertStartRefusedAsync(new()
        {
            ["Providers__bad__Models__0"] = "text-embedding-3-small",
            ["Ensemble__Members__0"] = "bad",
        }, "Ensemble:Members:0 names provider 'bad', which lists only embedding models: name the model as 'bad/<model>'.");

    private async Task AssertStartRefusedAsync(Dictionary<string, string> settings, string message)
    {
        var env = new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = postgres.ConnectionString("postgres"),
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["ASPNETCORE_URLS"] = $"http://127.0.0.1:{ServerProcess.FreePort()}",
            ["Providers__bad__Type"] = "openai",
            ["Providers__bad__Models__0"] = "m",
        };
        foreach (var (k, v) in settings)
        {
            env[k] = v;
        }
        var result = await ApiProcess.RunCliAsync(env);

        Assert.Equal(78, result.ExitCode);
        Assert.Contains("helixagent: invalid configuration: " + message, result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
    }

    [Fact]
    public async Task Active_probes_mark_an_idle_provider_unhealthy_when_it_stops_answering_and_healthy_when_it_returns()
    {
        await using var upstream = await FakeUpstream.StartAsync(FakeProtocol.OpenAI);
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, new Dictionary<string, string?>
        {
            ["Providers:idle:Type"] = "openai",
            ["Providers:idle:BaseUrl"] = upstream.BaseUrl.ToString(),
            ["Providers:idle:Models:0"] = "m",
            ["Gateway:ProbeIntervalSeconds"] = "0.2",
        });
        async Task<(HttpStatusCode, string?)> Health()
        {
            var r = await gw.Anonymous().GetAsync("/v1/providers/idle/health");
            return (r.StatusCode, JsonNode.Parse(await r.Content.ReadAsStringAsync())!["status"]!.GetValue<string>());
        }

        await Eventually.TrueAsync(async () => await Health() == (HttpStatusCode.OK, "healthy"), "the provider healthy (200)");
        upstream.Fail(FakeFault.Status503);
        await Eventually.TrueAsync(async () => await Health() == (HttpStatusCode.ServiceUnavailable, "unhealthy"), "the provider unhealthy (503) while its upstream fails");
        upstream.Reset();
        await Eventually.TrueAsync(async () => await Health() == (HttpStatusCode.OK, "healthy"), "the provider healthy again after the upstream recovers");

        Assert.All(upstream.Requests, r => Assert.Equal("GET", r.Method)); // probes spend no tokens
        Assert.Contains(upstream.Requests, r => r.Path.EndsWith("/models", StringComparison.Ordinal));
    }
}
