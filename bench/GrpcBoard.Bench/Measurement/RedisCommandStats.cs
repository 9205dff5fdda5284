using System.Globalization;
using GrpcBoard.Bench.Targets;

namespace GrpcBoard.Bench.Measurement;

/// <summary>
/// Redis's INFO commandstats: calls and microseconds per command since Redis started. Redis counts the commands a
/// Lua script runs as well as the script call (EVALSHA) itself, whose time includes them. Taken before and after a
/// measured run, the difference says what the run asked of Redis.
/// </summary>
public sealed record RedisCommandStats(IReadOnlyDictionary<string, (long Calls, long Micros)> Commands, long Forks = 0)
{
    public static async Task<RedisCommandStats?> TakeAsync(string endpoint)
    {
        try
        {
            await using var client = await RespClient.ConnectAsync(endpoint);
            var stats = Parse(await client.InfoAsync("commandstats"));
            return stats with { Forks = Field(await client.InfoAsync("stats"), "total_forks") };
        }
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or InvalidOperationException)
        {
            Console.Error.WriteLine($"Could not read INFO commandstats from {endpoint}: {ex.Message}");
            return null;
        }
    }

    /// <summary>Lines like "cmdstat_evalsha:calls=5,usec=588,usec_per_call=117.60,...".</summary>
    public static RedisCommandStats Parse(string info)
    {
        var commands = new Dictionary<string, (long, long)>(StringComparer.Ordinal);
        foreach (var line in info.Split('\n', StringSplitOptions.TrimEntries))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (!line.StartsWith("cmdstat_", StringComparison.Ordinal) || colon < 0)
            {
                continue;
            }

            long calls = 0, micros = 0;
            foreach (var field in line[(colon + 1)..].Split(','))
            {
                var (key, value) = field.Split('=', 2) is [var k, var v] ? (k, v) : (field, "0");
                if (key == "calls")
                {
                    calls = long.Parse(value, CultureInfo.InvariantCulture);
                }
                else if (key == "usec")
                {
                    micros = long.Parse(value, CultureInfo.InvariantCulture);
                }
            }

            commands[line["cmdstat_".Length..colon]] = (calls, micros);
        }

        return new RedisCommandStats(commands);
    }

    /// <summary>A counter of an INFO section ("total_forks:3"), 0 when absent.</summary>
    public static long Field(string info, string name)
    {
        foreach (var line in info.Split('\n', StringSplitOptions.TrimEntries))
        {
            if (line.StartsWith(name + ":", StringComparison.Ordinal) && long.TryParse(line.AsSpan(name.Length + 1), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value))
            {
                return value;
            }
        }

        return 0;
    }

    public RedisCommandStats Since(RedisCommandStats before) => new(
        Commands.ToDictionary(
            kv => kv.Key,
            kv => (kv.Value.Calls - before.Calls(kv.Key), kv.Value.Micros - before.Micros(kv.Key)),
            StringComparer.Ordinal),
        Forks - before.Forks);

    public long Calls(string command) => Commands.TryGetValue(command, out var c) ? c.Calls : 0;

    public long Micros(string command) => Commands.TryGetValue(command, out var c) ? c.Micros : 0;
}

/// <summary>
/// What GrpcBoard's Redis store asked of Redis for a claim run, derived from command counts. This follows the
/// store as it is (src/GrpcBoard.Store.Redis: a replica per instance, so reads cost no Redis command; commits in
/// batches by the Commit script); if that changes, so must this:
/// <list type="bullet">
/// <item>every batch that writes is one Commit script (EVALSHA) that PUBLISHes once, so commit batches = PUBLISH;</item>
/// <item>a batch of reads only (or one Redis refused) is a Commit script that writes and publishes nothing;</item>
/// <item>the other scripts (log reads, timer polls, hints) are few during a claim run;</item>
/// <item>with several instances on one workflow, the commit script and PassTurn also PUBLISH turn notices
/// (Scripts.Commit), so PUBLISH overcounts commits, and the scripts without a commit are undercounted.</item>
/// </list>
/// Transactions per batch = (claims + completions) / commit batches; round trips = script calls.
/// </summary>
public sealed record RedisStoreFigures(RedisCommandStats Delta, long Claims, long Completions, long EmptyClaims)
{
    public long Commits => Delta.Calls("publish");

    public double TransactionsPerCommit => Commits > 0 ? (Claims + Completions) / (double)Commits : 0;

    public long ScriptCalls => Delta.Calls("evalsha") + Delta.Calls("eval");

    public long RoundTrips => ScriptCalls;

    /// <summary>
    /// Script calls that published nothing: commits Redis refused (another instance had committed first), batches
    /// of reads only, and the few other scripts. With several instances on one workflow, mostly refusals.
    /// </summary>
    public long ScriptsWithoutCommit => Math.Max(0, ScriptCalls - Commits);

    /// <summary>Log reads (XRANGE, in the ReadLog script): catch-ups after another instance's commit, and loads.</summary>
    public long LogReads => Delta.Calls("xrange");

    /// <summary>Time Redis spent running scripts, including the commands they ran.</summary>
    public double ScriptSeconds => (Delta.Micros("evalsha") + Delta.Micros("eval")) / 1e6;
}
