using System.Globalization;
using System.Text;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// Key layout. Every key of a workflow carries the hash tag {workflowId}, so a workflow lives in one
/// Redis Cluster slot and one Lua script can touch all of it. Ids are restricted to [A-Za-z0-9._:-] by
/// validation, so they never contain braces. Store-wide keys share the tag {gb}.
/// </summary>
internal sealed class RedisKeys(string prefix)
{
    public string Prefix { get; } = prefix;

    /// <summary>Sorted set (by id) of every workflow id ever created; kept after delete.</summary>
    public RedisKey Registry => $"{Prefix}:{{gb}}:registry";

    /// <summary>Sorted set: workflow id scored by the due time (ms) of its earliest timer.</summary>
    public RedisKey TimerHints => $"{Prefix}:{{gb}}:timerhints";

    /// <summary>A random id written when the store is first used; its disappearance means Redis lost data.</summary>
    public RedisKey Epoch => $"{Prefix}:{{gb}}:epoch";

    /// <summary>Set by the first instance that detects a data loss, so that every instance refuses, new ones too.</summary>
    public RedisKey Lost => $"{Prefix}:{{gb}}:lost";

    public RedisChannel EventPattern => new($"{Prefix}:{{*}}:ev", RedisChannel.PatternMode.Pattern);

    /// <summary>The base of a workflow's keys; scripts append "meta", "tasks", ... to it.</summary>
    public string Base(string workflowId) => $"{Prefix}:{{{workflowId}}}:";

    public RedisKey Meta(string workflowId) => Base(workflowId) + "meta";

    public string WorkflowOfChannel(string channel)
    {
        var open = channel.IndexOf('{', StringComparison.Ordinal);
        var close = channel.IndexOf('}', open + 1);
        return channel[(open + 1)..close];
    }

    /// <summary>
    /// A ready task's member in its queue: lexicographic order of members is the offer order of
    /// <see cref="TaskIndexing.CompareReady"/> (priority descending, ready time ascending, id).
    /// </summary>
    public static string ReadyMember(TaskRecord task)
    {
        var invertedPriority = (uint)(int.MaxValue - (long)task.Priority);
        var ticks = task.ReadyTime?.UtcTicks ?? 0;
        return invertedPriority.ToString("X8", CultureInfo.InvariantCulture) + ticks.ToString("X16", CultureInfo.InvariantCulture) + task.Id;
    }

    /// <summary>Ready queue key suffix for a skill set: hex of the joined skills ("_" when none).</summary>
    public static string ReadyQueue(string skillKey) =>
        skillKey.Length == 0 ? "ready:_" : "ready:" + Convert.ToHexString(Encoding.UTF8.GetBytes(skillKey));

    public static string TimerMember(Core.Storage.TimerKind kind, string id) => ((int)kind).ToString(CultureInfo.InvariantCulture) + "|" + id;
}
