using System.Text.RegularExpressions;

namespace HelixAgent.Deploy.Tests;

/// <summary>Every relative link of README.md and docs/ leads somewhere: the file exists, and so does the heading it names.</summary>
public sealed partial class DocsLinkTests
{
    private static List<string> Paths() =>
        ["README.md", .. Directory.GetFiles(Path.Combine(KustomizeOutput.RepoRoot, "docs"), "*.md")
            .Select(f => Path.GetRelativePath(KustomizeOutput.RepoRoot, f)).Order(StringComparer.Ordinal)];

    public static TheoryData<string> Documents() => new(Paths());

    [Theory]
    [MemberData(nameof(Documents))]
    public void Every_relative_link_resolves_to_a_file_and_heading(string document)
    {
        var path = Path.Combine(KustomizeOutput.RepoRoot, document);
        var broken = new List<string>();
        foreach (Match link in Link().Matches(File.ReadAllText(path)))
        {
            var target = link.Groups[1].Value;
            if (target.StartsWith("http://", StringComparison.Ordinal) || target.StartsWith("https://", StringComparison.Ordinal) ||
                target.StartsWith("mailto:", StringComparison.Ordinal))
            {
                continue;
            }
            var hash = target.IndexOf('#', StringComparison.Ordinal);
            var file = hash < 0 ? target : target[..hash];
            var resolved = file.Length == 0 ? path : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(path)!, file));
            if (!File.Exists(resolved) && !Directory.Exists(resolved))
            {
                broken.Add($"{target}: no such file");
            }
            else if (hash >= 0 && !Anchors(resolved).Contains(target[(hash + 1)..]))
            {
                broken.Add($"{target}: no such heading in {Path.GetFileName(resolved)}");
            }
        }
        Assert.True(broken.Count == 0, $"{document}: " + string.Join("; ", broken));
    }

    [Fact]
    public void The_readme_fits_on_a_few_screens_and_links_every_document()
    {
        var readme = File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, "README.md"));
        Assert.True(readme.Split('\n').Length <= 200, $"README.md has {readme.Split('\n').Length} lines");
        foreach (var doc in Paths().Where(d => d != "README.md"))
        {
            Assert.Contains($"]({doc})", readme);
        }
    }

    /// <summary>GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.</summary>
    private static HashSet<string> Anchors(string file) =>
        [.. File.ReadAllLines(file).Where(l => l.StartsWith('#'))
            .Select(l => Regex.Replace(l.TrimStart('#').Trim().ToLowerInvariant(), @"[^\p{L}\p{N} _-]", "").Replace(' ', '-'))];

    [GeneratedRegex(@"\]\(([^)\s]+)\)")]
    private static partial Regex Link();
}
