using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using HelixAgent.Data;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;

namespace HelixAgent.Api.Gateway;

/// <summary>Settings of stored Responses (<c>Responses:</c>; the worker reads <c>RetentionDays</c> from the same section).</summary>
public sealed class ResponsesOptions
{
    /// <summary>How long a lookup waits for a response made a moment ago on another replica, whose write is still on its way.</summary>
    public int RecentWaitMs { get; set; } = 3000;
}

/// <summary>
/// One stored response: who made it, what it was asked (its own input items) and what it answered, as the client got
/// it (UTF-8 JSON, kept as it was sent: nothing is parsed or copied on the request path).
/// </summary>
internal sealed record StoredResponse(string Id, Guid? KeyId, Guid? KeyRotatedFrom, DateTimeOffset CreatedAt, string Model, string? PreviousResponseId,
    JsonArray Input, ReadOnlyMemory<byte> Response)
{
    /// <summary>The response's output items: the conversation's next turn.</summary>
    public JsonArray Output() => JsonNode.Parse(Response.Span)?["output"] as JsonArray ?? [];
}

/// <summary>
/// Stored OpenAI Responses in PostgreSQL (<c>responses</c>, migration 0005), written off the request path: a response is
/// queued when it is answered, held in memory until its row is written (so this replica finds it at once), and written
/// in batches. A lookup on another replica that misses a response made in the last <see cref="ResponsesOptions.RecentWaitMs"/>
/// (the id carries its time: a version 7 UUID) waits for its write, so a conversation may hop between replicas under load.
/// A response belongs to the key that made it and the keys rotated from that key; any other key gets "not found".
/// </summary>
internal sealed partial class StoredResponses(NpgsqlDataSource db, IOptions<ResponsesOptions> options, TimeProvider time, ILogger<StoredResponses> logger)
    : IHostedService
{
    private const int MaxChain = 1000;
    private readonly Channel<StoredResponse> _queue = Channel.CreateUnbounded<StoredResponse>(new UnboundedChannelOptions { SingleReader = true });
    private readonly ConcurrentDictionary<string, StoredResponse> _pending = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _abort = new();
    private Task? _writer;

    public void Save(StoredResponse response)
    {
        _pending[response.Id] = response;
        if (!_queue.Writer.TryWrite(response))
        {
            _pending.TryRemove(response.Id, out _);
            LogNotStored(logger, response.Id);
        }
    }

    /// <summary>The response <paramref name="id"/> if <paramref name="key"/> may see it; null when it does not exist for that key.</summary>
    public async Task<StoredResponse?> FindAsync(string id, ApiKeyInfo? key, CancellationToken ct)
    {
        if (_pending.TryGetValue(id, out var local))
        {
            return Owns(key, local) ? local : null;
        }
        var deadline = time.GetUtcNow() + TimeSpan.FromMilliseconds(Math.Max(0, options.Value.RecentWaitMs));
        while (true)
        {
            var found = await ReadAsync(id, key, ct);
            if (found is not null || !MadeRecently(id, out var made) || time.GetUtcNow() >= deadline || time.GetUtcNow() - made > TimeSpan.FromMilliseconds(options.Value.RecentWaitMs))
            {
                return found;
            }
            await Task.Delay(TimeSpan.FromMilliseconds(50), time, ct);
        }
    }

    /// <summary>The conversation that ends with <paramref name="id"/>, oldest first; null when <paramref name="id"/> is not the key's.</summary>
    public async Task<List<StoredResponse>?> ChainAsync(string id, ApiKeyInfo? key, CancellationToken ct)
    {
        var chain = new List<StoredResponse>();
        string? next = id;
        while (next is not null && chain.Count < MaxChain)
        {
            var response = await FindAsync(next, key, ct);
            if (response is null)
            {
                return chain.Count == 0 ? null : chain.AsEnumerable().Reverse().ToList(); // an expired ancestor ends the chain
            }
            chain.Add(response);
            next = response.PreviousResponseId;
        }
        chain.Reverse();
        return chain;
    }

    public async Task<bool> DeleteAsync(string id, ApiKeyInfo? key, CancellationToken ct)
    {
        var found = await FindAsync(id, key, ct);
        if (found is null)
        {
            return false;
        }
        _pending.TryRemove(id, out _);
        await using var cmd = db.CreateCommand("DELETE FROM responses WHERE id = $1");
        cmd.Parameters.AddWithValue(id);
        await cmd.ExecuteNonQueryAsync(ct);
        return true;
    }

    private static bool Owns(ApiKeyInfo? key, StoredResponse response) =>
        response.KeyId == key?.Id || (key?.RotatedFrom is { } from && response.KeyId == from);

    /// <summary>Whether the id is one of ours (<c>resp_</c> and a version 7 UUID) and when it was made.</summary>
    private static bool MadeRecently(string id, out DateTimeOffset made)
    {
        made = default;
        if (!id.StartsWith("resp_", StringComparison.Ordinal) || id.Length != 37 || !Guid.TryParseExact(id[5..], "N", out var guid) || guid.Version != 7)
        {
            return false;
        }
        var hex = id.AsSpan(5, 12);
        made = DateTimeOffset.FromUnixTimeMilliseconds(long.Parse(hex, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture));
        return true;
    }

    private async Task<StoredResponse?> ReadAsync(string id, ApiKeyInfo? key, CancellationToken ct)
    {
        // The key's own id and every key it was rotated from: a rotation keeps the conversations.
        await using var cmd = db.CreateCommand("""
            WITH RECURSIVE lineage(id, rotated_from) AS (
                SELECT id, rotated_from FROM api_keys WHERE id = $2
                UNION ALL
                SELECT k.id, k.rotated_from FROM api_keys k JOIN lineage l ON k.id = l.rotated_from)
            SELECT key_id, created_at, model, previous_response_id, input::text, response::text
            FROM responses
            WHERE id = $1 AND (key_id IN (SELECT id FROM lineage) OR (key_id IS NULL AND $2::uuid IS NULL))
            """);
        cmd.Parameters.AddWithValue(id);
        cmd.Parameters.Add(new NpgsqlParameter { Value = key?.Id is { } k ? k : DBNull.Value, NpgsqlDbType = NpgsqlDbType.Uuid });
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        if (!await reader.ReadAsync(ct))
        {
            return null;
        }
        return new StoredResponse(id, reader.IsDBNull(0) ? null : reader.GetGuid(0), null, reader.GetFieldValue<DateTimeOffset>(1), reader.GetString(2),
            reader.IsDBNull(3) ? null : reader.GetString(3),
            JsonNode.Parse(reader.GetString(4))!.AsArray(), System.Text.Encoding.UTF8.GetBytes(reader.GetString(5)));
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _writer = Task.Run(() => WriteLoopAsync(_abort.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _queue.Writer.TryComplete();
        if (_writer is null)
        {
            return;
        }
        using var registration = cancellationToken.Register(_abort.Cancel);
        try
        {
            await _writer;
        }
        catch (OperationCanceledException)
        {
            LogLeftUnwritten(logger, _pending.Count);
        }
    }

    private async Task WriteLoopAsync(CancellationToken ct)
    {
        var batch = new List<StoredResponse>(100);
        while (await _queue.Reader.WaitToReadAsync(ct))
        {
            while (batch.Count < 100 && _queue.Reader.TryRead(out var next))
            {
                batch.Add(next);
            }
            // Retried until PostgreSQL takes the batch (an outage keeps the responses in memory, still found here).
            for (var attempt = 0; ; attempt++)
            {
                try
                {
                    await WriteAsync(batch, ct);
                    break;
                }
                catch (Exception ex) when (ex is NpgsqlException or TimeoutException && !ct.IsCancellationRequested)
                {
                    if (attempt == 0)
                    {
                        LogWriteFailed(logger, batch.Count, ex.Message);
                    }
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(5000, 100 * (1 << Math.Min(attempt, 6)))), time, ct);
                }
            }
            foreach (var written in batch)
            {
                _pending.TryRemove(written.Id, out _);
            }
            batch.Clear();
        }
    }

    private async Task WriteAsync(List<StoredResponse> batch, CancellationToken ct)
    {
        await using var conn = await db.OpenConnectionAsync(ct);
        await using var b = new NpgsqlBatch(conn);
        foreach (var r in batch)
        {
            var cmd = new NpgsqlBatchCommand("""
                INSERT INTO responses (id, key_id, created_at, model, previous_response_id, input, response)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb) ON CONFLICT (id) DO NOTHING
                """);
            cmd.Parameters.AddWithValue(r.Id);
            cmd.Parameters.Add(new NpgsqlParameter { Value = r.KeyId is { } k ? k : DBNull.Value, NpgsqlDbType = NpgsqlDbType.Uuid });
            cmd.Parameters.AddWithValue(r.CreatedAt);
            cmd.Parameters.AddWithValue(r.Model);
            cmd.Parameters.Add(new NpgsqlParameter { Value = (object?)r.PreviousResponseId ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text });
            cmd.Parameters.AddWithValue(JsonText.Sanitize(r.Input.ToJsonString()));
            cmd.Parameters.AddWithValue(JsonText.Sanitize(System.Text.Encoding.UTF8.GetString(r.Response.Span)));
            b.BatchCommands.Add(cmd);
        }
        await b.ExecuteNonQueryAsync(ct);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "stored response {Id} not queued: the store is shutting down")]
    private static partial void LogNotStored(ILogger logger, string id);

    [LoggerMessage(Level = LogLevel.Warning, Message = "stored responses: writing {Count} failed, retrying: {Reason}")]
    private static partial void LogWriteFailed(ILogger logger, int count, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "stored responses: {Count} left unwritten at the shutdown timeout")]
    private static partial void LogLeftUnwritten(ILogger logger, int count);
}

/// <summary>JSON text as PostgreSQL's <c>jsonb</c> takes it: a NUL (<c>\u0000</c>), which jsonb refuses, becomes U+FFFD.</summary>
internal static class JsonText
{
    public static string Sanitize(string json) => json.Contains("\\u0000", StringComparison.Ordinal) ? json.Replace("\\u0000", "\\uFFFD", StringComparison.Ordinal) : json;
}
