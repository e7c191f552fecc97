using System.Text.RegularExpressions;
using k8s.Models;
using YamlDotNet.RepresentationModel;

namespace HelixAgent.Deploy.Tests;

/// <summary>docker-compose.yml: generated from the same manifest, consistent with the Kubernetes output.</summary>
public sealed partial class ComposeTests
{
    private static string ComposePath => Path.Combine(KustomizeOutput.RepoRoot, ComposeGenerator.FileName);

    private static YamlMappingNode Load()
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(File.ReadAllText(ComposePath)));
        return (YamlMappingNode)stream.Documents.Single().RootNode;
    }

    private static YamlMappingNode Services => (YamlMappingNode)Load()["services"];

    private static YamlMappingNode Service(string name) => (YamlMappingNode)Services[name];

    private static Dictionary<string, string> Env(string name) =>
        ((YamlMappingNode)Service(name)["environment"]).Children.ToDictionary(
            kv => ((YamlScalarNode)kv.Key).Value!, kv => ((YamlScalarNode)kv.Value).Value!);

    [Fact]
    public async Task Committed_compose_matches_a_fresh_generation()
    {
        var json = await Generation.PublishManifestAsync(KustomizeOutput.RepoRoot, KustomizeOutput.Configuration, build: false, TextWriter.Null);
        foreach (var (path, content) in Generation.GenerateCompose(json, Generation.ReadVersion(KustomizeOutput.RepoRoot)))
        {
            Assert.True(content == File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, path)),
                $"{path} drifted from the AppHost: run `make k8s-generate` and commit the result");
        }
    }

    [Fact]
    public void Services_ports_and_runbook_names()
    {
        Assert.Equal(["helixagent", "helixagent-worker", "postgres", "redis"],
            Services.Children.Keys.Select(k => ((YamlScalarNode)k).Value!).Order(StringComparer.Ordinal));
        var api = Service("helixagent");
        Assert.Equal("8080:8080", Assert.Single(((YamlSequenceNode)api["ports"]).Children).ToString());
        Assert.Equal("helixagent", api["container_name"].ToString()); // docker stats helixagent
        Assert.Equal("helixagent:1.0.0", api["image"].ToString());
        Assert.Equal("8080", Env("helixagent")["HTTP_PORTS"]);
        Assert.Equal("8080", Env("helixagent-worker")["HTTP_PORTS"]);
        Assert.Equal("helixagent_db", Env("postgres")["POSTGRES_DB"]);
        Assert.Equal("helixagent", Env("postgres")["POSTGRES_USER"]);
        var grace = api["stop_grace_period"].ToString();
        Assert.True(int.Parse(grace.TrimEnd('s'), System.Globalization.CultureInfo.InvariantCulture) > 30, grace);
    }

    [Fact]
    public void The_api_keeps_its_ledger_journal_on_a_named_volume_at_the_images_journal_path()
    {
        var dockerfile = File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, "Dockerfile"));
        var journal = Regex.Match(dockerfile, @"Ledger__Journal__Path=(\S+)").Groups[1].Value;
        Assert.Equal("/var/lib/helixagent/ledger", journal);
        var mounts = ((YamlSequenceNode)Service("helixagent")["volumes"]).Children.Select(c => c.ToString()).ToList();
        Assert.Contains($"helixagent-ledger:{journal}", mounts);
        Assert.True(((YamlMappingNode)Load()["volumes"]).Children.ContainsKey(new YamlScalarNode("helixagent-ledger")));
    }

    [Theory]
    [InlineData("helixagent")]
    [InlineData("helixagent-worker")]
    public void Docker_compose_up_builds_each_missing_project_image_from_the_dockerfile_stage_of_its_name(string name)
    {
        var build = (YamlMappingNode)Service(name)["build"];
        Assert.Equal(".", build["context"].ToString());
        Assert.Equal(name, build["target"].ToString());
        Assert.Equal($"{name}:1.0.0", Service(name)["image"].ToString());
        var stages = StagePattern().Matches(File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, "Dockerfile")))
            .Select(m => m.Groups[1].Value).ToList();
        Assert.Contains(name, stages);
        // `docker build -t helixagent:v1.2.0 .` (the runbook) builds the last stage: the API.
        Assert.Equal("helixagent", stages[^1]);
    }

    [GeneratedRegex(@"(?im)^FROM\s+\S+\s+AS\s+(\S+)\s*$")]
    private static partial Regex StagePattern();

    [Theory]
    [InlineData("helixagent")]
    [InlineData("helixagent-worker")]
    [InlineData("postgres")]
    [InlineData("redis")]
    public void Environment_matches_the_kubernetes_output(string name)
    {
        var compose = Env(name);
        var k8s = KustomizeOutput.Instance;
        var container = k8s.Objects.OfType<V1Deployment>().Select(d => d.Spec.Template)
            .Concat(k8s.Objects.OfType<V1StatefulSet>().Select(s => s.Spec.Template))
            .SelectMany(t => t.Spec.Containers).Single(c => c.Name == name);
        var expected = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var from in container.EnvFrom)
        {
            if (from.ConfigMapRef is { } cm)
            {
                foreach (var (k, v) in k8s.Objects.OfType<V1ConfigMap>().Single(m => m.Metadata.Name == cm.Name).Data ?? new Dictionary<string, string>())
                {
                    expected[k] = v;
                }
            }
            if (from.SecretRef is { } sr)
            {
                foreach (var k in k8s.Objects.OfType<V1Secret>().Single(s => s.Metadata.Name == sr.Name).Data.Keys)
                {
                    expected[k] = null; // a secret: compose takes it from .env
                }
            }
        }
        foreach (var e in container.Env ?? [])
        {
            expected[e.Name] = null;
        }
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), compose.Keys.Order(StringComparer.Ordinal));
        foreach (var (k, v) in expected)
        {
            if (v is not null)
            {
                Assert.Equal(v, compose[k].Replace("$$", "$", StringComparison.Ordinal));
            }
            else
            {
                Assert.Matches(EnvVar(), compose[k]);
            }
        }
    }

    [Fact]
    public void Every_interpolated_variable_is_in_env_example_and_no_secret_is_committed()
    {
        var text = File.ReadAllText(ComposePath);
        var example = File.ReadAllLines(Path.Combine(KustomizeOutput.RepoRoot, ComposeGenerator.EnvExampleFileName))
            .Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l[..l.IndexOf('=', StringComparison.Ordinal)]).ToHashSet();
        var used = EnvVar().Matches(text).Select(m => m.Groups[1].Value).ToHashSet();
        Assert.NotEmpty(used);
        Assert.Equal(used.Order(StringComparer.Ordinal), example.Order(StringComparer.Ordinal));
        Assert.DoesNotContain("changeme", text, StringComparison.Ordinal);
        Assert.Contains("/.env", File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, ".gitignore")), StringComparison.Ordinal);
    }

    [GeneratedRegex(@"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)(:\?[^}]*)?\}")]
    private static partial Regex EnvVar();
}
