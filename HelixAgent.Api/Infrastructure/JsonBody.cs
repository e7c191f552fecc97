using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http.Features;

namespace HelixAgent.Api.Infrastructure;

/// <summary>Why a body was refused: the status, a message for the client, and the error code (<c>invalid_json</c>, ...).</summary>
internal sealed record BodyError(int Status, string Message, string Code);

/// <summary>
/// Reads a client's JSON body once, strictly, where it arrives: the whole body is checked before any field is read, so no
/// later read can throw. Refused: duplicate property names (.NET 10's <c>AllowDuplicateProperties = false</c>), invalid
/// UTF-8, escapes that are not valid UTF-16 (a lone surrogate), nesting deeper than 64, and anything but an object.
/// Every route that takes JSON reads it here; each renders the <see cref="BodyError"/> in its own error shape.
/// </summary>
internal static class JsonBody
{
    public static readonly JsonDocumentOptions Strict = new() { AllowDuplicateProperties = false, MaxDepth = 64 };

    /// <summary>
    /// The body as a JSON object, or the error to answer. Null for both when the client hung up mid-body: nobody is left
    /// to answer (the connection is aborted).
    /// </summary>
    public static async Task<(JsonObject? Body, BodyError? Error)> ReadObjectAsync(HttpContext ctx, long maxBytes)
    {
        if (ctx.Request.ContentLength > maxBytes)
        {
            return (null, TooLarge(maxBytes));
        }
        if (ctx.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = maxBytes;
        }
        if (!ctx.Request.HasJsonContentType())
        {
            return (null, new BodyError(400, "Content-Type must be application/json.", "invalid_content_type"));
        }
        byte[]? rented = null;
        try
        {
            // No cancellation token: a hang-up already ends the read (with an IOException or BadHttpRequestException),
            // and a read cancelled through RequestAborted would leave Kestrel's body reader busy.
            var length = 0;
            rented = ArrayPool<byte>.Shared.Rent((int)Math.Clamp(ctx.Request.ContentLength ?? 16 * 1024, 1, maxBytes) + 1);
            while (true)
            {
                if (length == rented.Length)
                {
                    if (length > maxBytes)
                    {
                        return (null, TooLarge(maxBytes));
                    }
                    var bigger = ArrayPool<byte>.Shared.Rent((int)Math.Min(maxBytes + 1, (long)rented.Length * 2));
                    rented.AsSpan(0, length).CopyTo(bigger);
                    ArrayPool<byte>.Shared.Return(rented);
                    rented = bigger;
                }
                var n = await ctx.Request.Body.ReadAsync(rented.AsMemory(length));
                if (n == 0)
                {
                    break;
                }
                length += n;
                if (length > maxBytes)
                {
                    return (null, TooLarge(maxBytes));
                }
            }
            return Parse(rented.AsSpan(0, length));
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return (null, TooLarge(maxBytes));
        }
        catch (Exception ex) when (ex is BadHttpRequestException or IOException or OperationCanceledException)
        {
            // The client hung up (or sent less than its Content-Length): nobody is left to answer, nothing was routed.
            if (!ctx.RequestAborted.IsCancellationRequested && ex is BadHttpRequestException bad)
            {
                return (null, new BodyError(400, $"The request body could not be read: {bad.Message}", "invalid_body"));
            }
            // Close our side too: otherwise Kestrel may try to drain the rest of a body that will never come from a
            // reader the failed read left busy, and logs that as an error for every client that reset its connection.
            ctx.Abort();
            return (null, null);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>Parses and checks a whole body: a JSON object, or the reason it is not one.</summary>
    public static (JsonObject? Body, BodyError? Error) Parse(ReadOnlySpan<byte> utf8)
    {
        if (!System.Text.Unicode.Utf8.IsValid(utf8))
        {
            return (null, Invalid("the body is not valid UTF-8."));
        }
        try
        {
            // Strings with \u escapes are decoded once here: a lone surrogate would otherwise throw on first read.
            if (utf8.IndexOf("\\u"u8) >= 0)
            {
                var reader = new Utf8JsonReader(utf8, new JsonReaderOptions { MaxDepth = Strict.MaxDepth });
                while (reader.Read())
                {
                    if (reader.TokenType is JsonTokenType.String or JsonTokenType.PropertyName && reader.ValueIsEscaped)
                    {
                        reader.GetString();
                    }
                }
            }
            return JsonNode.Parse(utf8, documentOptions: Strict) is JsonObject obj
                ? (obj, null)
                : (null, new BodyError(400, "The request body must be a JSON object.", "invalid_json"));
        }
        catch (JsonException ex)
        {
            return (null, Invalid(ex.Message));
        }
        catch (InvalidOperationException ex)
        {
            return (null, Invalid(ex.Message));
        }
    }

    private static BodyError Invalid(string why) => new(400, $"We could not parse the JSON body of your request: {why}", "invalid_json");

    private static BodyError TooLarge(long maxBytes) => new(413, $"Request body too large: the limit is {maxBytes} bytes.", "request_too_large");
}
