using System.Diagnostics;

namespace HelixAgent.AppHost;

/// <summary>How PostgreSQL and Redis are provided (setting <c>Infrastructure:Mode</c>, env <c>Infrastructure__Mode</c>).</summary>
public enum InfrastructureMode
{
    /// <summary>Containers when a container runtime answers, else local processes.</summary>
    Auto,
    /// <summary><c>AddPostgres</c> / <c>AddRedis</c> containers (always in publish mode).</summary>
    Containers,
    /// <summary>Debian's <c>postgres</c> and <c>redis-server</c> run by Aspire as local processes.</summary>
    Local,
    /// <summary>Existing servers: <c>ConnectionStrings:helixagent-db</c> and <c>ConnectionStrings:redis</c>.</summary>
    External,
}

/// <summary>The resources services reference and wait for, whichever way they are provided.</summary>
public sealed record Infrastructure(
    IResourceBuilder<IResourceWithConnectionString> Database,
    IResourceBuilder<IResource> DatabaseServer,
    IResourceBuilder<IResourceWithConnectionString> Redis);

public static class InfrastructureExtensions
{
    public static Infrastructure AddInfrastructure(this IDistributedApplicationBuilder builder)
    {
        var mode = ResolveMode(builder);
        return mode switch
        {
            InfrastructureMode.Containers => AddContainers(builder),
            InfrastructureMode.External => AddExternal(builder),
            _ => LocalServers.Add(builder),
        };
    }

    private static InfrastructureMode ResolveMode(IDistributedApplicationBuilder builder)
    {
        if (builder.ExecutionContext.IsPublishMode)
        {
            return InfrastructureMode.Containers; // the manifest describes the production topology
        }
        var configured = builder.Configuration["Infrastructure:Mode"];
        if (string.IsNullOrWhiteSpace(configured))
        {
            configured = nameof(InfrastructureMode.Auto);
        }
        if (!Enum.TryParse<InfrastructureMode>(configured, ignoreCase: true, out var mode))
        {
            throw new DistributedApplicationException(
                $"Infrastructure:Mode '{configured}' is not one of auto, containers, local, external.");
        }
        if (mode != InfrastructureMode.Auto)
        {
            return mode;
        }
        var runtime = ContainerRuntimeAnswers();
        Console.WriteLine(runtime is null
            ? "HelixAgent: no container runtime answers; running PostgreSQL and Redis as local processes (Infrastructure:Mode=local)."
            : $"HelixAgent: container runtime '{runtime}' answers; running PostgreSQL and Redis as containers.");
        return runtime is null ? InfrastructureMode.Local : InfrastructureMode.Containers;
    }

    /// <summary>The container runtime Aspire would use, if its engine answers within a few seconds.</summary>
    private static string? ContainerRuntimeAnswers()
    {
        var preferred = Environment.GetEnvironmentVariable("ASPIRE_CONTAINER_RUNTIME");
        string[] candidates = string.IsNullOrWhiteSpace(preferred) ? ["docker", "podman"] : [preferred];
        foreach (var runtime in candidates)
        {
            try
            {
                using var p = Process.Start(new ProcessStartInfo(runtime, "info")
                {
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false,
                });
                if (p is null)
                {
                    continue;
                }
                _ = p.StandardOutput.ReadToEndAsync();
                _ = p.StandardError.ReadToEndAsync();
                if (!p.WaitForExit(TimeSpan.FromSeconds(5)))
                {
                    p.Kill(entireProcessTree: true);
                    continue;
                }
                if (p.ExitCode == 0)
                {
                    return runtime;
                }
            }
            catch (System.ComponentModel.Win32Exception)
            {
                // not installed
            }
        }
        return null;
    }

    private static Infrastructure AddContainers(IDistributedApplicationBuilder builder)
    {
        // publishValueAsDefault: the manifest carries the user name, so deployments generated from it need no input.
        var user = builder.AddParameter("postgres-user", KnownResourceNames.DatabaseUser, publishValueAsDefault: true);
        var postgres = builder.AddPostgres(KnownResourceNames.Postgres, userName: user)
            .WithDataVolume();
        var database = postgres.AddDatabase(KnownResourceNames.Database, KnownResourceNames.DatabaseName);
        var redis = builder.AddRedis(KnownResourceNames.Redis);
        return new Infrastructure(database, database, redis);
    }

    private static Infrastructure AddExternal(IDistributedApplicationBuilder builder)
    {
        var database = builder.AddConnectionString(KnownResourceNames.Database);
        var redis = builder.AddConnectionString(KnownResourceNames.Redis);
        return new Infrastructure(database, database, redis);
    }
}
