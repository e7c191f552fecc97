using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace HelixAgent.Deploy;

/// <summary>A YAML node for the deterministic writer: maps keep their insertion order, nothing else is implied.</summary>
public abstract record YamlNode
{
    public static implicit operator YamlNode(string value) => new YamlScalar(value);
    public static implicit operator YamlNode(int value) => new YamlNumber(value);
    public static implicit operator YamlNode(bool value) => new YamlBool(value);
}

public sealed record YamlScalar(string Value) : YamlNode;
public sealed record YamlNumber(long Value) : YamlNode;
public sealed record YamlBool(bool Value) : YamlNode;

public sealed record YamlSeq(List<YamlNode> Items) : YamlNode
{
    public YamlSeq(params YamlNode[] items) : this(items.ToList()) { }
}

/// <summary>An ordered map; <see cref="Comment"/> lines are written above a key.</summary>
public sealed record YamlMap : YamlNode, System.Collections.IEnumerable
{
    public List<(string Key, YamlNode Value, string? Comment)> Entries { get; } = [];

    public void Add(string key, YamlNode value) => Entries.Add((key, value, null));
    public void Add(string key, YamlNode value, string comment) => Entries.Add((key, value, comment));
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => Entries.GetEnumerator();
}

/// <summary>Block-style YAML with LF newlines, two-space indentation and conservative quoting: byte-stable output.</summary>
public static partial class YamlWriter
{
    public static string Write(YamlNode root, string? header = null)
    {
        var sb = new StringBuilder();
        if (header is not null)
        {
            foreach (var line in header.Split('\n'))
            {
                sb.Append(line.Length == 0 ? "#" : "# " + line).Append('\n');
            }
        }
        WriteBlock(sb, root, 0);
        return sb.ToString();
    }

    private static void WriteBlock(StringBuilder sb, YamlNode node, int indent)
    {
        switch (node)
        {
            case YamlMap map:
                foreach (var (key, value, comment) in map.Entries)
                {
                    WriteComment(sb, comment, indent);
                    sb.Append(' ', indent).Append(Scalar(key));
                    WriteValueAfterKey(sb, value, indent);
                }
                break;
            case YamlSeq seq:
                foreach (var item in seq.Items)
                {
                    sb.Append(' ', indent).Append('-');
                    if (item is YamlMap m && m.Entries.Count > 0)
                    {
                        // first entry on the dash line, the rest aligned under it
                        var first = true;
                        foreach (var (key, value, comment) in m.Entries)
                        {
                            if (!first)
                            {
                                WriteComment(sb, comment, indent + 2);
                                sb.Append(' ', indent + 2);
                            }
                            else
                            {
                                sb.Append(' ');
                            }
                            sb.Append(Scalar(key));
                            WriteValueAfterKey(sb, value, indent + 2);
                            first = false;
                        }
                    }
                    else if (item is YamlSeq s && s.Items.Count > 0)
                    {
                        sb.Append('\n');
                        WriteBlock(sb, s, indent + 2);
                    }
                    else
                    {
                        sb.Append(' ').Append(Inline(item)).Append('\n');
                    }
                }
                break;
            default:
                sb.Append(' ', indent).Append(Inline(node)).Append('\n');
                break;
        }
    }

    private static void WriteValueAfterKey(StringBuilder sb, YamlNode value, int indent)
    {
        switch (value)
        {
            case YamlMap m when m.Entries.Count > 0:
                sb.Append(":\n");
                WriteBlock(sb, m, indent + 2);
                break;
            case YamlSeq s when s.Items.Count > 0:
                sb.Append(":\n");
                WriteBlock(sb, s, indent + 2);
                break;
            default:
                sb.Append(": ").Append(Inline(value)).Append('\n');
                break;
        }
    }

    private static void WriteComment(StringBuilder sb, string? comment, int indent)
    {
        if (comment is null)
        {
            return;
        }
        foreach (var line in comment.Split('\n'))
        {
            sb.Append(' ', indent).Append(line.Length == 0 ? "#" : "# " + line).Append('\n');
        }
    }

    private static string Inline(YamlNode node) => node switch
    {
        YamlScalar s => Scalar(s.Value),
        YamlNumber n => n.Value.ToString(CultureInfo.InvariantCulture),
        YamlBool b => b.Value ? "true" : "false",
        YamlMap => "{}",
        YamlSeq => "[]",
        _ => throw new InvalidOperationException(node.GetType().Name),
    };

    /// <summary>Plain when unambiguous as a string in YAML 1.1 and 1.2, else double-quoted.</summary>
    public static string Scalar(string value)
    {
        if (PlainSafe().IsMatch(value) && !LooksTyped().IsMatch(value))
        {
            return value;
        }
        var sb = new StringBuilder("\"");
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\t': sb.Append("\\t"); break;
                case '\r': sb.Append("\\r"); break;
                default:
                    if (char.IsControl(c))
                    {
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        sb.Append(c);
                    }
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    [GeneratedRegex(@"^[A-Za-z0-9_/][A-Za-z0-9_./-]*$")]
    private static partial Regex PlainSafe();

    [GeneratedRegex(@"^([-+]?[0-9][0-9_.eExXoObB+-]*|[-+]?\.?(inf|Inf|INF|nan|NaN|NAN)|y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL|~|[0-9:]+)$")]
    private static partial Regex LooksTyped();
}
