using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics;

namespace HelixAgent.Api.Infrastructure;

/// <summary>
/// The OpenAI error shape, which every failure outside <c>/v1/messages</c> is answered with (those get Anthropic's):
/// never a stack trace, never an HTML page.
/// </summary>
internal static class OpenAiErrors
{
    public static IResult Result(int status, string message, string type, string? code = null, string? param = null) =>
        TypedResults.Json(new ErrorEnvelope(new ErrorBody(message, type, param, code)),
            ApiJsonContext.Default.ErrorEnvelope, statusCode: status);

    /// <summary>Put in the response pipe, not flushed: on a client route it leaves after the request's ledger row is
    /// in the journal.</summary>
    public static Task WriteAsync(HttpContext ctx, int status, string message, string type, string? code = null, string? param = null)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        using var json = new Utf8JsonWriter(ctx.Response.BodyWriter);
        JsonSerializer.Serialize(json, new ErrorEnvelope(new ErrorBody(message, type, param, code)), ApiJsonContext.Default.ErrorEnvelope);
        return Task.CompletedTask;
    }

    public static string TypeFor(int status) => status switch
    {
        400 or 404 or 405 or 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        503 => "service_unavailable",
        _ => "server_error",
    };
}

internal sealed record ErrorBody(string Message, string Type, string? Param, string? Code);
internal sealed record ErrorEnvelope(ErrorBody Error);

internal static class ErrorHandlingExtensions
{
    /// <summary>
    /// Unhandled exceptions and bare status codes (404, 405, 413...) become OpenAI-shaped JSON errors. PostgreSQL or
    /// Redis being unreachable is an outage, not a bug: 503 with <c>Retry-After</c> (e.g. key management while the
    /// database is down), never a 500.
    /// </summary>
    public static WebApplication UseApplicationErrors(this WebApplication app)
    {
        app.UseExceptionHandler(errorApp => errorApp.Run(ctx =>
        {
            var feature = ctx.Features.Get<IExceptionHandlerFeature>();
            if (Unreachable(feature?.Error) is var (what, code))
            {
                ctx.Response.Headers.RetryAfter = "5";
                return Gateway.Dialects.Dialects.WriteErrorAsync(ctx, StatusCodes.Status503ServiceUnavailable,
                    $"{what} is unreachable right now; please retry shortly.", OpenAiErrors.TypeFor(503), code);
            }
            var status = feature?.Error is BadHttpRequestException bad ? bad.StatusCode : StatusCodes.Status500InternalServerError;
            var message = status == 500 ? "The server had an error while processing your request." : feature?.Error.Message ?? "Bad request.";
            return Gateway.Dialects.Dialects.WriteErrorAsync(ctx, status, message, OpenAiErrors.TypeFor(status));
        }));
        app.UseStatusCodePages(ctx =>
        {
            var status = ctx.HttpContext.Response.StatusCode;
            var message = status switch
            {
                404 => $"Unknown route: {ctx.HttpContext.Request.Method} {HelixAgent.Data.Echo.Clip(ctx.HttpContext.Request.Path.Value)}",
                405 => $"Method {ctx.HttpContext.Request.Method} is not allowed on {HelixAgent.Data.Echo.Clip(ctx.HttpContext.Request.Path.Value)}.",
                413 => "Request body too large.",
                _ => $"HTTP {status}",
            };
            return Gateway.Dialects.Dialects.WriteErrorAsync(ctx.HttpContext, status, message, OpenAiErrors.TypeFor(status));
        });
        return app;
    }

    /// <summary>
    /// The dependency an exception says is unreachable: PostgreSQL for Npgsql's transient failures (refused or broken
    /// connection, server shutting down or starting up, pool exhausted), Redis for its connection failures and timeouts.
    /// </summary>
    private static (string What, string Code)? Unreachable(Exception? error) => error switch
    {
        Npgsql.NpgsqlException { IsTransient: true } => ("The database", "database_unavailable"),
        StackExchange.Redis.RedisConnectionException or StackExchange.Redis.RedisTimeoutException => ("Redis", "redis_unavailable"),
        _ => null,
    };
}
