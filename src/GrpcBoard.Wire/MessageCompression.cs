using System.Buffers;
using System.IO.Compression;

namespace GrpcBoard.Wire;

/// <summary>A message encoding named in grpc-encoding / grpc-accept-encoding.</summary>
public interface ICompressionProvider
{
    string EncodingName { get; }

    /// <summary>Compresses <paramref name="data"/> into <paramref name="destination"/>.</summary>
    void Compress(ReadOnlySequence<byte> data, IBufferWriter<byte> destination);

    /// <summary>
    /// Decompresses <paramref name="data"/>; throws <see cref="RpcException"/> with RESOURCE_EXHAUSTED when
    /// the output would exceed <paramref name="maxSize"/>, so a small compressed bomb cannot exhaust memory.
    /// </summary>
    byte[] Decompress(ReadOnlySequence<byte> data, int maxSize);
}

public sealed class GzipCompressionProvider : ICompressionProvider
{
    public static readonly GzipCompressionProvider Instance = new();

    public string EncodingName => "gzip";

    public void Compress(ReadOnlySequence<byte> data, IBufferWriter<byte> destination)
    {
        using var output = new BufferWriterStream(destination);
        using (var gzip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true))
        {
            foreach (var segment in data)
            {
                gzip.Write(segment.Span);
            }
        }
    }

    public byte[] Decompress(ReadOnlySequence<byte> data, int maxSize)
    {
        using var input = new SequenceStream(data);
        using var gzip = new GZipStream(input, CompressionMode.Decompress);
        var buffer = new ArrayBufferWriter<byte>(Math.Max(1, Math.Min(maxSize, Math.Max(256, (int)data.Length * 4))));
        while (true)
        {
            var span = buffer.GetSpan(4096);
            int read;
            try
            {
                read = gzip.Read(span);
            }
            catch (InvalidDataException ex)
            {
                throw new RpcException(new Status(StatusCode.Internal, "Failed to decompress a gzip message."), inner: ex);
            }

            if (read == 0)
            {
                return buffer.WrittenSpan.ToArray();
            }

            buffer.Advance(read);
            if (buffer.WrittenCount > maxSize)
            {
                throw new RpcException(StatusCode.ResourceExhausted,
                    $"Decompressed message exceeds the maximum message size of {maxSize} bytes.");
            }
        }
    }

    private sealed class BufferWriterStream(IBufferWriter<byte> writer) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            var span = writer.GetSpan(buffer.Length);
            buffer.CopyTo(span);
            writer.Advance(buffer.Length);
        }
    }

    private sealed class SequenceStream(ReadOnlySequence<byte> data) : Stream
    {
        private ReadOnlySequence<byte> _remaining = data;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            var n = (int)Math.Min(buffer.Length, _remaining.Length);
            _remaining.Slice(0, n).CopyTo(buffer);
            _remaining = _remaining.Slice(n);
            return n;
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

/// <summary>The encodings this implementation speaks, by name.</summary>
public static class MessageCompression
{
    /// <summary>Sent in grpc-accept-encoding.</summary>
    public const string AcceptEncodingValue = "identity,gzip";

    /// <summary>
    /// The provider for <paramref name="encoding"/>; null for identity (or an absent header).
    /// Returns false for an encoding we cannot decode.
    /// </summary>
    public static bool TryGetProvider(string? encoding, out ICompressionProvider? provider)
    {
        provider = null;
        if (string.IsNullOrEmpty(encoding) || encoding.Equals(GrpcProtocol.IdentityEncoding, StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        if (encoding.Equals("gzip", StringComparison.OrdinalIgnoreCase))
        {
            provider = GzipCompressionProvider.Instance;
            return true;
        }

        return false;
    }

    /// <summary>True when a comma-separated grpc-accept-encoding value lists <paramref name="encoding"/>.</summary>
    public static bool Accepts(string? acceptEncoding, string encoding)
    {
        if (string.IsNullOrEmpty(acceptEncoding))
        {
            return false;
        }

        foreach (var part in acceptEncoding.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (part.Equals(encoding, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }
}
