using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Text;
using GrpcBoard.Core.Model;

namespace GrpcBoard.Core.Storage;

/// <summary>
/// The binary form in which both stores keep records and events. Compact and allocation-light because
/// every claim writes a task and an event. Each blob starts with a format byte so that later versions
/// can read older blobs; readers refuse formats they do not know instead of misreading them.
/// </summary>
public static class RecordCodec
{
    private const byte TaskFormat = 1;
    private const byte NoteFormat = 1;
    private const byte WorkflowFormat = 1;
    private const byte EventFormat = 1;

    public static byte[] Encode(TaskRecord task)
    {
        var w = new BlobWriter(256 + task.Payload.Length + task.Checkpoint.Length + task.Result.Length);
        w.Byte(TaskFormat);
        WriteTask(ref w, task);
        return w.ToArray();
    }

    public static TaskRecord DecodeTask(ReadOnlyMemory<byte> blob)
    {
        var r = new BlobReader(blob);
        r.ExpectFormat(TaskFormat, "task");
        return ReadTask(ref r);
    }

    public static byte[] Encode(NoteRecord note)
    {
        var w = new BlobWriter(96 + note.Value.Length);
        w.Byte(NoteFormat);
        WriteNote(ref w, note);
        return w.ToArray();
    }

    public static NoteRecord DecodeNote(ReadOnlyMemory<byte> blob)
    {
        var r = new BlobReader(blob);
        r.ExpectFormat(NoteFormat, "note");
        return ReadNote(ref r);
    }

    public static byte[] Encode(WorkflowRecord workflow)
    {
        var w = new BlobWriter(128 + workflow.Goal.Length);
        w.Byte(WorkflowFormat);
        WriteWorkflow(ref w, workflow);
        return w.ToArray();
    }

    public static WorkflowRecord DecodeWorkflow(ReadOnlyMemory<byte> blob)
    {
        var r = new BlobReader(blob);
        r.ExpectFormat(WorkflowFormat, "workflow");
        return ReadWorkflow(ref r);
    }

    public static byte[] Encode(EventRecord e)
    {
        var w = new BlobWriter(128 + (e.Task is { } t ? 256 + t.Payload.Length + t.Checkpoint.Length + t.Result.Length : 0) + (e.Note?.Value.Length ?? 0));
        w.Byte(EventFormat);
        w.Long(e.Revision);
        w.Int((int)e.Kind);
        w.Time(e.Time);
        w.String(e.WorkflowId);
        w.String(e.Actor);
        w.String(e.Reason);
        w.Byte((byte)((e.Task is null ? 0 : 1) | (e.Note is null ? 0 : 2) | (e.Workflow is null ? 0 : 4)));
        if (e.Task is { } task)
        {
            WriteTask(ref w, task);
        }

        if (e.Note is { } note)
        {
            WriteNote(ref w, note);
        }

        if (e.Workflow is { } workflow)
        {
            WriteWorkflow(ref w, workflow);
        }

        return w.ToArray();
    }

    public static EventRecord DecodeEvent(ReadOnlyMemory<byte> blob)
    {
        var r = new BlobReader(blob);
        r.ExpectFormat(EventFormat, "event");
        var revision = r.Long();
        var kind = (EventKind)r.Int();
        var time = r.Time();
        var workflowId = r.String();
        var actor = r.String();
        var reason = r.String();
        var flags = r.Byte();
        return new EventRecord
        {
            Revision = revision,
            Kind = kind,
            Time = time,
            WorkflowId = workflowId,
            Actor = actor,
            Reason = reason,
            Task = (flags & 1) != 0 ? ReadTask(ref r) : null,
            Note = (flags & 2) != 0 ? ReadNote(ref r) : null,
            Workflow = (flags & 4) != 0 ? ReadWorkflow(ref r) : null,
        };
    }

    private static void WriteTask(ref BlobWriter w, TaskRecord t)
    {
        w.String(t.Id);
        w.Bytes(t.Payload.Span);
        w.String(t.ContentType);
        w.Int(t.Priority);
        w.Labels(t.Labels);
        w.Strings(t.RequiredSkills);
        w.Strings(t.DependsOn);
        w.Int(t.MaxAttempts);
        w.Long(t.Retry.InitialBackoff.Ticks);
        w.Long(t.Retry.MaximumBackoff.Ticks);
        w.Double(t.Retry.BackoffCoefficient);
        w.Int((int)t.State);
        w.Int(t.Attempt);
        w.String(t.Owner);
        w.Long(t.FencingToken);
        w.OptionalTime(t.LeaseExpireTime);
        w.Long(t.LeaseDuration.Ticks);
        w.Bytes(t.Checkpoint.Span);
        w.OptionalTime(t.CheckpointTime);
        w.Bytes(t.Result.Span);
        w.String(t.ResultContentType);
        if (t.LastError is { } e)
        {
            w.Byte(1);
            w.String(e.Message);
            w.Bytes(e.Details.Span);
            w.Int(e.Attempt);
            w.String(e.WorkerId);
            w.Byte((byte)((e.NonRetryable ? 1 : 0) | (e.LeaseExpired ? 2 : 0)));
            w.Time(e.Time);
        }
        else
        {
            w.Byte(0);
        }

        w.OptionalTime(t.ReadyTime);
        w.Time(t.CreateTime);
        w.Time(t.UpdateTime);
        w.Long(t.ModRevision);
        w.String(t.EndReason);
        w.Int((int)t.LastClaimEnd);
    }

    private static TaskRecord ReadTask(ref BlobReader r)
    {
        var id = r.String();
        var payload = r.Bytes();
        var contentType = r.String();
        var priority = r.Int();
        var labels = r.Labels();
        var skills = r.Strings();
        var dependsOn = r.Strings();
        var maxAttempts = r.Int();
        var retry = new RetryPolicy(TimeSpan.FromTicks(r.Long()), TimeSpan.FromTicks(r.Long()), r.Double());
        var state = (TaskState)r.Int();
        var attempt = r.Int();
        var owner = r.String();
        var token = r.Long();
        var leaseExpire = r.OptionalTime();
        var leaseDuration = TimeSpan.FromTicks(r.Long());
        var checkpoint = r.Bytes();
        var checkpointTime = r.OptionalTime();
        var result = r.Bytes();
        var resultContentType = r.String();
        TaskError? error = null;
        if (r.Byte() == 1)
        {
            var message = r.String();
            var details = r.Bytes();
            var errorAttempt = r.Int();
            var worker = r.String();
            var flags = r.Byte();
            error = new TaskError(message, details, errorAttempt, worker, (flags & 1) != 0, (flags & 2) != 0, r.Time());
        }

        return new TaskRecord
        {
            Id = id,
            Payload = payload,
            ContentType = contentType,
            Priority = priority,
            Labels = labels,
            RequiredSkills = skills,
            DependsOn = dependsOn,
            MaxAttempts = maxAttempts,
            Retry = retry,
            State = state,
            Attempt = attempt,
            Owner = owner,
            FencingToken = token,
            LeaseExpireTime = leaseExpire,
            LeaseDuration = leaseDuration,
            Checkpoint = checkpoint,
            CheckpointTime = checkpointTime,
            Result = result,
            ResultContentType = resultContentType,
            LastError = error,
            ReadyTime = r.OptionalTime(),
            CreateTime = r.Time(),
            UpdateTime = r.Time(),
            ModRevision = r.Long(),
            EndReason = r.String(),
            LastClaimEnd = (ClaimEnd)r.Int(),
        };
    }

    private static void WriteNote(ref BlobWriter w, NoteRecord n)
    {
        w.String(n.Key);
        w.Bytes(n.Value.Span);
        w.String(n.ContentType);
        w.Long(n.Version);
        w.Long(n.ModRevision);
        w.OptionalTime(n.ExpireTime);
        w.Time(n.UpdateTime);
        w.String(n.Writer);
    }

    private static NoteRecord ReadNote(ref BlobReader r) => new()
    {
        Key = r.String(),
        Value = r.Bytes(),
        ContentType = r.String(),
        Version = r.Long(),
        ModRevision = r.Long(),
        ExpireTime = r.OptionalTime(),
        UpdateTime = r.Time(),
        Writer = r.String(),
    };

    private static void WriteWorkflow(ref BlobWriter w, WorkflowRecord f)
    {
        w.String(f.Id);
        w.String(f.Goal);
        w.Labels(f.Labels);
        w.Int((int)f.Status);
        w.Time(f.CreateTime);
        w.Time(f.UpdateTime);
        w.Long(f.ModRevision);
    }

    private static WorkflowRecord ReadWorkflow(ref BlobReader r) => new()
    {
        Id = r.String(),
        Goal = r.String(),
        Labels = r.Labels(),
        Status = (WorkflowStatus)r.Int(),
        CreateTime = r.Time(),
        UpdateTime = r.Time(),
        ModRevision = r.Long(),
    };

    private ref struct BlobWriter(int capacity)
    {
        private readonly ArrayBufferWriter<byte> _buffer = new(capacity);

        public readonly byte[] ToArray() => _buffer.WrittenSpan.ToArray();

        public readonly void Byte(byte value)
        {
            _buffer.GetSpan(1)[0] = value;
            _buffer.Advance(1);
        }

        public readonly void Int(int value) => Long(value);

        /// <summary>Zig-zag varint: small magnitudes of either sign take one or two bytes.</summary>
        public readonly void Long(long value)
        {
            var v = (ulong)((value << 1) ^ (value >> 63));
            var span = _buffer.GetSpan(10);
            var i = 0;
            while (v >= 0x80)
            {
                span[i++] = (byte)(v | 0x80);
                v >>= 7;
            }

            span[i++] = (byte)v;
            _buffer.Advance(i);
        }

        public readonly void Double(double value)
        {
            BinaryPrimitives.WriteDoubleLittleEndian(_buffer.GetSpan(8), value);
            _buffer.Advance(8);
        }

        public readonly void Time(DateTimeOffset value) => Long(value.UtcTicks);

        public readonly void OptionalTime(DateTimeOffset? value)
        {
            if (value is { } v)
            {
                Byte(1);
                Time(v);
            }
            else
            {
                Byte(0);
            }
        }

        public readonly void Bytes(ReadOnlySpan<byte> value)
        {
            Long(value.Length);
            value.CopyTo(_buffer.GetSpan(value.Length));
            _buffer.Advance(value.Length);
        }

        public readonly void String(string value)
        {
            var length = Encoding.UTF8.GetByteCount(value);
            Long(length);
            Encoding.UTF8.GetBytes(value, _buffer.GetSpan(length));
            _buffer.Advance(length);
        }

        public readonly void Strings(ImmutableArray<string> values)
        {
            Long(values.IsDefault ? 0 : values.Length);
            if (!values.IsDefault)
            {
                foreach (var v in values)
                {
                    String(v);
                }
            }
        }

        public readonly void Labels(ImmutableSortedDictionary<string, string> labels)
        {
            Long(labels.Count);
            foreach (var (k, v) in labels)
            {
                String(k);
                String(v);
            }
        }
    }

    private ref struct BlobReader(ReadOnlyMemory<byte> blob)
    {
        private readonly ReadOnlyMemory<byte> _blob = blob;
        private int _pos;

        public void ExpectFormat(byte format, string what)
        {
            var actual = Byte();
            if (actual != format)
            {
                throw new InvalidDataException($"Unknown {what} blob format {actual}; this build reads format {format}.");
            }
        }

        public byte Byte() => _blob.Span[_pos++];

        public int Int() => checked((int)Long());

        public long Long()
        {
            var span = _blob.Span;
            ulong v = 0;
            var shift = 0;
            while (true)
            {
                var b = span[_pos++];
                v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80)
                {
                    break;
                }

                shift += 7;
                if (shift > 63)
                {
                    throw new InvalidDataException("Malformed varint in a stored blob.");
                }
            }

            return (long)(v >> 1) ^ -(long)(v & 1);
        }

        public double Double()
        {
            var value = BinaryPrimitives.ReadDoubleLittleEndian(_blob.Span[_pos..]);
            _pos += 8;
            return value;
        }

        public DateTimeOffset Time() => new(Long(), TimeSpan.Zero);

        public DateTimeOffset? OptionalTime() => Byte() == 1 ? Time() : null;

        public ReadOnlyMemory<byte> Bytes()
        {
            var length = Int();
            var slice = length == 0 ? ReadOnlyMemory<byte>.Empty : _blob.Slice(_pos, length);
            _pos += length;
            return slice;
        }

        public string String()
        {
            var length = Int();
            var value = length == 0 ? "" : Encoding.UTF8.GetString(_blob.Span.Slice(_pos, length));
            _pos += length;
            return value;
        }

        public ImmutableArray<string> Strings()
        {
            var count = Int();
            if (count == 0)
            {
                return [];
            }

            var builder = ImmutableArray.CreateBuilder<string>(count);
            for (var i = 0; i < count; i++)
            {
                builder.Add(String());
            }

            return builder.MoveToImmutable();
        }

        public ImmutableSortedDictionary<string, string> Labels()
        {
            var count = Int();
            var builder = ImmutableSortedDictionary.CreateBuilder<string, string>(StringComparer.Ordinal);
            for (var i = 0; i < count; i++)
            {
                builder[String()] = String();
            }

            return builder.ToImmutable();
        }
    }
}
