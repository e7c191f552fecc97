using Aspire.Hosting;

namespace HelixAgent.AppHost.Tests;

/// <summary>
/// The whole AppHost as a developer without a container runtime runs it: <c>Infrastructure:Mode</c> left at its
/// default (auto), which finds no runtime answering and falls back to Debian's postgres and redis-server under Aspire.
/// Its own ports (randomized, so a developer's running AppHost on 8080 does not collide), data folder and log file.
/// One app for the collection (teardown costs ~13 s).
/// </summary>
public sealed class LocalAppHostFixture : IAsyncLifetime
{
    public static readonly TimeSpan StartTimeout = TimeSpan.FromMinutes(3);

    public DistributedApplication App { get; private set; } = null!;
    public string DataDirectory { get; } = Path.Combine(Path.GetTempPath(), "helixagent-e2e-" + Guid.NewGuid().ToString("N"));

    /// <summary>The API's log file for this run (not the runbook's /var/log/helixagent/app.log a developer's AppHost writes).</summary>
    public string LogFile => Path.Combine(DataDirectory, "logs", "app.log");

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(DataDirectory);
        Environment.SetEnvironmentVariable("HELIXAGENT_DATA_DIR", DataDirectory);
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.HelixAgent_AppHost>(
            ["DcpPublisher:RandomizePorts=true", "Demo:FakeUpstreams=true", $"LogFile={LogFile}"]);
        App = await builder.BuildAsync();
        using var cts = new CancellationTokenSource(StartTimeout);
        await App.StartAsync(cts.Token);
        await App.ResourceNotifications.WaitForResourceHealthyAsync(KnownResourceNames.Api, cts.Token);
    }

    public async Task DisposeAsync()
    {
        await App.DisposeAsync();
        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
            // postgres may still be flushing; the folder is in /tmp
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

[CollectionDefinition(Name)]
public sealed class LocalAppHostCollection : ICollectionFixture<LocalAppHostFixture>
{
    public const string Name = "local apphost";
}
