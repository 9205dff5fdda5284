using System.Collections.Immutable;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;

namespace GrpcBoard.Core.Rules;

/// <summary>
/// What a store must index, derived from records alone, so that both stores index the same way:
/// ready queues per required-skill set, one timer per record that waits on the clock, and the order
/// in which ready tasks are offered.
/// </summary>
public static class TaskIndexing
{
    private const char SkillSeparator = '\u001f';

    /// <summary>Key of the ready queue a task sits in: its sorted required skills, joined ("" when none).</summary>
    public static string SkillSetKey(ImmutableArray<string> sortedSkills) =>
        sortedSkills.IsDefaultOrEmpty ? "" : string.Join(SkillSeparator, sortedSkills);

    public static string[] SkillsOfKey(string key) =>
        key.Length == 0 ? [] : key.Split(SkillSeparator);

    /// <summary>True when a worker with <paramref name="workerSkills"/> may be offered tasks of this skill set.</summary>
    public static bool Covers(IReadOnlyCollection<string> workerSkills, IReadOnlyList<string> required)
    {
        foreach (var skill in required)
        {
            if (!workerSkills.Contains(skill))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Offer order: higher priority first, then the one ready longest, then by id for a total order.</summary>
    public static int CompareReady(TaskRecord a, TaskRecord b)
    {
        var c = b.Priority.CompareTo(a.Priority);
        if (c != 0)
        {
            return c;
        }

        c = Nullable.Compare(a.ReadyTime, b.ReadyTime);
        return c != 0 ? c : string.CompareOrdinal(a.Id, b.Id);
    }

    /// <summary>The clock a task waits on, if any: a lease deadline or the end of a backoff.</summary>
    public static (TimerKind Kind, DateTimeOffset Due)? TimerOf(TaskRecord task) => task.State switch
    {
        TaskState.Claimed when task.LeaseExpireTime is { } expiry => (TimerKind.LeaseExpiry, expiry),
        TaskState.Backoff when task.ReadyTime is { } ready => (TimerKind.BackoffEnd, ready),
        _ => null,
    };

    /// <summary>A note with a TTL waits for its expiry.</summary>
    public static DateTimeOffset? TimerOf(NoteRecord note) => note.ExpireTime;
}
