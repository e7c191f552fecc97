using System.Text.Json.Nodes;
using HelixAgent.Api.Access;
using HelixAgent.Api.Gateway.Dialects;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Data;
using static HelixAgent.Api.Gateway.Providers.OpenAiShapes;

namespace HelixAgent.Api.Gateway;

/// <summary>
/// What OpenAI Responses add around the one pipeline: a <c>previous_response_id</c> is expanded from the store before
/// routing (the whole conversation goes to the target, never our id); a <c>store: true</c> answer is kept
/// (<see cref="StoredResponses"/>); and the stored ones are read back (<c>GET /v1/responses/{id}</c>, its
/// <c>input_items</c>) and deleted, each only by the key that made it.
/// </summary>
internal static partial class GatewayApi
{
    private static Task HandleResponsesAsync(HttpContext ctx, [AsParameters] GatewayServices s) =>
        HandleAsync(ctx, s, OpenAiResponsesDialect.Instance,
            expand: (body, key, ct) => ExpandConversationAsync(s.Stored, body, key, ct),
            onAdmitted: (admitted, trace) => ResponsesValidation.Stores(admitted.Body)
                ? admitted with { OnAnswer = response => Store(s.Stored, admitted, trace, response) }
                : admitted);

    /// <summary>Puts the stored conversation before the request's own input (<see cref="ResponsesTranslation.HistoryField"/>); 404 when it is not the key's.</summary>
    private static async Task<ValidationError?> ExpandConversationAsync(StoredResponses stored, JsonObject body, ApiKeyInfo? key, CancellationToken ct)
    {
        if (StringOf(body["previous_response_id"]) is not { } previous)
        {
            return null;
        }
        List<StoredResponse>? chain;
        try
        {
            chain = await stored.ChainAsync(previous, key, ct);
        }
        catch (Exception ex) when (StoreDown(ex))
        {
            return new ValidationError("Stored responses are unavailable right now (the database does not answer); retry shortly, or send the whole input with store: false.",
                "previous_response_id", 503, "store_unavailable");
        }
        if (chain is null)
        {
            return new ValidationError($"Previous response with id '{Echo.Clip(previous)}' not found.", "previous_response_id", 404, "previous_response_not_found");
        }
        var history = new JsonArray();
        foreach (var turn in chain)
        {
            foreach (var item in turn.Input.Concat(turn.Output()))
            {
                history.Add(item?.DeepClone());
            }
        }
        body[ResponsesTranslation.HistoryField] = history;
        return null;
    }

    private static void Store(StoredResponses stored, Admitted admitted, RequestTrace trace, ReadOnlyMemory<byte> response)
    {
        var input = ResponsesTranslation.InputItems(admitted.Body);
        for (var i = 0; i < input.Count; i++)
        {
            if (input[i] is JsonObject item && item["id"] is null)
            {
                var prefix = (StringOf(item["type"]) ?? "message") switch
                {
                    "message" => "msg",
                    "function_call" => "fc",
                    "function_call_output" => "fco",
                    _ => "item",
                };
                item["id"] = $"{prefix}_{trace.RequestId}_in{i}";
            }
        }
        // Our id (resp_ and the request id), or an upstream's own on a target passed through: the client continues with that one.
        var id = ResponsesTranslation.ResponseId(trace);
        var created = DateTimeOffset.UtcNow;
        using (var doc = System.Text.Json.JsonDocument.Parse(response))
        {
            var root = doc.RootElement;
            if (root.TryGetProperty("id", out var given) && given.ValueKind == System.Text.Json.JsonValueKind.String)
            {
                id = given.GetString()!;
            }
            if (root.TryGetProperty("created_at", out var at) && at.TryGetInt64(out var seconds))
            {
                created = DateTimeOffset.FromUnixTimeSeconds(seconds);
            }
        }
        stored.Save(new StoredResponse(id, admitted.Key?.Id, admitted.Key?.RotatedFrom, created, admitted.Model,
            StringOf(admitted.Body["previous_response_id"]), input, response));
    }

    private static async Task GetStoredResponseAsync(HttpContext ctx, string id, StoredResponses stored)
    {
        if (await FoundAsync(ctx, id, stored) is { } found)
        {
            await WriteUtf8JsonAsync(ctx, found.Response);
        }
    }

    private static async Task DeleteStoredResponseAsync(HttpContext ctx, string id, StoredResponses stored)
    {
        bool deleted;
        try
        {
            deleted = await stored.DeleteAsync(id, AuthenticatedKey.Of(ctx), ctx.RequestAborted);
        }
        catch (Exception ex) when (StoreDown(ex))
        {
            await UnavailableAsync(ctx);
            return;
        }
        if (!deleted)
        {
            await NotFoundAsync(ctx, id);
            return;
        }
        await WriteUtf8JsonAsync(ctx, JsonBytes.Of(new JsonObject { ["id"] = id, ["object"] = "response.deleted", ["deleted"] = true }));
    }

    /// <summary>The request's own input items: newest first unless <c>order=asc</c>, <c>limit</c> (1–100, 20) at a time after <c>after</c>.</summary>
    private static async Task GetStoredInputItemsAsync(HttpContext ctx, string id, StoredResponses stored)
    {
        var query = ctx.Request.Query;
        var order = query["order"].ToString() is { Length: > 0 } o ? o : "desc";
        if (order is not ("asc" or "desc"))
        {
            await OpenAiErrors.WriteAsync(ctx, 400, "Invalid 'order': must be 'asc' or 'desc'.", "invalid_request_error", "invalid_value", "order");
            return;
        }
        var limit = 20;
        if (query["limit"].ToString() is { Length: > 0 } l && (!int.TryParse(l, System.Globalization.CultureInfo.InvariantCulture, out limit) || limit is < 1 or > 100))
        {
            await OpenAiErrors.WriteAsync(ctx, 400, "Invalid 'limit': must be an integer from 1 to 100.", "invalid_request_error", "invalid_value", "limit");
            return;
        }
        if (await FoundAsync(ctx, id, stored) is not { } found)
        {
            return;
        }
        var items = found.Input.OfType<JsonObject>().ToList();
        if (order == "desc")
        {
            items.Reverse();
        }
        if (query["after"].ToString() is { Length: > 0 } after)
        {
            items = items.SkipWhile(i => StringOf(i["id"]) != after).Skip(1).ToList();
        }
        var page = items.Take(limit).Select(i => (JsonNode)i.DeepClone()).ToArray();
        await WriteUtf8JsonAsync(ctx, JsonBytes.Of(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(page),
            ["first_id"] = page.Length > 0 ? page[0]["id"]?.DeepClone() : null,
            ["last_id"] = page.Length > 0 ? page[^1]["id"]?.DeepClone() : null,
            ["has_more"] = items.Count > limit,
        }));
    }

    private static async Task<StoredResponse?> FoundAsync(HttpContext ctx, string id, StoredResponses stored)
    {
        StoredResponse? found;
        try
        {
            found = await stored.FindAsync(id, AuthenticatedKey.Of(ctx), ctx.RequestAborted);
        }
        catch (Exception ex) when (StoreDown(ex))
        {
            await UnavailableAsync(ctx);
            return null;
        }
        if (found is null)
        {
            await NotFoundAsync(ctx, id);
        }
        return found;
    }

    /// <summary>PostgreSQL does not answer (down, a timeout, the pool exhausted): the store's reads fail, the gateway does not.</summary>
    private static bool StoreDown(Exception ex) => ex is Npgsql.NpgsqlException or TimeoutException or System.Net.Sockets.SocketException;

    private static Task UnavailableAsync(HttpContext ctx)
    {
        ctx.Response.Headers.RetryAfter = "5";
        return OpenAiErrors.WriteAsync(ctx, 503, "Stored responses are unavailable right now (the database does not answer); retry shortly.",
            "service_unavailable", "store_unavailable", null);
    }

    /// <summary>Not stored, expired, deleted, or another key's: the same answer, which tells nothing about which.</summary>
    private static Task NotFoundAsync(HttpContext ctx, string id) =>
        OpenAiErrors.WriteAsync(ctx, 404, $"Response with id '{Echo.Clip(id)}' not found.", "invalid_request_error", "not_found", "response_id");
}
