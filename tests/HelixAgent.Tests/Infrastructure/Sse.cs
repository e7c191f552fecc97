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

    /// <summary>One event of an Anthropic-style stream: its <c>event:</c> name and its data.</summary>
    public sealed record NamedEvent(string Name, JsonElement Data)
    {
        public string Type => Data.GetProperty("type").GetString()!;
    }

    /// <summary>Reads a stream of named events (<c>event: x</c> / <c>data: {...}</c>), checking each name matches its data's <c>type</c>.</summary>
    public static async Task<List<NamedEvent>> ReadNamedAsync(HttpResponseMessage response)
    {
        var raw = await response.Content.ReadAsStringAsync();
        var events = new List<NamedEvent>();
        foreach (var block in raw.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            var lines = block.Trim().Split('\n');
            Assert.StartsWith("event: ", lines[0]);
            Assert.StartsWith("data: ", lines[1]);
            using var doc = JsonDocument.Parse(lines[1]["data: ".Length..]);
            var named = new NamedEvent(lines[0]["event: ".Length..], doc.RootElement.Clone());
            Assert.Equal(named.Name, named.Type);
            events.Add(named);
        }
        return events;
    }

    /// <summary>The text of a Messages stream's <c>text_delta</c>s, joined.</summary>
    public static string Text(IEnumerable<NamedEvent> events) => string.Concat(events
        .Where(e => e.Name == "content_block_delta" && e.Data.GetProperty("delta").GetProperty("type").GetString() == "text_delta")
        .Select(e => e.Data.GetProperty("delta").GetProperty("text").GetString()));
}
