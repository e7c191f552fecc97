using System.Text.RegularExpressions;
using k8s.Models;

namespace HelixAgent.Deploy.Tests;

/// <summary>Every object the kubectl lines of the runbook (docs/runbook.md), the other docs and the README name exists in the built output.</summary>
public sealed partial class RunbookTests
{
    /// <summary>kubectl lines that name no object of ours, each with the reason.</summary>
    private static readonly Dictionary<string, string> NamesNothing = new(StringComparer.Ordinal)
    {
        ["kubectl get pods -o wide"] = "lists everything",
        ["kubectl get secrets -o yaml > secrets-backup.yaml"] = "lists everything",
        ["kubectl get configmaps -o yaml > configmaps-backup.yaml"] = "lists everything",
        // scripts/render-k8s.sh writes it from aspirate-output and the operator's secrets (RenderedManifestTests)
        ["kubectl apply -f k8s/deployment.yaml"] = "a file path, see README (Kubernetes)",
        ["kubectl apply -k aspirate-output"] = "the output itself",
        ["kubectl kustomize aspirate-output"] = "the output itself",
        ["--dry-run=client -o yaml | kubectl apply -f -"] = "continuation of create secret tls",
    };

    public static TheoryData<string> KubectlLines() => new(Lines());

    private static List<string> Lines()
    {
        var data = new List<string>();
        foreach (var file in Directory.GetFiles(Path.Combine(KustomizeOutput.RepoRoot, "docs"), "*.md").Order(StringComparer.Ordinal).Append("README.md"))
        {
            var text = File.ReadAllText(Path.Combine(KustomizeOutput.RepoRoot, file)).Replace("\\\n", " ", StringComparison.Ordinal);
            var candidates = new List<string>();
            // lines of fenced code blocks, and inline code spans of three words or more (shorter ones are prose)
            var inFence = false;
            foreach (var raw in text.Split('\n'))
            {
                if (raw.TrimStart().StartsWith("```", StringComparison.Ordinal))
                {
                    inFence = !inFence;
                    continue;
                }
                if (inFence)
                {
                    candidates.Add(raw.Trim());
                }
                else
                {
                    candidates.AddRange(InlineCode().Matches(raw).Select(m => m.Groups[1].Value.Trim())
                        .Where(c => c.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length >= 3));
                }
            }
            foreach (var candidate in candidates)
            {
                var at = candidate.IndexOf("kubectl ", StringComparison.Ordinal);
                if (at < 0)
                {
                    continue;
                }
                var line = Regex.Replace(candidate[at..], @"\s+", " ");
                if (!data.Contains(line))
                {
                    data.Add(line);
                }
            }
        }
        return data;
    }

    [Fact]
    public void The_runbook_has_the_kubectl_lines_this_test_expects()
    {
        var lines = Lines();
        Assert.Contains(lines, l => l.Contains("kubectl set image deployment/helixagent helixagent=", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("kubectl create secret tls helixagent-tls", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("-l app=helixagent", StringComparison.Ordinal));
        Assert.True(lines.Count >= 12, string.Join("\n", lines));
    }

    [Theory]
    [MemberData(nameof(KubectlLines))]
    public void Kubectl_line_names_objects_that_exist(string line)
    {
        var output = KustomizeOutput.Instance;
        var deployments = output.OfType<V1Deployment>().ToDictionary(d => d.Metadata.Name);
        var checkedSomething = false;
        foreach (Match m in DeploymentRef().Matches(line))
        {
            Assert.True(deployments.ContainsKey(m.Groups["name"].Value), $"`{line}`: no Deployment {m.Groups["name"].Value}");
            checkedSomething = true;
        }
        foreach (Match m in LabelRef().Matches(line))
        {
            var (key, value) = (m.Groups["key"].Value, m.Groups["value"].Value);
            Assert.True(deployments.Values.Any(d => d.Spec.Template.Metadata.Labels.TryGetValue(key, out var v) && v == value),
                $"`{line}`: no pod template labelled {key}={value}");
            checkedSomething = true;
        }
        var image = SetImage().Match(line);
        if (image.Success)
        {
            var d = deployments[image.Groups["deployment"].Value];
            Assert.Contains(d.Spec.Template.Spec.Containers, c => c.Name == image.Groups["container"].Value);
            checkedSomething = true;
        }
        var secret = TlsSecret().Match(line);
        if (secret.Success)
        {
            // created by the operator; the API pods mount it (optionally) and restart picks it up
            var name = secret.Groups["name"].Value;
            Assert.Contains(deployments[KustomizeGenerator.ApiName].Spec.Template.Spec.Volumes, v => v.Secret?.SecretName == name);
            checkedSomething = true;
        }
        Assert.True(checkedSomething || NamesNothing.ContainsKey(line), $"`{line}` names nothing this test knows how to check");
    }

    [GeneratedRegex(@"`([^`]+)`")]
    private static partial Regex InlineCode();

    [GeneratedRegex(@"(?:\bdeployment/|\bdeploy/|\bdeployment )(?<name>[a-z0-9-]+)")]
    private static partial Regex DeploymentRef();

    [GeneratedRegex(@"-l (?<key>[a-z0-9./-]+)=(?<value>[a-z0-9-]+)")]
    private static partial Regex LabelRef();

    [GeneratedRegex(@"set image deployment/(?<deployment>[a-z0-9-]+) (?<container>[a-z0-9-]+)=")]
    private static partial Regex SetImage();

    [GeneratedRegex(@"create secret tls (?<name>[a-z0-9-]+)")]
    private static partial Regex TlsSecret();
}
