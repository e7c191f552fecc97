using Aspire.Hosting;

namespace HelixAgent.AppHost.Tests;

/// <summary>
/// The whole AppHost in the no-container mode, as a developer without Docker runs it: Debian's postgres and
/// redis-server under Aspire, data in a temp folder, the API on its real port 8080. One app for the collection
/// (teardown costs ~13 s).
/// </summary>
public sealed class LocalAppHostFixture : IAsyncLifetime
{
    public static readonly TimeSpan StartTimeout = TimeSpan.FromMinutes(3);

    public DistributedApplication App { get; private set; } = null!;
    public string DataDirectory { get; } = Path.Combine(Path.GetTempPath(), "helixagent-e2e-" + Guid.NewGuid().ToString("N"));

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(DataDirectory);
        Environment.SetEnvironmentVariable("HELIXAGENT_DATA_DIR", DataDirectory);
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.HelixAgent_AppHost>(
            ["Infrastructure:Mode=local", "DcpPublisher:RandomizePorts=false", "Demo:FakeUpstreams=true"]);
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
