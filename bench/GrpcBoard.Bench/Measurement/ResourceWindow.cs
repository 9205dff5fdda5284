using System.Runtime;

namespace GrpcBoard.Bench.Measurement;

/// <summary>This process's garbage collector and thread pool counters.</summary>
public sealed record RuntimeSnapshot(int Gen0, int Gen1, int Gen2, TimeSpan GcPause, long AllocatedBytes, long ThreadPoolItems, int ThreadPoolThreads)
{
    public static RuntimeSnapshot Take() => new(
        GC.CollectionCount(0),
        GC.CollectionCount(1),
        GC.CollectionCount(2),
        GC.GetTotalPauseDuration(),
        GC.GetTotalAllocatedBytes(precise: false),
        ThreadPool.CompletedWorkItemCount,
        ThreadPool.ThreadCount);

    public RuntimeUsage Since(RuntimeSnapshot before) => new(
        Gen0 - before.Gen0,
        Gen1 - before.Gen1,
        Gen2 - before.Gen2,
        GcPause - before.GcPause,
        AllocatedBytes - before.AllocatedBytes,
        ThreadPoolItems - before.ThreadPoolItems,
        ThreadPoolThreads);

    public static string GcMode => $"{(GCSettings.IsServerGC ? "server" : "workstation")}, {(GCSettings.LatencyMode == GCLatencyMode.Batch ? "non-concurrent" : "concurrent")}";
}

public sealed record RuntimeUsage(int Gen0, int Gen1, int Gen2, TimeSpan GcPause, long AllocatedBytes, long ThreadPoolItems, int ThreadPoolThreads);

/// <summary>
/// Counters taken just before and just after a measured phase: CPU of the server process (when its pid is
/// known) and of this process, the machine's CPU, and this process's GC. Reading them costs a few file reads
/// at the two ends, nothing during the run.
/// </summary>
public sealed class ResourceWindow
{
    private readonly int? _serverPid;
    private readonly bool _serverIsThisProcess;
    private ProcessSnapshot? _server;
    private ProcessSnapshot? _client;
    private MachineSnapshot? _machine;
    private RuntimeSnapshot? _runtime;

    public ResourceWindow(int? serverPid)
    {
        _serverPid = serverPid;
        _serverIsThisProcess = serverPid == Environment.ProcessId;
    }

    public void Start()
    {
        _runtime = RuntimeSnapshot.Take();
        _machine = MachineSnapshot.Take();
        _client = ProcessSnapshot.Take(Environment.ProcessId);
        _server = _serverPid is { } pid && !_serverIsThisProcess ? ProcessSnapshot.Take(pid) : null;
    }

    public ResourceUsage Stop()
    {
        var server = _serverPid is { } pid && !_serverIsThisProcess && _server is not null ? ProcessSnapshot.Take(pid)?.Since(_server) : null;
        var client = _client is not null ? ProcessSnapshot.Take(Environment.ProcessId)?.Since(_client) : null;
        var machine = _machine is not null ? MachineSnapshot.Take()?.Since(_machine) : null;
        var runtime = RuntimeSnapshot.Take().Since(_runtime!);
        return new ResourceUsage(server, client, _serverIsThisProcess, _serverPid, machine, runtime);
    }
}

/// <param name="Server">The server process's usage; null when unknown or when it is this process.</param>
/// <param name="Client">This process's usage (the load generator, and the server too when hosted in process).</param>
public sealed record ResourceUsage(ProcessUsage? Server, ProcessUsage? Client, bool ServerInClient, int? ServerPid, MachineUsage? Machine, RuntimeUsage ClientRuntime);
