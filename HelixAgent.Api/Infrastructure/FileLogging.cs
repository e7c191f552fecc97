using Serilog;
using Serilog.Formatting.Compact;

namespace HelixAgent.Api.Infrastructure;

/// <summary>
/// Optional log file (<c>Logging:File:Path</c>; off in the binary's defaults, set to <c>/var/log/helixagent/app.log</c> by
/// the container image and the systemd unit): one JSON object per line with the rendered message, so the runbook's
/// <c>grep "provider error" /var/log/helixagent/app.log</c> finds provider failures, and with the request's scope
/// (request id, key name, model). Rolls to <c>app_001.log</c>... at <c>Logging:File:MaxBytes</c>, keeping
/// <c>Logging:File:Keep</c> files.
/// </summary>
internal static class FileLogging
{
    public static IHostApplicationBuilder AddFileLogging(this IHostApplicationBuilder builder)
    {
        var path = builder.Configuration["Logging:File:Path"];
        if (string.IsNullOrWhiteSpace(path))
        {
            return builder;
        }
        var maxBytes = builder.Configuration.GetValue<long?>("Logging:File:MaxBytes") ?? 100L * 1024 * 1024;
        var keep = builder.Configuration.GetValue<int?>("Logging:File:Keep") ?? 5;
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException or IOException)
        {
            // A read-only or missing log volume must not stop the gateway: say so and log to the console only.
            Console.Error.WriteLine($"helixagent: file logging disabled, cannot create the folder of {path}: {ex.Message}");
            return builder;
        }
        var logger = new LoggerConfiguration()
            .MinimumLevel.Information()
            .MinimumLevel.Override("Microsoft.AspNetCore", Serilog.Events.LogEventLevel.Warning)
            .MinimumLevel.Override("System.Net.Http", Serilog.Events.LogEventLevel.Warning)
            .Enrich.FromLogContext()
            .WriteTo.File(new RenderedCompactJsonFormatter(), path, fileSizeLimitBytes: maxBytes, rollOnFileSizeLimit: true,
                retainedFileCountLimit: keep, shared: true, flushToDiskInterval: TimeSpan.FromSeconds(1))
            .CreateLogger();
        builder.Logging.AddSerilog(logger, dispose: true);
        return builder;
    }
}

/// <summary>The logging scope of one gateway request: who asked for what (never the key itself).</summary>
internal sealed class RequestLogScope(string requestId, string model, string? keyName) : IReadOnlyList<KeyValuePair<string, object?>>
{
    public KeyValuePair<string, object?> this[int index] => index switch
    {
        0 => new("RequestId", requestId),
        1 => new("Model", model),
        2 => new("KeyName", keyName),
        _ => throw new ArgumentOutOfRangeException(nameof(index)),
    };

    public int Count => 3;

    public IEnumerator<KeyValuePair<string, object?>> GetEnumerator()
    {
        for (var i = 0; i < Count; i++)
        {
            yield return this[i];
        }
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

    public override string ToString() => $"RequestId:{requestId} Model:{model} KeyName:{keyName}";
}
