using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace HelixAgent.Deploy;

/// <summary>A piece of a resolved manifest expression: literal text, or the value of a secret parameter.</summary>
public abstract record Segment;
public sealed record Literal(string Text) : Segment;
public sealed record SecretRef(string Parameter) : Segment;

/// <summary>
/// The AppHost's publish manifest (<c>--publisher manifest</c>) with its <c>{resource.path}</c> expressions resolved
/// to in-cluster values: a binding's host is the resource's Service name, its port the Service port; non-secret
/// parameters take their published default; secret parameters stay references for the caller to place in Secrets.
/// </summary>
public sealed partial class AspireManifest
{
    /// <summary>Port of a project's http binding in the pod (the manifest leaves it to the deployer).</summary>
    public const int ProjectHttpPort = 8080;

    private readonly Dictionary<string, JsonElement> _resources;

    public AspireManifest(string json)
    {
        using var doc = JsonDocument.Parse(json);
        _resources = doc.RootElement.GetProperty("resources").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value.Clone(), StringComparer.Ordinal);
    }

    public IEnumerable<string> ResourceNames => _resources.Keys.Order(StringComparer.Ordinal);

    public string TypeOf(string resource) => _resources[resource].GetProperty("type").GetString()!;

    public JsonElement this[string resource] => _resources[resource];

    /// <summary>Environment variables of a resource, in ordinal order of their names.</summary>
    public IReadOnlyList<(string Name, string Expression)> Env(string resource) =>
        _resources[resource].TryGetProperty("env", out var env)
            ? env.EnumerateObject().Select(p => (p.Name, p.Value.GetString() ?? "")).OrderBy(e => e.Name, StringComparer.Ordinal).ToList()
            : [];

    /// <summary>The port a binding listens on inside the cluster (also the Service port).</summary>
    public int BindingPort(string resource, string binding)
    {
        var b = _resources[resource].GetProperty("bindings").GetProperty(binding);
        if (b.TryGetProperty("targetPort", out var target))
        {
            return target.GetInt32();
        }
        if (TypeOf(resource) == "project.v0")
        {
            return ProjectHttpPort;
        }
        throw new InvalidOperationException($"binding {resource}.{binding} has no targetPort");
    }

    public bool IsSecretParameter(string name) =>
        _resources.TryGetValue(name, out var r) && r.GetProperty("type").GetString() == "parameter.v0" &&
        r.GetProperty("inputs").GetProperty("value").TryGetProperty("secret", out var s) && s.GetBoolean();

    /// <summary>Resolves an expression into literal text and secret references (adjacent literals merged).</summary>
    public IReadOnlyList<Segment> Resolve(string expression) => ResolveNested(expression, depth: -1);

    private static void Append(List<Segment> list, Segment s)
    {
        if (s is Literal { Text.Length: 0 })
        {
            return;
        }
        if (s is Literal l && list.Count > 0 && list[^1] is Literal prev)
        {
            list[^1] = new Literal(prev.Text + l.Text);
            return;
        }
        list.Add(s);
    }

    private IEnumerable<Segment> ResolveReference(string reference, int depth)
    {
        if (depth > 16)
        {
            throw new InvalidOperationException($"manifest expression nests too deep at {{{reference}}}");
        }
        var parts = reference.Split('.');
        var name = parts[0];
        if (!_resources.TryGetValue(name, out var resource))
        {
            throw new InvalidOperationException($"manifest expression {{{reference}}} names no resource");
        }
        var type = resource.GetProperty("type").GetString();
        var path = string.Join('.', parts[1..]);
        switch (type, path)
        {
            case ("parameter.v0", "value"):
                if (IsSecretParameter(name))
                {
                    return [new SecretRef(name)];
                }
                var input = resource.GetProperty("inputs").GetProperty("value");
                if (input.TryGetProperty("default", out var def) && def.TryGetProperty("value", out var v))
                {
                    return [new Literal(v.GetString() ?? "")];
                }
                throw new InvalidOperationException(
                    $"parameter '{name}' is neither secret nor has a published default; give it one in the AppHost (publishValueAsDefault)");
            case ("annotated.string", "value"):
                var inner = ResolveNested(resource.GetProperty("value").GetString()!, depth);
                var filter = resource.TryGetProperty("filter", out var f) ? f.GetString() : null;
                // uri filter: literals are encoded here; secret values are used as they are (the secrets example
                // asks for URI-safe passwords)
                return filter == "uri"
                    ? inner.Select(s => s is Literal l ? new Literal(Uri.EscapeDataString(l.Text)) : s).ToList()
                    : inner;
            case (_, "connectionString"):
                return ResolveNested(resource.GetProperty("connectionString").GetString()!, depth);
            case ("container.v0" or "project.v0", _) when parts.Length == 4 && parts[1] == "bindings":
                var binding = parts[2];
                var port = BindingPort(name, binding);
                var scheme = resource.GetProperty("bindings").GetProperty(binding).GetProperty("scheme").GetString()!;
                return parts[3] switch
                {
                    "host" => [new Literal(name)],
                    "port" or "targetPort" => [new Literal(port.ToString(System.Globalization.CultureInfo.InvariantCulture))],
                    "scheme" => [new Literal(scheme)],
                    "url" => [new Literal($"{scheme}://{name}:{port}")],
                    _ => throw new InvalidOperationException($"unsupported binding property in {{{reference}}}"),
                };
            default:
                throw new InvalidOperationException($"unsupported manifest expression {{{reference}}} (type {type})");
        }
    }

    private IReadOnlyList<Segment> ResolveNested(string expression, int depth)
    {
        var result = new List<Segment>();
        var last = 0;
        foreach (Match m in Placeholder().Matches(expression))
        {
            Append(result, new Literal(expression[last..m.Index]));
            foreach (var s in ResolveReference(m.Groups[1].Value, depth + 1))
            {
                Append(result, s);
            }
            last = m.Index + m.Length;
        }
        Append(result, new Literal(expression[last..]));
        return result;
    }

    [GeneratedRegex(@"\{([A-Za-z0-9_.-]+)\}")]
    private static partial Regex Placeholder();
}
