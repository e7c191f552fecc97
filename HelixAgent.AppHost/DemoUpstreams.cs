namespace HelixAgent.AppHost;

/// <summary>
/// Demo mode (<c>Demo:FakeUpstreams=true</c>, never in publish mode): a fake Anthropic server (the test suite's, which
/// speaks the real Messages API and SSE events) runs as resource <c>fake-anthropic</c>, and the API gets provider
/// <c>claude-demo</c> pointing at it, so a chat completion goes client → gateway → Anthropic protocol over HTTP → back.
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
            .WaitFor(fake);
    }
}
