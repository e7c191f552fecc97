using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.Hosting;

/// <summary>
/// The console format of every HelixAgent process unless <c>Logging:Console:FormatterName</c> names another (the
/// systemd units use <c>systemd</c>): one line per entry with the level in capitals, so the runbook's
/// <c>kubectl logs -l app=helixagent --since=10m | grep ERROR</c> finds the errors and <c>grep WARN</c> the warnings.
/// <code>
/// 2026-11-29T13:18:27.123Z ERROR HelixAgent.Api.Gateway.GatewayRouter[30] request failed: ... {TraceId=..., RequestId=..., Model=..., KeyName=...}
/// </code>
/// An exception's type and message end the line; its full text follows on lines indented by four spaces.
/// Scope values print with their names, a later scope's value winning on a repeated name (the gateway's
/// <c>RequestId</c> over Kestrel's); <c>SpanId</c>, <c>ParentId</c>, <c>ConnectionId</c> and <c>RequestPath</c> are left
/// out, <c>TraceId</c> (the dashboard's key) stays.
/// </summary>
public sealed class LineConsoleFormatter : ConsoleFormatter, IDisposable
{
    public const string FormatterName = "helixagent";

    private static readonly HashSet<string> DroppedScopeNames =
        ["{OriginalFormat}", "SpanId", "ParentId", "ConnectionId", "RequestPath"];

    private readonly IDisposable? _reload;
    private LineConsoleFormatterOptions _options;

    public LineConsoleFormatter(IOptionsMonitor<LineConsoleFormatterOptions> options) : base(FormatterName)
    {
        _options = options.CurrentValue;
        _reload = options.OnChange(o => _options = o);
    }

    /// <summary>The word each level prints as: <c>grep ERROR</c> finds errors, <c>grep -E 'ERROR|CRIT'</c> everything worse.</summary>
    public static string LevelName(LogLevel level) => level switch
    {
        LogLevel.Trace => "TRACE",
        LogLevel.Debug => "DEBUG",
        LogLevel.Information => "INFO",
        LogLevel.Warning => "WARN",
        LogLevel.Error => "ERROR",
        LogLevel.Critical => "CRIT",
        _ => "NONE",
    };

    public override void Write<TState>(in LogEntry<TState> logEntry, IExternalScopeProvider? scopeProvider, TextWriter textWriter)
    {
        var message = logEntry.Formatter(logEntry.State, logEntry.Exception);
        var exception = logEntry.Exception;
        if (string.IsNullOrEmpty(message) && exception is null)
        {
            return;
        }
        textWriter.Write(DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture));
        textWriter.Write(' ');
        textWriter.Write(LevelName(logEntry.LogLevel));
        textWriter.Write(' ');
        textWriter.Write(logEntry.Category);
        textWriter.Write('[');
        textWriter.Write(logEntry.EventId.Id.ToString(CultureInfo.InvariantCulture));
        textWriter.Write("] ");
        WriteOneLine(textWriter, message);
        if (_options.IncludeScopes && scopeProvider is not null)
        {
            WriteScopes(textWriter, scopeProvider);
        }
        if (exception is not null)
        {
            textWriter.Write(" exception: ");
            textWriter.Write(exception.GetType().FullName);
            textWriter.Write(": ");
            WriteOneLine(textWriter, exception.Message);
            textWriter.Write('\n');
            foreach (var line in exception.ToString().Split('\n'))
            {
                textWriter.Write("    ");
                textWriter.Write(line.TrimEnd('\r'));
                textWriter.Write('\n');
            }
            return;
        }
        textWriter.Write('\n');
    }

    /// <summary>A message with line breaks would split one entry over lines that <c>grep</c> then reads apart.</summary>
    private static void WriteOneLine(TextWriter writer, string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return;
        }
        if (text.AsSpan().IndexOfAny('\r', '\n') < 0)
        {
            writer.Write(text);
            return;
        }
        writer.Write(text.ReplaceLineEndings(" "));
    }

    private static void WriteScopes(TextWriter writer, IExternalScopeProvider scopes)
    {
        // Later scopes win on a repeated name: the gateway's RequestId (the x-request-id of the ledger) replaces
        // Kestrel's connection-based one.
        var values = new List<KeyValuePair<string, string>>();
        scopes.ForEachScope(static (scope, list) =>
        {
            if (scope is IEnumerable<KeyValuePair<string, object?>> pairs)
            {
                foreach (var (name, value) in pairs)
                {
                    if (DroppedScopeNames.Contains(name))
                    {
                        continue;
                    }
                    var text = Convert.ToString(value, CultureInfo.InvariantCulture) ?? "";
                    var at = list.FindIndex(p => p.Key == name);
                    if (at >= 0)
                    {
                        list[at] = new(name, text);
                    }
                    else
                    {
                        list.Add(new(name, text));
                    }
                }
            }
            else if (scope is not null)
            {
                list.Add(new("Scope", Convert.ToString(scope, CultureInfo.InvariantCulture) ?? ""));
            }
        }, values);
        if (values.Count == 0)
        {
            return;
        }
        writer.Write(" {");
        for (var i = 0; i < values.Count; i++)
        {
            if (i > 0)
            {
                writer.Write(", ");
            }
            writer.Write(values[i].Key);
            writer.Write('=');
            WriteOneLine(writer, values[i].Value);
        }
        writer.Write('}');
    }

    public void Dispose() => _reload?.Dispose();
}

/// <summary><c>Logging:Console:FormatterOptions</c>. Scopes are on by default: they carry the request id, model and key name.</summary>
public sealed class LineConsoleFormatterOptions : ConsoleFormatterOptions
{
    public LineConsoleFormatterOptions() => IncludeScopes = true;
}
