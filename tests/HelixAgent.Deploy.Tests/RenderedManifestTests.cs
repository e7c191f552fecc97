using System.Text;
using k8s;
using k8s.Models;

namespace HelixAgent.Deploy.Tests;

/// <summary>
/// <c>scripts/render-k8s.sh</c>: the runbook's <c>kubectl apply -f k8s/deployment.yaml</c> needs one file holding what
/// <c>kubectl apply -k aspirate-output</c> applies, with the operator's secrets. Run against a copy of the committed output.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class RenderedManifestTests : IDisposable
{
    private const string DbPassword = "s3cretDbPassw0rd";
    private const string RedisPassword = "s3cretRedisPassw0rd";

    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("helixagent-render-");

    private string From => Path.Combine(_work.FullName, "aspirate-output");

    private string Out => Path.Combine(_work.FullName, "k8s", "deployment.yaml");

    public RenderedManifestTests() => KustomizeOutput.CopyDirectory(KustomizeOutput.OutputDir, From);

    public void Dispose() => _work.Delete(recursive: true);

    private (int Exit, string Out, string Err) Render() =>
        KustomizeOutput.Run("bash", [Path.Combine(KustomizeOutput.RepoRoot, "scripts", "render-k8s.sh"), "--from", From, "--out", Out], _work.FullName);

    /// <summary>Each <c>.&lt;name&gt;.secrets</c> from its example, with <paramref name="replace"/> applied to every value line.</summary>
    private void WriteSecrets(Func<string, string, string> replace)
    {
        foreach (var example in Directory.EnumerateFiles(From, "*.secrets.example", SearchOption.AllDirectories))
        {
            var name = Path.GetFileName(example)[..^".secrets.example".Length];
            var lines = File.ReadAllLines(example).Select(l => l.StartsWith('#') || !l.Contains('=') ? l : replace(name, l));
            File.WriteAllLines(Path.Combine(Path.GetDirectoryName(example)!, $".{name}.secrets"), lines);
        }
    }

    private static string RealValues(string file, string line) => line
        .Replace("=changemepostgrespassword", "=" + DbPassword, StringComparison.Ordinal)
        .Replace("=changemeredispassword", "=" + RedisPassword, StringComparison.Ordinal);

    [Fact]
    public void Without_the_secrets_files_it_names_each_missing_one_and_writes_nothing()
    {
        var (exit, _, err) = Render();

        Assert.Equal(2, exit);
        foreach (var name in new[] { "helixagent", "helixagent-worker", "postgres", "redis" })
        {
            Assert.Contains($"missing {From}/{name}/.{name}.secrets: copy it from {From}/{name}/{name}.secrets.example", err);
        }
        Assert.False(File.Exists(Out));
    }

    [Fact]
    public void A_placeholder_left_in_or_a_password_that_differs_between_files_stops_it()
    {
        WriteSecrets((_, line) => line);
        var (exit, _, err) = Render();
        Assert.Equal(2, exit);
        Assert.Contains("HELIXAGENT_DB_PASSWORD still has its placeholder value", err);
        Assert.False(File.Exists(Out));

        // The worker's copy of the database password differs from the API's: the pods could not all log in.
        WriteSecrets((file, line) => RealValues(file, line).Replace(DbPassword, file == "helixagent-worker" ? "another" : DbPassword, StringComparison.Ordinal));
        (exit, _, err) = Render();
        Assert.Equal(2, exit);
        Assert.Contains("HELIXAGENT_DB_PASSWORD differs between", err);
        Assert.False(File.Exists(Out));
    }

    [Fact]
    public void With_the_secrets_it_writes_one_private_file_with_every_object_of_the_kustomize_output_wired_to_its_secrets()
    {
        WriteSecrets(RealValues);

        var (exit, stdout, err) = Render();

        Assert.True(exit == 0, err);
        Assert.Contains("kubectl apply -f " + Out, stdout);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Out));
        var objects = KubernetesYaml.LoadAllFromString(File.ReadAllText(Out), typeMap: null, strict: true);
        Assert.Equal(
            KustomizeOutput.Instance.Objects.Select(Kind).Order(),
            objects.Select(Kind).Order());

        // The runbook's objects: deployment/helixagent with -l app=helixagent pods.
        var api = Assert.Single(objects.OfType<V1Deployment>(), d => d.Metadata.Name == "helixagent");
        Assert.Equal("helixagent", api.Spec.Template.Metadata.Labels["app"]);
        // Every secret and config map a workload reads is in the same file, and carries the operator's values.
        var secrets = objects.OfType<V1Secret>().ToDictionary(s => s.Metadata.Name);
        var maps = objects.OfType<V1ConfigMap>().Select(m => m.Metadata.Name).ToHashSet();
        var containers = objects.OfType<V1Deployment>().SelectMany(d => d.Spec.Template.Spec.Containers)
            .Concat(objects.OfType<V1StatefulSet>().SelectMany(s => s.Spec.Template.Spec.Containers)).ToList();
        foreach (var from in containers.SelectMany(c => c.EnvFrom ?? []))
        {
            Assert.True(from.SecretRef is null || secrets.ContainsKey(from.SecretRef.Name), $"secret {from.SecretRef?.Name} is not in the file");
            Assert.True(from.ConfigMapRef is null || maps.Contains(from.ConfigMapRef.Name), $"config map {from.ConfigMapRef?.Name} is not in the file");
        }
        var apiSecret = secrets[Assert.Single(api.Spec.Template.Spec.Containers[0].EnvFrom, f => f.SecretRef is not null).SecretRef.Name];
        Assert.Equal(DbPassword, Encoding.UTF8.GetString(apiSecret.Data["HELIXAGENT_DB_PASSWORD"]));
        Assert.Equal(RedisPassword, Encoding.UTF8.GetString(apiSecret.Data["REDIS_PASSWORD"]));
    }

    /// <summary>Kind and name without kustomize's content hash (secrets with other values get another suffix).</summary>
    [Fact]
    public void The_otlp_endpoint_line_of_a_services_example_once_uncommented_reaches_that_services_pods()
    {
        WriteSecrets(RealValues);
        foreach (var name in new[] { "helixagent", "helixagent-worker" })
        {
            var file = Path.Combine(From, name, $".{name}.secrets");
            var example = File.ReadAllLines(Path.Combine(From, name, $"{name}.secrets.example"));
            var line = Assert.Single(example, l => l.StartsWith("# OTEL_EXPORTER_OTLP_ENDPOINT=", StringComparison.Ordinal));
            File.AppendAllLines(file, [line[2..]]);
        }

        var (exit, _, err) = Render();

        Assert.True(exit == 0, err);
        var objects = KubernetesYaml.LoadAllFromString(File.ReadAllText(Out), typeMap: null, strict: true);
        var secrets = objects.OfType<V1Secret>().ToDictionary(s => s.Metadata.Name);
        foreach (var name in new[] { "helixagent", "helixagent-worker" })
        {
            var deployment = Assert.Single(objects.OfType<V1Deployment>(), d => d.Metadata.Name == name);
            var secret = secrets[Assert.Single(deployment.Spec.Template.Spec.Containers[0].EnvFrom, f => f.SecretRef is not null).SecretRef.Name];
            Assert.Equal("http://otel-collector:4317", Encoding.UTF8.GetString(secret.Data["OTEL_EXPORTER_OTLP_ENDPOINT"]));
        }
    }

    private static string Kind(object o) => o is IKubernetesObject<V1ObjectMeta> k
        ? $"{k.Kind}/{System.Text.RegularExpressions.Regex.Replace(k.Metadata.Name, "-[a-z0-9]{10}$", "")}"
        : o.GetType().Name;
}
