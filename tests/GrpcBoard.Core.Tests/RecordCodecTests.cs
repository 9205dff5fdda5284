using System.Collections.Immutable;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using Xunit;

namespace GrpcBoard.Core.Tests;

public sealed class RecordCodecTests
{
    [Fact]
    public void EveryFieldOfEveryRecord_SurvivesARoundTrip()
    {
        var random = new Random(1234);
        for (var i = 0; i < 200; i++)
        {
            var task = RandomTask(random);
            var decoded = RecordCodec.DecodeTask(RecordCodec.Encode(task));
            AssertSame(task, decoded);

            var note = new NoteRecord
            {
                Key = "k/" + Text(random),
                Value = Bytes(random),
                ContentType = Text(random),
                Version = random.NextInt64(1, long.MaxValue),
                ModRevision = random.NextInt64(),
                ExpireTime = random.Next(2) == 0 ? null : Time(random),
                UpdateTime = Time(random),
                Writer = Text(random),
            };
            var n = RecordCodec.DecodeNote(RecordCodec.Encode(note));
            Assert.Equal(note with { Value = default }, n with { Value = default });
            Assert.Equal(note.Value.ToArray(), n.Value.ToArray());

            var workflow = new WorkflowRecord
            {
                Id = "w" + i,
                Goal = Text(random) + "\nline two ✓",
                Labels = ImmutableSortedDictionary.CreateRange(StringComparer.Ordinal, [new KeyValuePair<string, string>("a", Text(random))]),
                Status = (WorkflowStatus)random.Next(1, 5),
                CreateTime = Time(random),
                UpdateTime = Time(random),
                ModRevision = random.NextInt64(),
            };
            var w = RecordCodec.DecodeWorkflow(RecordCodec.Encode(workflow));
            Assert.Equal(workflow with { Labels = w.Labels }, w);
            Assert.Equal(workflow.Labels, w.Labels);

            var e = new EventRecord { Revision = i + 1, Kind = EventKind.TaskFailed, Time = Time(random), WorkflowId = "w", Task = task, Note = note, Workflow = workflow, Actor = "a", Reason = "r" };
            var back = RecordCodec.DecodeEvent(RecordCodec.Encode(e));
            Assert.Equal((e.Revision, e.Kind, e.Time, e.WorkflowId, e.Actor, e.Reason), (back.Revision, back.Kind, back.Time, back.WorkflowId, back.Actor, back.Reason));
            AssertSame(task, back.Task!);
        }
    }

    [Fact]
    public void AnUnknownFormat_IsRefused_NotMisread()
    {
        var blob = RecordCodec.Encode(new NoteRecord { Key = "k", Version = 1, UpdateTime = DateTimeOffset.UnixEpoch });
        blob[0] = 99;
        Assert.Throws<InvalidDataException>(() => RecordCodec.DecodeNote(blob));
    }

    private static void AssertSame(TaskRecord expected, TaskRecord actual)
    {
        Assert.Equal(expected.Payload.ToArray(), actual.Payload.ToArray());
        Assert.Equal(expected.Checkpoint.ToArray(), actual.Checkpoint.ToArray());
        Assert.Equal(expected.Result.ToArray(), actual.Result.ToArray());
        Assert.Equal(expected.LastError?.Details.ToArray(), actual.LastError?.Details.ToArray());
        Assert.Equal(expected.RequiredSkills.ToArray(), actual.RequiredSkills.ToArray());
        Assert.Equal(expected.DependsOn.ToArray(), actual.DependsOn.ToArray());
        Assert.Equal(expected.Labels, actual.Labels);
        var normalize = (TaskRecord t) => t with
        {
            Payload = default,
            Checkpoint = default,
            Result = default,
            LastError = t.LastError is null ? null : t.LastError with { Details = default },
            RequiredSkills = [],
            DependsOn = [],
            Labels = ImmutableSortedDictionary<string, string>.Empty,
        };
        Assert.Equal(normalize(expected), normalize(actual));
    }

    private static TaskRecord RandomTask(Random r) => new()
    {
        Id = "t" + r.Next(),
        Payload = Bytes(r),
        ContentType = Text(r),
        Priority = r.Next(int.MinValue, int.MaxValue),
        Labels = ImmutableSortedDictionary.CreateRange(StringComparer.Ordinal, Enumerable.Range(0, r.Next(3)).Select(i => new KeyValuePair<string, string>("l" + i, Text(r)))),
        RequiredSkills = [.. Enumerable.Range(0, r.Next(3)).Select(i => "s" + i)],
        DependsOn = [.. Enumerable.Range(0, r.Next(3)).Select(i => "d" + i)],
        MaxAttempts = r.Next(1, 1000),
        Retry = new RetryPolicy(TimeSpan.FromTicks(r.NextInt64(0, TimeSpan.TicksPerDay)), TimeSpan.FromTicks(r.NextInt64(TimeSpan.TicksPerDay, TimeSpan.TicksPerDay * 7)), r.NextDouble() * 9 + 1),
        State = (TaskState)r.Next(1, 8),
        Attempt = r.Next(0, 1000),
        Owner = Text(r),
        FencingToken = r.NextInt64(),
        LeaseExpireTime = r.Next(2) == 0 ? null : Time(r),
        LeaseDuration = TimeSpan.FromSeconds(r.Next(1, 3600)),
        Checkpoint = Bytes(r),
        CheckpointTime = r.Next(2) == 0 ? null : Time(r),
        Result = Bytes(r),
        ResultContentType = Text(r),
        LastError = r.Next(2) == 0 ? null : new TaskError(Text(r), Bytes(r), r.Next(), Text(r), r.Next(2) == 0, r.Next(2) == 0, Time(r)),
        ReadyTime = r.Next(2) == 0 ? null : Time(r),
        CreateTime = Time(r),
        UpdateTime = Time(r),
        ModRevision = r.NextInt64(),
        EndReason = Text(r),
        LastClaimEnd = (ClaimEnd)r.Next(0, 6),
    };

    private static ReadOnlyMemory<byte> Bytes(Random r)
    {
        var bytes = new byte[r.Next(0, 300)];
        r.NextBytes(bytes);
        return bytes;
    }

    private static string Text(Random r) => new(Enumerable.Range(0, r.Next(0, 20)).Select(_ => (char)r.Next(32, 0x2FF)).ToArray());

    private static DateTimeOffset Time(Random r) => new(r.NextInt64(DateTimeOffset.UnixEpoch.UtcTicks, DateTimeOffset.UnixEpoch.UtcTicks + TimeSpan.TicksPerDay * 36500), TimeSpan.Zero);
}
