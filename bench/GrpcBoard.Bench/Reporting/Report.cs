using System.Globalization;
using System.Runtime.InteropServices;
using GrpcBoard.Bench.Measurement;

namespace GrpcBoard.Bench.Reporting;

/// <summary>Plain-text results: "name  value" lines under headed sections, and latency tables. Numbers use the invariant culture.</summary>
public sealed class Report(TextWriter output)
{
    private const int NameWidth = 24;

    public static IFormatProvider Culture => CultureInfo.InvariantCulture;

    public void Section(string title)
    {
        output.WriteLine();
        output.WriteLine($"== {title} ==");
    }

    public void Line(string name, string value) => output.WriteLine($"{name,-NameWidth} {value}");

    public void Text(string text) => output.WriteLine(text);

    public void Machine()
    {
        Line("processors", Environment.ProcessorCount.ToString(Culture) + (CpuModel() is { } model ? $" ({model})" : ""));
        Line("os", RuntimeInformation.OSDescription + " " + RuntimeInformation.OSArchitecture);
        Line(".net", RuntimeInformation.FrameworkDescription);
        Line("load generator gc", RuntimeSnapshot.GcMode);
        if (File.Exists("/proc/loadavg"))
        {
            Line("load average (1/5/15m)", string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)));
        }

        Line("started", DateTimeOffset.UtcNow.ToString("yyyy-MM-dd HH:mm:ss 'UTC'", Culture));
    }

    public void LatencyTable(IEnumerable<(string Name, LatencyStats Stats)> rows)
    {
        output.WriteLine(string.Create(Culture, $"{"latency (ms)",-NameWidth} {"count",9} {"mean",8} {"p50",8} {"p90",8} {"p99",8} {"p99.9",8} {"max",8}"));
        foreach (var (name, s) in rows)
        {
            output.WriteLine(string.Create(Culture, $"  {name,-NameWidth - 2} {s.Count,9} {s.MeanMs,8:0.000} {s.P50Ms,8:0.000} {s.P90Ms,8:0.000} {s.P99Ms,8:0.000} {s.P999Ms,8:0.000} {s.MaxMs,8:0.000}"));
        }
    }

    /// <summary>Sampled allocations by type (<see cref="AllocationSampler"/>): the total and the largest types, in bytes per unit of work.</summary>
    public void Allocations(IReadOnlyList<(string Type, long Bytes)> sampled, long units, string unit, int top = 40)
    {
        var per = Math.Max(1, units);
        Line("sampled in all", string.Create(Culture, $"{sampled.Sum(s => s.Bytes) / 1048576.0:0.0} MiB, {(double)sampled.Sum(s => s.Bytes) / per:0} B per {unit}, {sampled.Count} types"));
        foreach (var (type, bytes) in sampled.Take(top))
        {
            output.WriteLine(string.Create(Culture, $"  {(double)bytes / per,8:0.0} B per {unit}  {type}"));
        }
    }

    /// <summary>CPU, disk, GC and scheduling during a measured phase, also per unit of work.</summary>
    public void Resources(ResourceUsage usage, TimeSpan wall, long units, string unit)
    {
        var seconds = wall.TotalSeconds;
        string PerUnit(double cpuSeconds) => units > 0 ? string.Create(Culture, $"{cpuSeconds * 1e6 / units:0.0} µs CPU per {unit}") : "";
        if (usage.Server is { } server)
        {
            Line("server process cpu", string.Create(Culture, $"{server.CpuSeconds:0.00} s = {server.CpuSeconds / seconds:0.00} cores (user {server.UserSeconds:0.00} s, sys {server.SystemSeconds:0.00} s); {PerUnit(server.CpuSeconds)}"));
            Line("server threads", Threads(server));
            Line("server disk / switches", string.Create(Culture, $"{server.WriteBytes / 1048576.0:0.0} MiB written, {server.WriteCalls} write calls; {server.VoluntarySwitches} voluntary + {server.InvoluntarySwitches} involuntary context switches"));
        }
        else if (!usage.ServerInClient && usage.Companions.Count == 0)
        {
            Line("server process cpu", "unknown (pass --server-pid with --target)");
        }

        foreach (var companion in usage.Companions)
        {
            var c = companion.Usage;
            Line($"{companion.Name} cpu", string.Create(Culture, $"{c.CpuSeconds:0.00} s = {c.CpuSeconds / seconds:0.00} cores (user {c.UserSeconds:0.00} s, sys {c.SystemSeconds:0.00} s); {PerUnit(c.CpuSeconds)}"));
            Line($"{companion.Name} disk/switch", string.Create(Culture, $"{c.WriteBytes / 1048576.0:0.0} MiB written, {c.WriteCalls} write calls; {c.VoluntarySwitches} voluntary + {c.InvoluntarySwitches} involuntary context switches"));
        }

        if (usage.EndedChildrenSeconds > 0)
        {
            Line("ended child processes", string.Create(Culture, $"{usage.EndedChildrenSeconds:0.00} s = {usage.EndedChildrenSeconds / seconds:0.00} cores; {PerUnit(usage.EndedChildrenSeconds)}"));
        }

        if (usage.Client is { } client)
        {
            var who = usage.ServerInClient ? "tool+server cpu" : "load generator cpu";
            Line(who, string.Create(Culture, $"{client.CpuSeconds:0.00} s = {client.CpuSeconds / seconds:0.00} cores (user {client.UserSeconds:0.00} s, sys {client.SystemSeconds:0.00} s); {PerUnit(client.CpuSeconds)}"));
            Line(usage.ServerInClient ? "tool+server threads" : "load generator threads", Threads(client));
            Line(usage.ServerInClient ? "tool+server switches" : "load generator switches", string.Create(Culture, $"{client.VoluntarySwitches} voluntary + {client.InvoluntarySwitches} involuntary context switches"));
        }

        var gc = usage.ClientRuntime;
        var allocatedPerUnit = units > 0 ? string.Create(Culture, $" ({gc.AllocatedBytes / (double)units / 1024:0.0} KiB per {unit})") : "";
        Line(usage.ServerInClient ? "tool+server gc" : "load generator gc", string.Create(Culture,
            $"gen0/gen1/gen2 {gc.Gen0}/{gc.Gen1}/{gc.Gen2}, pause {gc.GcPause.TotalMilliseconds:0} ms, allocated {gc.AllocatedBytes / 1048576.0:0} MiB{allocatedPerUnit}; thread pool {gc.ThreadPoolItems} work items, {gc.ThreadPoolThreads} threads"));
        if (usage.Machine is { } machine)
        {
            var total = machine.BusySeconds + machine.IdleSeconds + machine.IoWaitSeconds + machine.StealSeconds;
            var other = (usage.OtherCores(wall) ?? 0) * seconds;
            Line("machine cpu", string.Create(Culture,
                $"busy {machine.BusySeconds / seconds:0.00} of {total / seconds:0.00} cores: irq+softirq {machine.InterruptSeconds / seconds:0.00}, other processes {other / seconds:0.00}; iowait {machine.IoWaitSeconds / seconds:0.00}, steal {machine.StealSeconds / seconds:0.00}"));
            var pids = new HashSet<string>(StringComparer.Ordinal) { $"[{Environment.ProcessId}]" };
            if (usage.ServerPid is { } serverPid)
            {
                pids.Add($"[{serverPid}]");
            }

            foreach (var companion in usage.Companions)
            {
                pids.Add($"[{companion.Pid}]");
            }

            var others = machine.Processes.Where(p => !pids.Any(id => p.Name.EndsWith(id, StringComparison.Ordinal)) && p.CpuSeconds >= 0.05).Take(5).ToList();
            if (others.Count > 0)
            {
                Line("other processes", string.Join(", ", others.Select(p => string.Create(Culture, $"{p.Name} {p.CpuSeconds / seconds:0.00} cores"))));
            }

            if (other / seconds > 0.1)
            {
                Line("WARNING", string.Create(Culture, $"other processes used {other / seconds:0.00} cores during the run: these numbers understate the board."));
            }
        }
    }

    /// <summary>What a Redis-store run asked of Redis: commit batches, round trips and script time per unit.</summary>
    public void RedisStore(RedisStoreFigures r, TimeSpan wall, long units, string unit)
    {
        string Per(double value) => units > 0 ? string.Create(Culture, $"{value / units:0.00}") : "-";
        var seconds = wall.TotalSeconds;
        Line("commit batches", string.Create(Culture,
            $"{r.Commits} (PUBLISH calls; with several instances, turn notices too), {r.Commits / seconds:0} per second, {r.TransactionsPerCommit:0.0} claims and completions per batch"));
        Line("round trips", string.Create(Culture,
            $"{r.RoundTrips} = {Per(r.RoundTrips)} per {unit} (EVALSHA {r.Delta.Calls("evalsha")}, EVAL {r.Delta.Calls("eval")})"));
        Line("without a commit", string.Create(Culture,
            $"{r.ScriptsWithoutCommit} script calls published nothing (refused commits, batches of reads only, other scripts; with several instances, turn notices are PUBLISH calls too, so more than this); {r.LogReads} log reads (catch-ups after another instance's commit)"));
        Line("script time", string.Create(Culture,
            $"{r.ScriptSeconds:0.00} s = {r.ScriptSeconds / seconds:0.00} of Redis's one thread; {(r.ScriptCalls > 0 ? r.ScriptSeconds * 1e6 / r.ScriptCalls : 0):0.0} µs per script call, {(units > 0 ? r.ScriptSeconds * 1e6 / units : 0):0.0} µs per {unit}"));
        var top = r.Delta.Commands.Where(c => c.Value.Calls > 0).OrderByDescending(c => c.Value.Calls).Take(10)
            .Select(c => string.Create(Culture, $"{c.Key} {c.Value.Calls} ({Per(c.Value.Calls)}/{unit}, {(double)c.Value.Micros / c.Value.Calls:0.0} µs)"));
        Line("commands (incl. in Lua)", string.Join(", ", top));
        // An AOF rewrite (or RDB save) forks Redis and copies the whole dataset on the same cores: a run it falls into
        // measures the rewrite too (bench/GrpcBoard.Bench/JOURNAL.md, "AOF rewrites").
        Line("forks", string.Create(Culture, $"{r.Delta.Forks} started during the run (AOF rewrites, RDB saves)"));
    }

    private static string Threads(ProcessUsage usage) =>
        string.Join(", ", usage.ThreadGroups.Where(g => g.CpuSeconds >= 0.01).Take(8).Select(g => string.Create(Culture, $"{g.Name} x{g.Threads} {g.CpuSeconds:0.00} s")));

    private static string? CpuModel()
    {
        try
        {
            return File.Exists("/proc/cpuinfo")
                ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim()
                : null;
        }
        catch (IOException)
        {
            return null;
        }
    }
}
