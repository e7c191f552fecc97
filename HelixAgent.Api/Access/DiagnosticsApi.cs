using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime;
using System.Text.Json.Nodes;
using HelixAgent.Api.Gateway;
using HelixAgent.Api.Infrastructure;
using Microsoft.Diagnostics.NETCore.Client;

namespace HelixAgent.Api.Access;

/// <summary>Requests on the gateway routes that are being served right now (for the in-flight diagnostics view).</summary>
public sealed class InFlightRequests
{
    private readonly ConcurrentDictionary<long, (string Method, string Path, long Started)> _requests = new();
    private long _next;

    public long Start(HttpContext ctx)
    {
        var id = Interlocked.Increment(ref _next);
        _requests[id] = (ctx.Request.Method, ctx.Request.Path.Value ?? "", Stopwatch.GetTimestamp());
        return id;
    }

    public void Stop(long id) => _requests.TryRemove(id, out _);

    public int Count => _requests.Count;

    public IEnumerable<(string Method, string Path, TimeSpan Age)> Snapshot() =>
        _requests.Values.Select(r => (r.Method, r.Path, Stopwatch.GetElapsedTime(r.Started))).OrderByDescending(r => r.Item3);
}

/// <summary>
/// <c>/admin/diagnostics</c>: what the runbook's Go <c>/debug/pprof/heap</c> and <c>goroutine?debug=1</c> give, in .NET
/// terms: GC and heap summary, thread pool and lock contention, in-flight requests with their age, and a process dump
/// (<c>dotnet-dump analyze</c> opens it).
/// </summary>
internal static class DiagnosticsApi
{
    public static IEndpointRouteBuilder MapDiagnosticsApi(this IEndpointRouteBuilder app)
    {
        var diag = app.MapGroup("/admin/diagnostics");
        diag.MapGet("/memory", Memory);
        diag.MapGet("/threads", Threads);
        diag.MapGet("/requests", (InFlightRequests inflight) => GatewayApi.Json(new JsonObject
        {
            ["count"] = inflight.Count,
            ["requests"] = new JsonArray([.. inflight.Snapshot().Select(r => (JsonNode)new JsonObject
            {
                ["method"] = r.Method,
                ["path"] = r.Path,
                ["age_ms"] = Math.Round(r.Age.TotalMilliseconds, 1),
            })]),
        }));
        diag.MapPost("/dump", (Delegate)Dump);
        return app;
    }

    private static IResult Memory()
    {
        var info = GC.GetGCMemoryInfo();
        var generations = new JsonArray();
        for (var g = 0; g < info.GenerationInfo.Length; g++)
        {
            generations.Add(new JsonObject
            {
                ["generation"] = g < 3 ? $"gen{g}" : g == 3 ? "loh" : "poh",
                ["size_after_bytes"] = info.GenerationInfo[g].SizeAfterBytes,
                ["fragmentation_after_bytes"] = info.GenerationInfo[g].FragmentationAfterBytes,
            });
        }
        using var process = Process.GetCurrentProcess();
        return GatewayApi.Json(new JsonObject
        {
            ["working_set_bytes"] = process.WorkingSet64,
            ["private_bytes"] = process.PrivateMemorySize64,
            ["gc_heap_bytes"] = info.HeapSizeBytes,
            ["gc_committed_bytes"] = info.TotalCommittedBytes,
            ["gc_fragmented_bytes"] = info.FragmentedBytes,
            ["gc_total_available_memory_bytes"] = info.TotalAvailableMemoryBytes,
            ["gc_pause_time_percentage"] = info.PauseTimePercentage,
            ["total_allocated_bytes"] = GC.GetTotalAllocatedBytes(),
            ["collections"] = new JsonObject { ["gen0"] = GC.CollectionCount(0), ["gen1"] = GC.CollectionCount(1), ["gen2"] = GC.CollectionCount(2) },
            ["server_gc"] = GCSettings.IsServerGC,
            ["latency_mode"] = GCSettings.LatencyMode.ToString(),
            ["generations"] = generations,
        });
    }

    private static IResult Threads()
    {
        ThreadPool.GetMinThreads(out var minWorkers, out var minIo);
        ThreadPool.GetMaxThreads(out var maxWorkers, out var maxIo);
        using var process = Process.GetCurrentProcess();
        return GatewayApi.Json(new JsonObject
        {
            ["process_threads"] = process.Threads.Count,
            ["thread_pool_threads"] = ThreadPool.ThreadCount,
            ["thread_pool_pending_work_items"] = ThreadPool.PendingWorkItemCount,
            ["thread_pool_completed_work_items"] = ThreadPool.CompletedWorkItemCount,
            ["thread_pool_min"] = new JsonObject { ["worker"] = minWorkers, ["io"] = minIo },
            ["thread_pool_max"] = new JsonObject { ["worker"] = maxWorkers, ["io"] = maxIo },
            ["lock_contention_count"] = Monitor.LockContentionCount,
            ["timers"] = Timer.ActiveCount,
        });
    }

    /// <summary>Writes a dump of this process (heap included with <c>?type=heap</c>) and sends it as a download.</summary>
    private static async Task<IResult> Dump(HttpContext ctx)
    {
        var type = ctx.Request.Query["type"].ToString() == "heap" ? DumpType.WithHeap : DumpType.Normal;
        var path = Path.Combine(Path.GetTempPath(), $"helixagent-{Environment.ProcessId}-{DateTime.UtcNow:yyyyMMddHHmmss}.dmp");
        try
        {
            await new DiagnosticsClient(Environment.ProcessId).WriteDumpAsync(type, path, logDumpGeneration: false, ctx.RequestAborted);
        }
        catch (Exception ex) when (ex is ServerErrorException or UnsupportedCommandException or ServerNotAvailableException or IOException)
        {
            return OpenAiErrors.Result(503, $"The dump could not be written: {ex.Message}", "service_unavailable", "dump_failed");
        }
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 81920, FileOptions.DeleteOnClose | FileOptions.Asynchronous);
        return TypedResults.File(stream, "application/octet-stream", Path.GetFileName(path));
    }
}
