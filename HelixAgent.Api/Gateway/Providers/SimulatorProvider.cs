using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>
/// The built-in simulated provider: answers deterministically after <see cref="ProviderOptions.LatencyMs"/>, streams at
/// <see cref="ProviderOptions.TokensPerSecond"/>, and fails on purpose when the upstream model name asks for it:
/// <c>error</c> → 500, <c>ratelimit</c> → 429 with Retry-After 1 s, <c>stall</c> → no first byte until cancelled,
/// <c>cut</c> → the stream breaks off half way, <c>badrequest</c> → 400. One word is one token.
/// It is what the README demo, the benchmarks and the fault tests use; it is labelled simulated wherever it is listed.
/// </summary>
public sealed class SimulatorProvider(string name, ProviderOptions options, TimeProvider time) : IChatProvider
{
    public string Name { get; } = name;
    public string Type => "simulator";
    public bool IsSimulated => true;
    public bool SupportsEmbeddings => true;

    public async Task<ChatResult> CompleteAsync(ChatCall call, CancellationToken cancellationToken)
    {
        await BeforeFirstByteAsync(call.UpstreamModel, cancellationToken);
        if (call.UpstreamModel.Contains("cut", StringComparison.Ordinal))
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: connection reset (simulated)");
        }
        var (reply, usage) = Reply(call.Request);
        var n = Choices(call.Request);
        var choices = new JsonArray();
        for (var c = 0; c < n; c++)
        {
            var message = new JsonObject { ["role"] = "assistant", ["content"] = reply.Tool is null ? string.Concat(reply.Pieces) : null };
            if (reply.Tool is not null)
            {
                message["tool_calls"] = new JsonArray(reply.Tool.Json());
            }
            choices.Add(new JsonObject
            {
                ["index"] = c,
                ["message"] = message,
                ["logprobs"] = null,
                ["finish_reason"] = reply.Finish,
            });
        }
        usage = usage with { CompletionTokens = usage.CompletionTokens * n };
        var response = new JsonObject
        {
            ["id"] = "chatcmpl-" + call.RequestId,
            ["object"] = "chat.completion",
            ["created"] = time.GetUtcNow().ToUnixTimeSeconds(),
            ["model"] = call.UpstreamModel,
            ["choices"] = choices,
            ["usage"] = UsageJson(usage),
            ["system_fingerprint"] = "helixagent-simulator",
        };
        return new ChatResult(response, usage);
    }

    public async IAsyncEnumerable<ChatChunk> StreamAsync(ChatCall call, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await BeforeFirstByteAsync(call.UpstreamModel, cancellationToken);
        var id = "chatcmpl-" + call.RequestId;
        var created = time.GetUtcNow().ToUnixTimeSeconds();
        var ((pieces, tool, finish), usage) = Reply(call.Request);
        var cut = call.UpstreamModel.Contains("cut", StringComparison.Ordinal);
        var n = Choices(call.Request);
        usage = usage with { CompletionTokens = usage.CompletionTokens * n };
        for (var c = 0; c < n; c++)
        {
            var first = new JsonObject { ["role"] = "assistant", ["content"] = tool is null ? "" : null };
            if (tool is not null)
            {
                var opening = (tool with { Arguments = "" }).Json();
                opening.Insert(0, "index", 0);
                first["tool_calls"] = new JsonArray(opening);
            }
            yield return new ChatChunk(Chunk(id, created, call.UpstreamModel, first, null, c), false);
        }
        var pause = options.TokensPerSecond > 0 ? TimeSpan.FromSeconds(1 / options.TokensPerSecond) : TimeSpan.Zero;
        for (var i = 0; i < pieces.Count; i++)
        {
            if (cut && i == Math.Max(1, pieces.Count / 2))
            {
                throw new UpstreamException(UpstreamFailure.Protocol, $"{Name}: stream broke off (simulated)");
            }
            if (i > 0 && pause > TimeSpan.Zero)
            {
                await Task.Delay(pause, time, cancellationToken);
            }
            for (var c = 0; c < n; c++)
            {
                var delta = tool is null
                    ? new JsonObject { ["content"] = pieces[i] }
                    : new JsonObject { ["tool_calls"] = new JsonArray(new JsonObject { ["index"] = 0, ["function"] = new JsonObject { ["arguments"] = pieces[i] } }) };
                yield return new ChatChunk(Chunk(id, created, call.UpstreamModel, delta, null, c), tool is null);
            }
        }
        for (var c = 0; c < n; c++)
        {
            yield return new ChatChunk(Chunk(id, created, call.UpstreamModel, [], finish, c), false);
        }
        var usageChunk = new JsonObject
        {
            ["id"] = id,
            ["object"] = "chat.completion.chunk",
            ["created"] = created,
            ["model"] = call.UpstreamModel,
            ["choices"] = new JsonArray(),
            ["usage"] = UsageJson(usage),
        };
        yield return new ChatChunk(usageChunk, false, usage);
    }

    public async Task<EmbeddingResult> EmbedAsync(EmbeddingCall call, CancellationToken cancellationToken)
    {
        await BeforeFirstByteAsync(call.UpstreamModel, cancellationToken);
        var inputs = call.Request["input"] switch
        {
            JsonArray a => a.Select(n => n?.ToString() ?? "").ToList(),
            JsonNode n => [n.ToString()],
            _ => [],
        };
        var dimensions = call.Request["dimensions"] is JsonValue d && d.TryGetValue<int>(out var dim) && dim > 0 ? dim : 16;
        // base64: the vector's little-endian float32s, as OpenAI sends them (the openai npm client asks for it by default).
        var base64 = call.Request["encoding_format"] is JsonValue ef && ef.TryGetValue<string>(out var format) && format == "base64";
        var data = new JsonArray();
        var tokens = 0;
        for (var i = 0; i < inputs.Count; i++)
        {
            tokens += Words(inputs[i]).Count;
            var vector = new JsonArray();
            var seed = (uint)StableHash(inputs[i]);
            for (var k = 0; k < dimensions; k++)
            {
                seed = (seed * 1664525) + 1013904223; // LCG: same text, same vector
                vector.Add(Math.Round(((seed >> 8) / (double)(1 << 24)) - 0.5, 6));
            }
            data.Add(new JsonObject { ["object"] = "embedding", ["index"] = i, ["embedding"] = base64 ? Base64(vector) : vector });
        }
        var usage = new TokenUsage(tokens, 0);
        var response = new JsonObject
        {
            ["object"] = "list",
            ["data"] = data,
            ["model"] = call.UpstreamModel,
            ["usage"] = new JsonObject { ["prompt_tokens"] = tokens, ["total_tokens"] = tokens },
        };
        return new EmbeddingResult(response, usage);
    }

    public Task ProbeAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private async Task BeforeFirstByteAsync(string model, CancellationToken cancellationToken)
    {
        if (model.Contains("stall", StringComparison.Ordinal))
        {
            await Task.Delay(Timeout.InfiniteTimeSpan, time, cancellationToken);
        }
        if (options.LatencyMs > 0)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(options.LatencyMs), time, cancellationToken);
        }
        if (model.Contains("ratelimit", StringComparison.Ordinal))
        {
            throw new UpstreamException(UpstreamFailure.RateLimited, $"{Name} answered 429: rate limit reached (simulated)", 429, TimeSpan.FromSeconds(1));
        }
        if (model.Contains("error", StringComparison.Ordinal))
        {
            throw new UpstreamException(UpstreamFailure.ServerError, $"{Name} answered 500: internal error (simulated)", 500);
        }
        if (model.Contains("badrequest", StringComparison.Ordinal))
        {
            throw new UpstreamException(UpstreamFailure.BadRequest, $"{Name} answered 400: invalid request (simulated)", 400);
        }
    }

    /// <summary>
    /// What the simulator answers, as pieces that join to the whole (the stream sends one per chunk): a tool call's
    /// arguments, JSON-mode content, or the words of the text answer; with the finish reason and usage.
    /// </summary>
    private static ((List<string> Pieces, SimulatedToolCall? Tool, string Finish) Reply, TokenUsage Usage) Reply(JsonObject request)
    {
        var (words, usage) = Answer(request);
        var tool = SimulatedTools.Call(request, LastUserText(request));
        var json = tool is null ? SimulatedTools.JsonContent(request, string.Join(' ', words)) : null;
        if ((tool?.Arguments ?? json) is { } whole)
        {
            return ((SimulatedTools.Pieces(whole), tool, tool is null ? "stop" : "tool_calls"), usage with { CompletionTokens = TokenEstimate.OfChars(whole.Length) });
        }
        var finish = words.Count < FullAnswerLength(request) ? "length" : "stop";
        return (([.. words.Select((w, i) => i == 0 ? w : " " + w)], null, finish), usage);
    }

    /// <summary>"Simulated answer to: " plus the last user message, cut to max_tokens words.</summary>
    private static (List<string> Words, TokenUsage Usage) Answer(JsonObject request)
    {
        var prompt = 0;
        var lastUser = "";
        if (request["messages"] is JsonArray messages)
        {
            foreach (var m in messages)
            {
                var text = ContentText(m?["content"]);
                prompt += Words(text).Count;
                if (m?["role"]?.GetValue<string>() == "user")
                {
                    lastUser = text;
                }
            }
        }
        var words = new List<string> { "Simulated", "answer", "to:" };
        words.AddRange(Words(lastUser).Take(48));
        var limit = MaxTokens(request);
        if (limit is { } max && words.Count > max)
        {
            words.RemoveRange(max, words.Count - max);
        }
        return (words, new TokenUsage(prompt, words.Count));
    }

    private static int FullAnswerLength(JsonObject request) => 3 + Math.Min(48, Words(LastUserText(request)).Count);

    private static string LastUserText(JsonObject request) =>
        ContentText((request["messages"] as JsonArray)?.LastOrDefault(m => m?["role"]?.GetValue<string>() == "user")?["content"]);

    private static int? MaxTokens(JsonObject request)
    {
        foreach (var key in new[] { "max_completion_tokens", "max_tokens" })
        {
            if (request[key] is JsonValue v && v.TryGetValue<int>(out var n) && n > 0)
            {
                return n;
            }
        }
        return null;
    }

    private static string ContentText(JsonNode? content) => content switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        JsonArray parts => string.Join(' ', parts.Select(p => p?["text"]?.ToString()).OfType<string>()),
        _ => "",
    };

    private static List<string> Words(string text) =>
        [.. text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)];

    private static int StableHash(string text)
    {
        var hash = 2166136261u;
        foreach (var b in Encoding.UTF8.GetBytes(text))
        {
            hash = (hash ^ b) * 16777619;
        }
        return (int)hash;
    }

    /// <summary>The request's <c>n</c>: how many choices to answer (1 when unset).</summary>
    private static int Choices(JsonObject request) =>
        request["n"] is JsonValue v && v.TryGetValue<int>(out var n) && n > 1 ? Math.Min(n, 128) : 1;

    private static JsonValue Base64(JsonArray vector)
    {
        var bytes = new byte[vector.Count * sizeof(float)];
        for (var k = 0; k < vector.Count; k++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(k * sizeof(float)), (float)vector[k]!.GetValue<double>());
        }
        return JsonValue.Create(Convert.ToBase64String(bytes));
    }

    private static JsonObject Chunk(string id, long created, string model, JsonObject delta, string? finish, int index = 0) => new()
    {
        ["id"] = id,
        ["object"] = "chat.completion.chunk",
        ["created"] = created,
        ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject
        {
            ["index"] = index,
            ["delta"] = delta,
            ["logprobs"] = null,
            ["finish_reason"] = finish,
        }),
    };

    private static JsonObject UsageJson(TokenUsage usage) => new()
    {
        ["prompt_tokens"] = usage.PromptTokens,
        ["completion_tokens"] = usage.CompletionTokens,
        ["total_tokens"] = usage.TotalTokens,
    };
}
