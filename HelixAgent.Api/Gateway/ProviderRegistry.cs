using HelixAgent.Api.Gateway.Providers;

namespace HelixAgent.Api.Gateway;

/// <summary>A configured provider with its adapter and live state.</summary>
public sealed record ProviderEntry(IChatProvider Adapter, ProviderOptions Options, ProviderState State)
{
    public string Name => Adapter.Name;
}

/// <summary>One step of a route: which provider, under which upstream model name.</summary>
public sealed record RouteTarget(ProviderEntry Provider, string UpstreamModel);

/// <summary>A model clients can ask for, and the providers that serve it in order.</summary>
public sealed record ModelRoute(string Id, IReadOnlyList<RouteTarget> Targets, string Strategy, IReadOnlyList<string> Aliases)
{
    public const string EnsembleStrategy = "ensemble";

    public bool IsSimulated => Targets.All(t => t.Provider.Adapter.IsSimulated);

    /// <summary>The virtual model <c>helixagent-ensemble</c>: every target is asked, one answer is chosen.</summary>
    public bool IsEnsemble => Strategy == EnsembleStrategy;
}

public sealed class GatewayConfigurationException(string message) : Exception(message);

/// <summary>
/// Providers and model routes from configuration (<c>Providers</c>, <c>Routes</c>) plus the well-known environment
/// variables (<c>ANTHROPIC_API_KEY</c>, <c>OPENAI_API_KEY</c>, ...). Built once at start-up; an invalid configuration
/// stops the start with a message naming the bad setting.
/// </summary>
public sealed class ProviderRegistry
{
    public static readonly string[] KnownTypes = ["openai", "anthropic", "gemini", "ollama", "simulator"];

    private readonly Dictionary<string, ProviderEntry> _providers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ModelRoute> _routes = new(StringComparer.Ordinal);
    private readonly List<ModelRoute> _models = [];

    public IReadOnlyCollection<ProviderEntry> Providers => _providers.Values;

    /// <summary>Every routable model (aliases not repeated), in configuration order.</summary>
    public IReadOnlyList<ModelRoute> Models => _models;

    public ProviderRegistry(
        IConfiguration configuration,
        IHostEnvironment environment,
        GatewayOptions gateway,
        EnsembleOptions ensemble,
        HttpClient upstreamHttp,
        TimeProvider time,
        ILogger<ProviderRegistry> logger)
    {
        var providers = new Dictionary<string, ProviderOptions>(StringComparer.Ordinal);
        foreach (var section in configuration.GetSection("Providers").GetChildren())
        {
            providers[section.Key] = section.Get<ProviderOptions>() ?? new ProviderOptions();
        }
        foreach (var (name, options) in WellKnownFromEnvironment(configuration))
        {
            providers.TryAdd(name, options);
        }

        foreach (var (name, options) in providers)
        {
            Validate(name, options);
            if (options.Type == "simulator" && environment.IsProduction() && !gateway.EnableSimulatorInProduction)
            {
                logger.LogWarning("Provider {Provider} is the simulator, which is off in Production (Gateway:EnableSimulatorInProduction)", name);
                continue;
            }
            var adapter = Create(name, options, upstreamHttp, time);
            var state = new ProviderState(name, gateway.CircuitFailureThreshold, TimeSpan.FromSeconds(gateway.CircuitBreakSeconds), time);
            _providers[name] = new ProviderEntry(adapter, options, state);
        }

        // Explicit routes first: they own their names and aliases.
        var explicitRoutes = new Dictionary<string, RouteOptions>(StringComparer.Ordinal);
        foreach (var section in configuration.GetSection("Routes").GetChildren())
        {
            explicitRoutes[section.Key] = section.Get<RouteOptions>() ?? new RouteOptions();
        }
        foreach (var (model, route) in explicitRoutes)
        {
            if (route.Targets.Count == 0)
            {
                throw new GatewayConfigurationException($"Routes:{model}:Targets is empty: list providers as \"provider\" or \"provider/upstream-model\".");
            }
            var targets = new List<RouteTarget>();
            foreach (var target in route.Targets)
            {
                var slash = target.IndexOf('/');
                var providerName = slash < 0 ? target : target[..slash];
                var upstreamModel = slash < 0 ? model : target[(slash + 1)..];
                if (!providers.ContainsKey(providerName))
                {
                    throw new GatewayConfigurationException($"Routes:{model}:Targets names provider '{providerName}', which is not configured under Providers.");
                }
                if (_providers.TryGetValue(providerName, out var entry))
                {
                    targets.Add(new RouteTarget(entry, upstreamModel));
                }
            }
            var strategy = route.Strategy ?? gateway.Strategy;
            if (strategy is not ("ordered" or "weighted"))
            {
                throw new GatewayConfigurationException($"Routes:{model}:Strategy '{strategy}' is not 'ordered' or 'weighted'.");
            }
            if (targets.Count == 0)
            {
                continue; // every target was a disabled simulator
            }
            AddRoute(new ModelRoute(model, targets, strategy, route.Aliases));
        }

        // Implicit routes: each provider's models under their own names, providers in configuration order.
        var implicitTargets = new Dictionary<string, List<RouteTarget>>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var entry in _providers.Values)
        {
            foreach (var model in entry.Options.Models)
            {
                if (_routes.ContainsKey(model))
                {
                    continue;
                }
                if (!implicitTargets.TryGetValue(model, out var list))
                {
                    implicitTargets[model] = list = [];
                    order.Add(model);
                }
                list.Add(new RouteTarget(entry, model));
            }
        }
        foreach (var model in order)
        {
            AddRoute(new ModelRoute(model, implicitTargets[model], gateway.Strategy, []));
        }

        if (ensemble.Enabled && !_routes.ContainsKey(EnsembleOptions.ModelName) && EnsembleMembers(ensemble, providers) is { Count: > 0 } members)
        {
            AddRoute(new ModelRoute(EnsembleOptions.ModelName, members, ModelRoute.EnsembleStrategy, []));
        }
    }

    /// <summary>
    /// The ensemble's members: <c>Ensemble:Members</c> as <c>provider</c> or <c>provider/upstream-model</c>, or by default
    /// each provider with its first model that is not an embedding model.
    /// </summary>
    private List<RouteTarget> EnsembleMembers(EnsembleOptions ensemble, Dictionary<string, ProviderOptions> configured)
    {
        var members = new List<RouteTarget>();
        if (ensemble.Members.Count == 0)
        {
            foreach (var entry in _providers.Values)
            {
                if (FirstChatModel(entry.Options) is { } model)
                {
                    members.Add(new RouteTarget(entry, model));
                }
            }
            return members;
        }
        for (var i = 0; i < ensemble.Members.Count; i++)
        {
            var member = ensemble.Members[i];
            var slash = member.IndexOf('/');
            var providerName = slash < 0 ? member : member[..slash];
            if (!configured.TryGetValue(providerName, out var options))
            {
                throw new GatewayConfigurationException($"Ensemble:Members:{i} names provider '{providerName}', which is not configured under Providers.");
            }
            if (_providers.TryGetValue(providerName, out var entry))
            {
                var model = slash < 0 ? FirstChatModel(options) : member[(slash + 1)..];
                members.Add(new RouteTarget(entry, model ?? throw new GatewayConfigurationException(
                    $"Ensemble:Members:{i} names provider '{providerName}', which lists only embedding models: name the model as '{providerName}/<model>'.")));
            }
        }
        return members;
    }

    /// <summary>A provider's first model that is not an embedding model (by name), or null.</summary>
    private static string? FirstChatModel(ProviderOptions options) =>
        options.Models.FirstOrDefault(m => !m.Contains("embed", StringComparison.OrdinalIgnoreCase));

    public bool TryGetRoute(string model, out ModelRoute route) => _routes.TryGetValue(model, out route!);

    public bool TryGetProvider(string name, out ProviderEntry provider) => _providers.TryGetValue(name, out provider!);

    private void AddRoute(ModelRoute route)
    {
        foreach (var name in route.Aliases.Prepend(route.Id))
        {
            if (!_routes.TryAdd(name, route))
            {
                throw new GatewayConfigurationException($"Model name '{name}' is defined twice (as a route and as an alias, or as two aliases).");
            }
        }
        _models.Add(route);
    }

    private static void Validate(string name, ProviderOptions options)
    {
        if (!KnownTypes.Contains(options.Type))
        {
            throw new GatewayConfigurationException(
                $"Providers:{name}:Type '{options.Type}' is not one of {string.Join(", ", KnownTypes)}.");
        }
        if (options.BaseUrl is { Length: > 0 } url &&
            (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
        {
            throw new GatewayConfigurationException($"Providers:{name}:BaseUrl '{url}' is not an absolute http(s) URL.");
        }
        if (options.Models.Count == 0 || options.Models.Any(string.IsNullOrWhiteSpace))
        {
            throw new GatewayConfigurationException($"Providers:{name}:Models must list the upstream model names it serves.");
        }
        if (options.Weight < 0)
        {
            throw new GatewayConfigurationException($"Providers:{name}:Weight must be 0 or more.");
        }
        if (options.TimeoutSeconds <= 0 || options.FirstTokenTimeoutSeconds <= 0)
        {
            throw new GatewayConfigurationException($"Providers:{name}: TimeoutSeconds and FirstTokenTimeoutSeconds must be positive.");
        }
        if (options.Responses is { } responses && !(responses.Equals("translate", StringComparison.OrdinalIgnoreCase)
            || (responses.Equals("native", StringComparison.OrdinalIgnoreCase) && options.Type == "openai")))
        {
            throw new GatewayConfigurationException(
                $"Providers:{name}:Responses '{responses}' is not 'native' (an OpenAI provider that serves /v1/responses itself) or 'translate'.");
        }
    }

    private static IChatProvider Create(string name, ProviderOptions options, HttpClient http, TimeProvider time) => options.Type switch
    {
        "openai" => new OpenAiCompatibleProvider(name, options, http),
        "anthropic" => new AnthropicProvider(name, options, http),
        "gemini" => new GeminiProvider(name, options, http),
        "ollama" => new OllamaProvider(name, options, http),
        "simulator" => new SimulatorProvider(name, options, time),
        _ => throw new GatewayConfigurationException($"Providers:{name}:Type '{options.Type}' is not supported."),
    };

    /// <summary>
    /// Providers enabled by the well-known environment variables, with sensible defaults. <c>&lt;NAME&gt;_BASE_URL</c>
    /// (as the official SDKs read it, e.g. <c>ANTHROPIC_BASE_URL</c>) points one at a proxy or a compatible server.
    /// Anthropic's is named <c>claude</c>, as the runbook calls it (<c>/v1/providers/claude/health</c>).
    /// </summary>
    internal static IEnumerable<(string Name, ProviderOptions Options)> WellKnownFromEnvironment(IConfiguration configuration)
    {
        (string Var, string Name, string Type, string BaseUrl, string[] Models)[] known =
        [
            ("ANTHROPIC_API_KEY", "claude", "anthropic", "https://api.anthropic.com", ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]),
            ("OPENAI_API_KEY", "openai", "openai", "https://api.openai.com/v1", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "text-embedding-3-small"]),
            ("GEMINI_API_KEY", "gemini", "gemini", "https://generativelanguage.googleapis.com/v1beta", ["gemini-2.5-flash", "gemini-2.5-pro", "text-embedding-004"]),
            ("DEEPSEEK_API_KEY", "deepseek", "openai", "https://api.deepseek.com/v1", ["deepseek-chat", "deepseek-reasoner"]),
            ("MISTRAL_API_KEY", "mistral", "openai", "https://api.mistral.ai/v1", ["mistral-large-latest", "mistral-small-latest", "mistral-embed"]),
            ("GROQ_API_KEY", "groq", "openai", "https://api.groq.com/openai/v1", ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"]),
            ("OPENROUTER_API_KEY", "openrouter", "openai", "https://openrouter.ai/api/v1", ["openrouter/auto"]),
        ];
        foreach (var (variable, name, type, baseUrl, models) in known)
        {
            var key = configuration[variable];
            if (!string.IsNullOrWhiteSpace(key))
            {
                var url = configuration[variable[..^"_API_KEY".Length] + "_BASE_URL"];
                yield return (name, new ProviderOptions
                {
                    Type = type, BaseUrl = string.IsNullOrWhiteSpace(url) ? baseUrl : url, ApiKey = key, Models = [.. models],
                });
            }
        }
        var ollama = configuration["OLLAMA_BASE_URL"];
        if (!string.IsNullOrWhiteSpace(ollama))
        {
            var models = (configuration["OLLAMA_MODELS"] ?? "llama3.2").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            yield return ("ollama", new ProviderOptions { Type = "ollama", BaseUrl = ollama, Models = [.. models] });
        }
    }
}
