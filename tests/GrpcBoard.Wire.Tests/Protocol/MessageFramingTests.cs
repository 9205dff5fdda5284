using System.Buffers;
using System.IO.Pipelines;
using GrpcBoard.Wire.Tests.Infrastructure;

namespace GrpcBoard.Wire.Tests.Protocol;

/// <summary>
/// Length-Prefixed-Message → Compressed-Flag (1 byte, 0 / 1) Message-Length (4 bytes, big endian) Message
/// (PROTOCOL-HTTP2.md, "Requests"), with literal bytes.
/// </summary>
public class MessageFramingTests
{
    private static readonly byte[] Hello = [0x68, 0x65, 0x6C, 0x6C, 0x6F]; // "hello"

    [Fact]
    public void WriteHeader_FiveByteMessage_IsZeroFlagAndBigEndianLength()
    {
        var header = new byte[5];
        MessageFraming.WriteHeader(header, compressed: false, 5);
        Assert.Equal(new byte[] { 0x00, 0x00, 0x00, 0x00, 0x05 }, header);
    }

    [Fact]
    public void WriteHeader_CompressedLargeLength_SetsFlagOneAndAllFourLengthBytes()
    {
        var header = new byte[5];
        MessageFraming.WriteHeader(header, compressed: true, 0x01020304);
        Assert.Equal(new byte[] { 0x01, 0x01, 0x02, 0x03, 0x04 }, header);
    }

    [Fact]
    public void WriteMessage_Uncompressed_WritesPrefixThenPayload()
    {
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, "hello", Utf8.Marshaller, compression: null, maxSendSize: null);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 5, 0x68, 0x65, 0x6C, 0x6C, 0x6F }, writer.WrittenSpan.ToArray());
    }

    [Fact]
    public void WriteMessage_EmptyMessage_IsJustAZeroLengthPrefix()
    {
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, "", Utf8.Marshaller, compression: null, maxSendSize: null);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0 }, writer.WrittenSpan.ToArray());
    }

    [Fact]
    public void WriteMessage_MultiByteUtf8_LengthCountsBytesNotChars()
    {
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, "é", Utf8.Marshaller, compression: null, maxSendSize: null);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 2, 0xC3, 0xA9 }, writer.WrittenSpan.ToArray());
    }

    [Fact]
    public void WriteMessage_OverMaxSendSize_ThrowsResourceExhaustedAndWritesNothing()
    {
        var writer = new ArrayBufferWriter<byte>();
        var ex = Assert.Throws<RpcException>(() => MessageFraming.WriteMessage(writer, "hello", Utf8.Marshaller, null, maxSendSize: 4));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal(0, writer.WrittenCount);
    }

    [Fact]
    public void WriteMessage_AtMaxSendSize_IsAllowed()
    {
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, "hello", Utf8.Marshaller, null, maxSendSize: 5);
        Assert.Equal(10, writer.WrittenCount);
    }

    [Fact]
    public void TryReadMessage_OneMessage_ReturnsPayloadAndConsumesExactlyIt()
    {
        var buffer = new ReadOnlySequence<byte>([0, 0, 0, 0, 5, .. Hello]);
        Assert.True(MessageFraming.TryReadMessage(ref buffer, 100, out var compressed, out var payload));
        Assert.False(compressed);
        Assert.Equal(Hello, payload.ToArray());
        Assert.Equal(0, buffer.Length);
    }

    [Fact]
    public void TryReadMessage_ZeroLengthMessage_IsAValidEmptyPayload()
    {
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0, 0, 0, 0, 0 });
        Assert.True(MessageFraming.TryReadMessage(ref buffer, 100, out _, out var payload));
        Assert.Equal(0, payload.Length);
        Assert.Equal(0, buffer.Length);
    }

    [Fact]
    public void TryReadMessage_TwoMessagesInOneBuffer_ReadsThemInOrder()
    {
        var buffer = new ReadOnlySequence<byte>([0, 0, 0, 0, 5, .. Hello, 0, 0, 0, 0, 2, 0x68, 0x69, 0xAA]);
        Assert.True(MessageFraming.TryReadMessage(ref buffer, 100, out _, out var first));
        Assert.Equal(Hello, first.ToArray());
        Assert.Equal(8, buffer.Length);

        Assert.True(MessageFraming.TryReadMessage(ref buffer, 100, out _, out var second));
        Assert.Equal(new byte[] { 0x68, 0x69 }, second.ToArray());

        // One trailing byte of a third message: not enough for a header.
        Assert.Equal(1, buffer.Length);
        Assert.False(MessageFraming.TryReadMessage(ref buffer, 100, out _, out _));
        Assert.Equal(new byte[] { 0xAA }, buffer.ToArray());
    }

    [Theory]
    [InlineData(new[] { 1 })] // flag | length+payload
    [InlineData(new[] { 3 })] // inside the length
    [InlineData(new[] { 5 })] // header | payload
    [InlineData(new[] { 7 })] // inside the payload
    [InlineData(new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 })] // one byte per segment
    [InlineData(new[] { 0, 2, 2, 6 })] // with empty segments
    public void TryReadMessage_MessageSplitAcrossSegments_IsReassembled(int[] splits)
    {
        byte[] wire = [0, 0, 0, 0, 5, .. Hello, 0x99];
        var buffer = TestSegment.Split(wire, splits);
        Assert.False(buffer.IsSingleSegment);

        Assert.True(MessageFraming.TryReadMessage(ref buffer, 100, out var compressed, out var payload));
        Assert.False(compressed);
        Assert.Equal(Hello, payload.ToArray());
        Assert.Equal(new byte[] { 0x99 }, buffer.ToArray());
    }

    [Theory]
    [InlineData(new byte[] { })]
    [InlineData(new byte[] { 0 })]
    [InlineData(new byte[] { 0, 0, 0, 0 })]
    public void TryReadMessage_IncompleteHeader_ReturnsFalseAndLeavesBufferUntouched(byte[] bytes)
    {
        var original = new ReadOnlySequence<byte>(bytes);
        var buffer = original;
        Assert.False(MessageFraming.TryReadMessage(ref buffer, 100, out _, out var payload));
        Assert.Equal(original.Start, buffer.Start);
        Assert.Equal(original.End, buffer.End);
        Assert.True(payload.IsEmpty);
    }

    [Fact]
    public void TryReadMessage_IncompleteBody_ReturnsFalseAndLeavesBufferUntouched()
    {
        // The prefix announces 5 bytes, 4 are there, split across segments.
        var original = TestSegment.Split([0, 0, 0, 0, 5, 0x68, 0x65, 0x6C, 0x6C], 3, 6);
        var buffer = original;
        Assert.False(MessageFraming.TryReadMessage(ref buffer, 100, out _, out _));
        Assert.Equal(original.Start, buffer.Start);
        Assert.Equal(original.End, buffer.End);
        Assert.Equal(9, buffer.Length);
    }

    [Fact]
    public void TryReadMessage_LengthOverLimit_ThrowsResourceExhaustedFromTheHeaderAlone()
    {
        // Only the 5-byte prefix is there: the limit must be enforced before waiting for (buffering) the body.
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0, 0, 0, 0, 101 });
        var ex = Assert.Throws<RpcException>(() => MessageFraming.TryReadMessage(ref buffer, 100, out _, out _));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Contains("101", ex.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void TryReadMessage_LengthAtLimit_IsAccepted()
    {
        var buffer = new ReadOnlySequence<byte>([0, 0, 0, 0, 5, .. Hello]);
        Assert.True(MessageFraming.TryReadMessage(ref buffer, 5, out _, out var payload));
        Assert.Equal(5, payload.Length);
    }

    [Fact]
    public void TryReadMessage_MaximumUInt32Length_IsResourceExhaustedNotAnOverflow()
    {
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0, 0xFF, 0xFF, 0xFF, 0xFF });
        var ex = Assert.Throws<RpcException>(() => MessageFraming.TryReadMessage(ref buffer, int.MaxValue, out _, out _));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Fact]
    public void TryReadMessage_LengthWithHighBitAndIntMaxLimit_IsResourceExhausted()
    {
        // 0x80000000 is negative as an int: a signed comparison would let it through.
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0, 0x80, 0, 0, 0 });
        var ex = Assert.Throws<RpcException>(() => MessageFraming.TryReadMessage(ref buffer, int.MaxValue, out _, out _));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(0x80)]
    [InlineData(0xFF)]
    public void TryReadMessage_CompressedFlagOtherThanZeroOrOne_IsInternal(byte flag)
    {
        var buffer = new ReadOnlySequence<byte>([flag, 0, 0, 0, 5, .. Hello]);
        var ex = Assert.Throws<RpcException>(() => MessageFraming.TryReadMessage(ref buffer, 100, out _, out _));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
    }

    [Fact]
    public void TryReadMessage_CompressedFlagOne_IsReported()
    {
        var buffer = new ReadOnlySequence<byte>([1, 0, 0, 0, 5, .. Hello]);
        Assert.True(MessageFraming.TryReadMessage(ref buffer, 100, out var compressed, out _));
        Assert.True(compressed);
    }

    [Fact]
    public void Decode_CompressedFlagWithoutDecompressor_IsInternal()
    {
        // Spec: if the Message-Encoding header is omitted then the Compressed-Flag must be 0.
        var ex = Assert.Throws<RpcException>(() =>
            MessageFraming.Decode(new ReadOnlySequence<byte>(Hello), compressed: true, Utf8.Marshaller, decompression: null, 100));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
    }

    [Fact]
    public void Decode_UncompressedWithDecompressor_IsParsedAsIs()
    {
        // A gzip call may still send individual messages uncompressed (flag 0).
        var message = MessageFraming.Decode(new ReadOnlySequence<byte>(Hello), compressed: false, Utf8.Marshaller, GzipCompressionProvider.Instance, 100);
        Assert.Equal("hello", message);
    }

    [Fact]
    public void Decode_MarshallerThrows_IsInternalWithTheCause()
    {
        var failing = new Marshaller<string>(_ => 0, (_, _) => { }, _ => throw new FormatException("not a message"));
        var ex = Assert.Throws<RpcException>(() =>
            MessageFraming.Decode(new ReadOnlySequence<byte>(Hello), false, failing, null, 100));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Contains("not a message", ex.Status.Detail, StringComparison.Ordinal);
        Assert.IsType<FormatException>(ex.InnerException);
    }

    [Fact]
    public void Gzip_RoundTrip_SetsFlagOneAndCompressedLength()
    {
        var text = string.Concat(Enumerable.Repeat("gRPC over HTTP/2 ", 200));
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, text, Utf8.Marshaller, GzipCompressionProvider.Instance, maxSendSize: null);
        var wire = writer.WrittenSpan.ToArray();

        Assert.Equal(1, wire[0]);
        var announced = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(wire.AsSpan(1));
        Assert.Equal((uint)(wire.Length - 5), announced);
        Assert.True(announced < text.Length / 4, $"gzip of a repetitive text should be small, was {announced}");
        // The payload is a gzip member (RFC 1952 magic), a fresh one per message.
        Assert.Equal(new byte[] { 0x1F, 0x8B }, wire[5..7]);

        var buffer = new ReadOnlySequence<byte>(wire);
        Assert.True(MessageFraming.TryReadMessage(ref buffer, 1 << 20, out var compressed, out var payload));
        Assert.True(compressed);
        Assert.Equal(text, MessageFraming.Decode(payload, compressed, Utf8.Marshaller, GzipCompressionProvider.Instance, 1 << 20));
    }

    [Fact]
    public void Gzip_MaxSendSizeAppliesToCompressedBytesOnTheWire()
    {
        var text = new string('a', 10_000);
        var writer = new ArrayBufferWriter<byte>();
        // 10,000 bytes before compression, well under 1,000 after.
        MessageFraming.WriteMessage(writer, text, Utf8.Marshaller, GzipCompressionProvider.Instance, maxSendSize: 1_000);
        Assert.True(writer.WrittenCount < 1_005);
    }

    [Fact]
    public void Gzip_DecompressionBombOverTheLimit_IsResourceExhausted()
    {
        // 16 MiB of zeros gzip to about 16 KiB; the limit is 64 KiB, so the frame itself passes the length check.
        var bomb = GzipBomb(16 << 20);
        Assert.True(bomb.Length < 64 * 1024, $"compressed size {bomb.Length}");

        var wire = RawHttp2.Frame(bomb, flag: 1);
        var buffer = new ReadOnlySequence<byte>(wire);
        Assert.True(MessageFraming.TryReadMessage(ref buffer, 64 * 1024, out var compressed, out var payload));
        var ex = Assert.Throws<RpcException>(() => MessageFraming.Decode(payload, compressed, Utf8.Marshaller, GzipCompressionProvider.Instance, 64 * 1024));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    /// <summary>A small gzip member that inflates to <paramref name="size"/> zero bytes.</summary>
    public static byte[] GzipBomb(int size)
    {
        using var output = new MemoryStream();
        using (var gzip = new System.IO.Compression.GZipStream(output, System.IO.Compression.CompressionLevel.SmallestSize, leaveOpen: true))
        {
            gzip.Write(new byte[size]);
        }

        return output.ToArray();
    }

    [Fact]
    public void Gzip_DecompressedSizeExactlyAtLimit_IsAccepted()
    {
        var packed = new ArrayBufferWriter<byte>();
        GzipCompressionProvider.Instance.Compress(new ReadOnlySequence<byte>(new byte[10_000]), packed);
        var bytes = GzipCompressionProvider.Instance.Decompress(new ReadOnlySequence<byte>(packed.WrittenMemory), 10_000);
        Assert.Equal(10_000, bytes.Length);

        var ex = Assert.Throws<RpcException>(() => GzipCompressionProvider.Instance.Decompress(new ReadOnlySequence<byte>(packed.WrittenMemory), 9_999));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Fact]
    public void Gzip_CorruptPayload_IsInternal()
    {
        var ex = Assert.Throws<RpcException>(() =>
            MessageFraming.Decode(new ReadOnlySequence<byte>(new byte[] { 0x1F, 0x8B, 0x08, 0, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8 }), true, Utf8.Marshaller, GzipCompressionProvider.Instance, 100));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
    }

    [Fact]
    public void Gzip_DecompressesAPayloadSpreadOverSegments()
    {
        var packed = new ArrayBufferWriter<byte>();
        GzipCompressionProvider.Instance.Compress(new ReadOnlySequence<byte>(Utf8.Bytes("segmented gzip payload")), packed);
        var bytes = packed.WrittenSpan.ToArray();
        var sequence = TestSegment.Split(bytes, 1, 2, 10, bytes.Length - 1);
        Assert.Equal("segmented gzip payload", MessageFraming.Decode(sequence, true, Utf8.Marshaller, GzipCompressionProvider.Instance, 100));
    }

    // --- ReadMessageAsync on a real System.IO.Pipelines.Pipe ---

    [Fact]
    public async Task ReadMessageAsync_CleanEndOfStream_ReturnsNoMessage()
    {
        var pipe = new Pipe();
        await pipe.Writer.CompleteAsync().Within();
        var (has, message) = await MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).Within();
        Assert.False(has);
        Assert.Null(message);
    }

    [Fact]
    public async Task ReadMessageAsync_TwoMessagesDribbledByteByByte_ThenEof()
    {
        var pipe = new Pipe();
        byte[] wire = [0, 0, 0, 0, 5, .. Hello, 0, 0, 0, 0, 3, 0x61, 0x62, 0x63];
        var writing = Task.Run(async () =>
        {
            foreach (var b in wire)
            {
                await pipe.Writer.WriteAsync(new[] { b }).Within();
            }

            await pipe.Writer.CompleteAsync().Within();
        });

        var first = await MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).Within();
        var second = await MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).Within();
        var end = await MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).Within();
        await writing.Within();

        Assert.Equal((true, "hello"), first);
        Assert.Equal((true, "abc"), second);
        Assert.False(end.HasMessage);
    }

    [Fact]
    public async Task ReadMessageAsync_TwoMessagesInOneWrite_BothAreReturned()
    {
        var pipe = new Pipe();
        await pipe.Writer.WriteAsync(new byte[] { 0, 0, 0, 0, 1, 0x78, 0, 0, 0, 0, 1, 0x79 }).Within();
        await pipe.Writer.CompleteAsync().Within();

        Assert.Equal((true, "x"), await MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).Within());
        Assert.Equal((true, "y"), await MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).Within());
        Assert.False((await MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).Within()).HasMessage);
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0 })] // inside the prefix
    [InlineData(new byte[] { 0, 0, 0, 0, 10, 1, 2, 3, 4 })] // 10 announced, 4 sent
    public async Task ReadMessageAsync_EofInsideAMessage_IsInternal(byte[] bytes)
    {
        var pipe = new Pipe();
        await pipe.Writer.WriteAsync(bytes).Within();
        await pipe.Writer.CompleteAsync().Within();

        var ex = await Assert.ThrowsAsync<RpcException>(() =>
            MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).AsTask().Within());
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Contains(bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadMessageAsync_OverMaxSize_IsResourceExhaustedWithoutWaitingForTheBody()
    {
        var pipe = new Pipe();
        // Only the prefix, and the writer stays open: the reader must not wait for the 1000 bytes.
        await pipe.Writer.WriteAsync(new byte[] { 0, 0, 0, 0x03, 0xE8 }).Within();

        var ex = await Assert.ThrowsAsync<RpcException>(() =>
            MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 999, CancellationToken.None).AsTask().Within());
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Fact]
    public async Task ReadMessageAsync_WaitsForTheRestOfAMessage()
    {
        var pipe = new Pipe();
        await pipe.Writer.WriteAsync(new byte[] { 0, 0, 0, 0, 5, 0x68, 0x65 }).Within();
        var read = MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, CancellationToken.None).AsTask();
        Assert.False(read.IsCompleted);

        await pipe.Writer.WriteAsync(new byte[] { 0x6C, 0x6C, 0x6F }).Within();
        Assert.Equal((true, "hello"), await read.Within());
    }

    [Fact]
    public async Task ReadMessageAsync_GzipMessage_IsDecompressed()
    {
        var pipe = new Pipe();
        MessageFraming.WriteMessage(pipe.Writer, "zipped", Utf8.Marshaller, GzipCompressionProvider.Instance, null);
        await pipe.Writer.FlushAsync().Within();
        await pipe.Writer.CompleteAsync().Within();

        Assert.Equal((true, "zipped"), await MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, GzipCompressionProvider.Instance, 100, CancellationToken.None).Within());
    }

    [Fact]
    public async Task ReadMessageAsync_CancellationToken_StopsAWaitingRead()
    {
        var pipe = new Pipe();
        using var cts = new CancellationTokenSource();
        var read = MessageFraming.ReadMessageAsync(pipe.Reader, Utf8.Marshaller, null, 100, cts.Token).AsTask();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read.Within());
    }
}
