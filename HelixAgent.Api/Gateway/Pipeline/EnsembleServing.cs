using System.Globalization;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway.Dialects;
using HelixAgent.Api.Gateway.Providers;

namespace HelixAgent.Api.Gateway;

/// <summary>
/// Ensemble answers: every member of the route is asked at once (each with the router's own failover, breaker and
/// metrics), the answers that come back within the ensemble's timeout are scored (<see cref="EnsembleScoring"/>), and
/// the chosen one is served with an <c>ensemble</c> block listing every member's score or error. Usage (in the answer,
/// the ledger and the rate limit) is the sum over every member that answered: that is what the ensemble spent.
/// A stream is answered once the choice is made, as ordinary <c>chat.completion.chunk</c> events.
/// </summary>
internal static partial class GatewayApi
{
    /// <summary>
    /// What one member said, or why it said nothing: an error, or <paramref name="Skipped"/> (cancelled because a majority
    /// had already answered the same, so its answer could not change the outcome).
    /// </summary>
    private sealed record MemberAnswer(RouteTarget Target, ChatResult? Result, GatewayError? Error, double LatencyMs, int Attempts, bool TimedOut,
        bool Skipped = false);

    private static async Task EnsembleChatAsync(HttpContext ctx, GatewayServices s, Admitted admitted, RequestTrace trace)
    {
        var (route, plan, cache) = (admitted.Route, admitted.Ensemble!, admitted.Cache);
        if (await ServeFromCacheAsync(ctx, s, trace, cache, route))
        {
            return;
        }
        trace.Ensemble = true;
        var answers = await AskMembersAsync(s, route, admitted.Requests, trace, plan, ctx.RequestAborted);
        foreach (var a in answers)
        {
            s.Metrics.EnsembleMember(trace.Model, a.Target.Provider.Name, a.Result is not null ? "ok" : a.Skipped ? "skipped" : a.TimedOut ? "timeout" : "error");
        }
        var ok = answers.Where(a => a.Result is not null).ToList();
        trace.Attempts = answers.Sum(a => a.Attempts);
        trace.Usage = new TokenUsage(ok.Sum(a => a.Result!.Usage.PromptTokens), ok.Sum(a => a.Result!.Usage.CompletionTokens),
            ok.Sum(a => a.Result!.Usage.CachedTokens), ok.Sum(a => a.Result!.Usage.CacheWriteTokens));
        // The sum of what each member that answered cost, at its own price (unknown if one that spent tokens has none).
        trace.Priced = true;
        trace.CostUsd = ok.Aggregate((decimal?)0m, (sum, a) => sum is null ? null
            : s.Prices.For(a.Target) is { } price ? sum + price.Cost(a.Result!.Usage)
            : a.Result!.Usage.TotalTokens == 0 ? sum : null);
        if (ok.Count < plan.MinProviders)
        {
            await FailAsync(ctx, admitted.Dialect, trace, EnsembleFailure(answers, ok.Count, plan));
            return;
        }

        var responses = ok.Select(a => a.Result!.Response).ToList();
        var candidates = ok.Select((a, i) => new EnsembleCandidate(
            EnsembleScoring.TextOf(responses[i]), EnsembleScoring.FinishReasonOf(responses[i]),
            a.Target.Provider.Options.Weight, plan.IsPreferred(a.Target), a.LatencyMs)).ToList();
        var chosen = EnsembleScoring.Choose(plan.Strategy, candidates, out var scores, out var votes);
        var winner = ok[chosen];
        trace.Provider = winner.Target.Provider.Name;
        s.Metrics.EnsembleSelected(trace.Model, trace.Provider);
        trace.TtftMs = s.Time.GetElapsedTime(trace.StartTimestamp).TotalMilliseconds;

        var block = new JsonObject
        {
            ["strategy"] = plan.Strategy,
            ["min_providers"] = plan.MinProviders,
            ["selected"] = MemberName(winner.Target),
            ["responses"] = new JsonArray([.. answers.Select(a => (JsonNode)MemberJson(a, ok.IndexOf(a), scores, votes, a == winner))]),
        };
        var answer = responses[chosen];
        answer["model"] = trace.Model;
        answer["usage"] = OpenAiShapes.UsageObject(trace.Usage);
        SetRouteHeaders(ctx, trace);
        SetCostHeader(ctx, s, trace); // every member has answered: the cost is known, even before a stream starts
        if (trace.Stream)
        {
            await StreamChosenAsync(ctx, admitted, answer, block, trace);
            return;
        }
        var served = admitted.Dialect.RenderObject(answer, admitted.Body, trace);
        served["ensemble"] = block;
        var bytes = JsonBytes.Of(served);
        admitted.OnAnswer?.Invoke(bytes);
        await WriteAndCacheAsync(ctx, s, cache?.Key, bytes, trace.Usage);
    }

    /// <summary>
    /// Asks every member at once; returns when each has answered, failed, or run out of the ensemble's time. With
    /// <c>majority_vote</c>, once more than half of all members gave the same answer (and at least <c>min_providers</c>
    /// answered), no other answer can win: the members still running are cancelled and marked skipped.
    /// </summary>
    private static async Task<MemberAnswer[]> AskMembersAsync(GatewayServices s, ModelRoute route, TargetRequests requests, RequestTrace trace, EnsemblePlan plan,
        CancellationToken clientAborted)
    {
        using var window = CancellationTokenSource.CreateLinkedTokenSource(clientAborted);
        window.CancelAfter(Min(plan.Timeout, s.Router.Remaining(trace)));
        using var decided = new CancellationTokenSource();
        using var running = CancellationTokenSource.CreateLinkedTokenSource(window.Token, decided.Token);
        // Every member is asked in the canonical form (never passed through): the answers are scored against each other.
        var asked = route.Targets.Select(t => AskMemberAsync(s, route, t, requests.For(t, allowPassThrough: false).Canonical!, trace, plan, running.Token, decided.Token)).ToArray();
        if (plan.Strategy == EnsemblePlan.MajorityVote && asked.Length > 2)
        {
            var votes = new Dictionary<string, int>(StringComparer.Ordinal);
            var answered = 0;
            await foreach (var done in Task.WhenEach(asked))
            {
                if ((await done).Result is not { } result)
                {
                    continue;
                }
                answered++;
                var said = EnsembleScoring.Normalize(EnsembleScoring.TextOf(result.Response));
                var count = said.Length == 0 ? 0 : votes[said] = votes.GetValueOrDefault(said) + 1;
                if (count * 2 > asked.Length && answered >= plan.MinProviders)
                {
                    await decided.CancelAsync();
                    break;
                }
            }
        }
        var answers = await Task.WhenAll(asked);
        clientAborted.ThrowIfCancellationRequested();
        return answers;
    }

    private static async Task<MemberAnswer> AskMemberAsync(GatewayServices s, ModelRoute route, RouteTarget target, JsonObject body, RequestTrace trace,
        EnsemblePlan plan, CancellationToken window, CancellationToken decided)
    {
        // Each member gets its own copy: a parsed body fills in its nodes lazily, which is not safe from several threads.
        var request = (JsonObject)body.DeepClone();
        var member = new ModelRoute(route.Id, [target], "ordered", []);
        var memberTrace = new RequestTrace(trace.RequestId, trace.Model, trace.Endpoint, false, trace.StartTimestamp);
        var started = s.Time.GetTimestamp();
        try
        {
            var (success, error) = await s.Router.RunAsync(
                member, memberTrace,
                t => TimeSpan.FromSeconds(t.Provider.Options.TimeoutSeconds),
                (t, cts) => t.Provider.Adapter.CompleteAsync(new ChatCall(request, t.UpstreamModel, trace.RequestId), cts.Token),
                eligible: null,
                window);
            success?.Cancellation.Dispose();
            return new MemberAnswer(target, success?.Value, error, Elapsed(s, started), memberTrace.Attempts, TimedOut: false);
        }
        catch (OperationCanceledException) when (decided.IsCancellationRequested)
        {
            return new MemberAnswer(target, null, null, Elapsed(s, started), memberTrace.Attempts, TimedOut: false, Skipped: true);
        }
        catch (OperationCanceledException)
        {
            var seconds = plan.Timeout.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture);
            return new MemberAnswer(target, null,
                new GatewayError(504, $"no answer within the ensemble's {seconds}s", "timeout_error", "ensemble_timeout"),
                Elapsed(s, started), memberTrace.Attempts, TimedOut: true);
        }
    }

    /// <summary>
    /// Too few answers: a request every member refused as invalid gets that 400; one that ran out of time 504; else 502.
    /// </summary>
    private static GatewayError EnsembleFailure(MemberAnswer[] answers, int answered, EnsemblePlan plan)
    {
        var failed = answers.Where(a => a.Error is not null).ToList();
        var reasons = string.Join("; ", failed.Select(a => $"{MemberName(a.Target)}: {a.Error!.Message}"));
        if (answered == 0 && failed.Count > 0 && failed.All(a => a.Error!.Status is 400 or 413))
        {
            return failed[0].Error!;
        }
        var need = $"The ensemble needs {plan.MinProviders} answer(s) and got {answered}";
        return failed.Any(a => a.TimedOut)
            ? new GatewayError(504, $"{need} in time: {reasons}", "timeout_error", "ensemble_timeout")
            : new GatewayError(502, $"{need}: {reasons}", "upstream_error", "ensemble_insufficient_answers");
    }

    private static JsonObject MemberJson(MemberAnswer a, int okIndex, double[] scores, int[] votes, bool selected)
    {
        var json = new JsonObject
        {
            ["provider"] = a.Target.Provider.Name,
            ["model"] = a.Target.UpstreamModel,
            ["status"] = a.Result is null ? "error" : "ok",
            ["latency_ms"] = Math.Round(a.LatencyMs, 1),
        };
        if (a.Result is { } result)
        {
            json["score"] = scores[okIndex];
            json["votes"] = votes[okIndex];
            json["selected"] = selected;
            json["finish_reason"] = EnsembleScoring.FinishReasonOf(result.Response);
            json["usage"] = OpenAiShapes.UsageObject(result.Usage);
        }
        else if (a.Skipped)
        {
            json["status"] = "skipped";
            json["reason"] = "a majority of the members had already given the same answer";
        }
        else
        {
            json["error"] = new JsonObject { ["code"] = a.Error!.Code, ["message"] = a.Error.Message };
        }
        return json;
    }

    /// <summary>
    /// The chosen answer as a stream in the client's dialect: role, content (or tool calls), the finish (which, or the
    /// first event after it, carries the ensemble block), usage.
    /// </summary>
    private static async Task StreamChosenAsync(HttpContext ctx, Admitted admitted, JsonObject answer, JsonObject block, RequestTrace trace)
    {
        var id = OpenAiShapes.StringOf(answer["id"]) ?? "chatcmpl-" + trace.RequestId;
        var created = answer["created"] is JsonValue cv && cv.TryGetValue<long>(out var c) ? c : OpenAiShapes.UnixNow();
        var message = answer["choices"]?[0]?["message"] as JsonObject;
        var finish = EnsembleScoring.FinishReasonOf(answer) ?? "stop";
        var chunks = new List<ChatChunk> { new(OpenAiShapes.Chunk(id, trace.Model, created, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null), false) };
        if (OpenAiShapes.TextOf(message?["content"]) is { Length: > 0 } text)
        {
            chunks.Add(new(OpenAiShapes.Chunk(id, trace.Model, created, new JsonObject { ["content"] = text }, null), true));
        }
        if (message?["tool_calls"] is JsonArray { Count: > 0 } calls)
        {
            var deltas = new JsonArray();
            for (var i = 0; i < calls.Count; i++)
            {
                deltas.Add(OpenAiShapes.ToolCallDelta(i, OpenAiShapes.StringOf(calls[i]?["id"]) ?? OpenAiShapes.NewToolCallId(),
                    OpenAiShapes.StringOf(calls[i]?["function"]?["name"]) ?? "", OpenAiShapes.StringOf(calls[i]?["function"]?["arguments"]) ?? ""));
            }
            chunks.Add(new(OpenAiShapes.Chunk(id, trace.Model, created, new JsonObject { ["tool_calls"] = deltas }, null), true));
        }
        var finishAt = chunks.Count;
        chunks.Add(new(OpenAiShapes.Chunk(id, trace.Model, created, [], finish), false));
        chunks.Add(new(OpenAiShapes.UsageChunk(id, trace.Model, created, trace.Usage), false, trace.Usage));

        var renderer = admitted.Dialect.NewStream(admitted.Body, trace);
        var frames = new List<SseFrame>();
        var blockPlaced = false;
        using var sse = new SseWriter(ctx.Response);
        for (var i = 0; i < chunks.Count; i++)
        {
            renderer.Add(chunks[i], frames);
            if (i == chunks.Count - 1)
            {
                renderer.End(frames);
                if (admitted.OnAnswer is { } onAnswer && renderer.Answer is { } whole)
                {
                    whole["ensemble"] = block.DeepClone();
                    onAnswer(JsonBytes.Of(whole));
                }
            }
            if (i >= finishAt && !blockPlaced && frames.FirstOrDefault(f => f.Json is JsonObject).Json is JsonObject carrier)
            {
                carrier["ensemble"] = block;
                blockPlaced = true;
            }
            if (i == chunks.Count - 1)
            {
                sse.WriteLast(frames); // leaves after the ledger row is journaled
            }
            else
            {
                await sse.WriteAsync(frames, ctx.RequestAborted);
            }
        }
    }

    private static string MemberName(RouteTarget target) => target.Provider.Name + "/" + target.UpstreamModel;

    private static double Elapsed(GatewayServices s, long started) => s.Time.GetElapsedTime(started).TotalMilliseconds;
}
