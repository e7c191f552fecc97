using System.Collections.Concurrent;
using System.Globalization;

namespace HelixAgent.Api.Gateway;

/// <summary>
/// A model's price in USD per million tokens (decimal: money is never a float). Cache reads and writes default to the
/// input price where the table has none.
/// </summary>
public sealed class ModelPrice
{
    public decimal InputPerMTok { get; set; }
    public decimal OutputPerMTok { get; set; }
    public decimal? CachedInputPerMTok { get; set; }
    public decimal? CacheWritePerMTok { get; set; }

    /// <summary>Where the figure comes from and when it was taken (the built-in table says; an operator's may).</summary>
    public string? Source { get; set; }

    private const decimal Million = 1_000_000m;

    /// <summary>
    /// What <paramref name="usage"/> costs: uncached input at the input price, cache reads and writes at theirs, output
    /// at the output price. Exact to the ten decimals of <c>completions.cost_usd</c> (rounded half away from zero).
    /// </summary>
    public decimal Cost(TokenUsage usage)
    {
        var cached = Math.Max(0, usage.CachedTokens);
        var written = Math.Max(0, usage.CacheWriteTokens);
        var uncached = Math.Max(0, usage.PromptTokens - cached - written);
        var micro = uncached * InputPerMTok + cached * (CachedInputPerMTok ?? InputPerMTok) + written * (CacheWritePerMTok ?? InputPerMTok)
            + Math.Max(0, usage.CompletionTokens) * OutputPerMTok;
        return Math.Round(micro / Million, 10, MidpointRounding.AwayFromZero);
    }

    internal static ModelPrice Of(decimal input, decimal output, decimal? cached, decimal? write, string source) =>
        new() { InputPerMTok = input, OutputPerMTok = output, CachedInputPerMTok = cached, CacheWritePerMTok = write, Source = source };
}

/// <summary><c>Pricing:Models:&lt;model&gt;</c>: the operator's prices, over the built-in ones.</summary>
public sealed class PricingOptions
{
    public const string Section = "Pricing";

    public Dictionary<string, ModelPrice> Models { get; set; } = new(StringComparer.Ordinal);
}

/// <summary>
/// The price of what a route target serves, looked up in order: the provider's own <c>Providers:&lt;name&gt;:Pricing:&lt;upstream
/// model&gt;</c> (a self-hosted server at 0, say), then <c>Pricing:Models:&lt;upstream model&gt;</c>, then the built-in table
/// (<see cref="Defaults"/>) by the upstream model's name, also without a date suffix (<c>claude-sonnet-4-5-20250929</c> →
/// <c>claude-sonnet-4-5</c>). No price: null, and the request's cost is NULL (never a made-up 0).
/// </summary>
public sealed class PriceTable(IConfiguration configuration)
{
    private readonly Dictionary<string, ModelPrice> _configured = configuration.GetSection(PricingOptions.Section).Get<PricingOptions>()?.Models
        ?? new Dictionary<string, ModelPrice>(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<RouteTarget, ModelPrice?> _resolved = new();

    public ModelPrice? For(RouteTarget target) => _resolved.GetOrAdd(target, t => Resolve(t, configuration));

    private ModelPrice? Resolve(RouteTarget target, IConfiguration config)
    {
        var own = config.GetSection($"Providers:{target.Provider.Name}:Pricing:{target.UpstreamModel}");
        if (own.Exists())
        {
            return own.Get<ModelPrice>();
        }
        if (target.Provider.Adapter.IsSimulated)
        {
            return ModelPrice.Of(0, 0, null, null, "the simulator serves for free");
        }
        return Find(_configured, target.UpstreamModel) ?? Find(Defaults, target.UpstreamModel);
    }

    private static ModelPrice? Find(IReadOnlyDictionary<string, ModelPrice> table, string model)
    {
        if (table.TryGetValue(model, out var price))
        {
            return price;
        }
        // A dated snapshot (claude-sonnet-4-5-20250929, gpt-4o-2024-08-06) costs what its family's alias does.
        var undated = System.Text.RegularExpressions.Regex.Replace(model, @"-(\d{8}|\d{4}-\d{2}-\d{2})$", "");
        return undated != model && table.TryGetValue(undated, out price) ? price : null;
    }

    /// <summary>The routable models with a target that has no price (logged at start as a warning).</summary>
    public IReadOnlyList<string> Unpriced(ProviderRegistry registry) =>
        [.. registry.Models.Where(r => r.Targets.Any(t => For(t) is null)).Select(r => r.Id)];

    private const string OpenAiSource = "https://openai.com/api/pricing/ (standard tier), as of 2025-10";
    private const string AnthropicSource = "https://www.anthropic.com/pricing#api (cache write: 5-minute TTL), as of 2025-10";
    private const string GeminiSource = "https://ai.google.dev/gemini-api/docs/pricing (prompts up to 200k tokens), as of 2025-10";

    /// <summary>Prices of the well-known models of each built-in provider type, each with its source and date.</summary>
    public static readonly IReadOnlyDictionary<string, ModelPrice> Defaults = new Dictionary<string, ModelPrice>(StringComparer.Ordinal)
    {
        ["gpt-4o"] = ModelPrice.Of(2.50m, 10.00m, 1.25m, null, OpenAiSource),
        ["gpt-4o-mini"] = ModelPrice.Of(0.15m, 0.60m, 0.075m, null, OpenAiSource),
        ["gpt-4.1"] = ModelPrice.Of(2.00m, 8.00m, 0.50m, null, OpenAiSource),
        ["gpt-4.1-mini"] = ModelPrice.Of(0.40m, 1.60m, 0.10m, null, OpenAiSource),
        ["gpt-4.1-nano"] = ModelPrice.Of(0.10m, 0.40m, 0.025m, null, OpenAiSource),
        ["gpt-5"] = ModelPrice.Of(1.25m, 10.00m, 0.125m, null, OpenAiSource),
        ["gpt-5-mini"] = ModelPrice.Of(0.25m, 2.00m, 0.025m, null, OpenAiSource),
        ["gpt-5-nano"] = ModelPrice.Of(0.05m, 0.40m, 0.005m, null, OpenAiSource),
        ["o3"] = ModelPrice.Of(2.00m, 8.00m, 0.50m, null, OpenAiSource),
        ["o4-mini"] = ModelPrice.Of(1.10m, 4.40m, 0.275m, null, OpenAiSource),
        ["text-embedding-3-small"] = ModelPrice.Of(0.02m, 0m, null, null, OpenAiSource),
        ["text-embedding-3-large"] = ModelPrice.Of(0.13m, 0m, null, null, OpenAiSource),
        ["claude-opus-4-1"] = ModelPrice.Of(15.00m, 75.00m, 1.50m, 18.75m, AnthropicSource),
        ["claude-opus-4"] = ModelPrice.Of(15.00m, 75.00m, 1.50m, 18.75m, AnthropicSource),
        ["claude-sonnet-4-5"] = ModelPrice.Of(3.00m, 15.00m, 0.30m, 3.75m, AnthropicSource),
        ["claude-sonnet-4"] = ModelPrice.Of(3.00m, 15.00m, 0.30m, 3.75m, AnthropicSource),
        ["claude-3-7-sonnet"] = ModelPrice.Of(3.00m, 15.00m, 0.30m, 3.75m, AnthropicSource),
        ["claude-haiku-4-5"] = ModelPrice.Of(1.00m, 5.00m, 0.10m, 1.25m, AnthropicSource),
        ["claude-3-5-haiku"] = ModelPrice.Of(0.80m, 4.00m, 0.08m, 1.00m, AnthropicSource),
        ["gemini-2.5-pro"] = ModelPrice.Of(1.25m, 10.00m, 0.31m, null, GeminiSource),
        ["gemini-2.5-flash"] = ModelPrice.Of(0.30m, 2.50m, 0.075m, null, GeminiSource),
        ["gemini-2.5-flash-lite"] = ModelPrice.Of(0.10m, 0.40m, 0.025m, null, GeminiSource),
        ["gemini-2.0-flash"] = ModelPrice.Of(0.10m, 0.40m, 0.025m, null, GeminiSource),
    };

    /// <summary>A cost as the header and the JSON carry it: invariant, no exponent, no trailing zeros.</summary>
    public static string Format(decimal cost) => (cost / 1.0000000000m).ToString("0.##########", CultureInfo.InvariantCulture);
}
