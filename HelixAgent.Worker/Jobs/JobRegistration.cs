namespace HelixAgent.Worker.Jobs;

public static class JobRegistration
{
    public static IHostApplicationBuilder AddMaintenanceJobs(this IHostApplicationBuilder builder, bool runScheduler)
    {
        var options = builder.Configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>() ?? new WorkerOptions();
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<IMaintenanceJob, KeyExpiryJob>();
        builder.Services.AddSingleton<IMaintenanceJob, RetentionJob>();
        builder.Services.AddSingleton<IMaintenanceJob, PartitionJob>();
        builder.Services.AddSingleton(builder.Configuration.GetSection(ResponsesRetentionOptions.Section).Get<ResponsesRetentionOptions>() ?? new ResponsesRetentionOptions());
        builder.Services.AddSingleton<IMaintenanceJob, ResponsesRetentionJob>();
        builder.Services.AddSingleton<IMaintenanceJob, VacuumJob>();
        builder.Services.AddSingleton<IMaintenanceJob, RollupJob>();
        builder.Services.AddSingleton<JobRunner>();
        builder.Services.AddHealthChecks().AddCheck<JobRunner>("jobs");
        if (runScheduler)
        {
            builder.Services.AddHostedService<JobScheduler>();
        }
        return builder;
    }
}

/// <summary><c>helixagent-worker run &lt;job&gt;</c>.</summary>
internal static class JobCommand
{
    public static async Task<int> RunAsync(IServiceProvider services, string[] args)
    {
        var runner = services.GetRequiredService<JobRunner>();
        if (args.Length != 1 || !runner.Jobs.TryGetValue(args[0], out var job))
        {
            await Console.Error.WriteLineAsync($"usage: helixagent-worker run <job>   (jobs: {string.Join(", ", runner.Jobs.Keys.Order())})");
            return 2;
        }
        var run = await runner.RunOnceAsync(job, CancellationToken.None);
        switch (run.Outcome)
        {
            case JobOutcome.Succeeded:
                Console.WriteLine($"{run.Job}: {run.Rows} rows in {run.Duration.TotalMilliseconds:0} ms");
                return 0;
            case JobOutcome.SkippedLocked:
                await Console.Error.WriteLineAsync($"helixagent-worker: {run.Job} is running on another worker right now");
                return 4;
            default:
                await Console.Error.WriteLineAsync($"helixagent-worker: {run.Job} failed: {run.Error}");
                return 3;
        }
    }
}
