using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;

namespace GrpcBoard.Wire;

/// <summary>
/// Length-Prefixed-Message: Compressed-Flag (1 byte, 0 or 1), Message-Length (4 bytes, big-endian),
/// Message. Used by both the server (Kestrel's pipes) and the client (HttpClient's streams).
/// </summary>
public static class MessageFraming
{
    public static void WriteHeader(Span<byte> destination, bool compressed, int length)
    {
        destination[0] = compressed ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt32BigEndian(destination[1..], (uint)length);
    }

    /// <summary>
    /// Serializes, optionally compresses, and writes one framed message. Size limits apply to the bytes
    /// on the wire; RESOURCE_EXHAUSTED is thrown before anything is written.
    /// </summary>
    public static void WriteMessage<T>(IBufferWriter<byte> writer, T message, Marshaller<T> marshaller, ICompressionProvider? compression, int? maxSendSize)
    {
        var size = marshaller.ComputeSize(message);
        if (compression is null)
        {
            CheckSendSize(size, maxSendSize);
            WriteHeader(writer.GetSpan(GrpcProtocol.MessageHeaderSize), compressed: false, size);
            writer.Advance(GrpcProtocol.MessageHeaderSize);
            marshaller.Write(message, writer);
            return;
        }

        var plain = new ArrayBufferWriter<byte>(Math.Max(size, 1));
        marshaller.Write(message, plain);
        var packed = new ArrayBufferWriter<byte>(Math.Max(size / 2, 64));
        compression.Compress(new ReadOnlySequence<byte>(plain.WrittenMemory), packed);
        CheckSendSize(packed.WrittenCount, maxSendSize);
        var span = writer.GetSpan(GrpcProtocol.MessageHeaderSize + packed.WrittenCount);
        WriteHeader(span, compressed: true, packed.WrittenCount);
        packed.WrittenSpan.CopyTo(span[GrpcProtocol.MessageHeaderSize..]);
        writer.Advance(GrpcProtocol.MessageHeaderSize + packed.WrittenCount);
    }

    /// <summary>
    /// Takes one complete message off the front of <paramref name="buffer"/>. Returns false, leaving
    /// the buffer as it was, when more bytes are needed. The length is checked against the limit as
    /// soon as the 5-byte prefix is in, before the body is buffered.
    /// </summary>
    public static bool TryReadMessage(ref ReadOnlySequence<byte> buffer, int maxReceiveSize, out bool compressed, out ReadOnlySequence<byte> payload)
    {
        compressed = false;
        payload = default;
        if (buffer.Length < GrpcProtocol.MessageHeaderSize)
        {
            return false;
        }

        Span<byte> header = stackalloc byte[GrpcProtocol.MessageHeaderSize];
        buffer.Slice(0, GrpcProtocol.MessageHeaderSize).CopyTo(header);
        compressed = header[0] switch
        {
            0 => false,
            1 => true,
            _ => throw new RpcException(StatusCode.Internal, $"Unexpected compressed flag value {header[0]} in a message prefix."),
        };
        var length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)maxReceiveSize)
        {
            throw new RpcException(StatusCode.ResourceExhausted,
                $"Received message of {length} bytes exceeds the maximum message size of {maxReceiveSize} bytes.");
        }

        if (buffer.Length < GrpcProtocol.MessageHeaderSize + length)
        {
            return false;
        }

        payload = buffer.Slice(GrpcProtocol.MessageHeaderSize, length);
        buffer = buffer.Slice(payload.End);
        return true;
    }

    /// <summary>
    /// Reads the next message from a pipe. Returns false at a clean end of stream; throws INTERNAL when the
    /// stream ends inside a message, and RESOURCE_EXHAUSTED when a message is over the limit.
    /// </summary>
    public static async ValueTask<(bool HasMessage, T? Message)> ReadMessageAsync<T>(
        PipeReader reader, Marshaller<T> marshaller, ICompressionProvider? decompression, int maxReceiveSize, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            bool complete;
            bool compressed;
            ReadOnlySequence<byte> payload;
            try
            {
                complete = TryReadMessage(ref buffer, maxReceiveSize, out compressed, out payload);
            }
            catch (RpcException)
            {
                // A refused prefix ends the call; leave the reader consistent for whoever completes it.
                reader.AdvanceTo(buffer.Start);
                throw;
            }

            if (complete)
            {
                try
                {
                    return (true, Decode(payload, compressed, marshaller, decompression, maxReceiveSize));
                }
                finally
                {
                    reader.AdvanceTo(buffer.Start);
                }
            }

            if (result.IsCompleted || result.IsCanceled)
            {
                var leftover = buffer.Length;
                reader.AdvanceTo(buffer.End);
                if (leftover == 0 && result.IsCompleted)
                {
                    return (false, default);
                }

                throw result.IsCanceled
                    ? new RpcException(StatusCode.Internal, "Reading the message stream was cancelled.")
                    : Incomplete(leftover);
            }

            reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    /// <summary>The stream ended inside a message: INTERNAL, whichever transport read it.</summary>
    public static RpcException Incomplete(long leftover) =>
        new(StatusCode.Internal, $"Incomplete message: the stream ended with {leftover} bytes of a message.");

    public static T Decode<T>(ReadOnlySequence<byte> payload, bool compressed, Marshaller<T> marshaller, ICompressionProvider? decompression, int maxReceiveSize)
    {
        if (compressed)
        {
            // Spec: a Compressed-Flag of 1 with no (or identity) Message-Encoding is a protocol error.
            if (decompression is null)
            {
                throw new RpcException(StatusCode.Internal, "A message is compressed but no grpc-encoding was declared for it.");
            }

            payload = new ReadOnlySequence<byte>(decompression.Decompress(payload, maxReceiveSize));
        }

        try
        {
            return marshaller.Parse(payload);
        }
        catch (Exception ex) when (ex is not RpcException)
        {
            throw new RpcException(new Status(StatusCode.Internal, "Failed to deserialize a message: " + ex.Message), inner: ex);
        }
    }

    private static void CheckSendSize(int size, int? maxSendSize)
    {
        if (size > maxSendSize)
        {
            throw new RpcException(StatusCode.ResourceExhausted,
                $"Sending message of {size} bytes exceeds the maximum message size of {maxSendSize.Value} bytes.");
        }
    }
}
