using k8s;

namespace HelixAgent.Deploy.Tests;

/// <summary>The committed aspirate-output/ is what the generator makes from the current AppHost, byte for byte.</summary>
public sealed class GeneratorTests
{
    private static readonly Lazy<Task<string>> Manifest = new(() =>
        Generation.PublishManifestAsync(KustomizeOutput.RepoRoot, KustomizeOutput.Configuration, build: false, TextWriter.Null));

    [Fact]
    public async Task Committed_output_matches_a_fresh_generation_from_the_apphost()
    {
        var generated = Generation.Generate(await Manifest.Value, Generation.ReadVersion(KustomizeOutput.RepoRoot));
        var committed = Directory.EnumerateFiles(KustomizeOutput.OutputDir, "*", SearchOption.AllDirectories)
            .Where(f => !Path.GetFileName(f).StartsWith('.'))
            .ToDictionary(f => Path.GetRelativePath(KustomizeOutput.OutputDir, f).Replace(Path.DirectorySeparatorChar, '/'), File.ReadAllText);
        const string hint = "aspirate-output/ drifted from the AppHost: run `make k8s-generate` and commit the result";
        Assert.True(generated.Keys.SequenceEqual(committed.Keys.Order(StringComparer.Ordinal)),
            $"{hint}. Missing: {string.Join(", ", generated.Keys.Except(committed.Keys))}; extra: {string.Join(", ", committed.Keys.Except(generated.Keys))}");
        foreach (var (path, content) in generated)
        {
            Assert.True(content == committed[path], $"{hint} ({path} differs)");
        }
    }

    [Fact]
    public async Task Generation_is_byte_stable_and_machine_independent()
    {
        var json = await Manifest.Value;
        var first = Generation.Generate(json, "1.0.0");
        var second = Generation.Generate(json, "1.0.0");
        Assert.Equal(first, second);
        foreach (var content in first.Values)
        {
            Assert.DoesNotContain('\r', content);
            Assert.EndsWith("\n", content, StringComparison.Ordinal);
            Assert.DoesNotContain(KustomizeOutput.RepoRoot, content, StringComparison.Ordinal);
            Assert.DoesNotContain("apphost-", content, StringComparison.OrdinalIgnoreCase); // Aspire's path-hashed volume names
            Assert.DoesNotContain("{", content.Replace("{}", "", StringComparison.Ordinal), StringComparison.Ordinal); // unresolved expressions
        }
    }

    [Fact]
    public void No_secret_value_is_committed_and_every_secret_key_has_an_example()
    {
        foreach (var file in Directory.EnumerateFiles(KustomizeOutput.OutputDir, "*.yaml", SearchOption.AllDirectories))
        {
            var text = File.ReadAllText(file);
            Assert.DoesNotContain("changeme", text, StringComparison.Ordinal);
            foreach (var marker in new[] { "Password=", "password=", "PASSWORD=" })
            {
                for (var i = text.IndexOf(marker, StringComparison.Ordinal); i >= 0; i = text.IndexOf(marker, i + 1, StringComparison.Ordinal))
                {
                    Assert.True(text.AsSpan(i + marker.Length).StartsWith("$("), $"{file}: a literal password after {marker}");
                }
            }
        }
        var kustomizations = Directory.EnumerateFiles(KustomizeOutput.OutputDir, "kustomization.yaml", SearchOption.AllDirectories)
            .Where(f => File.ReadAllText(f).Contains("secretGenerator", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, kustomizations.Count);
        foreach (var k in kustomizations)
        {
            var name = Path.GetFileName(Path.GetDirectoryName(k)!);
            Assert.Contains($".{name}.secrets", File.ReadAllText(k), StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(k)!, $"{name}.secrets.example")), $"{name}.secrets.example is missing");
        }
        var gitignore = File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, ".gitignore"));
        Assert.Contains("aspirate-output/**/.*.secrets", gitignore, StringComparison.Ordinal);
    }

    [Fact]
    public void Typed_check_rejects_unknown_fields()
    {
        const string yaml = """
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: x
            spec:
              replicas: 1
              replicaz: 2
            """;
        Assert.ThrowsAny<Exception>(() => KubernetesYaml.LoadAllFromString(yaml, typeMap: null, strict: true));
        var lenient = KubernetesYaml.LoadAllFromString(yaml, typeMap: null, strict: false);
        var again = new YamlDotNet.RepresentationModel.YamlStream();
        again.Load(new StringReader(KubernetesYaml.Serialize(lenient[0])));
        var input = new YamlDotNet.RepresentationModel.YamlStream();
        input.Load(new StringReader(yaml));
        Assert.Contains(".spec.replicaz", KubernetesOutputTests.FieldPaths(input.Documents[0].RootNode));
        Assert.DoesNotContain(".spec.replicaz", KubernetesOutputTests.FieldPaths(again.Documents[0].RootNode));
    }
}
