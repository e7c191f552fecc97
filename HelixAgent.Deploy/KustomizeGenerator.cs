using System.Text;

namespace HelixAgent.Deploy;

/// <summary>
/// Turns the AppHost's publish manifest into aspirate's kustomize layout (<c>aspirate-output/</c>): one folder per
/// workload with <c>deployment.yaml</c> or <c>statefulset.yaml</c>, <c>service.yaml</c> and a
/// <c>kustomization.yaml</c> whose <c>configMapGenerator</c> <c>&lt;name&gt;-env</c> holds the non-secret environment
/// and whose <c>secretGenerator</c> <c>&lt;name&gt;-secrets</c> reads the git-ignored <c>.&lt;name&gt;.secrets</c> (keys listed in the
/// committed <c>&lt;name&gt;.secrets.example</c>). Values that embed a secret (connection strings) become container
/// <c>env</c> entries that expand the secret with <c>$(VAR)</c>, so no password is ever written to the repo.
/// On top of aspirate's defaults it adds what the runbook needs (see <see cref="ApiName"/>).
/// Output is a pure function of the manifest and the version: sorted, LF newlines, no timestamps.
/// </summary>
public sealed class KustomizeGenerator(AspireManifest manifest, string version)
{
    public const string ApiName = "helixagent";
    public const string WorkerName = "helixagent-worker";
    public const string TlsSecret = "helixagent-tls";
    public const string TlsMountPath = "/etc/helixagent/tls";

    /// <summary>The image writes the runbook's <c>app.log</c> here (<c>Logging__File__Path</c> in the Dockerfile).</summary>
    public const string LogMountPath = "/var/log/helixagent";

    /// <summary>The usage ledger's write-ahead journal (<c>Ledger__Journal__Path</c> in the Dockerfile).</summary>
    public const string LedgerMountPath = "/var/lib/helixagent/ledger";

    /// <summary>Above the journal's most (<c>Ledger__Journal__MaxBytes</c>, 2 GiB in the Dockerfile) plus a segment.</summary>
    public const string LedgerVolumeSizeLimit = "3Gi";

    /// <summary>Above the file log's most (5 files of 50 MB, the image's defaults): the kubelet evicts a pod past it.</summary>
    public const string LogVolumeSizeLimit = "512Mi";
    public const int DrainDelaySeconds = 5;

    /// <summary>The user of the app images (<c>$APP_UID</c> of Microsoft's images).</summary>
    public const int AppUser = 1654;

    /// <summary>The user the official postgres and redis images create for themselves.</summary>
    public const int DataStoreUser = 999;

    private static int RunAsUser(string name, bool isProject) => isProject ? AppUser : DataStoreUser;

    /// <summary>
    /// The workload's NetworkPolicy: it selects the workload's pods for ingress and egress, so everything not listed
    /// is denied (default-deny for the app's pods, nothing else in the namespace). Kubelet probes, <c>kubectl exec</c>
    /// and <c>port-forward</c> are not subject to NetworkPolicy: the runbook's lines keep working.
    /// </summary>
    private static YamlMap? NetworkPolicy(string name, YamlMap labels)
    {
        static YamlMap Port(int port, string protocol = "TCP") => new() { { "port", port }, { "protocol", protocol } };
        static YamlMap App(string app) => new() { { "podSelector", new YamlMap { { "matchLabels", new YamlMap { { "app", app } } } } } };
        static YamlMap To(YamlMap peer, params YamlMap[] ports) => new() { { "to", new YamlSeq(peer) }, { "ports", new YamlSeq(ports.Select(p => (YamlNode)p).ToList()) } };
        static YamlMap From(YamlSeq peers, params YamlMap[] ports) => new() { { "from", peers }, { "ports", new YamlSeq(ports.Select(p => (YamlNode)p).ToList()) } };
        var dns = To(new YamlMap
        {
            { "namespaceSelector", new YamlMap() },
            { "podSelector", new YamlMap { { "matchLabels", new YamlMap { { "k8s-app", "kube-dns" } } } } },
        }, Port(53, "UDP"), Port(53));
        var anyone = new YamlMap { { "ports", new YamlSeq(Port(AspireManifest.ProjectHttpPort)) } };
        var (ingress, egress, comment) = name switch
        {
            ApiName => (new YamlSeq(anyone), new YamlSeq(To(App("postgres"), Port(5432)), To(App("redis"), Port(6379)), dns,
                    new YamlMap { { "to", new YamlSeq(new YamlMap { { "ipBlock", new YamlMap { { "cidr", "0.0.0.0/0" } } } }) }, { "ports", new YamlSeq(Port(443)) } }),
                "clients on 8080 from anywhere; out: PostgreSQL, Redis, DNS, and the upstream providers on 443 anywhere (narrow the\n" +
                "ipBlock to your providers' CIDRs, or point the providers' BaseUrl at an egress proxy and allow only that; an\n" +
                "OTLP collector needs its port added here)"),
            WorkerName => (new YamlSeq(anyone), new YamlSeq(To(App("postgres"), Port(5432)), dns),
                "/metrics and /health on 8080 (Prometheus); out: PostgreSQL and DNS only"),
            "postgres" => (new YamlSeq(From(new YamlSeq(App(ApiName), App(WorkerName)), Port(5432))), new YamlSeq(),
                "only the API and the worker reach PostgreSQL; it reaches nothing"),
            "redis" => (new YamlSeq(From(new YamlSeq(App(ApiName)), Port(6379))), new YamlSeq(),
                "only the API reaches Redis; it reaches nothing"),
            _ => ((YamlSeq?)null, (YamlSeq?)null, ""),
        };
        if (ingress is null || egress is null)
        {
            return null;
        }
        var spec = new YamlMap
        {
            { "podSelector", new YamlMap { { "matchLabels", labels } } },
            { "policyTypes", new YamlSeq("Ingress", "Egress") },
            { "ingress", ingress },
        };
        spec.Add("egress", egress, comment);
        return new YamlMap
        {
            { "apiVersion", "networking.k8s.io/v1" },
            { "kind", "NetworkPolicy" },
            { "metadata", new YamlMap { { "name", name }, { "labels", labels } } },
            { "spec", spec },
        };
    }

    private static YamlMap SpreadOver(string topologyKey, YamlMap labels) => new()
    {
        { "maxSkew", 1 },
        { "topologyKey", topologyKey },
        { "whenUnsatisfiable", "ScheduleAnyway" },
        { "labelSelector", new YamlMap { { "matchLabels", labels } } },
    };
    public const int PreStopSleepSeconds = 5;
    public const int TerminationGracePeriodSeconds = 45;

    private const string Header = "Generated by `dotnet run --project HelixAgent.Deploy -- generate` (make k8s-generate)\nfrom the AppHost's publish manifest. Do not edit: change the AppHost or HelixAgent.Deploy and regenerate.";

    /// <summary>Upstream provider keys the API reads when set (AppHost UpstreamKeys); listed, commented out, in its secrets example.</summary>
    private static readonly string[] OptionalApiSecrets =
        ["ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"];

    /// <summary>Relative path (forward slashes) → file content.</summary>
    public SortedDictionary<string, string> Generate()
    {
        var files = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var workloads = manifest.ResourceNames
            .Where(n => manifest.TypeOf(n) is "project.v0" or "container.v0")
            .ToList();
        foreach (var name in workloads)
        {
            GenerateWorkload(name, files);
        }
        var root = new YamlMap
        {
            { "apiVersion", "kustomize.config.k8s.io/v1beta1" },
            { "kind", "Kustomization" },
            { "resources", new YamlSeq(workloads.Select(w => (YamlNode)w).ToList()) },
        };
        files["kustomization.yaml"] = YamlWriter.Write(root, Header);
        return files;
    }

    /// <summary>
    /// A workload's environment: the manifest's plus what a deployment needs on top (the API's drain delay, the
    /// database the AppHost adds to the postgres server as POSTGRES_DB). Shared by the kustomize and compose output.
    /// </summary>
    public static List<(string Name, string Expression)> WorkloadEnv(AspireManifest manifest, string name)
    {
        var env = manifest.Env(name).ToList();
        if (name == ApiName)
        {
            env.Add(("Shutdown__DrainDelaySeconds", DrainDelaySeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        if (manifest.TypeOf(name) == "container.v0" && name == "postgres")
        {
            const string prefix = "{postgres.connectionString};Database=";
            var database = manifest.ResourceNames
                .Where(n => manifest.TypeOf(n) == "value.v0")
                .Select(n => manifest[n].GetProperty("connectionString").GetString() ?? "")
                .Where(cs => cs.StartsWith(prefix, StringComparison.Ordinal))
                .Select(cs => cs[prefix.Length..])
                .FirstOrDefault();
            if (database is not null)
            {
                env.Add(("POSTGRES_DB", database));
            }
        }
        return env.OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
    }

    private sealed record EnvPlan(
        SortedDictionary<string, string> ConfigMap,
        SortedDictionary<string, string> SecretKeys, // key → parameter
        SortedDictionary<string, string> ExplicitEnv); // name → value with $(VAR)

    private EnvPlan PlanEnv(IEnumerable<(string Name, string Expression)> env)
    {
        var config = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var secrets = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var composite = new List<(string Name, IReadOnlyList<Segment> Segments)>();
        foreach (var (key, expression) in env)
        {
            var segments = manifest.Resolve(expression);
            if (segments.All(s => s is Literal))
            {
                config[key] = string.Concat(segments.Cast<Literal>().Select(l => l.Text));
            }
            else if (segments is [SecretRef direct])
            {
                secrets[key] = direct.Parameter;
            }
            else
            {
                composite.Add((key, segments));
            }
        }
        var explicitEnv = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, segments) in composite)
        {
            var sb = new StringBuilder();
            foreach (var s in segments)
            {
                switch (s)
                {
                    case Literal l:
                        sb.Append(l.Text.Replace("$(", "$$(", StringComparison.Ordinal));
                        break;
                    case SecretRef r:
                        var variable = secrets.FirstOrDefault(kv => kv.Value == r.Parameter).Key;
                        if (variable is null)
                        {
                            variable = r.Parameter.ToUpperInvariant().Replace('-', '_');
                            secrets[variable] = r.Parameter;
                        }
                        sb.Append("$(").Append(variable).Append(')');
                        break;
                }
            }
            explicitEnv[key] = sb.ToString();
        }
        return new EnvPlan(config, secrets, explicitEnv);
    }

    private void GenerateWorkload(string name, SortedDictionary<string, string> files)
    {
        var resource = manifest[name];
        var isProject = manifest.TypeOf(name) == "project.v0";
        var isApi = name == ApiName;
        var env = WorkloadEnv(manifest, name);
        var plan = PlanEnv(env);

        // ports: projects expose http only (TLS, when wanted, terminates at the ingress or via helixagent-tls)
        var ports = new List<(string Name, int Port)>();
        foreach (var b in resource.GetProperty("bindings").EnumerateObject().OrderBy(b => b.Name, StringComparer.Ordinal))
        {
            if (isProject && b.Name != "http")
            {
                continue;
            }
            ports.Add((b.Name, manifest.BindingPort(name, b.Name)));
        }

        var volumes = !isProject && resource.TryGetProperty("volumes", out var vols)
            ? vols.EnumerateArray().Select(v => v.GetProperty("target").GetString()!).ToList()
            : [];
        var stateful = volumes.Count > 0;

        var labels = new YamlMap { { "app", name } };
        var container = new YamlMap
        {
            { "name", name },
            { "image", isProject ? $"{name}:{version}" : ContainerImage(resource.GetProperty("image").GetString()!) },
            { "imagePullPolicy", "IfNotPresent" },
        };
        if (resource.TryGetProperty("entrypoint", out var entrypoint))
        {
            container.Add("command", new YamlSeq(entrypoint.GetString()!));
        }
        if (resource.TryGetProperty("args", out var args))
        {
            container.Add("args", new YamlSeq(args.EnumerateArray().Select(a => (YamlNode)ExpandForContainer(a.GetString()!, plan)).ToList()));
        }
        container.Add("ports", new YamlSeq(ports.Select(p => (YamlNode)new YamlMap
        {
            { "name", p.Name },
            { "containerPort", p.Port },
            { "protocol", "TCP" },
        }).ToList()));
        var envFrom = new YamlSeq(new YamlMap { { "configMapRef", new YamlMap { { "name", $"{name}-env" } } } });
        if (plan.SecretKeys.Count > 0)
        {
            envFrom.Items.Add(new YamlMap { { "secretRef", new YamlMap { { "name", $"{name}-secrets" } } } });
        }
        container.Add("envFrom", envFrom);
        if (plan.ExplicitEnv.Count > 0)
        {
            container.Add("env", new YamlSeq(plan.ExplicitEnv.Select(kv => (YamlNode)new YamlMap
            {
                { "name", kv.Key },
                { "value", kv.Value },
            }).ToList()), "values embedding a secret: $(VAR) expands the key from the secretRef above");
        }
        AddProbes(name, isProject, container, plan);
        container.Add("resources", Resources(name, isProject));
        if (isProject)
        {
            container.Add("lifecycle", new YamlMap
            {
                {
                    "preStop", new YamlMap { { "sleep", new YamlMap { { "seconds", PreStopSleepSeconds } } } },
                    $"endpoints drop the pod while it still serves; then SIGTERM: /ready 503 for Shutdown__DrainDelaySeconds,\nthen up to 30 s for in-flight requests (terminationGracePeriodSeconds covers all of it)"
                },
            });
        }
        container.Add("securityContext", new YamlMap
        {
            { "allowPrivilegeEscalation", false },
            { "capabilities", new YamlMap { { "drop", new YamlSeq("ALL") } } },
        });
        var mounts = new YamlSeq();
        foreach (var (target, i) in volumes.Select((t, i) => (t, i)))
        {
            mounts.Items.Add(new YamlMap { { "name", VolumeName(name, i) }, { "mountPath", target } });
        }
        if (isApi)
        {
            mounts.Items.Add(new YamlMap { { "name", "tls" }, { "mountPath", TlsMountPath }, { "readOnly", true } });
            mounts.Items.Add(new YamlMap { { "name", "logs" }, { "mountPath", LogMountPath } });
            mounts.Items.Add(new YamlMap { { "name", "ledger" }, { "mountPath", LedgerMountPath } });
        }
        if (mounts.Items.Count > 0)
        {
            container.Add("volumeMounts", mounts);
        }

        var podSpec = new YamlMap();
        podSpec.Add("terminationGracePeriodSeconds", isProject ? TerminationGracePeriodSeconds : 30);
        // Pod Security "restricted": none of these pods calls the Kubernetes API, none runs as root.
        podSpec.Add("automountServiceAccountToken", false);
        var uid = RunAsUser(name, isProject);
        podSpec.Add("securityContext", new YamlMap
        {
            { "runAsNonRoot", true },
            { "runAsUser", uid },
            { "runAsGroup", uid },
            { "fsGroup", uid },
            { "seccompProfile", new YamlMap { { "type", "RuntimeDefault" } } },
        }, isProject ? "the image's app user ($APP_UID)" : $"the {name} image's own user; fsGroup makes its volume writable");
        if (isApi)
        {
            // Replicas on different nodes and zones where the cluster has them, so a drain leaves the PDB's two standing.
            podSpec.Add("topologySpreadConstraints", new YamlSeq(
                SpreadOver("kubernetes.io/hostname", labels), SpreadOver("topology.kubernetes.io/zone", labels)));
        }
        podSpec.Add("containers", new YamlSeq(container));
        if (isApi)
        {
            podSpec.Add("volumes", new YamlSeq(new YamlMap
            {
                { "name", "tls" },
                { "secret", new YamlMap { { "secretName", TlsSecret }, { "optional", true } } },
            }, new YamlMap
            {
                { "name", "logs" },
                { "emptyDir", new YamlMap { { "sizeLimit", LogVolumeSizeLimit } } },
            }, new YamlMap
            {
                { "name", "ledger" },
                { "emptyDir", new YamlMap { { "sizeLimit", LedgerVolumeSizeLimit } } },
            }), $"""
                 Secret {TlsSecret} (runbook: Certificate Rotation) is optional: the pod starts without it. To serve HTTPS
                 from the pod, add to .{ApiName}.secrets (or the env) Kestrel__Certificates__Default__Path={TlsMountPath}/tls.crt,
                 Kestrel__Certificates__Default__KeyPath={TlsMountPath}/tls.key and HTTPS_PORTS=8443 (plain HTTP stays
                 on 8080 for the probes); Kestrel refuses to start if those files are missing, so none is set by default.
                 Volume logs holds the runbook's log file (kubectl exec deploy/{ApiName} -- grep "provider error"
                 {LogMountPath}/app.log); it outlives a container restart, not the pod.
                 Volume ledger holds the usage ledger's write-ahead journal (Ledger__Journal__Path): it outlives a
                 container restart (an OOM kill, a crash), whose replay ships the rows the killed container had not; a
                 pod deleted with rows unshipped loses them unless it stopped gracefully (SIGTERM ships everything).
                 To keep them through node loss too, run the API as a StatefulSet with a volumeClaimTemplate mounted
                 here instead (one PVC per pod: each process needs its own journal folder).
                 """.Replace("\r", "", StringComparison.Ordinal));
        }
        var podMeta = new YamlMap { { "labels", labels } };
        if (isProject)
        {
            // The API and the worker both serve /metrics (the worker: its maintenance jobs' outcomes).
            podMeta.Add("annotations", new YamlMap
            {
                { "prometheus.io/scrape", "true" },
                { "prometheus.io/port", AspireManifest.ProjectHttpPort.ToString(System.Globalization.CultureInfo.InvariantCulture) },
                { "prometheus.io/path", "/metrics" },
            });
        }
        var spec = new YamlMap
        {
            { "replicas", isApi ? 3 : 1 },
            { "selector", new YamlMap { { "matchLabels", labels } } },
        };
        if (stateful)
        {
            spec.Add("serviceName", name);
        }
        else
        {
            spec.Add("strategy", isProject
                ? new YamlMap
                {
                    { "type", "RollingUpdate" },
                    { "rollingUpdate", new YamlMap { { "maxUnavailable", 0 }, { "maxSurge", 1 } } },
                }
                : new YamlMap { { "type", "Recreate" } });
        }
        spec.Add("template", new YamlMap { { "metadata", podMeta }, { "spec", podSpec } });
        if (stateful)
        {
            spec.Add("volumeClaimTemplates", new YamlSeq(volumes.Select((_, i) => (YamlNode)new YamlMap
            {
                { "metadata", new YamlMap { { "name", VolumeName(name, i) } } },
                {
                    "spec", new YamlMap
                    {
                        { "accessModes", new YamlSeq("ReadWriteOnce") },
                        { "resources", new YamlMap { { "requests", new YamlMap { { "storage", "1Gi" } } } } },
                    }
                },
            }).ToList()));
        }
        var workloadFile = stateful ? "statefulset.yaml" : "deployment.yaml";
        files[$"{name}/{workloadFile}"] = YamlWriter.Write(new YamlMap
        {
            { "apiVersion", "apps/v1" },
            { "kind", stateful ? "StatefulSet" : "Deployment" },
            { "metadata", new YamlMap { { "name", name }, { "labels", labels } } },
            { "spec", spec },
        }, Header);

        files[$"{name}/service.yaml"] = YamlWriter.Write(new YamlMap
        {
            { "apiVersion", "v1" },
            { "kind", "Service" },
            { "metadata", new YamlMap { { "name", name }, { "labels", labels } } },
            {
                "spec", new YamlMap
                {
                    { "type", "ClusterIP" },
                    { "selector", labels },
                    {
                        "ports", new YamlSeq(ports.Select(p => (YamlNode)new YamlMap
                        {
                            { "name", p.Name },
                            { "port", p.Port },
                            { "targetPort", p.Name },
                            { "protocol", "TCP" },
                        }).ToList())
                    },
                }
            },
        }, Header);

        var resources = new List<YamlNode> { workloadFile, "service.yaml" };
        if (isApi)
        {
            files[$"{name}/hpa.yaml"] = YamlWriter.Write(Hpa(name), Header);
            files[$"{name}/pdb.yaml"] = YamlWriter.Write(Pdb(name, labels), Header);
            resources.Add("hpa.yaml");
            resources.Add("pdb.yaml");
        }
        if (NetworkPolicy(name, labels) is { } policy)
        {
            files[$"{name}/networkpolicy.yaml"] = YamlWriter.Write(policy, Header);
            resources.Add("networkpolicy.yaml");
        }
        var kustomization = new YamlMap
        {
            { "apiVersion", "kustomize.config.k8s.io/v1beta1" },
            { "kind", "Kustomization" },
            { "resources", new YamlSeq(resources) },
            {
                "configMapGenerator", new YamlSeq(new YamlMap
                {
                    { "name", $"{name}-env" },
                    { "literals", new YamlSeq(plan.ConfigMap.Select(kv => (YamlNode)$"{kv.Key}={kv.Value}").ToList()) },
                })
            },
        };
        if (plan.SecretKeys.Count > 0)
        {
            kustomization.Add("secretGenerator", new YamlSeq(new YamlMap
            {
                { "name", $"{name}-secrets" },
                { "envs", new YamlSeq($".{name}.secrets") },
            }), $"""
                 .{name}.secrets is git-ignored: create it from {name}.secrets.example (KEY=value lines).
                 """.TrimEnd());
            files[$"{name}/{name}.secrets.example"] = SecretsExample(name, plan.SecretKeys, isApi, isProject);
        }
        files[$"{name}/kustomization.yaml"] = YamlWriter.Write(kustomization, Header);
    }

    private static string VolumeName(string name, int index) => index == 0 ? $"{name}-data" : $"{name}-data-{index}";

    /// <summary>docker.io/library/postgres:18.3 → postgres:18.3 (what aspirate writes; both pull the same image).</summary>
    private static string ContainerImage(string image) =>
        image.StartsWith("docker.io/library/", StringComparison.Ordinal) ? image["docker.io/library/".Length..] : image;

    private string ExpandForContainer(string expression, EnvPlan plan)
    {
        var sb = new StringBuilder();
        foreach (var s in manifest.Resolve(expression))
        {
            switch (s)
            {
                case Literal l:
                    sb.Append(l.Text.Replace("$(", "$$(", StringComparison.Ordinal));
                    break;
                case SecretRef r:
                    var key = plan.SecretKeys.First(kv => kv.Value == r.Parameter).Key;
                    sb.Append("$(").Append(key).Append(')');
                    break;
            }
        }
        return sb.ToString();
    }

    private static void AddProbes(string name, bool isProject, YamlMap container, EnvPlan plan)
    {
        if (isProject)
        {
            container.Add("startupProbe", HttpProbe("/alive", period: 2, failures: 30));
            container.Add("readinessProbe", HttpProbe("/ready", period: 5, failures: 2));
            container.Add("livenessProbe", HttpProbe("/alive", period: 10, failures: 3));
            return;
        }
        if (name == "postgres")
        {
            var user = plan.ConfigMap.GetValueOrDefault("POSTGRES_USER", "postgres");
            var db = plan.ConfigMap.GetValueOrDefault("POSTGRES_DB", "postgres");
            container.Add("readinessProbe", ExecProbe(["pg_isready", "-U", user, "-d", db], period: 5));
            container.Add("livenessProbe", new YamlMap
            {
                { "tcpSocket", new YamlMap { { "port", "tcp" } } },
                { "periodSeconds", 10 },
                { "failureThreshold", 6 },
            });
            return;
        }
        if (name == "redis")
        {
            container.Add("readinessProbe", new YamlMap
            {
                { "tcpSocket", new YamlMap { { "port", "tcp" } } },
                { "periodSeconds", 5 },
            });
        }
    }

    private static YamlMap HttpProbe(string path, int period, int failures) => new()
    {
        { "httpGet", new YamlMap { { "path", path }, { "port", "http" } } },
        { "periodSeconds", period },
        { "timeoutSeconds", 2 },
        { "failureThreshold", failures },
    };

    private static YamlMap ExecProbe(string[] command, int period) => new()
    {
        { "exec", new YamlMap { { "command", new YamlSeq(command.Select(c => (YamlNode)c).ToList()) } } },
        { "periodSeconds", period },
        { "timeoutSeconds", 3 },
    };

    private static YamlMap Resources(string name, bool isProject)
    {
        var (reqCpu, reqMem, limCpu, limMem) = name switch
        {
            ApiName => ("250m", "256Mi", "1000m", "1Gi"),
            "postgres" => ("250m", "256Mi", "1000m", "1Gi"),
            "redis" => ("100m", "64Mi", "500m", "256Mi"),
            _ when isProject => ("100m", "128Mi", "500m", "512Mi"),
            _ => ("100m", "128Mi", "500m", "512Mi"),
        };
        return new YamlMap
        {
            { "requests", new YamlMap { { "cpu", reqCpu }, { "memory", reqMem } } },
            { "limits", new YamlMap { { "cpu", limCpu }, { "memory", limMem } } },
        };
    }

    private static YamlMap Hpa(string name) => new()
    {
        { "apiVersion", "autoscaling/v2" },
        { "kind", "HorizontalPodAutoscaler" },
        { "metadata", new YamlMap { { "name", name }, { "labels", new YamlMap { { "app", name } } } } },
        {
            "spec", new YamlMap
            {
                { "scaleTargetRef", new YamlMap { { "apiVersion", "apps/v1" }, { "kind", "Deployment" }, { "name", name } } },
                { "minReplicas", 3 },
                { "maxReplicas", 10 },
                {
                    "metrics", new YamlSeq(new YamlMap
                    {
                        { "type", "Resource" },
                        {
                            "resource", new YamlMap
                            {
                                { "name", "cpu" },
                                { "target", new YamlMap { { "type", "Utilization" }, { "averageUtilization", 70 } } },
                            }
                        },
                    })
                },
            }
        },
    };

    private static YamlMap Pdb(string name, YamlMap labels) => new()
    {
        { "apiVersion", "policy/v1" },
        { "kind", "PodDisruptionBudget" },
        { "metadata", new YamlMap { { "name", name }, { "labels", labels } } },
        {
            "spec", new YamlMap
            {
                { "minAvailable", 2 },
                { "selector", new YamlMap { { "matchLabels", labels } } },
            }
        },
    };

    private string SecretsExample(string name, SortedDictionary<string, string> keys, bool isApi, bool isProject)
    {
        var sb = new StringBuilder();
        sb.Append("# Copy to .").Append(name).Append(".secrets (git-ignored) and replace the placeholders; KEY=value, one a line.\n");
        sb.Append("# A value must be the same in every file that lists its parameter. Use letters and digits only:\n");
        sb.Append("# the values are also expanded inside connection strings and URIs.\n");
        foreach (var (key, parameter) in keys)
        {
            sb.Append("# parameter ").Append(parameter).Append('\n');
            sb.Append(key).Append('=').Append(Placeholder(parameter)).Append('\n');
        }
        if (isApi)
        {
            sb.Append("# Upstream provider keys (optional): a provider is enabled when its key is set.\n");
            foreach (var key in OptionalApiSecrets)
            {
                sb.Append("# ").Append(key).Append("=\n");
            }
        }
        if (isProject)
        {
            sb.Append("# Telemetry (optional): traces, metrics and logs over OTLP to your collector (/metrics is scraped either way).\n");
            sb.Append("# OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4317\n");
        }
        return sb.ToString();
    }

    /// <summary>The same placeholder wherever a parameter appears, so the examples build a consistent cluster.</summary>
    public static string Placeholder(string parameter) => "changeme" + parameter.Replace("-", "", StringComparison.Ordinal);
}
