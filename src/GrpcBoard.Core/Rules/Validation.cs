using System.Collections.Immutable;
using System.Globalization;
using System.Text;
using GrpcBoard.Core.Model;

namespace GrpcBoard.Core.Rules;

/// <summary>Input checks, each failing with INVALID_ARGUMENT (or VALUE_TOO_LARGE) naming the field.</summary>
public static class Validation
{
    /// <summary>Workflow and task ids: [A-Za-z0-9][A-Za-z0-9._:-]*, so they are safe in keys, paths and file names.</summary>
    public static void Id(string? value, string field, BoardLimits limits)
    {
        if (string.IsNullOrEmpty(value))
        {
            throw BoardException.Invalid(field, $"{field} is required.");
        }

        if (value.Length > limits.MaxIdLength)
        {
            throw BoardException.Invalid(field, $"{field} is {value.Length} characters long; the limit is {limits.MaxIdLength}.");
        }

        if (!char.IsAsciiLetterOrDigit(value[0]))
        {
            throw BoardException.Invalid(field, $"{field} '{value}' must start with a letter or digit.");
        }

        foreach (var c in value)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or ':' or '-'))
            {
                throw BoardException.Invalid(field, $"{field} '{value}' has the character '{c}'; allowed are letters, digits and . _ : -.");
            }
        }
    }

    public static void WorkerId(string? value, BoardLimits limits)
    {
        if (string.IsNullOrEmpty(value))
        {
            throw BoardException.Invalid("worker_id", "worker_id is required to claim a task.");
        }

        Text(value, "worker_id", limits.MaxIdLength * 2);
    }

    /// <summary>Free text: bounded, without control characters other than newline and tab.</summary>
    public static void Text(string value, string field, int maxBytes, bool allowNewlines = false)
    {
        if (Encoding.UTF8.GetByteCount(value) > maxBytes)
        {
            throw TooLarge(field, maxBytes);
        }

        foreach (var c in value)
        {
            if (char.IsControl(c) && !(allowNewlines && c is '\n' or '\r' or '\t'))
            {
                throw BoardException.Invalid(field, $"{field} contains a control character (U+{(int)c:X4}).");
            }
        }
    }

    public static void NoteKey(string? key, BoardLimits limits)
    {
        if (string.IsNullOrEmpty(key))
        {
            throw BoardException.Invalid("key", "key is required.");
        }

        Text(key, "key", limits.MaxNoteKeyBytes);
    }

    public static void Size(ReadOnlyMemory<byte> value, string field, int limit)
    {
        if (value.Length > limit)
        {
            throw TooLarge(field, limit, value.Length);
        }
    }

    public static ImmutableSortedDictionary<string, string> Labels(IReadOnlyDictionary<string, string>? labels, string field, BoardLimits limits)
    {
        var builder = ImmutableSortedDictionary.CreateBuilder<string, string>(StringComparer.Ordinal);
        if (labels is null)
        {
            return builder.ToImmutable();
        }

        if (labels.Count > limits.MaxLabels)
        {
            throw BoardException.Invalid(field, $"{field} has {labels.Count} entries; the limit is {limits.MaxLabels}.");
        }

        foreach (var (k, v) in labels)
        {
            if (string.IsNullOrEmpty(k) || k.Length > limits.MaxLabelKeyLength)
            {
                throw BoardException.Invalid(field, $"Label keys must be 1 to {limits.MaxLabelKeyLength} characters.");
            }

            Text(k, field, limits.MaxLabelKeyLength * 4);
            if (v.Length > limits.MaxLabelValueLength)
            {
                throw BoardException.Invalid(field, $"Label '{k}' has a value longer than {limits.MaxLabelValueLength} characters.");
            }

            Text(v, field, limits.MaxLabelValueLength * 4);
            builder[k] = v;
        }

        return builder.ToImmutable();
    }

    /// <summary>Sorted, de-duplicated skills: equal sets get equal keys in the ready index.</summary>
    public static ImmutableArray<string> Skills(IEnumerable<string>? skills, string field, BoardLimits limits)
    {
        if (skills is null)
        {
            return [];
        }

        var set = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var skill in skills)
        {
            if (string.IsNullOrEmpty(skill) || skill.Length > limits.MaxLabelKeyLength)
            {
                throw BoardException.Invalid(field, $"Skills must be 1 to {limits.MaxLabelKeyLength} characters.");
            }

            Text(skill, field, limits.MaxLabelKeyLength * 4);
            set.Add(skill);
        }

        if (set.Count > limits.MaxSkills)
        {
            throw BoardException.Invalid(field, $"{field} has {set.Count} skills; the limit is {limits.MaxSkills}.");
        }

        return [.. set];
    }

    public static TimeSpan Lease(TimeSpan? requested, BoardLimits limits)
    {
        if (requested is null || requested == TimeSpan.Zero)
        {
            return limits.DefaultLease;
        }

        var lease = requested.Value;
        if (lease < limits.MinLease || lease > limits.MaxLease)
        {
            throw BoardException.Invalid("lease_duration", $"lease_duration must be between {limits.MinLease.TotalSeconds}s and {limits.MaxLease.TotalSeconds}s.");
        }

        return lease;
    }

    public static int PageSize(int requested, BoardLimits limits)
    {
        if (requested < 0 || requested > limits.MaxPageSize)
        {
            throw BoardException.Invalid("page_size", $"page_size must be between 0 and {limits.MaxPageSize}.");
        }

        return requested == 0 ? limits.DefaultPageSize : requested;
    }

    public static TaskDefinition Task(TaskSpec spec, BoardLimits limits)
    {
        Id(spec.Id, "tasks.id", limits);
        Size(spec.Payload, "tasks.payload", limits.MaxPayloadBytes);
        Text(spec.ContentType, "tasks.content_type", 256);
        if (spec.MaxAttempts < 0 || spec.MaxAttempts > limits.MaxMaxAttempts)
        {
            throw BoardException.Invalid("tasks.max_attempts", $"max_attempts must be between 1 and {limits.MaxMaxAttempts} (0 for the default).");
        }

        if (spec.DependsOn.Count > limits.MaxDependencies)
        {
            throw BoardException.Invalid("tasks.depends_on", $"A task may depend on at most {limits.MaxDependencies} tasks.");
        }

        var deps = new List<string>(spec.DependsOn.Count);
        foreach (var dep in spec.DependsOn)
        {
            Id(dep, "tasks.depends_on", limits);
            if (dep == spec.Id)
            {
                throw new BoardException(BoardError.InvalidDependency, $"Task '{spec.Id}' depends on itself.",
                    new Dictionary<string, string> { ["task_id"] = spec.Id, ["dependency"] = dep });
            }

            if (!deps.Contains(dep))
            {
                deps.Add(dep);
            }
        }

        return new TaskDefinition
        {
            Id = spec.Id,
            Payload = spec.Payload,
            ContentType = spec.ContentType,
            Priority = spec.Priority,
            Labels = Labels(spec.Labels, "tasks.labels", limits),
            RequiredSkills = Skills(spec.RequiredSkills, "tasks.required_skills", limits),
            DependsOn = [.. deps],
            MaxAttempts = spec.MaxAttempts == 0 ? limits.DefaultMaxAttempts : spec.MaxAttempts,
            Retry = Retry(spec, limits),
        };
    }

    private static RetryPolicy Retry(TaskSpec spec, BoardLimits limits)
    {
        var defaults = limits.DefaultRetry;
        var initial = spec.InitialBackoff ?? defaults.InitialBackoff;
        var maximum = spec.MaximumBackoff ?? defaults.MaximumBackoff;
        var coefficient = spec.BackoffCoefficient is null or 0 ? defaults.BackoffCoefficient : spec.BackoffCoefficient.Value;
        if (initial < TimeSpan.Zero || initial > TimeSpan.FromDays(1))
        {
            throw BoardException.Invalid("tasks.retry_policy.initial_backoff", "initial_backoff must be between 0 and 24h.");
        }

        if (maximum < initial || maximum > TimeSpan.FromDays(7))
        {
            throw BoardException.Invalid("tasks.retry_policy.maximum_backoff", "maximum_backoff must be at least initial_backoff and at most 7 days.");
        }

        if (coefficient is < 1.0 or > 10.0 || double.IsNaN(coefficient))
        {
            throw BoardException.Invalid("tasks.retry_policy.backoff_coefficient", "backoff_coefficient must be between 1.0 and 10.0.");
        }

        return new RetryPolicy(initial, maximum, coefficient);
    }

    public static BoardException TooLarge(string field, int limit, int? actual = null) =>
        new(BoardError.ValueTooLarge,
            actual is { } a ? $"{field} is {a} bytes; the limit is {limit} bytes." : $"{field} exceeds the limit of {limit} bytes.",
            new Dictionary<string, string> { ["field"] = field, ["limit"] = limit.ToString(CultureInfo.InvariantCulture) });
}
