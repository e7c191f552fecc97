using HelixAgent.Api.Gateway.Dialects;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Data;

namespace HelixAgent.Api.Access;

/// <summary>The key a request was authenticated with.</summary>
public sealed class AuthenticatedKey(ApiKeyInfo key)
{
    private static readonly object ItemKey = new();
    public ApiKeyInfo Key { get; } = key;

    public static ApiKeyInfo? Of(HttpContext ctx) => ctx.Items.TryGetValue(ItemKey, out var v) ? ((AuthenticatedKey)v!).Key : null;
    internal void Attach(HttpContext ctx) => ctx.Items[ItemKey] = this;
}

/// <summary>
/// Authentication by path, before routing decides anything (so a valid key on a wrong method gets 405 and an invalid
/// key 401): client routes (<c>/v1/chat/completions</c>, <c>/v1/completions</c>, <c>/v1/messages</c>, <c>/v1/responses</c>,
/// <c>/v1/embeddings</c>, <c>/v1/models</c>) need a client or admin key; <c>/admin</c> needs an admin key (client keys get 403). Keys come in
/// <c>X-API-Key</c> or <c>Authorization: Bearer</c>, never in the query string. Maintenance mode answers client routes
/// with 503; health, readiness, metrics and admin keep working. <c>/debug</c> (pprof) is open to loopback callers and
/// admin keys, and an unknown route (404) to everyone else.
/// </summary>
public sealed class AccessMiddleware(RequestDelegate next, KeyAuthenticator authenticator, MaintenanceMode maintenance, InFlightRequests inflight,
    HelixAgent.Api.Observability.GatewayMetrics metrics, Microsoft.Extensions.Options.IOptions<DiagnosticsOptions> diagnostics)
{
    public async Task InvokeAsync(HttpContext ctx)
    {
        var path = ctx.Request.Path;
        if (path.StartsWithSegments("/debug"))
        {
            if (await DebugAllowedAsync(ctx))
            {
                await next(ctx);
            }
            else
            {
                // Exactly what an unknown route answers: diagnostics never show themselves to the network.
                ctx.Response.StatusCode = StatusCodes.Status404NotFound;
            }
            return;
        }
        var admin = path.StartsWithSegments("/admin");
        var client = !admin && IsClientRoute(path);
        if (!admin && !client)
        {
            await next(ctx);
            return;
        }

        var presented = PresentedKey(ctx.Request);
        if (presented is null)
        {
            metrics.AuthRejected("missing_api_key");
            await Dialects.WriteErrorAsync(ctx, 401,
                "Missing API key: send it in the X-API-Key header or as 'Authorization: Bearer <key>'.", "authentication_error", "missing_api_key");
            return;
        }
        ApiKeyInfo? key;
        try
        {
            key = await authenticator.AuthenticateAsync(presented, ctx.RequestAborted);
        }
        catch (KeyStoreUnavailableException)
        {
            metrics.AuthRejected("key_store_unavailable");
            ctx.Response.Headers.RetryAfter = "5";
            await Dialects.WriteErrorAsync(ctx, 503,
                "Your API key cannot be checked right now (key store unreachable); please retry shortly.", "service_unavailable", "key_store_unavailable");
            return;
        }
        if (key is null)
        {
            metrics.AuthRejected("invalid_api_key");
            await Dialects.WriteErrorAsync(ctx, 401,
                $"Incorrect API key provided: {Redact(presented)}. It is unknown, revoked or expired.", "authentication_error", "invalid_api_key");
            return;
        }
        if (admin && key.Scope != "admin")
        {
            metrics.AuthRejected("insufficient_scope");
            await Dialects.WriteErrorAsync(ctx, 403, "This route needs an admin key.", "permission_error", "insufficient_scope");
            return;
        }
        if (client && maintenance.IsOn)
        {
            ctx.Response.Headers.RetryAfter = "60";
            await Dialects.WriteErrorAsync(ctx, 503,
                "HelixAgent is in maintenance mode; please retry later.", "service_unavailable", "maintenance_mode");
            return;
        }
        new AuthenticatedKey(key).Attach(ctx);
        if (!client)
        {
            await next(ctx);
            return;
        }
        var id = inflight.Start(ctx);
        try
        {
            await next(ctx);
        }
        finally
        {
            inflight.Stop(id);
        }
    }

    /// <summary>
    /// <c>/debug/pprof</c>: loopback callers without a proxy header (unless <c>Diagnostics:AllowLoopbackWithoutKey</c>
    /// is off), and admin keys from anywhere.
    /// </summary>
    private async Task<bool> DebugAllowedAsync(HttpContext ctx)
    {
        if (diagnostics.Value.OpenWithoutKey(ctx))
        {
            return true;
        }
        if (PresentedKey(ctx.Request) is not { } presented)
        {
            return false;
        }
        try
        {
            return (await authenticator.AuthenticateAsync(presented, ctx.RequestAborted))?.Scope == "admin";
        }
        catch (KeyStoreUnavailableException)
        {
            return false;
        }
    }

    internal static bool IsClientRoute(PathString path) =>
        path.StartsWithSegments("/v1/chat/completions") || path.StartsWithSegments("/v1/completions") ||
        path.StartsWithSegments("/v1/embeddings") || path.StartsWithSegments("/v1/models") || path.StartsWithSegments("/v1/messages") ||
        path.StartsWithSegments("/v1/responses");

    private static string? PresentedKey(HttpRequest request)
    {
        var header = request.Headers["X-API-Key"];
        if (header.Count == 1 && !string.IsNullOrWhiteSpace(header[0]))
        {
            return header[0]!.Trim();
        }
        var auth = request.Headers.Authorization;
        if (auth.Count == 1 && auth[0] is { } value && value.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            var token = value["Bearer ".Length..].Trim();
            return token.Length > 0 ? token : null;
        }
        return null;
    }

    /// <summary>Shows only enough of a key for its owner to recognise it (never the secret).</summary>
    private static string Redact(string presented) =>
        presented.Length <= 8 ? "****" : string.Concat(presented.AsSpan(0, Math.Min(8, presented.Length / 3)), "****");
}
