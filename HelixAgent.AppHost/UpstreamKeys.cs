namespace HelixAgent.AppHost;

/// <summary>
/// Upstream provider keys as secret parameters: set <c>Parameters:anthropic-api-key</c> (user secrets:
/// <c>dotnet user-secrets --project HelixAgent.AppHost set Parameters:anthropic-api-key sk-...</c>) and the API gets
/// <c>ANTHROPIC_API_KEY</c>, which enables that provider. Unset keys add nothing, so the AppHost never stops to ask.
/// </summary>
public static class UpstreamKeys
{
    private static readonly (string Parameter, string Variable)[] Known =
    [
        ("anthropic-api-key", "ANTHROPIC_API_KEY"),
        ("openai-api-key", "OPENAI_API_KEY"),
        ("gemini-api-key", "GEMINI_API_KEY"),
        ("deepseek-api-key", "DEEPSEEK_API_KEY"),
        ("mistral-api-key", "MISTRAL_API_KEY"),
        ("groq-api-key", "GROQ_API_KEY"),
        ("openrouter-api-key", "OPENROUTER_API_KEY"),
    ];

    public static IResourceBuilder<ProjectResource> WithUpstreamKeys(this IResourceBuilder<ProjectResource> api)
    {
        var builder = api.ApplicationBuilder;
        foreach (var (parameter, variable) in Known)
        {
            if (!string.IsNullOrWhiteSpace(builder.Configuration[$"Parameters:{parameter}"]))
            {
                api.WithEnvironment(variable, builder.AddParameter(parameter, secret: true));
            }
        }
        var ollama = builder.Configuration["Parameters:ollama-base-url"];
        if (!string.IsNullOrWhiteSpace(ollama))
        {
            api.WithEnvironment("OLLAMA_BASE_URL", builder.AddParameter("ollama-base-url"));
        }
        return api;
    }
}
