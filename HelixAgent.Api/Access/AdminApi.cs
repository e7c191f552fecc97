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
        admin.MapMethods("/keys/{name}", ["PATCH"], UpdateKey);
        admin.MapGet("/teams", ListTeams);
        admin.MapPost("/teams", CreateTeam);
        admin.MapMethods("/teams/{name}", ["PATCH"], UpdateTeam);
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
                return OpenAiErrors.Result(404, $"Unknown provider '{HelixAgent.Data.Echo.Clip(name)}'.", "invalid_request_error", "provider_not_found", "name");
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
        var data = new JsonArray();
        foreach (var k in keys)
        {
            data.Add(await DescribeWithSpendAsync(s, k, now, ct));
        }
        return GatewayApi.Json(new JsonObject { ["object"] = "list", ["data"] = data });
    }

    /// <summary>A key with what its budgets (its own, its team's) spent this period, from the ledger.</summary>
    private static async Task<JsonObject> DescribeWithSpendAsync(AdminServices s, ApiKeyInfo k, DateTimeOffset now, CancellationToken ct)
    {
        var json = Describe(k, now);
        if (k.Budget is { } own && k.StatusAt(now) is "active" or "expiring")
        {
            json["budget"] = await BudgetJsonAsync(s, BudgetScope.Key, k.Name, own, now, ct);
        }
        if (k.TeamBudget is { } shared && k.Team is { } team)
        {
            json["team_budget"] = await BudgetJsonAsync(s, BudgetScope.Team, team, shared, now, ct);
        }
        return json;
    }

    private static async Task<JsonObject> BudgetJsonAsync(AdminServices s, BudgetScope scope, string name, Budget b, DateTimeOffset now, CancellationToken ct)
    {
        var spent = await s.Reads.ReadAsync(db => BudgetLedger.SpentAsync(db, scope, name, b, now, ct));
        return new JsonObject
        {
            ["budget_usd"] = b.Usd,
            ["period"] = b.Period,
            ["spent_usd"] = spent,
            ["remaining_usd"] = Math.Max(0, b.Usd - spent),
            ["resets_at"] = b.ResetsAt(now)?.ToString("o"),
        };
    }

    /// <summary>
    /// <c>budget_usd</c> (a number; with <paramref name="allowNull"/>, null clears it) and <c>budget_period</c>
    /// (monthly by default): Given false when the body sets neither.
    /// </summary>
    private static (Budget? Budget, bool Given, IResult? Error) BudgetOf(JsonObject body, bool allowNull)
    {
        if (!body.ContainsKey("budget_usd"))
        {
            return body.ContainsKey("budget_period") ? (null, false, Invalid("'budget_period' needs 'budget_usd'.", "budget_period")) : (null, false, null);
        }
        if (body["budget_usd"] is null)
        {
            return allowNull ? (null, true, null) : (null, false, Invalid("Invalid value for 'budget_usd': expected an amount in USD.", "budget_usd"));
        }
        if (body["budget_usd"] is not JsonValue v || !v.TryGetValue<decimal>(out var usd))
        {
            return (null, false, Invalid("Invalid type for 'budget_usd': expected a number (USD).", "budget_usd"));
        }
        if (body["budget_period"] is { } p && (p is not JsonValue pv || !pv.TryGetValue<string>(out _)))
        {
            return (null, false, Invalid("Invalid type for 'budget_period': expected daily, monthly or total.", "budget_period"));
        }
        try
        {
            return (Budget.Create(usd, body["budget_period"]?.GetValue<string>()), true, null);
        }
        catch (ApiKeyException ex)
        {
            return (null, false, Invalid(ex.Message, ex.Message.Contains("period", StringComparison.Ordinal) ? "budget_period" : "budget_usd"));
        }
    }

    /// <summary>An optional string field: its value, or the 400 naming it (a JSON null counts as absent).</summary>
    private static (string? Value, IResult? Error) Str(JsonObject body, string name) =>
        body[name] is not JsonNode n ? (null, null)
        : n is JsonValue v && v.TryGetValue<string>(out var text) ? (text, null)
        : (null, Invalid($"Invalid type for '{name}': expected a string.", name));

    /// <summary>
    /// <c>PATCH /admin/keys/{name}</c>: <c>team</c> (a name, or null to leave the team), <c>budget_usd</c> (null clears)
    /// with <c>budget_period</c>, <c>rpm_limit</c>, <c>tpm_limit</c>, for every unrevoked version of the key.
    /// </summary>
    private static async Task<IResult> UpdateKey(string name, HttpContext ctx, [AsParameters] AdminServices s)
    {
        var (body, error) = await ReadObjectAsync(ctx, required: true);
        if (error is not null)
        {
            return error;
        }
        var (team, teamError) = Str(body!, "team");
        var (budget, budgetGiven, budgetError) = BudgetOf(body!, allowNull: true);
        var (rpm, rpmError) = Int(body!, "rpm_limit", 1, int.MaxValue);
        var (tpm, tpmError) = Int(body!, "tpm_limit", 1, int.MaxValue);
        if ((teamError ?? budgetError ?? rpmError ?? tpmError) is { } invalid)
        {
            return invalid;
        }
        var leave = body!.ContainsKey("team") && body["team"] is null;
        if (team is null && !leave && !budgetGiven && rpm is null && tpm is null)
        {
            return Invalid("Nothing to change: set 'team', 'budget_usd', 'rpm_limit' or 'tpm_limit'.", null);
        }
        try
        {
            var updated = await s.Store.UpdateAsync(name, new ApiKeyStore.KeyChanges(team, leave, budget, budgetGiven && budget is null, rpm, tpm), ctx.RequestAborted);
            var json = await DescribeWithSpendAsync(s, updated[^1].Key, s.Time.GetUtcNow(), ctx.RequestAborted);
            json["all_replicas_notified"] = await ForgetEverywhereAsync(s, updated.Select(u => u.Hash));
            return GatewayApi.Json(json);
        }
        catch (ApiKeyException ex)
        {
            return ex.Message.StartsWith("no unrevoked key", StringComparison.Ordinal)
                ? OpenAiErrors.Result(404, ex.Message, "invalid_request_error", "key_not_found", "name")
                : Invalid(ex.Message, ex.Message.Contains("team", StringComparison.Ordinal) ? "team" : null);
        }
    }

    private static async Task<IResult> ListTeams([AsParameters] AdminServices s, CancellationToken ct)
    {
        var now = s.Time.GetUtcNow();
        var teams = await s.Reads.ReadAsync(db => new TeamStore(db).ListAsync(ct));
        var data = new JsonArray();
        foreach (var t in teams)
        {
            data.Add(await DescribeTeamAsync(s, t, now, ct));
        }
        return GatewayApi.Json(new JsonObject { ["object"] = "list", ["data"] = data });
    }

    private static async Task<JsonObject> DescribeTeamAsync(AdminServices s, TeamInfo t, DateTimeOffset now, CancellationToken ct) => new()
    {
        ["id"] = t.Id.ToString(),
        ["name"] = t.Name,
        ["keys"] = t.Keys,
        ["created_at"] = t.CreatedAt.ToString("o"),
        ["budget"] = t.Budget is { } b ? await BudgetJsonAsync(s, BudgetScope.Team, t.Name, b, now, ct) : null,
    };

    /// <summary><c>POST /admin/teams</c>: <c>name</c>, optional <c>budget_usd</c> and <c>budget_period</c>.</summary>
    private static async Task<IResult> CreateTeam(HttpContext ctx, [AsParameters] AdminServices s)
    {
        var (body, error) = await ReadObjectAsync(ctx, required: true);
        if (error is not null)
        {
            return error;
        }
        var (name, nameError) = Str(body!, "name");
        var (budget, _, budgetError) = BudgetOf(body!, allowNull: false);
        if ((nameError ?? budgetError) is { } invalid)
        {
            return invalid;
        }
        if (name is null)
        {
            return Invalid("Missing required parameter: 'name'.", "name");
        }
        try
        {
            var now = s.Time.GetUtcNow();
            var team = await new TeamStore(s.Services.GetRequiredService<Npgsql.NpgsqlDataSource>()).CreateAsync(name, budget, now, ctx.RequestAborted);
            return GatewayApi.Json(await DescribeTeamAsync(s, team, now, ctx.RequestAborted), 201);
        }
        catch (ApiKeyException ex)
        {
            return ex.Message.Contains("exists already", StringComparison.Ordinal)
                ? OpenAiErrors.Result(409, ex.Message, "invalid_request_error", "team_exists", "name")
                : Invalid(ex.Message, "name");
        }
    }

    /// <summary><c>PATCH /admin/teams/{name}</c>: <c>budget_usd</c> (null clears it) and <c>budget_period</c>.</summary>
    private static async Task<IResult> UpdateTeam(string name, HttpContext ctx, [AsParameters] AdminServices s)
    {
        var (body, error) = await ReadObjectAsync(ctx, required: true);
        if (error is not null)
        {
            return error;
        }
        var (budget, given, budgetError) = BudgetOf(body!, allowNull: true);
        if (budgetError is not null)
        {
            return budgetError;
        }
        if (!given)
        {
            return Invalid("Nothing to change: set 'budget_usd' (null clears it) and optionally 'budget_period'.", "budget_usd");
        }
        try
        {
            var (team, hashes) = await new TeamStore(s.Services.GetRequiredService<Npgsql.NpgsqlDataSource>()).UpdateBudgetAsync(name, budget, ctx.RequestAborted);
            var json = await DescribeTeamAsync(s, team, s.Time.GetUtcNow(), ctx.RequestAborted);
            json["all_replicas_notified"] = await ForgetEverywhereAsync(s, hashes);
            return GatewayApi.Json(json);
        }
        catch (ApiKeyException ex)
        {
            return ex.Message.StartsWith("no team", StringComparison.Ordinal)
                ? OpenAiErrors.Result(404, ex.Message, "invalid_request_error", "team_not_found", "name")
                : Invalid(ex.Message, "name");
        }
    }

    private static async Task<IResult> CreateKey(HttpContext ctx, [AsParameters] AdminServices s)
    {
        var (body, error) = await ReadObjectAsync(ctx, required: true);
        if (error is not null)
        {
            return error;
        }
        if (body!["name"] is not JsonValue nv || !nv.TryGetValue<string>(out var name))
        {
            return Invalid(body.ContainsKey("name") ? "Invalid type for 'name': expected a string." : "Missing required parameter: 'name'.", "name");
        }
        if (body["scope"] is { } sn && (sn is not JsonValue sv || !sv.TryGetValue<string>(out _)))
        {
            return Invalid("Invalid type for 'scope': expected a string ('client' or 'admin').", "scope");
        }
        if (body["allowed_models"] is { } am && (am is not JsonArray models || models.Any(m => m is not JsonValue mv || !mv.TryGetValue<string>(out _))))
        {
            return Invalid("Invalid type for 'allowed_models': expected an array of model names.", "allowed_models");
        }
        var (expiresDays, expiresError) = Int(body, "expires_in_days", 1, 36_500);
        var (rpm, rpmError) = Int(body, "rpm_limit", 1, int.MaxValue);
        var (tpm, tpmError) = Int(body, "tpm_limit", 1, int.MaxValue);
        var (team, teamError) = Str(body, "team");
        var (budget, _, budgetError) = BudgetOf(body, allowNull: false);
        if ((expiresError ?? rpmError ?? tpmError ?? teamError ?? budgetError) is { } invalid)
        {
            return invalid;
        }
        var now = s.Time.GetUtcNow();
        try
        {
            var issued = await s.Store.CreateAsync(name, body["scope"]?.GetValue<string>() ?? "client", rpm, tpm,
                body["allowed_models"] is JsonArray list ? [.. list.Select(m => m!.GetValue<string>())] : null,
                expiresDays is { } d ? now.AddDays(d) : null, now, ctx.RequestAborted, team, budget);
            var json = await DescribeWithSpendAsync(s, issued.Info, now, ctx.RequestAborted);
            json["key"] = issued.Secret;
            return GatewayApi.Json(json, 201);
        }
        catch (ApiKeyException ex)
        {
            return Invalid(ex.Message, null);
        }
    }

    private static async Task<IResult> RotateKey(string name, HttpContext ctx, [AsParameters] AdminServices s)
    {
        var (body, error) = await ReadObjectAsync(ctx, required: false);
        if (error is not null)
        {
            return error;
        }
        double graceHours = 24;
        if (body?["grace_hours"] is { } g && (g is not JsonValue gv || !gv.TryGetValue(out graceHours) || !(graceHours >= 0) || graceHours > 87_600))
        {
            return Invalid("Invalid value for 'grace_hours': expected a number of hours from 0 to 87600.", "grace_hours");
        }
        var now = s.Time.GetUtcNow();
        try
        {
            HelixAgent.Data.ApiKeyStore.ValidateName(name);
        }
        catch (ApiKeyException ex)
        {
            return Invalid(ex.Message, "name");
        }
        try
        {
            var (issued, retiring) = await s.Store.RotateAsync(name, TimeSpan.FromHours(graceHours), now, ctx.RequestAborted);
            var json = Describe(issued.Info, now);
            json["key"] = issued.Secret;
            json["retiring"] = new JsonArray([.. retiring.Select(k => (JsonNode)Describe(k.Key, now))]);
            // Their expiry changed (with grace_hours 0 they stop now): every replica drops them from its key cache, as on revoke.
            json["all_replicas_notified"] = await ForgetEverywhereAsync(s, retiring.Select(r => r.Hash));
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
            var fannedOut = await ForgetEverywhereAsync(s, revoked.Select(r => r.Hash));
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
        var (body, error) = await ReadObjectAsync(ctx, required: true);
        if (error is not null)
        {
            return error;
        }
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
    /// <c>GET /admin/usage?from=2026-11-01&amp;to=2026-11-30&amp;group_by=key|team|model|provider</c> from the worker's daily
    /// rollups (<c>usage_daily</c>): requests, errors, tokens, request-weighted latency percentiles, cost (USD) and
    /// the requests without a price, per group.
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
            "team" => "team",
            _ => null,
        };
        if (column is null)
        {
            return OpenAiErrors.Result(400, "Invalid value for 'group_by': expected key, team, model or provider.", "invalid_request_error", "invalid_request_error", "group_by");
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
                   sum(latency_p95_ms * requests) / nullif(sum(requests), 0),
                   sum(cost_usd), sum(unpriced_requests)
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
                // A key without a team is rolled up under '' and reported as null.
                [groupBy] = r.GetString(0) is { Length: > 0 } group ? group : null,
                ["requests"] = r.GetInt64(1),
                ["errors"] = r.GetInt64(2),
                ["prompt_tokens"] = r.GetInt64(3),
                ["completion_tokens"] = r.GetInt64(4),
                ["latency_p50_ms"] = r.IsDBNull(5) ? null : Math.Round(r.GetDouble(5), 2),
                ["latency_p95_ms"] = r.IsDBNull(6) ? null : Math.Round(r.GetDouble(6), 2),
                // Exact decimal USD of the priced requests; the unpriced ones (a model without a price) are counted apart.
                ["cost_usd"] = r.GetDecimal(7),
                ["unpriced_requests"] = r.GetInt64(8),
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
        ["team"] = k.Team,
        ["budget_usd"] = k.Budget?.Usd,
        ["budget_period"] = k.Budget?.Period,
    };

    /// <summary>Drops keys from this replica's key cache and tells every other replica to (false when Redis is unreachable).</summary>
    private static Task<bool> ForgetEverywhereAsync(AdminServices s, IEnumerable<byte[]> hashes)
    {
        var list = hashes.ToList();
        foreach (var hash in list)
        {
            s.Authenticator.Evict(Convert.ToHexString(hash));
        }
        return KeyAuthenticator.PublishChangeAsync(s.Services.GetService<IConnectionMultiplexer>(), list);
    }

    private static IResult Invalid(string message, string? param) =>
        OpenAiErrors.Result(400, message, "invalid_request_error", "invalid_request_error", param);

    /// <summary>An optional whole-number field within [min, max]: its value, or the 400 naming it.</summary>
    private static (int? Value, IResult? Error) Int(JsonObject body, string name, int min, int max) =>
        body[name] is not JsonNode n ? (null, null)
        : n is JsonValue v && v.TryGetValue<int>(out var i) && i >= min && i <= max ? (i, null)
        : (null, Invalid($"Invalid value for '{name}': expected a whole number from {min} to {max}.", name));

    /// <summary>
    /// The body as an object (strictly, as the client routes read theirs), or the 400/413 to answer. An empty body is no
    /// body: an error when <paramref name="required"/>, else null with no error.
    /// </summary>
    private static async Task<(JsonObject? Body, IResult? Error)> ReadObjectAsync(HttpContext ctx, bool required)
    {
        if (ctx.Request.ContentLength is 0 || (ctx.Request.ContentLength is null && !ctx.Request.HasJsonContentType()))
        {
            return required ? (null, OpenAiErrors.Result(400, "The request needs a JSON object body.", "invalid_request_error", "invalid_json")) : (null, null);
        }
        var (body, error) = await JsonBody.ReadObjectAsync(ctx, 1024 * 1024);
        return error is not null ? (null, OpenAiErrors.Result(error.Status, error.Message, "invalid_request_error", error.Code))
            : body is null ? (null, OpenAiErrors.Result(400, "The request body could not be read.", "invalid_request_error", "invalid_body"))
            : (body, null);
    }
}
