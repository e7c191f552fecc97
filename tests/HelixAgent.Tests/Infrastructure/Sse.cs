using System.Text.Json;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>Reads a gateway SSE response the way an OpenAI client does.</summary>
internal static class Sse
{
    public sealed record Frames(List<JsonElement> Events, bool Done, string Raw)
    {
        public string Content => string.Concat(Events
            .Where(e => e.TryGetProperty("choices", out var c) && c.GetArrayLength() > 0)
            .Select(e => e.GetProperty("choices")[0])
            .Select(c => c.TryGetProperty("delta", out var d)
                ? (d.TryGetProperty("content", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : "")
                : (c.TryGetProperty("text", out var x) ? x.GetString() : "")));
    }

    public static async Task<Frames> ReadAsync(HttpResponseMessage response)
    {
        var raw = await response.Content.ReadAsStringAsync();
        var events = new List<JsonElement>();
        var done = false;
        foreach (var block in raw.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            var line = block.Trim();
            Assert.StartsWith("data: ", line);
            var data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                done = true;
                continue;
            }
            Assert.False(done, "no frame may follow [DONE]");
            using var doc = JsonDocument.Parse(data);
            events.Add(doc.RootElement.Clone());
        }
        return new Frames(events, done, raw);
    }
}
