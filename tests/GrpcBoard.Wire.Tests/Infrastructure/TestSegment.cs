using System.Buffers;

namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>Builds multi-segment <see cref="ReadOnlySequence{T}"/>s, as a pipe hands them over.</summary>
public sealed class TestSegment : ReadOnlySequenceSegment<byte>
{
    private TestSegment(ReadOnlyMemory<byte> memory, long runningIndex)
    {
        Memory = memory;
        RunningIndex = runningIndex;
    }

    /// <summary>One segment per chunk (empty chunks included: a pipe can produce those too).</summary>
    public static ReadOnlySequence<byte> Create(params byte[][] chunks)
    {
        if (chunks.Length == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }

        var first = new TestSegment(chunks[0], 0);
        var last = first;
        foreach (var chunk in chunks.Skip(1))
        {
            var next = new TestSegment(chunk, last.RunningIndex + last.Memory.Length);
            last.Next = next;
            last = next;
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    /// <summary>Splits <paramref name="bytes"/> at the given offsets into separate segments.</summary>
    public static ReadOnlySequence<byte> Split(byte[] bytes, params int[] offsets)
    {
        var chunks = new List<byte[]>();
        var start = 0;
        foreach (var offset in offsets.Append(bytes.Length))
        {
            chunks.Add(bytes[start..offset]);
            start = offset;
        }

        return Create([.. chunks]);
    }
}
