using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// Key layout. Every key of a workflow carries the hash tag {workflowId}, so a workflow lives in one
/// Redis Cluster slot and one Lua script can touch all of it. Ids are restricted to [A-Za-z0-9._:-] by
/// validation, so they never contain braces. Store-wide keys share the tag {gb}.
///
/// Per workflow: <c>meta</c> (hash: head, lb = the id of the last committed batch, oldest retained
/// revision, rec = the workflow, c1..c7 = task counts, nt = when its earliest lease, backoff or note timer is due, in
/// ms, -1 for none), <c>tasks</c> and <c>notes</c> (hashes: id to the event that last wrote the record), <c>log</c>
/// (stream: entry id = revision), <c>wq</c> (list: instances waiting for the turn), and <c>absent</c>, never
/// written (<see cref="ScriptKeys"/>). Each timer's due time is in its record; which ones are due is read from the
/// replica loaded from them (<see cref="RedisStore.GetDueTimersAsync"/>).
/// </summary>
internal sealed class RedisKeys(string prefix)
{
    public string Prefix { get; } = prefix;

    /// <summary>Sorted set (by id) of every workflow id ever created; kept after delete.</summary>
    public RedisKey Registry => $"{Prefix}:{{gb}}:registry";

    /// <summary>
    /// Set of workflow ids registered for a creation whose commit has not been confirmed yet. An id in the
    /// registry but not here has committed at least once, so finding its keys empty means Redis lost them.
    /// </summary>
    public RedisKey Creating => $"{Prefix}:{{gb}}:creating";

    /// <summary>Sorted set: workflow id scored by the due time (ms) of its earliest timer.</summary>
    public RedisKey TimerHints => $"{Prefix}:{{gb}}:timerhints";

    /// <summary>A random id written when the store is first used; its disappearance means Redis lost data.</summary>
    public RedisKey Epoch => $"{Prefix}:{{gb}}:epoch";

    /// <summary>Set by the first instance that detects a data loss, so that every instance refuses, new ones too.</summary>
    public RedisKey Lost => $"{Prefix}:{{gb}}:lost";

    /// <summary>The address at which a server instance takes calls forwarded to it (expires unless refreshed).</summary>
    public RedisKey Instance(string instanceId) => $"{Prefix}:{{gb}}:instance:{instanceId}";

    public RedisChannel EventPattern => new($"{Prefix}:{{*}}:ev", RedisChannel.PatternMode.Pattern);

    /// <summary>The base of a workflow's keys; scripts append "meta", "tasks", ... to it.</summary>
    public string Base(string workflowId) => $"{Prefix}:{{{workflowId}}}:";

    public RedisKey Meta(string workflowId) => Base(workflowId) + "meta";

    /// <summary>
    /// The KEYS of every script on a workflow: its meta key, then a key of its slot that is never written. While a
    /// Redis Cluster moves the slot, Redis counts that key as missing and refuses the script before it runs: ASK on
    /// the node the slot leaves, which the one it goes to answers with TRYAGAIN, as for any command over several keys
    /// not all there. A script reaches the workflow's other keys without declaring them, and Redis checks only the
    /// declared ones before it starts; without this key, a script could run while part of the workflow had moved and
    /// stop half-written at the first key that had gone ("Script attempted to access a non local key"), or be sent on
    /// by ASK and write keys not moved yet onto the target, where their MIGRATE then fails (BUSYKEY).
    /// </summary>
    public RedisKey[] ScriptKeys(string workflowId) => [Meta(workflowId), Base(workflowId) + "absent"];

    public string Channel(string workflowId) => Base(workflowId) + "ev";

    public string WorkflowOfChannel(string channel)
    {
        var open = channel.IndexOf('{', StringComparison.Ordinal);
        var close = channel.IndexOf('}', open + 1);
        return channel[(open + 1)..close];
    }
}
