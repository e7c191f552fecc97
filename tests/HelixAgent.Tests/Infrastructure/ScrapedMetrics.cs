using System.Globalization;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>The one Prometheus text-exposition parser of the tests: a scrape of <c>/metrics</c> as samples.</summary>
internal sealed class ScrapedMetrics
{
    /// <summary>One sample line: the series name, its labels, its value.</summary>
    public sealed record Sample(string Name, IReadOnlyDictionary<string, string> Labels, double Value)
    {
        /// <summary>Whether the sample carries every one of <paramref name="labels"/>.</summary>
        public bool Has(params (string Label, string Value)[] labels) =>
            labels.All(l => Labels.TryGetValue(l.Label, out var v) && v == l.Value);
    }

    private ScrapedMetrics(string text, List<Sample> samples)
    {
        Text = text;
        Samples = samples;
    }

    /// <summary>The exposition as served.</summary>
    public string Text { get; }

    public IReadOnlyList<Sample> Samples { get; }

    public static async Task<ScrapedMetrics> ScrapeAsync(Uri instance)
    {
        using var http = new HttpClient { BaseAddress = instance, Timeout = TimeSpan.FromSeconds(10) };
        return await ScrapeAsync(http);
    }

    public static async Task<ScrapedMetrics> ScrapeAsync(HttpClient client) => Parse(await client.GetStringAsync("/metrics"));

    public static ScrapedMetrics Parse(string text)
    {
        var samples = new List<Sample>();
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }
            var space = line.LastIndexOf(' ');
            var brace = line.IndexOf('{');
            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            string name;
            if (brace >= 0 && brace < space)
            {
                name = line[..brace];
                foreach (var pair in line[(brace + 1)..line.LastIndexOf('}')].Split("\",", StringSplitOptions.RemoveEmptyEntries))
                {
                    var eq = pair.IndexOf('=');
                    labels[pair[..eq]] = pair[(eq + 1)..].Trim('"');
                }
            }
            else
            {
                name = line[..space];
            }
            var raw = line[(space + 1)..];
            samples.Add(new Sample(name, labels, raw == "+Inf" ? double.PositiveInfinity : double.Parse(raw, CultureInfo.InvariantCulture)));
        }
        return new ScrapedMetrics(text, samples);
    }

    /// <summary>The sum of every series of <paramref name="name"/> whose labels include <paramref name="labels"/> (0 when none).</summary>
    public double Sum(string name, params (string Label, string Value)[] labels) =>
        Samples.Where(s => s.Name == name && s.Has(labels)).Sum(s => s.Value);
}
