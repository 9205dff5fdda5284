using System.Runtime;
using System.Runtime.InteropServices;
using GrpcBoard.Bench.Targets;

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
    private readonly IReadOnlyList<CompanionProcess> _companions;
    private ProcessSnapshot? _server;
    private ProcessSnapshot? _client;
    private MachineSnapshot? _machine;
    private RuntimeSnapshot? _runtime;
    private ChildrenCpu? _children;
    private readonly Dictionary<int, ProcessSnapshot> _companionStart = [];

    /// <param name="serverPid">The server's process id, when known.</param>
    /// <param name="companions">Processes measured with the server (a redis-server, etcd).</param>
    public ResourceWindow(int? serverPid, IReadOnlyList<CompanionProcess>? companions = null)
    {
        _serverPid = serverPid;
        _serverIsThisProcess = serverPid == Environment.ProcessId;
        _companions = companions ?? [];
    }

    public void Start()
    {
        _runtime = RuntimeSnapshot.Take();
        _machine = MachineSnapshot.Take();
        _children = ChildrenCpu.Take();
        _client = ProcessSnapshot.Take(Environment.ProcessId);
        _server = _serverPid is { } pid && !_serverIsThisProcess ? ProcessSnapshot.Take(pid) : null;
        foreach (var companion in _companions)
        {
            if (ProcessSnapshot.Take(companion.Pid) is { } snapshot)
            {
                _companionStart[companion.Pid] = snapshot;
            }
        }
    }

    public ResourceUsage Stop()
    {
        var server = _serverPid is { } pid && !_serverIsThisProcess && _server is not null ? ProcessSnapshot.Take(pid)?.Since(_server) : null;
        var companions = new List<CompanionUsage>();
        foreach (var companion in _companions)
        {
            if (_companionStart.TryGetValue(companion.Pid, out var start) && ProcessSnapshot.Take(companion.Pid)?.Since(start) is { } usage)
            {
                companions.Add(new CompanionUsage(companion.Name, companion.Pid, usage));
            }
        }

        var client = _client is not null ? ProcessSnapshot.Take(Environment.ProcessId)?.Since(_client) : null;
        var children = _children is not null ? ChildrenCpu.Take()?.Seconds - _children.Seconds : null;
        var machine = _machine is not null ? MachineSnapshot.Take()?.Since(_machine) : null;
        var runtime = RuntimeSnapshot.Take().Since(_runtime!);
        return new ResourceUsage(server, client, _serverIsThisProcess, _serverPid, machine, runtime) { Companions = companions, EndedChildrenSeconds = children ?? 0 };
    }
}

/// <param name="Server">The server process's usage; null when unknown or when it is this process.</param>
/// <param name="Client">This process's usage (the load generator, and the server too when hosted in process).</param>
public sealed record ResourceUsage(ProcessUsage? Server, ProcessUsage? Client, bool ServerInClient, int? ServerPid, MachineUsage? Machine, RuntimeUsage ClientRuntime)
{
    /// <summary>Processes measured with the server (redis-server, etcd).</summary>
    public IReadOnlyList<CompanionUsage> Companions { get; init; } = [];

    /// <summary>CPU seconds of child processes of this tool that ended inside the window (redis-benchmark).</summary>
    public double EndedChildrenSeconds { get; init; }

    /// <summary>Cores that processes outside the system under test and this tool used on average (the noise), or null when unknown.</summary>
    public double? OtherCores(TimeSpan wall)
    {
        if (Machine is not { } machine)
        {
            return null;
        }

        var known = (Server?.CpuSeconds ?? 0) + (Client?.CpuSeconds ?? 0) + Companions.Sum(c => c.Usage.CpuSeconds) + EndedChildrenSeconds;
        return Math.Max(0, machine.BusySeconds - known - machine.InterruptSeconds) / wall.TotalSeconds;
    }
}

public sealed record CompanionUsage(string Name, int Pid, ProcessUsage Usage);

/// <summary>
/// CPU of this process's ended and waited-for children (getrusage RUSAGE_CHILDREN): how a child that ran and ended
/// inside a window (redis-benchmark) is measured, since its /proc entry is gone by then. Linux only.
/// </summary>
public sealed record ChildrenCpu(double Seconds)
{
    public static ChildrenCpu? Take()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        // struct rusage (64-bit Linux): ru_utime and ru_stime as {seconds, microseconds}, then 14 longs.
        var usage = new long[18];
        return GetRUsage(-1, usage) == 0 ? new ChildrenCpu(usage[0] + usage[1] / 1e6 + usage[2] + usage[3] / 1e6) : null;
    }

    [DllImport("libc", EntryPoint = "getrusage", SetLastError = true)]
    private static extern int GetRUsage(int who, [Out] long[] usage);
}
