using System.Globalization;
using System.Text;
using HelixAgent.Fakes;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Faults;

/// <summary>
/// The fault suite runs alone (no other test class beside it): it loads a 2-core machine on purpose and stops the
/// PostgreSQL and Redis servers it shares between its own tests, which must not slow down or break anyone else's.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FaultSuite
{
    public const string Name = "Fault suite";
}

/// <summary>Environment for a real <c>helixagent</c> process (<see cref="ApiProcess"/>) in front of fake upstreams.</summary>
internal static class FaultEnvironment
{
    public static Dictionary<string, string> For(TestDatabase db, RedisServer redis) => new()
    {
        ["ConnectionStrings__helixagent-db"] = db.ConnectionString,
        ["ConnectionStrings__redis"] = redis.ConnectionString,
        ["Gateway__ProbeIntervalSeconds"] = "0",
        ["Gateway__BackoffMs"] = "1",
        ["Ledger__FlushIntervalMs"] = "50",
        // Thousands of injected faults are each worth a warning; keep the captured log readable.
        ["Logging__LogLevel__Default"] = "Warning",
        ["Logging__LogLevel__HelixAgent.Api.Gateway.GatewayRouter"] = "Error",
    };

    /// <summary>Provider <paramref name="name"/> of the fake's protocol, serving <paramref name="model"/>.</summary>
    public static Dictionary<string, string> WithProvider(this Dictionary<string, string> env, string name, FakeUpstream fake, string model,
        double timeoutSeconds = 10, double firstTokenTimeoutSeconds = 10)
    {
        env[$"Providers__{name}__Type"] = fake.Protocol switch
        {
            FakeProtocol.OpenAI => "openai",
            FakeProtocol.Anthropic => "anthropic",
            FakeProtocol.Gemini => "gemini",
            _ => "ollama",
        };
        env[$"Providers__{name}__BaseUrl"] = fake.BaseUrl.ToString();
        env[$"Providers__{name}__ApiKey"] = $"upstream-key-{name}";
        env[$"Providers__{name}__Models__0"] = model;
        env[$"Providers__{name}__TimeoutSeconds"] = timeoutSeconds.ToString(CultureInfo.InvariantCulture);
        env[$"Providers__{name}__FirstTokenTimeoutSeconds"] = firstTokenTimeoutSeconds.ToString(CultureInfo.InvariantCulture);
        return env;
    }

    /// <summary>
    /// The process's own errors: its console ERROR and CRIT entries with their exception, except the Redis client's
    /// connection noise (expected while Redis is away).
    /// </summary>
    public static string LoggedErrors(this ApiProcess api, int chars = 4000)
    {
        string log;
        lock (api.Log)
        {
            log = api.Log.ToString();
        }
        var errors = new StringBuilder();
        var lines = log.Split('\n');
        for (var i = 0; i < lines.Length && errors.Length < chars; i++)
        {
            // "2026-11-29T13:18:27.123Z ERROR Category[id] message"
            var fields = lines[i].Split(' ', 4);
            if (fields.Length < 3 || fields[1] is not ("ERROR" or "CRIT") || fields[2].StartsWith("StackExchange.Redis", StringComparison.Ordinal))
            {
                continue;
            }
            errors.AppendLine(lines[i].TrimEnd());
            for (i++; i < lines.Length && lines[i].StartsWith(' '); i++)
            {
                errors.AppendLine(lines[i].TrimEnd());
            }
            i--;
        }
        return errors.ToString();
    }

    /// <summary>The process's own errors, then the end of its log: for assertion messages, so the exception behind a 500 is shown.</summary>
    public static string Diagnostics(this ApiProcess api, int chars = 4000)
    {
        var errors = api.LoggedErrors(chars);
        return $"errors logged by the process:\n{(errors.Length == 0 ? "(none)\n" : errors)}log tail:\n{api.LogTail(chars)}";
    }

    /// <summary>The end of the process's log, for assertion messages.</summary>
    public static string LogTail(this ApiProcess api, int chars = 4000)
    {
        lock (api.Log)
        {
            var log = api.Log.ToString();
            return log.Length > chars ? "..." + log[^chars..] : log;
        }
    }
}
