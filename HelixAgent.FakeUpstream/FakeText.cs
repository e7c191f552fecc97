using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace HelixAgent.Fakes;

/// <summary>
/// The fakes' deterministic "tokenizer" and "embedder".
/// <para>
/// Token rule: one token per word, a word being a maximal run of non-whitespace characters
/// (<see cref="CountWords"/>). Prompt tokens are the words of every text in the request's conversation: each
/// message's text content (a string, or the <c>text</c> of every text part/block) plus the system prompt where the
/// protocol carries it outside the messages (Anthropic <c>system</c>, Gemini <c>systemInstruction</c>). Images, tool
/// definitions, tool calls and tool results are not counted. Completion tokens are the words of
/// <see cref="FakeUpstream.Reply"/>, or of the tool call's arguments JSON text for a tool-call answer (at least 1).
/// Embedding input tokens are the words of the inputs.
/// </para>
/// </summary>
public static partial class FakeText
{
    [GeneratedRegex(@"\S+")]
    private static partial Regex Word();

    [GeneratedRegex(@"\s*\S+")]
    private static partial Regex Piece();

    public static int CountWords(string? text) => string.IsNullOrEmpty(text) ? 0 : Word().Count(text);

    /// <summary>
    /// Splits <paramref name="text"/> into stream chunks, one word each, keeping the whitespace before each word so the
    /// chunks concatenate back to the text (trailing whitespace goes on the last chunk). An empty text gives no chunks.
    /// </summary>
    public static IReadOnlyList<string> SplitIntoChunks(string text)
    {
        var pieces = Piece().Matches(text).Select(m => m.Value).ToList();
        if (pieces.Count == 0)
        {
            return text.Length == 0 ? [] : [text];
        }
        var consumed = pieces.Sum(p => p.Length);
        if (consumed < text.Length)
        {
            pieces[^1] += text[consumed..];
        }
        return pieces;
    }

    /// <summary>Splits a JSON text into about 3 pieces for streamed tool-call arguments.</summary>
    public static IReadOnlyList<string> SplitArguments(string json)
    {
        if (json.Length < 6)
        {
            return [json];
        }
        var third = json.Length / 3;
        return [json[..third], json[third..(2 * third)], json[(2 * third)..]];
    }

    /// <summary>Words in a message <c>content</c>: a string, or an array of parts/blocks carrying <c>text</c>.</summary>
    public static int CountContentWords(JsonNode? content)
    {
        switch (content)
        {
            case JsonValue v when v.TryGetValue<string>(out var s):
                return CountWords(s);
            case JsonArray parts:
                var n = 0;
                foreach (var part in parts)
                {
                    if (part is JsonObject o && o["text"] is JsonValue t && t.TryGetValue<string>(out var text))
                    {
                        n += CountWords(text);
                    }
                }
                return n;
            default:
                return 0;
        }
    }

    /// <summary>
    /// A deterministic unit-length embedding of <paramref name="text"/>: component <c>i</c> comes from the FNV-1a hash
    /// of <c>text + "#" + i</c>, mapped to [-1, 1], then the vector is normalised. Equal texts give equal vectors.
    /// </summary>
    public static float[] Embed(string text, int dimensions)
    {
        var v = new float[Math.Max(1, dimensions)];
        double sum = 0;
        for (var i = 0; i < v.Length; i++)
        {
            var h = Fnv1a(text + "#" + i);
            v[i] = (float)(h / (double)uint.MaxValue * 2 - 1);
            sum += v[i] * (double)v[i];
        }
        var norm = Math.Sqrt(sum);
        if (norm > 0)
        {
            for (var i = 0; i < v.Length; i++)
            {
                v[i] = (float)(v[i] / norm);
            }
        }
        return v;
    }

    public static JsonArray ToJsonArray(float[] vector)
    {
        var a = new JsonArray();
        foreach (var x in vector)
        {
            a.Add(x);
        }
        return a;
    }

    private static uint Fnv1a(string s)
    {
        var h = 2166136261u;
        foreach (var c in s)
        {
            h ^= c;
            h *= 16777619u;
        }
        return h;
    }
}
