using System.Globalization;

namespace GrpcBoard.Bench.Measurement;

/// <summary>CPU, disk and scheduling counters of one process from /proc (Linux); empty elsewhere.</summary>
public sealed record ProcessSnapshot(
    int Pid,
    long UserTicks,
    long SystemTicks,
    long WriteBytes,
    long WriteCalls,
    long VoluntarySwitches,
    long InvoluntarySwitches,
    IReadOnlyDictionary<int, ThreadTicks> Threads)
{
    /// <summary>USER_HZ: the unit of /proc CPU times (100 on Linux x64).</summary>
    public const double TicksPerSecond = 100.0;

    public static bool Supported => OperatingSystem.IsLinux() && Directory.Exists("/proc/self/task");

    public static ProcessSnapshot? Take(int pid)
    {
        if (!Supported)
        {
            return null;
        }

        try
        {
            var (user, system, _) = ReadStat($"/proc/{pid}/stat");
            var io = ReadKeyValues($"/proc/{pid}/io");
            var threads = new Dictionary<int, ThreadTicks>();
            long voluntary = 0, involuntary = 0;
            foreach (var dir in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                try
                {
                    var tid = int.Parse(Path.GetFileName(dir), CultureInfo.InvariantCulture);
                    var (u, s, name) = ReadStat(Path.Combine(dir, "stat"));
                    var status = ReadKeyValues(Path.Combine(dir, "status"));
                    voluntary += status.GetValueOrDefault("voluntary_ctxt_switches");
                    involuntary += status.GetValueOrDefault("nonvoluntary_ctxt_switches");
                    threads[tid] = new ThreadTicks(name, u + s);
                }
                catch (IOException)
                {
                    // The thread ended while we looked.
                }
            }

            return new ProcessSnapshot(pid, user, system, io.GetValueOrDefault("write_bytes"), io.GetValueOrDefault("syscw"), voluntary, involuntary, threads);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The change from <paramref name="before"/> to this snapshot.</summary>
    public ProcessUsage Since(ProcessSnapshot before)
    {
        var byName = new Dictionary<string, (double Seconds, int Threads)>(StringComparer.Ordinal);
        foreach (var (tid, now) in Threads)
        {
            var delta = now.Ticks - (before.Threads.TryGetValue(tid, out var then) && then.Name == now.Name ? then.Ticks : 0);
            if (delta <= 0)
            {
                continue;
            }

            var current = byName.GetValueOrDefault(now.Name);
            byName[now.Name] = (current.Seconds + delta / TicksPerSecond, current.Threads + 1);
        }

        return new ProcessUsage(
            (UserTicks - before.UserTicks) / TicksPerSecond,
            (SystemTicks - before.SystemTicks) / TicksPerSecond,
            WriteBytes - before.WriteBytes,
            WriteCalls - before.WriteCalls,
            VoluntarySwitches - before.VoluntarySwitches,
            InvoluntarySwitches - before.InvoluntarySwitches,
            byName.OrderByDescending(x => x.Value.Seconds).Select(x => new ThreadGroupUsage(x.Key, x.Value.Threads, x.Value.Seconds)).ToList());
    }

    /// <summary>utime, stime (fields 14 and 15) and the name of a /proc stat file; the name may hold spaces and parentheses.</summary>
    private static (long User, long System, string Name) ReadStat(string path)
    {
        var text = File.ReadAllText(path);
        var open = text.IndexOf('(', StringComparison.Ordinal);
        var close = text.LastIndexOf(')');
        var name = text[(open + 1)..close];
        // After ") " come field 3 (state) onwards, so utime (14) is index 11 and stime (15) index 12.
        var fields = text[(close + 2)..].Split(' ');
        return (long.Parse(fields[11], CultureInfo.InvariantCulture), long.Parse(fields[12], CultureInfo.InvariantCulture), name);
    }

    private static Dictionary<string, long> ReadKeyValues(string path)
    {
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines(path))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0 && long.TryParse(line.AsSpan(colon + 1).Trim().ToString().Split(' ')[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out var value))
            {
                result[line[..colon]] = value;
            }
        }

        return result;
    }
}

public sealed record ThreadTicks(string Name, long Ticks);

public sealed record ThreadGroupUsage(string Name, int Threads, double CpuSeconds);

public sealed record ProcessUsage(
    double UserSeconds,
    double SystemSeconds,
    long WriteBytes,
    long WriteCalls,
    long VoluntarySwitches,
    long InvoluntarySwitches,
    IReadOnlyList<ThreadGroupUsage> ThreadGroups)
{
    public double CpuSeconds => UserSeconds + SystemSeconds;
}

/// <summary>Whole-machine CPU from the first line of /proc/stat, and every process's CPU ticks (to name what else ran).</summary>
public sealed record MachineSnapshot(long Busy, long Idle, long IoWait, long Steal, long Interrupts, IReadOnlyDictionary<int, ThreadTicks> Processes)
{
    public static MachineSnapshot? Take()
    {
        if (!File.Exists("/proc/stat"))
        {
            return null;
        }

        var first = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var v = first.Skip(1).Select(x => long.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        // user nice system idle iowait irq softirq steal [guest guest_nice, already inside user/nice]
        var busy = v[0] + v[1] + v[2] + v[5] + v[6];
        return new MachineSnapshot(busy, v[3], v[4], v.Length > 7 ? v[7] : 0, v[5] + v[6], ReadProcesses());
    }

    public MachineUsage Since(MachineSnapshot before)
    {
        var others = new List<(string, double)>();
        foreach (var (pid, now) in Processes)
        {
            // Matched by pid, not name: kernel workers rename themselves after their current work queue. A pid whose
            // ticks went backwards was reused by a new process.
            var delta = now.Ticks - (before.Processes.TryGetValue(pid, out var then) && then.Ticks <= now.Ticks ? then.Ticks : 0);
            if (delta > 0)
            {
                others.Add(($"{now.Name}[{pid}]", delta / ProcessSnapshot.TicksPerSecond));
            }
        }

        return new MachineUsage(
            (Busy - before.Busy) / ProcessSnapshot.TicksPerSecond,
            (Idle - before.Idle) / ProcessSnapshot.TicksPerSecond,
            (IoWait - before.IoWait) / ProcessSnapshot.TicksPerSecond,
            (Steal - before.Steal) / ProcessSnapshot.TicksPerSecond,
            (Interrupts - before.Interrupts) / ProcessSnapshot.TicksPerSecond,
            others.OrderByDescending(x => x.Item2).ToList());
    }

    private static Dictionary<int, ThreadTicks> ReadProcesses()
    {
        var result = new Dictionary<int, ThreadTicks>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }

            try
            {
                var text = File.ReadAllText(Path.Combine(dir, "stat"));
                var close = text.LastIndexOf(')');
                var name = text[(text.IndexOf('(', StringComparison.Ordinal) + 1)..close];
                var fields = text[(close + 2)..].Split(' ');
                result[pid] = new ThreadTicks(name, long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // The process ended while we looked.
            }
        }

        return result;
    }
}

/// <param name="Processes">CPU seconds of every process that ran in the window (processes that ended inside it are missing).</param>
public sealed record MachineUsage(double BusySeconds, double IdleSeconds, double IoWaitSeconds, double StealSeconds, double InterruptSeconds, IReadOnlyList<(string Name, double CpuSeconds)> Processes);
