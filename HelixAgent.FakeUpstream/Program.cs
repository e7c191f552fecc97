using System.Globalization;
using System.Runtime.InteropServices;

namespace HelixAgent.Fakes;

/// <summary>
/// <c>helixagent-fake-upstream --protocol anthropic [--port 9099] [--reply "text"] [--chunk-delay-ms 20] [--latency-ms 5]</c>.
/// The port also comes from <c>PORT</c> (set by the AppHost). Prints the base URL a provider config uses and runs
/// until stopped. <c>--proxy-to URL --port N</c> runs the benchmark's pass-through proxy instead (<see cref="NullProxy"/>).
/// </summary>
internal static class FakeUpstreamProgram
{
    public static async Task<int> Main(string[] args)
    {
        var options = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            options[args[i].TrimStart('-')] = args[i + 1];
        }
        var port = int.Parse(options.GetValueOrDefault("port") ?? Environment.GetEnvironmentVariable("PORT") ?? "0", CultureInfo.InvariantCulture);
        if (options.TryGetValue("proxy-to", out var target))
        {
            await NullProxy.RunAsync(new Uri(target), port);
            return 0;
        }
        if (!Enum.TryParse<FakeProtocol>(options.GetValueOrDefault("protocol", "openai"), ignoreCase: true, out var protocol))
        {
            Console.Error.WriteLine("usage: helixagent-fake-upstream --protocol openai|anthropic|gemini|ollama [--port N] [--reply TEXT] [--chunk-delay-ms N] [--latency-ms N]\n" +
                "       helixagent-fake-upstream --proxy-to URL --port N");
            return 2;
        }
        await using var fake = await FakeUpstream.StartAsync(protocol, port);
        fake.RecordRequests = false; // a long-running server: count requests, do not keep them
        if (options.TryGetValue("reply", out var reply))
        {
            fake.Reply = reply;
        }
        if (options.TryGetValue("chunk-delay-ms", out var delay))
        {
            fake.ChunkDelay = TimeSpan.FromMilliseconds(double.Parse(delay, CultureInfo.InvariantCulture));
        }
        if (options.TryGetValue("latency-ms", out var latency))
        {
            fake.Latency = TimeSpan.FromMilliseconds(double.Parse(latency, CultureInfo.InvariantCulture));
        }
        Console.WriteLine($"fake {protocol} upstream (not a real provider) at {fake.BaseUrl}");
        var stop = new TaskCompletionSource();
        // The host inside the fake (started, not run) swallows SIGTERM for its own lifetime; stop on it here.
        void Stop(PosixSignalContext context)
        {
            context.Cancel = true;
            stop.TrySetResult();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var sigquit = PosixSignalRegistration.Create(PosixSignal.SIGQUIT, Stop);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => stop.TrySetResult();
        await stop.Task;
        return 0;
    }
}
