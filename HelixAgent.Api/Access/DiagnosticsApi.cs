using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Runtime;
using System.Runtime.InteropServices;
using System.Text;
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

/// <summary>Who may read <c>/debug/pprof</c>.</summary>
public sealed class DiagnosticsOptions
{
    public const string Section = "Diagnostics";

    /// <summary>
    /// Callers on loopback (127.0.0.1, ::1) read <c>/debug/pprof</c> without a key, as Go's pprof is usually bound, unless
    /// the request carries <c>Forwarded</c> or <c>X-Forwarded-For</c> (a proxy on the same host). Everyone else needs an
    /// admin key. Turn off where a sidecar or local proxy forwards remote callers over loopback without those headers.
    /// </summary>
    public bool AllowLoopbackWithoutKey { get; set; } = true;

    /// <summary>Whether a request may read <c>/debug/pprof</c> without a key: from loopback, directly, and allowed.</summary>
    internal bool OpenWithoutKey(HttpContext ctx)
    {
        if (!AllowLoopbackWithoutKey || ctx.Request.Headers.ContainsKey("Forwarded") || ctx.Request.Headers.ContainsKey("X-Forwarded-For"))
        {
            return false;
        }
        var remote = ctx.Connection.RemoteIpAddress;
        return remote is not null && IPAddress.IsLoopback(remote.IsIPv4MappedToIPv6 ? remote.MapToIPv4() : remote);
    }
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

        // The runbook's Go endpoints, with .NET's counterparts (the access rule is in AccessMiddleware).
        app.MapGet("/debug/pprof/heap", (Delegate)HeapSnapshot.CollectAsync);
        app.MapGet("/debug/pprof/goroutine", (InFlightRequests inflight) => TypedResults.Text(ThreadsText(inflight), "text/plain; charset=utf-8"));
        return app;
    }

    /// <summary>
    /// The <c>goroutine?debug=1</c> counterpart, as text for <c>| head</c>: the process's threads (state, wait reason, CPU
    /// time), the thread pool, lock contention and timers, and the gateway requests in flight with their age. Managed
    /// stacks need a debugger: <c>POST /admin/diagnostics/dump</c> and <c>dotnet-dump analyze</c> (<c>clrstack -all</c>).
    /// </summary>
    internal static string ThreadsText(InFlightRequests inflight)
    {
        var text = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        using var process = Process.GetCurrentProcess();
        var threads = process.Threads.Cast<ProcessThread>().ToList();
        text.AppendLine(inv, $"helixagent pid {Environment.ProcessId}, up {DateTime.Now - process.StartTime:d\\.hh\\:mm\\:ss}, .NET {RuntimeInformation.FrameworkDescription}, {Environment.ProcessorCount} cores");
        text.AppendLine();
        var pool = PoolState.Now();
        text.AppendLine(inv, $"thread pool: {pool.Threads} threads, {pool.Pending} pending work items, {pool.Completed} completed; min {pool.MinWorkers} worker / {pool.MinIo} io, max {pool.MaxWorkers} worker / {pool.MaxIo} io");
        text.AppendLine(inv, $"lock contentions: {pool.LockContentions}; active timers: {pool.Timers}");
        text.AppendLine();
        var requests = inflight.Snapshot().ToList();
        text.AppendLine(inv, $"in-flight requests: {requests.Count}");
        foreach (var (method, path, age) in requests)
        {
            text.AppendLine(inv, $"  {age.TotalMilliseconds,10:F1} ms  {method} {HelixAgent.Data.Echo.Clip(path)}");
        }
        text.AppendLine();
        text.AppendLine(inv, $"threads: {threads.Count}");
        foreach (var thread in threads)
        {
            try
            {
                var wait = thread.ThreadState == System.Diagnostics.ThreadState.Wait ? $" ({thread.WaitReason})" : "";
                text.AppendLine(inv, $"  tid {thread.Id,-8} {thread.ThreadState}{wait,-20} cpu {thread.TotalProcessorTime.TotalSeconds,9:F3} s");
            }
            catch (Exception ex) when (ex is InvalidOperationException or NotSupportedException or System.ComponentModel.Win32Exception)
            {
                text.AppendLine(inv, $"  tid {thread.Id,-8} exited");
            }
        }
        foreach (var thread in threads)
        {
            thread.Dispose();
        }
        return text.ToString();
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

    /// <summary>The thread pool, lock contention and timers at one moment (the JSON and the text view show the same).</summary>
    private sealed record PoolState(int Threads, long Pending, long Completed, int MinWorkers, int MinIo, int MaxWorkers, int MaxIo, long LockContentions, long Timers)
    {
        public static PoolState Now()
        {
            ThreadPool.GetMinThreads(out var minWorkers, out var minIo);
            ThreadPool.GetMaxThreads(out var maxWorkers, out var maxIo);
            return new(ThreadPool.ThreadCount, ThreadPool.PendingWorkItemCount, ThreadPool.CompletedWorkItemCount,
                minWorkers, minIo, maxWorkers, maxIo, Monitor.LockContentionCount, Timer.ActiveCount);
        }
    }

    private static IResult Threads()
    {
        var pool = PoolState.Now();
        using var process = Process.GetCurrentProcess();
        return GatewayApi.Json(new JsonObject
        {
            ["process_threads"] = process.Threads.Count,
            ["thread_pool_threads"] = pool.Threads,
            ["thread_pool_pending_work_items"] = pool.Pending,
            ["thread_pool_completed_work_items"] = pool.Completed,
            ["thread_pool_min"] = new JsonObject { ["worker"] = pool.MinWorkers, ["io"] = pool.MinIo },
            ["thread_pool_max"] = new JsonObject { ["worker"] = pool.MaxWorkers, ["io"] = pool.MaxIo },
            ["lock_contention_count"] = pool.LockContentions,
            ["timers"] = pool.Timers,
        });
    }

    /// <summary>Writes a dump of this process (heap included with <c>?type=heap</c>) and sends it as a download.</summary>
    private static async Task<IResult> Dump(HttpContext ctx)
    {
        var type = ctx.Request.Query["type"].ToString() == "heap" ? DumpType.WithHeap : DumpType.Normal;
        var path = TempFile("dmp");
        try
        {
            await new DiagnosticsClient(Environment.ProcessId).WriteDumpAsync(type, path, logDumpGeneration: false, ctx.RequestAborted);
        }
        catch (Exception ex) when (ex is ServerErrorException or UnsupportedCommandException or ServerNotAvailableException or IOException)
        {
            return OpenAiErrors.Result(503, $"The dump could not be written: {ex.Message}", "service_unavailable", "dump_failed");
        }
        return DownloadAndDelete(path);
    }

    /// <summary>A file in the temp folder named after this process (tests check none is left behind).</summary>
    internal static string TempFile(string extension) =>
        Path.Combine(Path.GetTempPath(), $"helixagent-{Environment.ProcessId}-{DateTime.UtcNow:yyyyMMddHHmmss}.{extension}");

    /// <summary>Sends <paramref name="path"/> as a download; the file is deleted when the response is done with it.</summary>
    internal static IResult DownloadAndDelete(string path) => TypedResults.File(
        new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 81920, FileOptions.DeleteOnClose | FileOptions.Asynchronous),
        "application/octet-stream", Path.GetFileName(path));
}

/// <summary>
/// <c>GET /debug/pprof/heap</c>: a <c>.gcdump</c> of this process's heap (the graph of live objects by type, not their
/// contents), written by the bundled <c>dotnet-gcdump collect</c> against this process's own diagnostics port: it
/// induces one full blocking GC. One at a time; <c>dotnet-gcdump report</c>, PerfView or Visual Studio read it.
/// </summary>
internal static class HeapSnapshot
{
    private static readonly SemaphoreSlim OneAtATime = new(1, 1);

    internal static string ToolPath => Path.Combine(AppContext.BaseDirectory, "tools", "dotnet-gcdump", "dotnet-gcdump.dll");

    public static async Task<IResult> CollectAsync(HttpContext ctx, ILoggerFactory loggers)
    {
        if (!File.Exists(ToolPath))
        {
            return OpenAiErrors.Result(503, $"dotnet-gcdump is missing from this installation ({ToolPath}); POST /admin/diagnostics/dump?type=heap writes a full dump instead.",
                "service_unavailable", "gcdump_unavailable");
        }
        if (!await OneAtATime.WaitAsync(0, ctx.RequestAborted))
        {
            ctx.Response.Headers.RetryAfter = "10";
            return OpenAiErrors.Result(409, "A heap snapshot is already being taken; retry when it is done.", "invalid_request_error", "gcdump_in_progress");
        }
        var path = DiagnosticsApi.TempFile("gcdump");
        try
        {
            var (exit, output) = await RunToolAsync(["collect", "--process-id", Environment.ProcessId.ToString(CultureInfo.InvariantCulture), "--output", path, "--timeout", "120"], ctx.RequestAborted);
            if (exit != 0 || !File.Exists(path))
            {
                File.Delete(path);
                loggers.CreateLogger("HelixAgent.Diagnostics").LogWarning("dotnet-gcdump failed with exit code {ExitCode}: {Output}", exit, output);
                return OpenAiErrors.Result(503, $"The heap snapshot could not be taken (dotnet-gcdump exit code {exit}): {HelixAgent.Data.Echo.Clip(output.Trim())}",
                    "service_unavailable", "gcdump_failed");
            }
            return DiagnosticsApi.DownloadAndDelete(path);
        }
        finally
        {
            OneAtATime.Release();
        }
    }

    private static async Task<(int ExitCode, string Output)> RunToolAsync(IEnumerable<string> args, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(DotnetHost()) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(ToolPath);
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("dotnet did not start");
        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        try
        {
            await process.WaitForExitAsync(ct);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        return (process.ExitCode, await stdout + await stderr);
    }

    /// <summary>The <c>dotnet</c> host this process runs on: the runtime folder is <c>&lt;root&gt;/shared/Microsoft.NETCore.App/&lt;version&gt;/</c>.</summary>
    private static string DotnetHost()
    {
        var root = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        var host = Path.Combine(root, OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet");
        return File.Exists(host) ? host : "dotnet";
    }
}
