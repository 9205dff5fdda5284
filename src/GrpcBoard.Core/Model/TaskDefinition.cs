using System.Collections.Immutable;

namespace GrpcBoard.Core.Model;

/// <summary>A validated task to post, with every default filled in.</summary>
public sealed record TaskDefinition
{
    public required string Id { get; init; }
    public ReadOnlyMemory<byte> Payload { get; init; }
    public string ContentType { get; init; } = "";
    public int Priority { get; init; }
    public ImmutableSortedDictionary<string, string> Labels { get; init; } = ImmutableSortedDictionary<string, string>.Empty.WithComparers(StringComparer.Ordinal);
    public ImmutableArray<string> RequiredSkills { get; init; } = [];
    public ImmutableArray<string> DependsOn { get; init; } = [];
    public required int MaxAttempts { get; init; }
    public required RetryPolicy Retry { get; init; }

    /// <summary>True when <paramref name="task"/> was posted from an identical definition (the idempotent repeat).</summary>
    public bool SameAs(TaskRecord task) =>
        task.Id == Id
        && task.Payload.Span.SequenceEqual(Payload.Span)
        && task.ContentType == ContentType
        && task.Priority == Priority
        && task.Labels.Count == Labels.Count && Labels.All(kv => task.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value)
        && task.RequiredSkills.SequenceEqual(RequiredSkills)
        && task.DependsOn.SequenceEqual(DependsOn)
        && task.MaxAttempts == MaxAttempts
        && task.Retry == Retry;
}
