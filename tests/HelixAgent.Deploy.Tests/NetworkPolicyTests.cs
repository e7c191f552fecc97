using k8s.Models;

namespace HelixAgent.Deploy.Tests;

/// <summary>
/// A small evaluator of NetworkPolicy semantics (networking.k8s.io/v1): a pod selected by a policy of a type is
/// isolated for that direction, and a connection is allowed only if the source's egress and the destination's ingress
/// each allow it (or that side is not isolated). Peers: podSelector (in the policy's namespace), namespaceSelector
/// (with an optional podSelector), ipBlock; ports with protocols; an empty list of ports allows every port.
/// </summary>
internal sealed record Endpoint(string Namespace, IReadOnlyDictionary<string, string> NamespaceLabels, IReadOnlyDictionary<string, string>? PodLabels, string? Ip = null)
{
    public static Endpoint Pod(string app, string ns = "helixagent") => new(ns, new Dictionary<string, string> { ["kubernetes.io/metadata.name"] = ns },
        new Dictionary<string, string> { ["app"] = app });

    public static Endpoint Dns => new("kube-system", new Dictionary<string, string> { ["kubernetes.io/metadata.name"] = "kube-system" },
        new Dictionary<string, string> { ["k8s-app"] = "kube-dns" });

    public static Endpoint Internet => new("", new Dictionary<string, string>(), null, "203.0.113.10");
}

internal static class NetworkPolicyEvaluator
{
    public static bool Allowed(IReadOnlyList<V1NetworkPolicy> policies, string policyNamespace, Endpoint from, Endpoint to, int port, string protocol = "TCP")
    {
        return Side(from, "Egress", p => p.Spec.Egress?.Select(r => ((IList<V1NetworkPolicyPeer>?)r.To, (IList<V1NetworkPolicyPort>?)r.Ports)))
            && Side(to, "Ingress", p => p.Spec.Ingress?.Select(r => ((IList<V1NetworkPolicyPeer>?)r.FromProperty, (IList<V1NetworkPolicyPort>?)r.Ports)));

        bool Side(Endpoint pod, string type, Func<V1NetworkPolicy, IEnumerable<(IList<V1NetworkPolicyPeer>? Peers, IList<V1NetworkPolicyPort>? Ports)>?> rules)
        {
            if (pod.PodLabels is null)
            {
                return true; // outside the cluster: no policy applies to it
            }
            var selecting = policies.Where(p => pod.Namespace == policyNamespace && Matches(p.Spec.PodSelector, pod.PodLabels)
                && (p.Spec.PolicyTypes ?? ["Ingress"]).Contains(type)).ToList();
            if (selecting.Count == 0)
            {
                return true;
            }
            var other = type == "Egress" ? to : from;
            return selecting.Any(p => (rules(p) ?? []).Any(r =>
                (r.Peers is null || r.Peers.Count == 0 || r.Peers.Any(peer => PeerMatches(peer, other)))
                && (r.Ports is null || r.Ports.Count == 0 || r.Ports.Any(p => (p.Protocol ?? "TCP") == protocol && (p.Port is null || p.Port.Value == port.ToString(System.Globalization.CultureInfo.InvariantCulture))))));
        }

        bool PeerMatches(V1NetworkPolicyPeer peer, Endpoint other)
        {
            if (peer.IpBlock is { } block)
            {
                return other.Ip is not null && block.Cidr == "0.0.0.0/0" && (block.Except is null || block.Except.Count == 0);
            }
            if (other.PodLabels is null)
            {
                return false;
            }
            var nsOk = peer.NamespaceSelector is null ? other.Namespace == policyNamespace : Matches(peer.NamespaceSelector, other.NamespaceLabels);
            var podOk = peer.PodSelector is null || Matches(peer.PodSelector, other.PodLabels);
            return nsOk && podOk;
        }
    }

    private static bool Matches(V1LabelSelector? selector, IReadOnlyDictionary<string, string> labels) =>
        selector is null || ((selector.MatchLabels ?? new Dictionary<string, string>()).All(kv => labels.TryGetValue(kv.Key, out var v) && v == kv.Value)
            && (selector.MatchExpressions is null || selector.MatchExpressions.Count == 0));
}

public sealed class NetworkPolicyTests
{
    private static IReadOnlyList<V1NetworkPolicy> Policies => [.. KustomizeOutput.Instance.OfType<V1NetworkPolicy>()];

    private const string Ns = "helixagent";

    public static TheoryData<string, string, string, int, string, bool> Flows => new()
    {
        // from, to, namespace of the source, port, protocol, allowed
        { "client", "helixagent", "elsewhere", 8080, "TCP", true },
        { "helixagent", "postgres", Ns, 5432, "TCP", true },
        { "helixagent", "redis", Ns, 6379, "TCP", true },
        { "helixagent", "dns", Ns, 53, "UDP", true },
        { "helixagent", "internet", Ns, 443, "TCP", true },
        { "helixagent", "internet", Ns, 80, "TCP", false },
        { "helixagent", "postgres", Ns, 6379, "TCP", false },
        { "helixagent-worker", "postgres", Ns, 5432, "TCP", true },
        { "helixagent-worker", "dns", Ns, 53, "UDP", true },
        { "helixagent-worker", "redis", Ns, 6379, "TCP", false },
        { "helixagent-worker", "internet", Ns, 443, "TCP", false },
        { "prometheus", "helixagent-worker", "monitoring", 8080, "TCP", true },
        { "intruder", "postgres", "elsewhere", 5432, "TCP", false },
        { "intruder", "postgres", Ns, 5432, "TCP", false },
        { "intruder", "redis", Ns, 6379, "TCP", false },
        { "postgres", "internet", Ns, 443, "TCP", false },
        { "redis", "helixagent", Ns, 8080, "TCP", false },
    };

    private static Endpoint At(string name, string ns) => name switch
    {
        "dns" => Endpoint.Dns,
        "internet" => Endpoint.Internet,
        _ => Endpoint.Pod(name, ns),
    };

    [Theory]
    [MemberData(nameof(Flows))]
    public void The_rendered_network_policies_allow_exactly_the_flows_the_gateway_needs(string from, string to, string fromNamespace, int port, string protocol, bool allowed)
    {
        var source = At(from, fromNamespace);
        var destination = At(to, Ns);
        Assert.Equal(allowed, NetworkPolicyEvaluator.Allowed(Policies, Ns, source, destination, port, protocol));
    }

    [Fact]
    public void Every_pod_of_the_app_is_isolated_both_ways_by_its_own_policy()
    {
        var pods = KustomizeOutput.Instance.OfType<V1Deployment>().Select(d => d.Spec.Template.Metadata.Labels["app"])
            .Concat(KustomizeOutput.Instance.OfType<V1StatefulSet>().Select(s => s.Spec.Template.Metadata.Labels["app"]));
        foreach (var app in pods)
        {
            var policy = Assert.Single(Policies, p => p.Spec.PodSelector.MatchLabels["app"] == app);
            Assert.Equal(["Ingress", "Egress"], policy.Spec.PolicyTypes);
        }
        // A pod without any policy would be open: the evaluator says so, so the table above means something.
        Assert.True(NetworkPolicyEvaluator.Allowed([], Ns, Endpoint.Pod("intruder"), Endpoint.Pod("postgres"), 5432));
    }
}
