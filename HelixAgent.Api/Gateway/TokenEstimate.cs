using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway;

/// <summary>
/// Token counts estimated at 4 characters a token, where no provider counted them: the rate limiter's reservation, and
/// the usage of a stream that ended before its provider reported usage (the row is then marked <c>usage_estimated</c>).
/// </summary>
public static class TokenEstimate
{
    public static int OfChars(long chars) => (int)Math.Min(int.MaxValue, (chars + 3) / 4);

    /// <summary>The prompt of a chat, completions or embeddings body: the text of its messages, prompt or input.</summary>
    public static int Prompt(JsonObject body)
    {
        long chars = 0;
        Count(body["messages"] ?? body["prompt"] ?? body["input"], ref chars);
        return OfChars(chars);
    }

    /// <summary>Characters a <c>chat.completion.chunk</c> sends: its deltas' content, refusal and tool-call arguments.</summary>
    public static int ChunkChars(JsonObject chunk)
    {
        if (chunk["choices"] is not JsonArray choices)
        {
            return 0;
        }
        var chars = 0;
        foreach (var choice in choices)
        {
            if (choice?["delta"] is not JsonObject delta)
            {
                continue;
            }
            chars += Length(delta["content"]) + Length(delta["refusal"]) + Length(delta["reasoning_content"]);
            if (delta["tool_calls"] is JsonArray calls)
            {
                foreach (var call in calls)
                {
                    chars += Length(call?["function"]?["arguments"]) + Length(call?["function"]?["name"]);
                }
            }
        }
        return chars;
    }

    private static int Length(JsonNode? node) => node is JsonValue v && v.TryGetValue<string>(out var s) ? s.Length : 0;

    private static void Count(JsonNode? node, ref long chars)
    {
        switch (node)
        {
            case JsonValue v when v.TryGetValue<string>(out var s):
                chars += s.Length;
                break;
            case JsonArray array:
                foreach (var item in array)
                {
                    Count(item, ref chars);
                }
                break;
            case JsonObject obj:
                Count(obj["content"] ?? obj["text"], ref chars);
                break;
        }
    }
}
