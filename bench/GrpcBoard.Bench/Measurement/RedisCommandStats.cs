using System.Globalization;
using GrpcBoard.Bench.Targets;

namespace GrpcBoard.Bench.Measurement;

/// <summary>
/// Redis's INFO commandstats: calls and microseconds per command since Redis started. Redis counts the commands a
/// Lua script runs as well as the script call (EVALSHA) itself, whose time includes them. Taken before and after a
/// measured run, the difference says what the run asked of Redis.
/// </summary>
public sealed record RedisCommandStats(IReadOnlyDictionary<string, (long Calls, long Micros)> Commands)
{
    public static async Task<RedisCommandStats?> TakeAsync(string endpoint)
    {
        try
        {
            await using var client = await RespClient.ConnectAsync(endpoint);
            return Parse(await client.InfoAsync("commandstats"));
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

    public RedisCommandStats Since(RedisCommandStats before) => new(Commands.ToDictionary(
        kv => kv.Key,
        kv => (kv.Value.Calls - before.Calls(kv.Key), kv.Value.Micros - before.Micros(kv.Key)),
        StringComparer.Ordinal));

    public long Calls(string command) => Commands.TryGetValue(command, out var c) ? c.Calls : 0;

    public long Micros(string command) => Commands.TryGetValue(command, out var c) ? c.Micros : 0;
}

/// <summary>
/// What GrpcBoard's Redis store asked of Redis for a claim run, derived from command counts. This follows the
/// store's scripts (src/GrpcBoard.Store.Redis/Scripts.cs, RedisStore.cs) as they are; if those change, so must this:
/// <list type="bullet">
/// <item>every transaction attempt reads the workflow's meta hash with one HGETALL (a round trip of its own);</item>
/// <item>a claim of the next task adds the ReadyCandidates script, which runs one more HGETALL (of the ready
/// queues), and then the Commit script;</item>
/// <item>a completion adds the GetTask and Dependents scripts (Dependents runs the only SMEMBERS), then Commit;</item>
/// <item>a Commit whose checks pass PUBLISHes once; one whose check fails (a lost race) writes nothing and the
/// transaction runs again from the HGETALL;</item>
/// <item>after a commit the Hint script (ZADD) is sent without waiting.</item>
/// </list>
/// So: completion attempts = SMEMBERS; claim attempts = (HGETALL − SMEMBERS) / 2; commits = PUBLISH; round trips =
/// EVALSHA + EVAL + the HGETALLs sent by the server (one per attempt).
/// </summary>
public sealed record RedisStoreFigures(RedisCommandStats Delta, long Claims, long Completions, long EmptyClaims)
{
    public long CompleteAttempts => Delta.Calls("smembers");

    public long ClaimAttempts => (Delta.Calls("hgetall") - CompleteAttempts) / 2;

    public long Commits => Delta.Calls("publish");

    /// <summary>Claim attempts that lost a race and ran again (or gave up after the store's retry limit).</summary>
    public long ClaimConflicts => Math.Max(0, ClaimAttempts - Claims - EmptyClaims);

    public long CompleteConflicts => Math.Max(0, CompleteAttempts - Completions);

    public long ScriptCalls => Delta.Calls("evalsha") + Delta.Calls("eval");

    public long RoundTrips => ScriptCalls + ClaimAttempts + CompleteAttempts;

    /// <summary>Time Redis spent running scripts, including the commands they ran.</summary>
    public double ScriptSeconds => (Delta.Micros("evalsha") + Delta.Micros("eval")) / 1e6;

    /// <summary>Time Redis spent in commands sent by the server itself (scripts and the meta HGETALLs), estimated with the HGETALL mean.</summary>
    public double CommandSeconds
    {
        get
        {
            var hgetall = Delta.Calls("hgetall");
            var topLevelHgetall = ClaimAttempts + CompleteAttempts;
            return ScriptSeconds + (hgetall > 0 ? Delta.Micros("hgetall") / 1e6 * topLevelHgetall / hgetall : 0);
        }
    }
}
