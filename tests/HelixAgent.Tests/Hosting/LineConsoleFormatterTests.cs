using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Console;

namespace HelixAgent.Tests.Hosting;

/// <summary>The console line format as registered by the service defaults (resolved from the container, not built by hand).</summary>
public sealed class LineConsoleFormatterTests
{
    private static string Format(LogLevel level, string message, Exception? exception, params object[] scopes)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.ConfigureConsoleLogging();
        using var host = builder.Build();
        var formatter = host.Services.GetServices<ConsoleFormatter>().Single(f => f.Name == LineConsoleFormatter.FormatterName);
        var scopeProvider = new LoggerExternalScopeProvider();
        var pushed = scopes.Select(s => scopeProvider.Push(s)).ToList();
        using var writer = new StringWriter();
        formatter.Write(new LogEntry<string>(level, "HelixAgent.Worker.Jobs.JobRunner", new EventId(2), "state", exception, (_, _) => message),
            scopeProvider, writer);
        pushed.Reverse();
        pushed.ForEach(p => p.Dispose());
        return writer.ToString();
    }

    [Fact]
    public void The_service_defaults_make_it_the_console_formatter_unless_configuration_names_another()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.ConfigureConsoleLogging();
        using (var host = builder.Build())
        {
            Assert.Equal("helixagent", host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<ConsoleLoggerOptions>>().Value.FormatterName);
        }

        var systemd = Host.CreateApplicationBuilder();
        systemd.Configuration["Logging:Console:FormatterName"] = "systemd";
        systemd.ConfigureConsoleLogging();
        using (var host = systemd.Build())
        {
            Assert.Equal("systemd", host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<ConsoleLoggerOptions>>().Value.FormatterName);
        }
    }

    [Fact]
    public void An_exception_with_a_multi_line_message_keeps_grep_on_one_line_and_its_stack_below_indented()
    {
        Exception thrown;
        try
        {
            throw new InvalidOperationException("first line\nsecond line");
        }
        catch (InvalidOperationException ex)
        {
            thrown = ex;
        }

        var text = Format(LogLevel.Error, "Job retention failed\r\n(3 in a row)", thrown,
            new Dictionary<string, object?> { ["RequestId"] = "outer", ["SpanId"] = "dropped" },
            new Dictionary<string, object?> { ["RequestId"] = "inner", ["Model"] = "m" });

        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ERROR HelixAgent\.Worker\.Jobs\.JobRunner\[2\] Job retention failed \(3 in a row\) " +
            @"\{RequestId=inner, Model=m\} exception: System\.InvalidOperationException: first line second line$", lines[0]);
        Assert.True(lines.Length > 2, text);
        Assert.All(lines.Skip(1), l => Assert.StartsWith("    ", l));
        Assert.Contains(lines, l => l.Contains(nameof(An_exception_with_a_multi_line_message_keeps_grep_on_one_line_and_its_stack_below_indented), StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(LogLevel.Information, "INFO")]
    [InlineData(LogLevel.Warning, "WARN")]
    [InlineData(LogLevel.Error, "ERROR")]
    [InlineData(LogLevel.Critical, "CRIT")]
    public void Each_level_prints_as_the_word_operators_grep_for(LogLevel level, string word)
    {
        var text = Format(level, "message", null);
        Assert.Equal(word, text.Split(' ')[1]);
        Assert.EndsWith("] message\n", text);
    }
}
