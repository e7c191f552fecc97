using System.Text.RegularExpressions;
using k8s;
using k8s.Models;
using YamlDotNet.RepresentationModel;
using RYamlNode = YamlDotNet.RepresentationModel.YamlNode;

namespace HelixAgent.Deploy.Tests;

/// <summary><c>kubectl kustomize aspirate-output</c> builds offline and every object is valid and consistent.</summary>
public sealed partial class KubernetesOutputTests
{
    private static KustomizeOutput Output => KustomizeOutput.Instance;

    [Fact]
    public void Kustomize_builds_every_expected_object()
    {
        var kinds = Output.Objects.Select(o => o is IKubernetesObject<V1ObjectMeta> k ? $"{k.Kind}/{k.Metadata.Name}" : o.GetType().Name)
            .Select(k => Regex.Replace(k, "-[a-z0-9]{10}$", "")) // kustomize's content hash on generated names
            .Order(StringComparer.Ordinal).ToList();
        Assert.Equal(
        [
            "ConfigMap/helixagent-env", "ConfigMap/helixagent-worker-env", "ConfigMap/postgres-env", "ConfigMap/redis-env",
            "Deployment/helixagent", "Deployment/helixagent-worker", "Deployment/redis",
            "HorizontalPodAutoscaler/helixagent", "NetworkPolicy/helixagent", "NetworkPolicy/helixagent-worker", "NetworkPolicy/postgres", "NetworkPolicy/redis", "PodDisruptionBudget/helixagent",
            "Secret/helixagent-secrets", "Secret/helixagent-worker-secrets", "Secret/postgres-secrets", "Secret/redis-secrets",
            "Service/helixagent", "Service/helixagent-worker", "Service/postgres", "Service/redis",
            "StatefulSet/postgres",
        ], kinds);
    }

    [Fact]
    public void Every_object_round_trips_through_its_typed_model_without_losing_a_field()
    {
        var input = new YamlStream();
        input.Load(new StringReader(Output.Yaml));
        Assert.Equal(input.Documents.Count, Output.Objects.Count);
        for (var i = 0; i < Output.Objects.Count; i++)
        {
            var obj = Output.Objects[i];
            Assert.StartsWith("V", obj.GetType().Name, StringComparison.Ordinal); // a typed k8s model, not a fallback
            var again = new YamlStream();
            again.Load(new StringReader(KubernetesYaml.Serialize(obj)));
            var expected = FieldPaths(input.Documents[i].RootNode);
            var actual = FieldPaths(again.Documents[0].RootNode);
            Assert.True(expected.SetEquals(actual),
                $"{obj.GetType().Name} #{i}: fields lost {string.Join(", ", expected.Except(actual))}; fields added {string.Join(", ", actual.Except(expected))}");
        }
    }

    [Fact]
    public void Names_are_dns_1123()
    {
        foreach (var o in Output.Objects.Cast<IKubernetesObject<V1ObjectMeta>>())
        {
            Assert.Matches(Dns1123(), o.Metadata.Name);
            Assert.True(o.Metadata.Name.Length <= 63, o.Metadata.Name);
        }
        foreach (var pod in PodTemplates())
        {
            foreach (var c in pod.Template.Spec.Containers)
            {
                Assert.Matches(Dns1123(), c.Name);
                Assert.All(c.Ports ?? [], p => Assert.True(p.Name is null || p.Name.Length <= 15, p.Name));
            }
        }
    }

    [Fact]
    public void Selectors_match_pod_template_labels_and_services_select_a_workload()
    {
        foreach (var (name, selector, template) in Workloads())
        {
            Assert.NotEmpty(selector);
            foreach (var (k, v) in selector)
            {
                Assert.True(template.Metadata.Labels.TryGetValue(k, out var actual) && actual == v, $"{name}: selector {k}={v} not on the pod template");
            }
            Assert.Equal(name, template.Metadata.Labels["app"]);
            Assert.Contains(template.Spec.Containers, c => c.Name == name);
        }
        foreach (var service in Output.OfType<V1Service>())
        {
            var pods = Workloads().Where(w => service.Spec.Selector.All(s => w.Template.Metadata.Labels.TryGetValue(s.Key, out var v) && v == s.Value)).ToList();
            var workload = Assert.Single(pods);
            var containerPorts = workload.Template.Spec.Containers.SelectMany(c => c.Ports ?? []).ToList();
            foreach (var port in service.Spec.Ports)
            {
                var target = port.TargetPort?.Value ?? port.Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
                Assert.True(containerPorts.Any(p => p.Name == target || p.ContainerPort.ToString(System.Globalization.CultureInfo.InvariantCulture) == target),
                    $"Service {service.Metadata.Name} port {port.Name} targets {target}, which no container of {workload.Name} declares");
            }
        }
    }

    [Fact]
    public void Every_referenced_config_map_and_secret_exists()
    {
        var configMaps = Output.OfType<V1ConfigMap>().Select(c => c.Metadata.Name).ToHashSet();
        var secrets = Output.OfType<V1Secret>().Select(s => s.Metadata.Name).ToHashSet();
        var checkedRefs = 0;
        foreach (var (name, _, template) in Workloads())
        {
            foreach (var c in template.Spec.Containers)
            {
                foreach (var from in c.EnvFrom ?? [])
                {
                    if (from.ConfigMapRef is { } cm)
                    {
                        Assert.True(configMaps.Contains(cm.Name), $"{name}: ConfigMap {cm.Name} is not in the output");
                        checkedRefs++;
                    }
                    if (from.SecretRef is { } s)
                    {
                        Assert.True(secrets.Contains(s.Name), $"{name}: Secret {s.Name} is not in the output");
                        checkedRefs++;
                    }
                }
                foreach (var e in c.Env ?? [])
                {
                    Assert.Null(e.ValueFrom); // secrets come in through envFrom; env only expands $(VAR)
                    foreach (Match m in VarRef().Matches(e.Value ?? ""))
                    {
                        var key = m.Groups[1].Value;
                        var secretRef = Assert.Single(c.EnvFrom!, f => f.SecretRef is not null).SecretRef;
                        var secret = Assert.Single(Output.OfType<V1Secret>(), s => s.Metadata.Name == secretRef.Name);
                        Assert.True(secret.Data.ContainsKey(key), $"{name}: env {e.Name} expands $({key}), which {secret.Metadata.Name} lacks");
                    }
                }
            }
            foreach (var v in template.Spec.Volumes ?? [])
            {
                if (v.Secret is { } s)
                {
                    if (s.SecretName == KustomizeGenerator.TlsSecret)
                    {
                        Assert.True(s.Optional, "helixagent-tls is created by the operator (runbook: Certificate Rotation); it must be optional");
                        continue;
                    }
                    Assert.True(secrets.Contains(s.SecretName), $"{name}: volume Secret {s.SecretName} is not in the output");
                }
                if (v.ConfigMap is { } cm)
                {
                    Assert.True(configMaps.Contains(cm.Name), $"{name}: volume ConfigMap {cm.Name} is not in the output");
                }
            }
        }
        Assert.True(checkedRefs >= 8);
    }

    [Theory]
    [InlineData("helixagent")]
    [InlineData("helixagent-worker")]
    public void Probes_point_at_ready_and_alive(string name)
    {
        var c = Assert.Single(Output.Deployment(name).Spec.Template.Spec.Containers);
        Assert.Equal("/ready", c.ReadinessProbe.HttpGet.Path);
        Assert.Equal("/alive", c.LivenessProbe.HttpGet.Path);
        Assert.Equal("/alive", c.StartupProbe.HttpGet.Path);
        foreach (var probe in new[] { c.ReadinessProbe, c.LivenessProbe, c.StartupProbe })
        {
            Assert.Contains(c.Ports, p => p.Name == probe.HttpGet.Port.Value && p.ContainerPort == 8080);
        }
        Assert.Equal("8080", EnvValue(name, "HTTP_PORTS"));
    }

    [Fact]
    public void Api_deployment_has_what_the_runbook_relies_on()
    {
        var d = Output.Deployment("helixagent");
        Assert.Equal(3, d.Spec.Replicas);
        Assert.Equal("helixagent", d.Spec.Selector.MatchLabels["app"]);
        Assert.Equal("RollingUpdate", d.Spec.Strategy.Type);
        Assert.Equal("0", d.Spec.Strategy.RollingUpdate.MaxUnavailable.Value);
        Assert.Equal("1", d.Spec.Strategy.RollingUpdate.MaxSurge.Value);
        var pod = d.Spec.Template;
        Assert.Equal("true", pod.Metadata.Annotations["prometheus.io/scrape"]);
        Assert.Equal("8080", pod.Metadata.Annotations["prometheus.io/port"]);
        Assert.Equal("/metrics", pod.Metadata.Annotations["prometheus.io/path"]);
        var c = Assert.Single(pod.Spec.Containers);
        Assert.Equal("helixagent", c.Name);
        Assert.Equal("helixagent:1.0.0", c.Image);
        Assert.Equal(8080, Assert.Single(c.Ports).ContainerPort);
        // SIGTERM handling: preStop pause + drain delay + 30 s for in-flight requests must fit in the grace period
        var preStop = c.Lifecycle.PreStop.Sleep.Seconds;
        var drain = int.Parse(EnvValue("helixagent", "Shutdown__DrainDelaySeconds")!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(pod.Spec.TerminationGracePeriodSeconds > 30 + preStop + drain, $"grace {pod.Spec.TerminationGracePeriodSeconds}");
        Assert.NotNull(c.Resources.Requests["cpu"]);
        Assert.NotNull(c.Resources.Requests["memory"]);
        Assert.NotNull(c.Resources.Limits["cpu"]);
        Assert.NotNull(c.Resources.Limits["memory"]);
        var tls = Assert.Single(pod.Spec.Volumes, v => v.Secret?.SecretName == "helixagent-tls");
        Assert.True(tls.Secret.Optional);
        Assert.Contains(c.VolumeMounts, m => m.Name == tls.Name && m.MountPath == KustomizeGenerator.TlsMountPath);
        // The runbook's `grep "provider error" /var/log/helixagent/app.log` (through kubectl exec): the image writes the
        // file (Dockerfile ENV) into a volume that outlives a container restart and is bounded above the file's own cap.
        var logs = Assert.Single(pod.Spec.Volumes, v => v.Name == "logs");
        Assert.Contains(c.VolumeMounts, m => m.Name == "logs" && m.MountPath == "/var/log/helixagent");
        var dockerfile = File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, "Dockerfile"));
        Assert.Matches(@"Logging__File__Path=/var/log/helixagent/app\.log\b", dockerfile);
        var fileCap = long.Parse(Regex.Match(dockerfile, @"Logging__File__MaxBytes=(\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)
            * long.Parse(Regex.Match(dockerfile, @"Logging__File__Keep=(\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(logs.EmptyDir.SizeLimit.ToInt64() > fileCap, $"emptyDir {logs.EmptyDir.SizeLimit} must exceed the log files' cap {fileCap} bytes, or the pod is evicted");
        // The ledger's journal: on a volume that outlives a container restart (OOM kill, crash: the restart replays it),
        // at the image's Ledger__Journal__Path, bounded above the journal's own cap.
        var ledger = Assert.Single(pod.Spec.Volumes, v => v.Name == "ledger");
        var journalPath = Regex.Match(dockerfile, @"Ledger__Journal__Path=(\S+)").Groups[1].Value;
        Assert.Equal("/var/lib/helixagent/ledger", journalPath);
        Assert.Contains(c.VolumeMounts, m => m.Name == "ledger" && m.MountPath == journalPath);
        var journalCap = long.Parse(Regex.Match(dockerfile, @"Ledger__Journal__MaxBytes=(\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(ledger.EmptyDir.SizeLimit.ToInt64() > journalCap, $"emptyDir {ledger.EmptyDir.SizeLimit} must exceed the journal's cap {journalCap} bytes, or the pod is evicted");
                // Kestrel would refuse to start on a missing certificate: the optional secret must not be wired into it
        Assert.Null(EnvValue("helixagent", "Kestrel__Certificates__Default__Path"));
        Assert.Equal("Host=postgres;Port=5432;Username=helixagent;Password=$(HELIXAGENT_DB_PASSWORD);Database=helixagent_db",
            EnvValue("helixagent", "ConnectionStrings__helixagent-db"));
        Assert.Equal("redis:6379,password=$(REDIS_PASSWORD)", EnvValue("helixagent", "ConnectionStrings__redis"));

        var hpa = Assert.Single(Output.OfType<V2HorizontalPodAutoscaler>());
        Assert.Equal(("Deployment", "helixagent"), (hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name));
        Assert.Equal((3, 10), (hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas));
        var cpu = Assert.Single(hpa.Spec.Metrics);
        Assert.Equal(("cpu", 70), (cpu.Resource.Name, cpu.Resource.Target.AverageUtilization));
        var pdb = Assert.Single(Output.OfType<V1PodDisruptionBudget>());
        Assert.Equal("helixagent", pdb.Spec.Selector.MatchLabels["app"]);
        Assert.True(pdb.Spec.MinAvailable?.Value == "2" || pdb.Spec.MaxUnavailable?.Value == "1");
    }

    [Fact]
    public void Worker_postgres_and_redis_have_their_shape()
    {
        var worker = Output.Deployment("helixagent-worker");
        Assert.Equal(1, worker.Spec.Replicas);
        Assert.Equal("helixagent-worker:1.0.0", Assert.Single(worker.Spec.Template.Spec.Containers).Image);
        // Prometheus finds the worker's job metrics the same way as the API's.
        Assert.Equal(("true", "8080", "/metrics"), (worker.Spec.Template.Metadata.Annotations["prometheus.io/scrape"],
            worker.Spec.Template.Metadata.Annotations["prometheus.io/port"], worker.Spec.Template.Metadata.Annotations["prometheus.io/path"]));
        Assert.Null(Output.Deployment("redis").Spec.Template.Metadata.Annotations);

        var pg = Assert.Single(Output.OfType<V1StatefulSet>());
        Assert.Equal("postgres", pg.Metadata.Name);
        var claim = Assert.Single(pg.Spec.VolumeClaimTemplates);
        Assert.Contains(pg.Spec.Template.Spec.Containers[0].VolumeMounts, m => m.Name == claim.Metadata.Name);
        Assert.Equal("helixagent", EnvValue("postgres", "POSTGRES_USER"));
        Assert.Equal("helixagent_db", EnvValue("postgres", "POSTGRES_DB"));
        Assert.Contains("POSTGRES_PASSWORD", SecretKeys("postgres"));
        Assert.Equal(5432, Assert.Single(Service("postgres").Spec.Ports).Port);

        Output.Deployment("redis");
        Assert.Contains("REDIS_PASSWORD", SecretKeys("redis"));
        Assert.Equal(6379, Assert.Single(Service("redis").Spec.Ports).Port);
        Assert.Equal(8080, Assert.Single(Service("helixagent").Spec.Ports).Port);
    }

    private static V1Service Service(string name) => Assert.Single(Output.OfType<V1Service>(), s => s.Metadata.Name == name);

    /// <summary>The value a container sees for <paramref name="variable"/> from its ConfigMap or explicit env.</summary>
    private static string? EnvValue(string workload, string variable)
    {
        var c = Workloads().Single(w => w.Name == workload).Template.Spec.Containers.Single(c => c.Name == workload);
        var explicitValue = c.Env?.FirstOrDefault(e => e.Name == variable)?.Value;
        if (explicitValue is not null)
        {
            return explicitValue;
        }
        foreach (var from in c.EnvFrom ?? [])
        {
            if (from.ConfigMapRef is { } r &&
                Output.OfType<V1ConfigMap>().Single(m => m.Metadata.Name == r.Name).Data?.TryGetValue(variable, out var v) == true)
            {
                return v;
            }
        }
        return null;
    }

    private static HashSet<string> SecretKeys(string workload)
    {
        var c = Workloads().Single(w => w.Name == workload).Template.Spec.Containers.Single();
        var r = c.EnvFrom.Single(f => f.SecretRef is not null).SecretRef;
        return Output.OfType<V1Secret>().Single(s => s.Metadata.Name == r.Name).Data.Keys.ToHashSet();
    }

    private static IEnumerable<(string Name, IDictionary<string, string> Selector, V1PodTemplateSpec Template)> Workloads() =>
        Output.OfType<V1Deployment>().Select(d => (d.Metadata.Name, d.Spec.Selector.MatchLabels, d.Spec.Template))
            .Concat(Output.OfType<V1StatefulSet>().Select(s => (s.Metadata.Name, s.Spec.Selector.MatchLabels, s.Spec.Template)));

    private static IEnumerable<(string Name, V1PodTemplateSpec Template)> PodTemplates() =>
        Workloads().Select(w => (w.Name, w.Template));

    /// <summary>Paths of every field present (map keys, list positions), values left out: they may be normalised.</summary>
    internal static HashSet<string> FieldPaths(RYamlNode node)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        void Walk(RYamlNode n, string path)
        {
            switch (n)
            {
                case YamlMappingNode m:
                    foreach (var (k, v) in m.Children)
                    {
                        var p = $"{path}.{((YamlScalarNode)k).Value}";
                        set.Add(p);
                        Walk(v, p);
                    }
                    break;
                case YamlSequenceNode s:
                    for (var i = 0; i < s.Children.Count; i++)
                    {
                        var p = $"{path}[{i}]";
                        set.Add(p);
                        Walk(s.Children[i], p);
                    }
                    break;
            }
        }
        Walk(node, "");
        return set;
    }

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex Dns1123();

    [GeneratedRegex(@"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")]
    private static partial Regex VarRef();
}
