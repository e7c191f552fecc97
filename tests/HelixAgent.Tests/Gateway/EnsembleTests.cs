using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Gateway;

/// <summary>
/// <c>helixagent-ensemble</c> and <c>ensemble_config</c> against real HTTP servers speaking OpenAI, Anthropic and Gemini:
/// every member is asked, one answer is chosen and served with the per-provider scores, and what the ensemble spent is
/// what the ledger records.
/// </summary>
public sealed class EnsembleTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private const string Paris = "Paris is the capital of France.";
    private const string Lyon = "Lyon is the capital of France, I believe.";

    /// <summary>A gateway and its fake providers, stopped together.</summary>
    private sealed record Setup(GatewayHarness Gw, FakeUpstream[] Up) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await Gw.DisposeAsync();
            foreach (var u in Up)
            {
                await u.DisposeAsync();
            }
        }
    }

    /// <summary>Providers p0 (OpenAI), p1 (Anthropic), p2 (Gemini), each serving model <c>m</c>, with the given replies.</summary>
    private async Task<Setup> StartAsync(string[] replies, Action<Dictionary<string, string?>>? configure = null)
    {
        FakeProtocol[] protocols = [FakeProtocol.OpenAI, FakeProtocol.Anthropic, FakeProtocol.Gemini];
        var up = new FakeUpstream[replies.Length];
        var s = new Dictionary<string, string?>
        {
            ["Gateway:BackoffMs"] = "1",
            ["Gateway:ProbeIntervalSeconds"] = "0",
            ["Ledger:FlushIntervalMs"] = "10",
        };
        for (var i = 0; i < replies.Length; i++)
        {
            up[i] = await FakeUpstream.StartAsync(protocols[i % protocols.Length]);
            up[i].Reply = replies[i];
            s[$"Providers:p{i}:Type"] = protocols[i % protocols.Length] switch
            {
                FakeProtocol.OpenAI => "openai",
                FakeProtocol.Anthropic => "anthropic",
                _ => "gemini",
            };
            s[$"Providers:p{i}:BaseUrl"] = up[i].BaseUrl.ToString();
            s[$"Providers:p{i}:ApiKey"] = $"upstream-key-{i}";
            s[$"Providers:p{i}:Models:0"] = "m";
            s[$"Providers:p{i}:TimeoutSeconds"] = "5";
        }
        configure?.Invoke(s);
        return new Setup(await GatewayHarness.StartAsync(postgres, redis, s), up);
    }

    private static JsonObject EnsembleChat(JsonObject? config = null, string model = "helixagent-ensemble", bool stream = false)
    {
        var body = GatewayHarness.Chat(model, "what is the capital of France", stream);
        if (config is not null)
        {
            body["ensemble_config"] = config;
        }
        return body;
    }

    private static async Task<JsonObject> JsonOf(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();

    private static string Content(JsonObject answer) => (string)answer["choices"]![0]!["message"]!["content"]!;

    private static JsonObject Member(JsonObject answer, string provider) =>
        answer["ensemble"]!["responses"]!.AsArray().Single(r => (string?)r!["provider"] == provider)!.AsObject();

    [Fact]
    public async Task A_key_allowed_only_an_ordinary_model_is_refused_the_virtual_model_but_may_ensemble_that_models_own_providers()
    {
        await using var setup = await StartAsync([Paris, Paris, Paris]);
        var (gw, up) = setup;
        string narrow, ensembleOnly;
        await using (var ds = Npgsql.NpgsqlDataSource.Create(gw.DatabaseConnectionString))
        {
            var store = new HelixAgent.Data.ApiKeyStore(ds);
            narrow = (await store.CreateAsync("only-m", "client", null, null, ["m"], null, DateTimeOffset.UtcNow)).Secret;
            ensembleOnly = (await store.CreateAsync("only-ensemble", "client", null, null, ["helixagent-ensemble"], null, DateTimeOffset.UtcNow)).Secret;
        }

        using var refused = await gw.WithKey(narrow).PostAsync("/v1/chat/completions", JsonBody(EnsembleChat()));
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Equal("model_not_allowed", (string?)(await JsonOf(refused))["error"]!["code"]);
        Assert.All(up, u => Assert.Empty(u.Requests));

        // ensemble_config on the allowed model asks that model's providers (here all three serve m).
        using var own = await gw.WithKey(narrow).PostAsync("/v1/chat/completions",
            JsonBody(EnsembleChat(new JsonObject { ["min_providers"] = 2 }, model: "m")));
        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        Assert.Equal(3, (await JsonOf(own))["ensemble"]!["responses"]!.AsArray().Count);

        // Allowing the virtual model grants the members the operator configured.
        using var granted = await gw.WithKey(ensembleOnly).PostAsync("/v1/chat/completions", JsonBody(EnsembleChat()));
        Assert.Equal(HttpStatusCode.OK, granted.StatusCode);
        Assert.Equal(Paris, Content(await JsonOf(granted)));
        using var plain = await gw.WithKey(ensembleOnly).PostAsync("/v1/chat/completions", JsonBody(GatewayHarness.Chat("m")));
        Assert.Equal(HttpStatusCode.Forbidden, plain.StatusCode);
    }

    private static StringContent JsonBody(JsonObject body) => new(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json");

    [Fact]
    public async Task The_ensemble_asks_every_provider_and_serves_the_answer_the_others_agree_with_charging_what_all_of_them_spent()
    {
        await using var setup = await StartAsync([Lyon, Paris, Paris]);
        var (gw, up) = setup;
        using var response = await gw.PostJsonAsync("/v1/chat/completions", EnsembleChat());
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var answer = await JsonOf(response);

        Assert.Equal(Paris, Content(answer));
        Assert.Equal("helixagent-ensemble", (string?)answer["model"]);
        var block = answer["ensemble"]!.AsObject();
        Assert.Equal("confidence_weighted", (string?)block["strategy"]);
        Assert.Equal(3, block["responses"]!.AsArray().Count);
        Assert.All(up, u => Assert.Single(u.Requests));
        // The Lyon answer agrees least with the others, so it scores lowest; one of the Paris answers is chosen.
        var scores = new[] { "p0", "p1", "p2" }.Select(p => (double)Member(answer, p)["score"]!).ToArray();
        Assert.True(scores[0] < scores[1] && scores[0] < scores[2], string.Join(", ", scores));
        Assert.Contains((string?)block["selected"], new[] { "p1/m", "p2/m" });
        Assert.Equal(1, Member(answer, "p0")["votes"]!.GetValue<int>());
        Assert.Equal(2, Member(answer, "p1")["votes"]!.GetValue<int>());

        var perMember = new[] { "p0", "p1", "p2" }.Sum(p => (int)Member(answer, p)["usage"]!["completion_tokens"]!);
        Assert.Equal(perMember, (int)answer["usage"]!["completion_tokens"]!);
        Assert.Equal(6 + 6 + 8, perMember); // what each fake said, in words

        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal(("helixagent-ensemble", 200, (short)3, perMember), (row.Model, (int)row.Status, row.Attempts, row.CompletionTokens));
        Assert.Equal(((string)block["selected"]!).Split('/')[0], row.Provider);
    }

    [Fact]
    public async Task Majority_vote_serves_the_answer_most_providers_gave_and_reports_each_ones_share()
    {
        await using var setup = await StartAsync([Lyon, "paris is the  capital of France", Paris]);
        var (gw, up) = setup;
        // All three answers are needed here: otherwise, when p1 and p2 answer first, their majority makes p0 skipped
        // (see the early-stop test) and the shares are of two answers.
        using var response = await gw.PostJsonAsync("/v1/chat/completions",
            EnsembleChat(new JsonObject { ["strategy"] = "majority_vote", ["min_providers"] = 3 }));
        var answer = await JsonOf(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("capital of France", Content(answer));
        Assert.DoesNotContain("Lyon", Content(answer));
        Assert.Equal("majority_vote", (string?)answer["ensemble"]!["strategy"]);
        // Case, spacing and the final full stop aside, p1 and p2 said the same thing.
        Assert.Equal((2, 0.6667), ((int)Member(answer, "p1")["votes"]!, (double)Member(answer, "p1")["score"]!));
        Assert.Equal((1, 0.3333), ((int)Member(answer, "p0")["votes"]!, (double)Member(answer, "p0")["score"]!));
    }

    [Theory]
    [InlineData("p0")]
    [InlineData("p1")]
    public async Task A_tie_goes_to_the_preferred_provider(string preferred)
    {
        await using var setup = await StartAsync(["Paris, of course.", "Lyon, of course."]);
        var (gw, up) = setup;
        using var response = await gw.PostJsonAsync("/v1/chat/completions", EnsembleChat(new JsonObject
        {
            ["strategy"] = "majority_vote",
            ["preferred_providers"] = new JsonArray(preferred),
        }));
        var answer = await JsonOf(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(preferred + "/m", (string?)answer["ensemble"]!["selected"]);
        Assert.Equal(preferred == "p0" ? "Paris, of course." : "Lyon, of course.", Content(answer));
        Assert.Equal(preferred, response.Headers.GetValues("x-helixagent-provider").Single());
    }

    [Fact]
    public async Task A_failing_provider_is_listed_with_its_error_while_the_others_answer()
    {
        await using var setup = await StartAsync([Paris, Paris, Paris]);
        var (gw, up) = setup;
        up[2].Fail(FakeFault.Status500);
        using var response = await gw.PostJsonAsync("/v1/chat/completions", EnsembleChat());
        var answer = await JsonOf(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(Paris, Content(answer));
        var failed = Member(answer, "p2");
        Assert.Equal("error", (string?)failed["status"]);
        Assert.Equal("upstream_unavailable", (string?)failed["error"]!["code"]);
        Assert.Null(failed["score"]);
        Assert.Equal("ok", (string?)Member(answer, "p0")["status"]);
        Assert.True(up[2].RequestCount >= 1);
    }

    [Fact]
    public async Task Metrics_count_each_members_outcome_and_the_chosen_provider_and_no_fallback()
    {
        await using var setup = await StartAsync([Paris, Paris, Paris]);
        var (gw, up) = setup;
        up[2].Fail(FakeFault.Status500);
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", EnsembleChat())).StatusCode);

        var model = ("model", "helixagent-ensemble");
        // The request is counted once its answer has been written: wait for that before reading the rest.
        using var anonymous = gw.Anonymous();
        var metrics = await Eventually.ValueAsync(() => ScrapedMetrics.ScrapeAsync(anonymous), m => m.Sum("helixagent_requests_total", model) > 0,
            "the ensemble request in helixagent_requests_total", describe: _ => "not counted yet");
        Assert.Equal(1, metrics.Sum("helixagent_ensemble_member_answers_total", model, ("provider", "p0"), ("outcome", "ok")));
        Assert.Equal(1, metrics.Sum("helixagent_ensemble_member_answers_total", model, ("provider", "p1"), ("outcome", "ok")));
        Assert.Equal(1, metrics.Sum("helixagent_ensemble_member_answers_total", model, ("provider", "p2"), ("outcome", "error")));
        Assert.Equal(1, metrics.Sum("helixagent_ensemble_selected_total", model));
        Assert.Equal(0, metrics.Sum("helixagent_ensemble_selected_total", model, ("provider", "p2")));
        Assert.Equal(1, metrics.Sum("helixagent_requests_total", model, ("status_class", "2xx")));
        // Asking three providers is what an ensemble is for, not a failover.
        Assert.Equal(0, metrics.Sum("helixagent_fallbacks_total", model));
    }

    [Fact]
    public async Task Fewer_answers_than_min_providers_is_a_502_naming_each_failure_and_still_a_ledger_row()
    {
        await using var setup = await StartAsync([Paris, Paris, Paris]);
        var (gw, up) = setup;
        up[1].Fail(FakeFault.Status500);
        up[2].Fail(FakeFault.Status400);
        using var response = await gw.PostJsonAsync("/v1/chat/completions", EnsembleChat(new JsonObject { ["min_providers"] = 2 }));
        var error = (await JsonOf(response))["error"]!;

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.Equal(("upstream_error", "ensemble_insufficient_answers"), ((string?)error["type"], (string?)error["code"]));
        Assert.Contains("needs 2 answer(s) and got 1", (string)error["message"]!);
        Assert.Contains("p1/m:", (string)error["message"]!);
        Assert.Contains("p2/m:", (string)error["message"]!);
        var row = Assert.Single(await gw.LedgerRowsAsync(1));
        Assert.Equal((502, "ensemble_insufficient_answers"), ((int)row.Status, row.ErrorType));
        Assert.True(row.CompletionTokens > 0, "p0's answer was spent even though it was not served");
    }

    [Fact]
    public async Task A_provider_that_stalls_is_cut_off_at_the_ensemble_timeout_and_the_rest_are_served()
    {
        await using var setup = await StartAsync([Paris, Paris, Paris], s => s["Providers:p1:TimeoutSeconds"] = "60");
        var (gw, up) = setup;
        up[1].Fail(FakeFault.StallBeforeFirstByte);
        using var response = await gw.PostJsonAsync("/v1/chat/completions", EnsembleChat(new JsonObject { ["timeout"] = 1 }));
        var answer = await JsonOf(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ensemble_timeout", (string?)Member(answer, "p1")["error"]!["code"]);
        await up[1].WaitForCancellationAsync(); // the stalled call was given up, not left running

        // Needing the stalled provider's answer too, the request is a 504.
        using var strict = await gw.PostJsonAsync("/v1/chat/completions", EnsembleChat(new JsonObject { ["timeout"] = 1, ["min_providers"] = 3 }));
        var error = (await JsonOf(strict))["error"]!;
        Assert.Equal(HttpStatusCode.GatewayTimeout, strict.StatusCode);
        Assert.Equal(("timeout_error", "ensemble_timeout"), ((string?)error["type"], (string?)error["code"]));
    }

    [Fact]
    public async Task A_majority_vote_answers_once_most_members_agree_and_cancels_the_member_still_running()
    {
        await using var setup = await StartAsync([Paris, Paris, Paris], s => s["Providers:p2:TimeoutSeconds"] = "60");
        var (gw, up) = setup;
        up[2].Fail(FakeFault.StallBeforeFirstByte);
        // The ensemble would wait up to 60 s for p2; two of three agreeing is already a majority.
        using var response = await gw.PostJsonAsync("/v1/chat/completions",
            EnsembleChat(new JsonObject { ["strategy"] = "majority_vote", ["timeout"] = 60 }));
        var answer = await JsonOf(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(Paris, Content(answer));
        Assert.Equal("skipped", (string?)Member(answer, "p2")["status"]);
        Assert.Null(Member(answer, "p2")["error"]);
        Assert.Equal([2, 2], new[] { "p0", "p1" }.Select(p => Member(answer, p)["votes"]!.GetValue<int>()));
        await up[2].WaitForCancellationAsync(); // the stalled call was cancelled, not left running
        var metrics = await gw.Anonymous().GetStringAsync("/metrics");
        Assert.Contains("helixagent_ensemble_member_answers_total{model=\"helixagent-ensemble\",provider=\"p2\",outcome=\"skipped\"} 1", metrics);

        // Asked for all three answers, it waits for the third (here until its timeout).
        using var strict = await gw.PostJsonAsync("/v1/chat/completions",
            EnsembleChat(new JsonObject { ["strategy"] = "majority_vote", ["timeout"] = 1, ["min_providers"] = 3 }));
        Assert.Equal(HttpStatusCode.GatewayTimeout, strict.StatusCode);
        // Without a majority so far (p0 and p1 disagree), nothing is cut short either.
        up[1].Reply = Lyon;
        using var split = await gw.PostJsonAsync("/v1/chat/completions",
            EnsembleChat(new JsonObject { ["strategy"] = "majority_vote", ["timeout"] = 1 }));
        var splitAnswer = await JsonOf(split);
        Assert.Equal(HttpStatusCode.OK, split.StatusCode);
        Assert.Equal("ensemble_timeout", (string?)Member(splitAnswer, "p2")["error"]!["code"]);
    }

    [Fact]
    public async Task A_streamed_ensemble_answer_arrives_as_ordinary_chunks_with_the_block_on_the_finishing_one()
    {
        await using var setup = await StartAsync([Lyon, Paris, Paris]);
        var (gw, up) = setup;
        var body = EnsembleChat(stream: true);
        body["stream_options"] = new JsonObject { ["include_usage"] = true };
        using var response = await gw.PostJsonAsync("/v1/chat/completions", body);
        var frames = await Sse.ReadAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/event-stream", response.Content.Headers.ContentType!.ToString());
        Assert.True(frames.Done);
        Assert.Equal(Paris, frames.Content);
        Assert.Equal("assistant", frames.Events[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        var finishing = frames.Events.Single(e => e.GetProperty("choices").GetArrayLength() > 0 &&
            e.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind == JsonValueKind.String);
        Assert.Equal("stop", finishing.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(3, finishing.GetProperty("ensemble").GetProperty("responses").GetArrayLength());
        var usage = frames.Events[^1];
        Assert.Equal(0, usage.GetProperty("choices").GetArrayLength());
        Assert.Equal(20, usage.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        // The members were asked for whole answers, not streams.
        Assert.All(up, u => Assert.NotEqual(true, (bool?)u.Requests.Single().Json?["stream"]));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task The_openai_sdk_gets_the_tool_call_two_providers_agree_on_plain_or_streamed(bool stream)
    {
        await using var setup = await StartAsync([Paris, Paris, "I would rather not say."]);
        var (gw, up) = setup;
        up[0].NextToolCall = new FakeToolCall("get_weather", """{"city":"Paris"}""");
        up[1].NextToolCall = new FakeToolCall("get_weather", """{"city":"Paris"}""");
        var tool = OpenAI.Chat.ChatTool.CreateFunctionTool("get_weather", "weather",
            BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}}}"""));
        var chat = OpenAiSdkTests.Sdk(gw).GetChatClient("helixagent-ensemble");
        var options = new OpenAI.Chat.ChatCompletionOptions { Tools = { tool } };
        OpenAI.Chat.ChatMessage[] messages = [new OpenAI.Chat.UserChatMessage("weather in Paris?")];

        string? name = null, id = null;
        var arguments = new System.Text.StringBuilder();
        OpenAI.Chat.ChatFinishReason? finish = null;
        if (stream)
        {
            await foreach (var update in chat.CompleteChatStreamingAsync(messages, options))
            {
                foreach (var call in update.ToolCallUpdates)
                {
                    name ??= call.FunctionName;
                    id ??= call.ToolCallId;
                    arguments.Append(call.FunctionArgumentsUpdate?.ToString());
                }
                finish ??= update.FinishReason;
            }
        }
        else
        {
            OpenAI.Chat.ChatCompletion completion = await chat.CompleteChatAsync(messages, options);
            var call = Assert.Single(completion.ToolCalls);
            (name, id, finish) = (call.FunctionName, call.Id, completion.FinishReason);
            arguments.Append(call.FunctionArguments.ToString());
        }

        Assert.Equal("get_weather", name);
        Assert.False(string.IsNullOrEmpty(id));
        Assert.Equal("Paris", JsonDocument.Parse(arguments.ToString()).RootElement.GetProperty("city").GetString());
        Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, finish);
        // Every member was offered the tool, in its own protocol's shape.
        Assert.All(up, u => Assert.Contains("get_weather", u.Requests.Single().Body));
    }

    [Fact]
    public async Task Ensemble_config_on_an_ordinary_model_asks_each_of_its_providers_instead_of_only_the_first()
    {
        await using var setup = await StartAsync([Paris, Paris]);
        var (gw, up) = setup;
        Assert.Equal(HttpStatusCode.OK, (await gw.PostJsonAsync("/v1/chat/completions", GatewayHarness.Chat("m"))).StatusCode);
        Assert.Equal((1, 0), (up[0].RequestCount, up[1].RequestCount)); // an ordered route: p0 answers alone

        using var response = await gw.PostJsonAsync("/v1/chat/completions", EnsembleChat(new JsonObject(), model: "m"));
        var answer = await JsonOf(response);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal((2, 1), (up[0].RequestCount, up[1].RequestCount));
        Assert.Equal(2, answer["ensemble"]!["responses"]!.AsArray().Count);
        // ensemble_config is the gateway's own field: no provider ever sees it.
        Assert.All(up.SelectMany(u => u.Requests), r => Assert.DoesNotContain("ensemble_config", r.Body));
    }

    [Fact]
    public async Task A_repeated_deterministic_ensemble_request_is_answered_from_the_cache_without_asking_any_provider()
    {
        await using var setup = await StartAsync([Paris, Paris]);
        var (gw, up) = setup;
        JsonObject Deterministic(string strategy)
        {
            var body = EnsembleChat(new JsonObject { ["strategy"] = strategy });
            body["temperature"] = 0;
            return body;
        }

        using var first = await gw.PostJsonAsync("/v1/chat/completions", Deterministic("majority_vote"));
        var firstBody = await first.Content.ReadAsStringAsync();
        await CachedAnswers.WaitForAsync(redis.ConnectionString, 1); // the cache write is not awaited by the request
        using var second = await gw.PostJsonAsync("/v1/chat/completions", Deterministic("majority_vote"));

        Assert.Equal(("miss", "hit"), (first.Headers.GetValues("x-helixagent-cache").Single(), second.Headers.GetValues("x-helixagent-cache").Single()));
        Assert.Equal(firstBody, await second.Content.ReadAsStringAsync());
        Assert.All(up, u => Assert.Equal(1, u.RequestCount));
        // Another ensemble_config is another question: it is not served the first one's answer.
        using var other = await gw.PostJsonAsync("/v1/chat/completions", Deterministic("confidence_weighted"));
        Assert.Equal("miss", other.Headers.GetValues("x-helixagent-cache").Single());
        Assert.All(up, u => Assert.Equal(2, u.RequestCount));
    }

    [Fact]
    public async Task Legacy_completions_through_the_ensemble_get_text_completion_objects_with_the_block()
    {
        await using var setup = await StartAsync([Paris, Paris]);
        var (gw, up) = setup;
        using var response = await gw.PostJsonAsync("/v1/completions", new JsonObject { ["model"] = "helixagent-ensemble", ["prompt"] = "capital of France?" });
        var answer = await JsonOf(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text_completion", (string?)answer["object"]);
        Assert.Equal(Paris, (string?)answer["choices"]![0]!["text"]);
        Assert.Equal(2, answer["ensemble"]!["responses"]!.AsArray().Count);
    }

    [Fact]
    public async Task An_ensemble_reserves_tokens_for_every_provider_it_asks_so_a_key_cannot_spend_three_times_its_limit()
    {
        await using var setup = await StartAsync([Paris, Paris, Paris]);
        var (gw, up) = setup;
        string key;
        await using (var ds = Npgsql.NpgsqlDataSource.Create(gw.DatabaseConnectionString))
        {
            key = (await new HelixAgent.Data.ApiKeyStore(ds).CreateAsync("tpm-300", "client", null, 300, null, null, DateTimeOffset.UtcNow)).Secret;
        }
        var client = gw.WithKey(key);
        JsonObject Body(string model, JsonObject? config)
        {
            var body = EnsembleChat(config, model);
            body["max_tokens"] = 150; // one call fits in 300 tokens a minute, three do not
            return body;
        }

        using var single = await client.PostAsync("/v1/chat/completions", new StringContent(Body("m", null).ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, single.StatusCode);
        using var ensemble = await client.PostAsync("/v1/chat/completions", new StringContent(Body("helixagent-ensemble", null).ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        var error = (await JsonOf(ensemble))["error"]!;
        Assert.Equal(HttpStatusCode.BadRequest, ensemble.StatusCode);
        Assert.Equal("tokens_exceed_limit", (string?)error["code"]);
        Assert.Equal(1, up.Sum(u => u.RequestCount));
    }

    [Theory]
    [InlineData("""{"strategy":"best_of"}""", "ensemble_config.strategy")]
    [InlineData("""{"min_providers":4}""", "ensemble_config.min_providers")]
    [InlineData("""{"min_providers":0}""", "ensemble_config.min_providers")]
    [InlineData("""{"min_providers":1.5}""", "ensemble_config.min_providers")]
    [InlineData("""{"preferred_providers":["ghost"]}""", "ensemble_config.preferred_providers")]
    [InlineData("""{"preferred_providers":"p0"}""", "ensemble_config.preferred_providers")]
    [InlineData("""{"timeout":0}""", "ensemble_config.timeout")]
    [InlineData("""{"timeout":"5s"}""", "ensemble_config.timeout")]
    [InlineData("""{"min_provider":2}""", "ensemble_config.min_provider")]
    [InlineData("""[1]""", "ensemble_config")]
    public async Task A_bad_ensemble_config_is_a_400_naming_the_field_and_asks_no_provider(string config, string param)
    {
        await using var setup = await StartAsync([Paris, Paris, Paris]);
        var (gw, up) = setup;
        var body = EnsembleChat();
        body["ensemble_config"] = JsonNode.Parse(config);
        using var response = await gw.PostJsonAsync("/v1/chat/completions", body);
        var error = (await JsonOf(response))["error"]!;

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(("invalid_request_error", param), ((string?)error["type"], (string?)error["param"]));
        Assert.All(up, u => Assert.Equal(0, u.RequestCount));
        Assert.Empty(await gw.LedgerRowsAsync(0));
    }

    [Fact]
    public async Task The_ensemble_is_listed_among_the_models_and_refuses_embeddings()
    {
        await using var setup = await StartAsync([Paris, Paris], s => s["Ensemble:Members:0"] = "p1");
        var (gw, up) = setup;
        var models = await JsonOf(await gw.Client.GetAsync("/v1/models"));
        var ensemble = models["data"]!.AsArray().Single(m => (string?)m!["id"] == "helixagent-ensemble")!;
        Assert.Equal("helixagent", (string?)ensemble["owned_by"]);
        Assert.True((bool)ensemble["helixagent"]!["ensemble"]!);
        Assert.Equal(["p1/m"], ensemble["helixagent"]!["providers"]!.AsArray().Select(p => (string)p!));

        using var embed = await gw.PostJsonAsync("/v1/embeddings", new JsonObject { ["model"] = "helixagent-ensemble", ["input"] = "hi" });
        Assert.Equal(HttpStatusCode.BadRequest, embed.StatusCode);
        Assert.Equal("model", (string?)(await JsonOf(embed))["error"]!["param"]);
        Assert.All(up, u => Assert.Equal(0, u.RequestCount));
    }
}
