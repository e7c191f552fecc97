using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Api.Access;
using HelixAgent.Api.Gateway.Dialects;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Api.Ledger;
using HelixAgent.Api.Observability;
using HelixAgent.Data;
using Microsoft.Extensions.Options;

namespace HelixAgent.Api.Gateway;

/// <summary>Dependencies of the client API handlers.</summary>
internal sealed record GatewayServices(
    ProviderRegistry Registry,
    GatewayRouter Router,
    CompletionLedger Ledger,
    GatewayMetrics Metrics,
    ClusterRateLimiter Limiter,
    IOptions<RateLimitOptions> Limits,
    IOptions<GatewayOptions> Options,
    ResponseCache Cache,
    IOptions<EnsembleOptions> Ensemble,
    StoredResponses Stored,
    PriceTable Prices,
    ILogger<GatewayRouter> Log,
    TimeProvider Time);

/// <summary>
/// The client API: <c>/v1/chat/completions</c>, <c>/v1/completions</c> and <c>/v1/messages</c> (three dialects of one
/// pipeline), <c>/v1/messages/count_tokens</c>, <c>/v1/embeddings</c>, <c>/v1/models</c>. Every request that reaches
/// routing ends as one row in <c>completions</c>.
/// </summary>
internal static partial class GatewayApi
{
    public static IEndpointRouteBuilder MapGatewayApi(this IEndpointRouteBuilder app)
    {
        var v1 = app.MapGroup("/v1");
        v1.MapPost("/chat/completions", (HttpContext ctx, [AsParameters] GatewayServices s) => HandleAsync(ctx, s, OpenAiChatDialect.Instance));
        v1.MapPost("/completions", (HttpContext ctx, [AsParameters] GatewayServices s) => HandleAsync(ctx, s, LegacyCompletionsDialect.Instance));
        v1.MapPost("/messages", (HttpContext ctx, [AsParameters] GatewayServices s) => HandleAsync(ctx, s, AnthropicMessagesDialect.Instance));
        v1.MapPost("/messages/count_tokens", HandleCountTokensAsync);
        v1.MapPost("/responses", HandleResponsesAsync);
        v1.MapGet("/responses/{id}", GetStoredResponseAsync);
        v1.MapDelete("/responses/{id}", DeleteStoredResponseAsync);
        v1.MapGet("/responses/{id}/input_items", GetStoredInputItemsAsync);
        v1.MapPost("/embeddings", HandleEmbeddingsAsync);
        v1.MapGet("/models", ListModels);
        v1.MapGet("/models/{**id}", GetModel);
        return app;
    }

    /// <summary>
    /// One pipeline for every dialect of a chat-like request: admit (<c>Pipeline/Admission.cs</c>), serve
    /// (<c>Pipeline/Serving.cs</c>, or the ensemble), record (<c>Pipeline/Recording.cs</c>). The dialect
    /// (<c>Dialects/</c>) parses, prepares the request for each target, and renders answers, streams and errors.
    /// </summary>
    private static async Task HandleAsync(HttpContext ctx, GatewayServices s, IDialect dialect,
        Func<JsonObject, ApiKeyInfo?, CancellationToken, Task<ValidationError?>>? expand = null, Func<Admitted, RequestTrace, Admitted>? onAdmitted = null)
    {
        var admitted = await AdmitRequestAsync(ctx, s, dialect, dialect.Validate, dialect.Endpoint, expand: expand);
        if (admitted is null)
        {
            return;
        }
        var trace = new RequestTrace(NewRequestId(), admitted.Model, dialect.Endpoint, admitted.Stream, s.Time.GetTimestamp());
        admitted = onAdmitted?.Invoke(admitted, trace) ?? admitted;
        await ServeAsync(ctx, s, admitted, trace, () => admitted.Ensemble is not null
            ? EnsembleChatAsync(ctx, s, admitted, trace)
            : admitted.Stream
            ? StreamAsync(ctx, s, admitted, trace)
            : CompleteAsync(ctx, s, admitted, trace));
    }

    /// <summary>
    /// <c>/v1/messages/count_tokens</c>: passed through to the route's first Anthropic target (with failover among
    /// them); a route without one answers the gateway's own estimate (4 characters a token over the system prompt,
    /// messages and tools), labelled <c>x-helixagent-estimate: true</c>. Counting spends no tokens, so it reserves
    /// none; its row has none either.
    /// </summary>
    private static async Task HandleCountTokensAsync(HttpContext ctx, [AsParameters] GatewayServices s)
    {
        var dialect = AnthropicMessagesDialect.Instance;
        var admitted = await AdmitRequestAsync(ctx, s, dialect, b => MessagesValidation.Messages(b, requireMaxTokens: false), "messages.count_tokens",
            rateLimited: false);
        if (admitted is null)
        {
            return;
        }
        var trace = new RequestTrace(NewRequestId(), admitted.Model, "messages.count_tokens", false, s.Time.GetTimestamp());
        await ServeAsync(ctx, s, admitted, trace, async () =>
        {
            if (admitted.Route.Targets.Any(t => t.Provider.Adapter is IMessagesPassThrough))
            {
                var (success, error) = await s.Router.RunAsync(
                    admitted.Route, trace,
                    t => TimeSpan.FromSeconds(t.Provider.Options.TimeoutSeconds),
                    (t, cts) => ((IMessagesPassThrough)t.Provider.Adapter).CountTokensAsync(
                        new NativeCall(admitted.Body, t.UpstreamModel, trace.RequestId, admitted.ForwardedHeaders), cts.Token),
                    t => t.Provider.Adapter is IMessagesPassThrough,
                    ctx.RequestAborted);
                if (error is not null)
                {
                    await FailAsync(ctx, dialect, trace, error);
                    return;
                }
                using var cancellation = success!.Cancellation;
                SetRouteHeaders(ctx, trace);
                await WriteUtf8JsonAsync(ctx, success.Value);
                return;
            }
            long chars = 0;
            foreach (var part in (ReadOnlySpan<string>)["system", "messages", "tools"])
            {
                chars += admitted.Body[part]?.ToJsonString().Length ?? 0;
            }
            ctx.Response.Headers["x-helixagent-estimate"] = "true";
            SetRouteHeaders(ctx, trace);
            await WriteUtf8JsonAsync(ctx, JsonBytes.Of(new JsonObject { ["input_tokens"] = TokenEstimate.OfChars(chars) }));
        });
    }

    private static async Task HandleEmbeddingsAsync(HttpContext ctx, [AsParameters] GatewayServices s)
    {
        var admitted = await AdmitRequestAsync(ctx, s, OpenAiChatDialect.Instance, RequestValidation.Embeddings, "embeddings");
        if (admitted is null)
        {
            return;
        }
        var trace = new RequestTrace(NewRequestId(), admitted.Model, "embeddings", false, s.Time.GetTimestamp());
        await ServeAsync(ctx, s, admitted, trace, () => EmbedAsync(ctx, s, admitted, trace));
    }

    private static async Task EmbedAsync(HttpContext ctx, GatewayServices s, Admitted admitted, RequestTrace trace)
    {
        if (await ServeFromCacheAsync(ctx, s, trace, admitted.Cache, admitted.Route))
        {
            return;
        }
        var (success, error) = await s.Router.RunAsync(
            admitted.Route, trace,
            t => TimeSpan.FromSeconds(t.Provider.Options.TimeoutSeconds),
            (t, cts) => t.Provider.Adapter.EmbedAsync(new EmbeddingCall(admitted.Body, t.UpstreamModel, trace.RequestId), cts.Token),
            t => t.Provider.Adapter.SupportsEmbeddings,
            ctx.RequestAborted);
        if (error is not null)
        {
            await FailAsync(ctx, OpenAiChatDialect.Instance, trace, error);
            return;
        }
        using var cancellation = success!.Cancellation;
        trace.Usage = success.Value.Usage;
        SetRouteHeaders(ctx, trace);
        SetCostHeader(ctx, s, trace);
        await WriteAndCacheAsync(ctx, s, admitted.Cache?.Key, JsonBytes.Of(success.Value.Response), trace.Usage);
    }

    private static readonly long ModelsCreated = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    private static IResult ListModels(ProviderRegistry registry)
    {
        var data = new JsonArray();
        foreach (var route in registry.Models)
        {
            data.Add(ModelJson(route, route.Id));
            foreach (var alias in route.Aliases)
            {
                data.Add(ModelJson(route, alias));
            }
        }
        return Json(new JsonObject { ["object"] = "list", ["data"] = data });
    }

    private static IResult GetModel(string id, ProviderRegistry registry) =>
        registry.TryGetRoute(id, out var route)
            ? Json(ModelJson(route, id))
            : OpenAiErrors.Result(404, $"The model '{Echo.Clip(id)}' does not exist or you do not have access to it.", "invalid_request_error", "model_not_found", "model");

    private static JsonObject ModelJson(ModelRoute route, string id) => new()
    {
        ["id"] = id,
        ["object"] = "model",
        ["created"] = ModelsCreated,
        ["owned_by"] = route.IsEnsemble ? "helixagent" : route.IsSimulated ? "helixagent-simulator" : route.Targets[0].Provider.Name,
        ["helixagent"] = new JsonObject
        {
            ["route"] = route.Id,
            ["ensemble"] = route.IsEnsemble,
            ["providers"] = new JsonArray([.. route.Targets.Select(t => (JsonNode)JsonValue.Create(t.Provider.Name + "/" + t.UpstreamModel))]),
            ["simulated"] = route.IsSimulated,
        },
    };

    internal static IResult Json(JsonNode node, int status = 200) =>
        Results.Text(node.ToJsonString(), "application/json", System.Text.Encoding.UTF8, status);

    private static string NewRequestId() => Guid.CreateVersion7().ToString("N");
}
