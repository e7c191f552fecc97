namespace HelixAgent.AppHost;

/// <summary>
/// Demo mode (<c>Demo:FakeUpstreams=true</c>, never in publish mode): a fake Anthropic server (the test suite's, which
/// speaks the real Messages API and SSE events) runs as resource <c>fake-anthropic</c>, and the API gets provider
/// <c>claude-demo</c> pointing at it, so a chat completion goes client → gateway → Anthropic protocol over HTTP → back.
/// It is priced as Claude Sonnet is (3 and 15 USD per million input and output tokens), so costs and budgets show.
/// </summary>
public static class DemoUpstreams
{
    public const string FakeAnthropic = "fake-anthropic";
    public const string Model = "claude-demo";

    public static IResourceBuilder<ProjectResource> WithDemoUpstreams(this IResourceBuilder<ProjectResource> api)
    {
        var builder = api.ApplicationBuilder;
        if (builder.ExecutionContext.IsPublishMode || !string.Equals(builder.Configuration["Demo:FakeUpstreams"], "true", StringComparison.OrdinalIgnoreCase))
        {
            return api;
        }
        var fake = builder.AddProject<Projects.HelixAgent_FakeUpstream>(FakeAnthropic)
            .WithArgs("--protocol", "anthropic", "--reply", "Hello from a fake Anthropic upstream, translated by HelixAgent.")
            .WithHttpEndpoint(env: "PORT");
        return api
            .WithEnvironment($"Providers__{Model}__Type", "anthropic")
            .WithEnvironment($"Providers__{Model}__BaseUrl", fake.GetEndpoint("http"))
            .WithEnvironment($"Providers__{Model}__ApiKey", "not-a-real-key")
            .WithEnvironment($"Providers__{Model}__Models__0", Model)
            // Priced as Claude Sonnet (USD per million tokens), so costs and budgets can be tried on the demo.
            .WithEnvironment($"Providers__{Model}__Pricing__{Model}__InputPerMTok", "3")
            .WithEnvironment($"Providers__{Model}__Pricing__{Model}__OutputPerMTok", "15")
            .WaitFor(fake);
    }
}
