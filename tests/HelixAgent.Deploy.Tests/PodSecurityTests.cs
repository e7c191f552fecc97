using k8s.Models;

namespace HelixAgent.Deploy.Tests;

/// <summary>
/// The Pod Security Standard "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
/// baseline controls included, as a checker of pod specs: what a namespace labelled
/// <c>pod-security.kubernetes.io/enforce: restricted</c> admits. Each control returns a violation naming the field.
/// </summary>
internal static class RestrictedProfile
{
    private static readonly HashSet<string> SafeSysctls =
    [
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
    ];

    private static readonly HashSet<string> BaselineCapabilities =
    [
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID",
        "SETPCAP", "SETUID", "SYS_CHROOT",
    ];

    public static List<string> Violations(V1PodSpec pod)
    {
        var v = new List<string>();
        var podSc = pod.SecurityContext;
        var containers = (pod.InitContainers ?? []).Concat(pod.Containers ?? []).Select(c => (c.Name, c.SecurityContext, c.Ports)).ToList();

        // baseline: host namespaces, HostProcess, privileged, capabilities, hostPath, host ports, AppArmor, SELinux, /proc, seccomp, sysctls
        if (pod.HostNetwork == true) v.Add("spec.hostNetwork");
        if (pod.HostPID == true) v.Add("spec.hostPID");
        if (pod.HostIPC == true) v.Add("spec.hostIPC");
        if (podSc?.WindowsOptions?.HostProcess == true) v.Add("spec.securityContext.windowsOptions.hostProcess");
        if (podSc?.SeLinuxOptions is { } podSe && (podSe.User is not null || podSe.Role is not null
            || podSe.Type is not (null or "" or "container_t" or "container_init_t" or "container_kvm_t" or "container_engine_t")))
        {
            v.Add("spec.securityContext.seLinuxOptions");
        }
        if (podSc?.Sysctls?.Any(s => !SafeSysctls.Contains(s.Name)) == true) v.Add("spec.securityContext.sysctls");
        foreach (var (name, sc, ports) in containers)
        {
            var at = $"containers[{name}]";
            if (sc?.WindowsOptions?.HostProcess == true) v.Add($"{at}.securityContext.windowsOptions.hostProcess");
            if (sc?.Privileged == true) v.Add($"{at}.securityContext.privileged");
            if (sc?.Capabilities?.Add?.Any(c => !BaselineCapabilities.Contains(c)) == true) v.Add($"{at}.securityContext.capabilities.add (baseline)");
            if (ports?.Any(p => p.HostPort is > 0) == true) v.Add($"{at}.ports.hostPort");
            if (sc?.AppArmorProfile is { } aa && aa.Type is not ("RuntimeDefault" or "Localhost")) v.Add($"{at}.securityContext.appArmorProfile");
            if (sc?.SeLinuxOptions is { } se && (se.User is not null || se.Role is not null
                || se.Type is not (null or "" or "container_t" or "container_init_t" or "container_kvm_t" or "container_engine_t")))
            {
                v.Add($"{at}.securityContext.seLinuxOptions");
            }
            if (sc?.ProcMount is { } proc && proc != "Default") v.Add($"{at}.securityContext.procMount");
        }

        // restricted: volume types
        foreach (var volume in pod.Volumes ?? [])
        {
            var allowed = volume.ConfigMap is not null || volume.Csi is not null || volume.DownwardAPI is not null || volume.EmptyDir is not null
                || volume.Ephemeral is not null || volume.PersistentVolumeClaim is not null || volume.Projected is not null || volume.Secret is not null;
            if (!allowed) v.Add($"spec.volumes[{volume.Name}] (type)");
        }

        // seccomp: never Unconfined; restricted wants RuntimeDefault or Localhost on the pod or on every container
        if (podSc?.SeccompProfile?.Type == "Unconfined") v.Add("spec.securityContext.seccompProfile");
        var podSeccomp = podSc?.SeccompProfile?.Type is "RuntimeDefault" or "Localhost";
        foreach (var (name, sc, _) in containers)
        {
            var at = $"containers[{name}]";
            if (sc?.SeccompProfile?.Type == "Unconfined") v.Add($"{at}.securityContext.seccompProfile");
            if (!podSeccomp && sc?.SeccompProfile?.Type is not ("RuntimeDefault" or "Localhost")) v.Add($"{at}.securityContext.seccompProfile (unset)");

            // privilege escalation, non-root, non-root user, capabilities
            if (sc?.AllowPrivilegeEscalation != false) v.Add($"{at}.securityContext.allowPrivilegeEscalation");
            var nonRoot = sc?.RunAsNonRoot ?? podSc?.RunAsNonRoot;
            if (nonRoot != true) v.Add($"{at}.securityContext.runAsNonRoot");
            if ((sc?.RunAsUser ?? podSc?.RunAsUser) == 0) v.Add($"{at}.securityContext.runAsUser");
            if (sc?.Capabilities?.Drop?.Contains("ALL") != true) v.Add($"{at}.securityContext.capabilities.drop");
            if (sc?.Capabilities?.Add?.Any(c => c != "NET_BIND_SERVICE") == true) v.Add($"{at}.securityContext.capabilities.add");
        }
        if (podSc?.RunAsUser == 0) v.Add("spec.securityContext.runAsUser");
        return v;
    }
}

public sealed class PodSecurityTests
{
    private static KustomizeOutput Output => KustomizeOutput.Instance;

    private static IEnumerable<(string Name, V1PodSpec Spec)> Pods() =>
        Output.OfType<V1Deployment>().Select(d => (d.Metadata.Name, d.Spec.Template.Spec))
            .Concat(Output.OfType<V1StatefulSet>().Select(s => (s.Metadata.Name, s.Spec.Template.Spec)));

    /// <summary>A pod that meets the profile, for the checker's own tests to break one control at a time.</summary>
    private static V1PodSpec Compliant() => new()
    {
        SecurityContext = new V1PodSecurityContext { RunAsNonRoot = true, RunAsUser = 1654, SeccompProfile = new V1SeccompProfile { Type = "RuntimeDefault" } },
        Containers =
        [
            new V1Container
            {
                Name = "app",
                SecurityContext = new V1SecurityContext { AllowPrivilegeEscalation = false, Capabilities = new V1Capabilities { Drop = ["ALL"] } },
            },
        ],
        Volumes = [new V1Volume { Name = "tmp", EmptyDir = new V1EmptyDirVolumeSource() }],
    };

    public static TheoryData<string, string> Breaks => new()
    {
        { "hostNetwork", "spec.hostNetwork" },
        { "hostPID", "spec.hostPID" },
        { "hostIPC", "spec.hostIPC" },
        { "privileged", "securityContext.privileged" },
        { "capability SYS_ADMIN", "capabilities.add (baseline)" },
        { "capability NET_RAW", "capabilities.add" },
        { "capabilities not dropped", "capabilities.drop" },
        { "hostPath volume", "(type)" },
        { "host port", "ports.hostPort" },
        { "procMount Unmasked", "procMount" },
        { "seccomp Unconfined", "seccompProfile" },
        { "seccomp unset", "seccompProfile (unset)" },
        { "privilege escalation", "allowPrivilegeEscalation" },
        { "runAsNonRoot unset", "runAsNonRoot" },
        { "runAsUser 0", "runAsUser" },
        { "unsafe sysctl", "sysctls" },
        { "SELinux user", "seLinuxOptions" },
        { "AppArmor unconfined", "appArmorProfile" },
        { "HostProcess", "hostProcess" },
    };

    [Theory]
    [MemberData(nameof(Breaks))]
    public void The_checker_rejects_a_pod_that_breaks_each_control_of_the_restricted_profile(string control, string field)
    {
        Assert.Empty(RestrictedProfile.Violations(Compliant()));
        var pod = Compliant();
        var c = pod.Containers[0];
        switch (control)
        {
            case "hostNetwork": pod.HostNetwork = true; break;
            case "hostPID": pod.HostPID = true; break;
            case "hostIPC": pod.HostIPC = true; break;
            case "privileged": c.SecurityContext.Privileged = true; break;
            case "capability SYS_ADMIN": c.SecurityContext.Capabilities.Add = ["SYS_ADMIN"]; break;
            case "capability NET_RAW": c.SecurityContext.Capabilities.Add = ["NET_RAW"]; break;
            case "capabilities not dropped": c.SecurityContext.Capabilities.Drop = []; break;
            case "hostPath volume": pod.Volumes.Add(new V1Volume { Name = "host", HostPath = new V1HostPathVolumeSource { Path = "/" } }); break;
            case "host port": c.Ports = [new V1ContainerPort { ContainerPort = 8080, HostPort = 8080 }]; break;
            case "procMount Unmasked": c.SecurityContext.ProcMount = "Unmasked"; break;
            case "seccomp Unconfined": c.SecurityContext.SeccompProfile = new V1SeccompProfile { Type = "Unconfined" }; break;
            case "seccomp unset": pod.SecurityContext.SeccompProfile = null; break;
            case "privilege escalation": c.SecurityContext.AllowPrivilegeEscalation = null; break;
            case "runAsNonRoot unset": pod.SecurityContext.RunAsNonRoot = null; break;
            case "runAsUser 0": c.SecurityContext.RunAsUser = 0; break;
            case "unsafe sysctl": pod.SecurityContext.Sysctls = [new V1Sysctl { Name = "kernel.msgmax", Value = "1" }]; break;
            case "SELinux user": c.SecurityContext.SeLinuxOptions = new V1SELinuxOptions { User = "root" }; break;
            case "AppArmor unconfined": c.SecurityContext.AppArmorProfile = new V1AppArmorProfile { Type = "Unconfined" }; break;
            case "HostProcess": c.SecurityContext.WindowsOptions = new V1WindowsSecurityContextOptions { HostProcess = true }; break;
        }
        Assert.Contains(RestrictedProfile.Violations(pod), violation => violation.EndsWith(field, StringComparison.Ordinal));
    }

    [Fact]
    public void Every_pod_template_of_the_rendered_output_meets_the_restricted_profile()
    {
        var pods = Pods().ToList();
        Assert.Equal(["helixagent", "helixagent-worker", "postgres", "redis"], pods.Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.All(pods, p => Assert.True(RestrictedProfile.Violations(p.Spec) is { Count: 0 },
            $"{p.Name}: {string.Join(", ", RestrictedProfile.Violations(p.Spec))}"));
    }

    [Fact]
    public void Each_pod_runs_as_the_user_its_image_really_uses_and_mounts_no_service_account_token()
    {
        foreach (var (name, spec) in Pods())
        {
            var expected = name.StartsWith("helixagent", StringComparison.Ordinal) ? 1654 : 999; // $APP_UID; the postgres and redis images' own user
            Assert.Equal((expected, expected, expected), (spec.SecurityContext.RunAsUser, spec.SecurityContext.RunAsGroup, spec.SecurityContext.FsGroup));
            Assert.False(spec.AutomountServiceAccountToken);
        }
        var dockerfile = File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, "Dockerfile"));
        Assert.Contains("USER $APP_UID", dockerfile);
    }

    [Fact]
    public void The_api_replicas_spread_over_nodes_and_zones_without_blocking_scheduling()
    {
        var spread = Output.Deployment("helixagent").Spec.Template.Spec.TopologySpreadConstraints;
        Assert.Equal(["kubernetes.io/hostname", "topology.kubernetes.io/zone"], spread.Select(s => s.TopologyKey));
        Assert.All(spread, s =>
        {
            Assert.Equal(("ScheduleAnyway", 1), (s.WhenUnsatisfiable, s.MaxSkew));
            Assert.Equal("helixagent", s.LabelSelector.MatchLabels["app"]);
        });
    }
}
