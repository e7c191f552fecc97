using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway;
using HelixAgent.Api.Infrastructure;
using HelixAgent.Data;
using StackExchange.Redis;

namespace HelixAgent.Api.Access;

/// <summary>Dependencies of the admin handlers.</summary>
internal sealed record AdminServices(ApiKeyStore Store, KeyAuthenticator Authenticator, MaintenanceMode Maintenance,
    ProviderRegistry Registry, ReadReplica Reads, IServiceProvider Services, TimeProvider Time);

/// <summary>
/// <c>/admin</c> for admin-scope keys (the <see cref="AccessMiddleware"/> enforces it): key management, maintenance
/// mode, provider circuit reset. The same operations as the <c>helixagent</c> CLI.
/// </summary>
internal static class AdminApi
{
    public static IEndpointRouteBuilder MapAdminApi(this IEndpointRouteBuilder app)
    {
        var admin = app.MapGroup("/admin");
        admin.MapGet("/keys", ListKeys);
        admin.MapPost("/keys", CreateKey);
        admin.MapPost("/keys/{name}/rotate", RotateKey);
        admin.MapPost("/keys/{nameOrId}/revoke", RevokeKey);
        admin.MapGet("/usage", UsageReport);
        admin.MapGet("/cache", (HelixAgent.Api.Observability.GatewayMetrics metrics, ResponseCache cache, Microsoft.Extensions.Options.IOptions<CacheOptions> options) =>
            TypedResults.Json(HelixAgent.Api.Health.HealthApi.CacheStatsOf(cache, metrics, options.Value), ApiJsonContext.Default.CacheStats));
        admin.MapDelete("/cache", async (ResponseCache cache, HttpContext ctx) =>
        {
            try
            {
                return GatewayApi.Json(new JsonObject { ["deleted"] = await cache.FlushAsync() });
            }
            catch (Exception ex) when (RedisOutage.Is(ex))
            {
                ctx.Response.Headers.RetryAfter = "5";
                return OpenAiErrors.Result(503, $"The response cache (Redis) is unreachable: {ex.Message}", "service_unavailable", "redis_unavailable");
            }
        });
        admin.MapGet("/maintenance", (MaintenanceMode m) => GatewayApi.Json(new JsonObject { ["enabled"] = m.IsOn }));
        admin.MapPost("/maintenance", SetMaintenance);
        admin.MapPost("/providers/{name}/reset", (string name, ProviderRegistry registry) =>
        {
            if (!registry.TryGetProvider(name, out var p))
            {
                return OpenAiErrors.Result(404, $"Unknown provider '{name}'.", "invalid_request_error", "provider_not_found", "name");
            }
            p.State.Reset();
            return GatewayApi.Json(new JsonObject { ["name"] = p.Name, ["circuit"] = "closed", ["status"] = p.State.Status });
        });
        return app;
    }

    private static async Task<IResult> ListKeys([AsParameters] AdminServices s, CancellationToken ct)
    {
        var now = s.Time.GetUtcNow();
        var keys = await s.Reads.ReadAsync(db => new ApiKeyStore(db).ListAsync(ct));
        return GatewayApi.Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray([.. keys.Select(k => (JsonNode)Describe(k, now))]),
        });
    }

    private static async Task<IResult> CreateKey(HttpContext ctx, [AsParameters] AdminServices s)
    {
        var body = await ReadObjectAsync(ctx);
        if (body is null || body["name"] is not JsonValue)
        {
            return OpenAiErrors.Result(400, "Missing required parameter: 'name'.", "invalid_request_error", "invalid_request_error", "name");
        }
        var now = s.Time.GetUtcNow();
        try
        {
            var expiresDays = Int(body, "expires_in_days");
            var issued = await s.Store.CreateAsync(body["name"]!.ToString(), body["scope"]?.ToString() ?? "client",
                Int(body, "rpm_limit"), Int(body, "tpm_limit"),
                body["allowed_models"] is JsonArray models ? [.. models.Select(m => m?.ToString() ?? "")] : null,
                expiresDays is { } d ? now.AddDays(d) : null, now, ctx.RequestAborted);
            var json = Describe(issued.Info, now);
            json["key"] = issued.Secret;
            return GatewayApi.Json(json, 201);
        }
        catch (ApiKeyException ex)
        {
            return OpenAiErrors.Result(400, ex.Message, "invalid_request_error", "invalid_request_error");
        }
        catch (FormatException ex)
        {
            return OpenAiErrors.Result(400, ex.Message, "invalid_request_error", "invalid_request_error");
        }
    }

    private static async Task<IResult> RotateKey(string name, HttpContext ctx, [AsParameters] AdminServices s)
    {
        var body = await ReadObjectAsync(ctx) ?? [];
        var now = s.Time.GetUtcNow();
        try
        {
            var graceHours = body["grace_hours"] is JsonValue g && g.TryGetValue<double>(out var h) ? h : 24;
            var (issued, retiring) = await s.Store.RotateAsync(name, TimeSpan.FromHours(graceHours), now, ctx.RequestAborted);
            var json = Describe(issued.Info, now);
            json["key"] = issued.Secret;
            json["retiring"] = new JsonArray([.. retiring.Select(k => (JsonNode)Describe(k, now))]);
            return GatewayApi.Json(json, 201);
        }
        catch (ApiKeyException ex)
        {
            return OpenAiErrors.Result(404, ex.Message, "invalid_request_error", "key_not_found", "name");
        }
    }

    private static async Task<IResult> RevokeKey(string nameOrId, [AsParameters] AdminServices s, CancellationToken ct)
    {
        try
        {
            var revoked = await s.Store.RevokeAsync(nameOrId, s.Time.GetUtcNow(), ct);
            foreach (var (_, hash) in revoked)
            {
                s.Authenticator.Evict(Convert.ToHexString(hash));
            }
            var fannedOut = await KeyAuthenticator.PublishChangeAsync(s.Services.GetService<IConnectionMultiplexer>(), revoked.Select(r => r.Hash));
            return GatewayApi.Json(new JsonObject
            {
                ["revoked"] = new JsonArray([.. revoked.Select(r => (JsonNode)Describe(r.Key, s.Time.GetUtcNow()))]),
                ["all_replicas_notified"] = fannedOut,
            });
        }
        catch (ApiKeyException ex)
        {
            return OpenAiErrors.Result(404, ex.Message, "invalid_request_error", "key_not_found", "name");
        }
    }

    private static async Task<IResult> SetMaintenance(HttpContext ctx, [AsParameters] AdminServices s)
    {
        var body = await ReadObjectAsync(ctx);
        if (body?["enabled"] is not JsonValue v || !v.TryGetValue<bool>(out var on))
        {
            return OpenAiErrors.Result(400, "Expected {\"enabled\": true|false}.", "invalid_request_error", "invalid_request_error", "enabled");
        }
        var redis = s.Services.GetService<IConnectionMultiplexer>();
        if (redis is null || !redis.IsConnected)
        {
            ctx.Response.Headers.RetryAfter = "5";
            return OpenAiErrors.Result(503, "Redis is unreachable; maintenance mode is shared through Redis and cannot be switched now.",
                "service_unavailable", "redis_unavailable");
        }
        try
        {
            await MaintenanceMode.SetAsync(redis, on);
        }
        catch (Exception ex) when (RedisOutage.Is(ex))
        {
            ctx.Response.Headers.RetryAfter = "5";
            return OpenAiErrors.Result(503, $"Redis did not take the change ({ex.Message}); maintenance mode is unchanged.",
                "service_unavailable", "redis_unavailable");
        }
        s.Maintenance.Apply(on);
        return GatewayApi.Json(new JsonObject { ["enabled"] = on });
    }

    /// <summary>
    /// <c>GET /admin/usage?from=2026-11-01&amp;to=2026-11-30&amp;group_by=key|model|provider</c> from the worker's daily
    /// rollups (<c>usage_daily</c>): requests, errors, tokens and request-weighted latency percentiles per group.
    /// </summary>
    private static async Task<IResult> UsageReport(HttpContext ctx, [AsParameters] AdminServices s)
    {
        var q = ctx.Request.Query;
        var groupBy = q["group_by"].ToString() is { Length: > 0 } g ? g : "model";
        var column = groupBy switch
        {
            "key" => "key_name",
            "model" => "model",
            "provider" => "provider",
            _ => null,
        };
        if (column is null)
        {
            return OpenAiErrors.Result(400, "Invalid value for 'group_by': expected key, model or provider.", "invalid_request_error", "invalid_request_error", "group_by");
        }
        var today = DateOnly.FromDateTime(s.Time.GetUtcNow().UtcDateTime);
        if (!TryDate(q["from"], today.AddDays(-30), out var from) || !TryDate(q["to"], today, out var to) || to < from)
        {
            return OpenAiErrors.Result(400, "Invalid 'from'/'to': expected dates as YYYY-MM-DD with from <= to.", "invalid_request_error", "invalid_request_error", "from");
        }
        var data = await s.Reads.ReadAsync(db => QueryUsageAsync(db, column, groupBy, from, to, ctx.RequestAborted));
        return GatewayApi.Json(new JsonObject
        {
            ["object"] = "list",
            ["from"] = from.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture),
            ["to"] = to.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture),
            ["group_by"] = groupBy,
            ["data"] = data,
        });
    }

    private static async Task<JsonArray> QueryUsageAsync(Npgsql.NpgsqlDataSource db, string column, string groupBy, DateOnly from, DateOnly to, CancellationToken ct)
    {
        await using var cmd = db.CreateCommand($"""
            SELECT {column}, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens),
                   sum(latency_p50_ms * requests) / nullif(sum(requests), 0),
                   sum(latency_p95_ms * requests) / nullif(sum(requests), 0)
            FROM usage_daily WHERE day BETWEEN $1 AND $2
            GROUP BY 1 ORDER BY 2 DESC, 1
            """);
        cmd.Parameters.AddWithValue(from);
        cmd.Parameters.AddWithValue(to);
        var data = new JsonArray();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
        {
            data.Add(new JsonObject
            {
                [groupBy] = r.GetString(0),
                ["requests"] = r.GetInt64(1),
                ["errors"] = r.GetInt64(2),
                ["prompt_tokens"] = r.GetInt64(3),
                ["completion_tokens"] = r.GetInt64(4),
                ["latency_p50_ms"] = r.IsDBNull(5) ? null : Math.Round(r.GetDouble(5), 2),
                ["latency_p95_ms"] = r.IsDBNull(6) ? null : Math.Round(r.GetDouble(6), 2),
            });
        }
        return data;
    }

    private static bool TryDate(Microsoft.Extensions.Primitives.StringValues value, DateOnly fallback, out DateOnly date)
    {
        if (string.IsNullOrEmpty(value))
        {
            date = fallback;
            return true;
        }
        return DateOnly.TryParseExact(value.ToString(), "yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture,
            System.Globalization.DateTimeStyles.None, out date);
    }

    private static JsonObject Describe(ApiKeyInfo k, DateTimeOffset now) => new()
    {
        ["id"] = k.Id.ToString(),
        ["name"] = k.Name,
        ["prefix"] = k.Prefix,
        ["scope"] = k.Scope,
        ["status"] = k.StatusAt(now),
        ["created_at"] = k.CreatedAt.ToString("o"),
        ["expires_at"] = k.ExpiresAt?.ToString("o"),
        ["revoked_at"] = k.RevokedAt?.ToString("o"),
        ["rpm_limit"] = k.RpmLimit,
        ["tpm_limit"] = k.TpmLimit,
        ["allowed_models"] = k.AllowedModels is { } m ? new JsonArray([.. m.Select(x => (JsonNode)JsonValue.Create(x))]) : null,
    };

    private static int? Int(JsonObject body, string name) =>
        body[name] is not JsonNode n ? null
        : n is JsonValue v && v.TryGetValue<int>(out var i) ? i
        : throw new FormatException($"'{name}' must be a whole number.");

    private static async Task<JsonObject?> ReadObjectAsync(HttpContext ctx)
    {
        if (ctx.Request.ContentLength is 0 or null && !ctx.Request.HasJsonContentType())
        {
            return null;
        }
        try
        {
            return await System.Text.Json.Nodes.JsonNode.ParseAsync(ctx.Request.Body, cancellationToken: ctx.RequestAborted) as JsonObject;
        }
        catch (System.Text.Json.JsonException)
        {
            return null;
        }
    }
}
