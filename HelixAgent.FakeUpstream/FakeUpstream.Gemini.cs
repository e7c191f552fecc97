using System.Text.Json.Nodes;

namespace HelixAgent.Fakes;

public sealed partial class FakeUpstream
{
    private Answer RouteGemini(Incoming r)
    {
        var path = r.Path;
        var prefix = path.StartsWith("/v1beta/", StringComparison.Ordinal) ? "/v1beta/" : path.StartsWith("/v1/", StringComparison.Ordinal) ? "/v1/" : null;
        if (prefix is null)
        {
            return NotFound(r);
        }
        var rest = path[prefix.Length..];
        if (r.Method == "GET" && rest == "models")
        {
            return new JsonAnswer(200, new JsonObject
            {
                ["models"] = new JsonArray(Models.Select(m => (JsonNode)new JsonObject
                {
                    ["name"] = "models/" + m,
                    ["version"] = "001",
                    ["displayName"] = m,
                    ["description"] = "Fake model",
                    ["inputTokenLimit"] = 1_048_576,
                    ["outputTokenLimit"] = 8192,
                    ["supportedGenerationMethods"] = m.Contains("embed", StringComparison.Ordinal)
                        ? new JsonArray("embedContent", "batchEmbedContents")
                        : new JsonArray("generateContent", "countTokens", "streamGenerateContent"),
                }).ToArray()),
            });
        }
        if (r.Method != "POST" || !rest.StartsWith("models/", StringComparison.Ordinal) || rest.LastIndexOf(':') is var colon && colon < 0)
        {
            return NotFound(r);
        }
        var model = rest["models/".Length..colon];
        return rest[(colon + 1)..] switch
        {
            "generateContent" => GeminiGenerate(r, model, stream: false),
            "streamGenerateContent" => GeminiGenerate(r, model, stream: true),
            "batchEmbedContents" => GeminiBatchEmbed(r),
            "embedContent" => GeminiEmbed(r),
            _ => NotFound(r),
        };
    }

    /// <summary>Words of <c>systemInstruction.parts[].text</c> plus every <c>contents[].parts[].text</c>.</summary>
    private static int GeminiPromptTokens(JsonObject body) =>
        FakeText.CountContentWords(body["systemInstruction"]?["parts"]) +
        (body["contents"] is JsonArray contents ? contents.Sum(c => FakeText.CountContentWords(c?["parts"])) : 0);

    private Answer GeminiGenerate(Incoming r, string model, bool stream)
    {
        var body = r.Json!;
        if (Strict && body["contents"] is not JsonArray { Count: > 0 })
        {
            return Error(400, ErrorKind.InvalidRequest, "* GenerateContentRequest.contents: contents is not specified");
        }
        var reply = Reply;
        var tool = TakeToolCall();
        var prompt = GeminiPromptTokens(body);
        var completion = CompletionTokens(reply, tool);
        var responseId = $"fake{NextId()}";

        JsonObject Response(JsonNode part, bool last, int completionSoFar)
        {
            var candidate = new JsonObject
            {
                ["content"] = new JsonObject { ["parts"] = new JsonArray(part), ["role"] = "model" },
            };
            if (last)
            {
                candidate["finishReason"] = "STOP";
            }
            candidate["index"] = 0;
            return new JsonObject
            {
                ["candidates"] = new JsonArray(candidate),
                ["usageMetadata"] = new JsonObject
                {
                    ["promptTokenCount"] = prompt,
                    ["candidatesTokenCount"] = completionSoFar,
                    ["totalTokenCount"] = prompt + completionSoFar,
                    ["cachedContentTokenCount"] = Math.Min(CachedPromptTokens, prompt),
                },
                ["modelVersion"] = model,
                ["responseId"] = responseId,
            };
        }

        JsonNode ToolPart() => new JsonObject
        {
            ["functionCall"] = new JsonObject { ["name"] = tool!.Name, ["args"] = ParseArguments(tool) },
        };

        if (!stream)
        {
            return new JsonAnswer(200, Response(tool is null ? new JsonObject { ["text"] = reply } : ToolPart(), last: true, completion));
        }

        var frames = new List<Frame>();
        if (tool is not null)
        {
            frames.Add(new Frame(null, Json(Response(ToolPart(), last: true, completion)), true));
        }
        else
        {
            var pieces = FakeText.SplitIntoChunks(reply);
            if (pieces.Count == 0)
            {
                pieces = [""];
            }
            var soFar = 0;
            for (var i = 0; i < pieces.Count; i++)
            {
                soFar += FakeText.CountWords(pieces[i]);
                frames.Add(new Frame(null, Json(Response(new JsonObject { ["text"] = pieces[i] }, i == pieces.Count - 1, soFar)), true));
            }
        }
        var sse = r.Query["alt"].ToString() == "sse";
        return new StreamAnswer(sse ? StreamFormat.SseCrLf : StreamFormat.JsonArray, frames);
    }

    private static string GeminiText(JsonNode? content) =>
        content?["parts"] is JsonArray parts ? string.Join(" ", parts.Select(p => Str(p?["text"])).Where(t => t is not null)) : "";

    private Answer GeminiBatchEmbed(Incoming r)
    {
        if (r.Json!["requests"] is not JsonArray requests || (Strict && requests.Count == 0))
        {
            return Error(400, ErrorKind.InvalidRequest, "* BatchEmbedContentsRequest.requests: requests is not specified");
        }
        var embeddings = new JsonArray();
        foreach (var request in requests)
        {
            var dims = Int(request?["outputDimensionality"]) ?? EmbeddingDimensions;
            embeddings.Add(new JsonObject { ["values"] = FakeText.ToJsonArray(FakeText.Embed(GeminiText(request?["content"]), dims)) });
        }
        return new JsonAnswer(200, new JsonObject { ["embeddings"] = embeddings });
    }

    private Answer GeminiEmbed(Incoming r)
    {
        var body = r.Json!;
        if (body["content"] is not JsonObject content)
        {
            return Error(400, ErrorKind.InvalidRequest, "* EmbedContentRequest.content: content is not specified");
        }
        var dims = Int(body["outputDimensionality"]) ?? EmbeddingDimensions;
        return new JsonAnswer(200, new JsonObject
        {
            ["embedding"] = new JsonObject { ["values"] = FakeText.ToJsonArray(FakeText.Embed(GeminiText(content), dims)) },
        });
    }
}
