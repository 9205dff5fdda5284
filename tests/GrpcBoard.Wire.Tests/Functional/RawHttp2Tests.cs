using System.Buffers;
using System.Net;
using GrpcBoard.Wire.Server;
using GrpcBoard.Wire.Tests.Infrastructure;

namespace GrpcBoard.Wire.Tests.Functional;

/// <summary>
/// Plain HTTP/2 requests against GrpcEndpoint on Kestrel: what exactly the server puts on the wire, and how it
/// answers requests that no conforming client sends.
/// </summary>
public class RawHttp2Tests
{
    private const string EchoPath = "/" + TestService.Name + "/Echo";
    private const string CountPath = "/" + TestService.Name + "/Count";
    private const string WaitPath = "/" + TestService.Name + "/Wait";

    private static readonly byte[] HelloFrame = [0, 0, 0, 0, 5, 0x68, 0x65, 0x6C, 0x6C, 0x6F];

    /// <summary>Echo, a server stream of N items, a handler that waits for its token; counts handler runs.</summary>
    private sealed class Service
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public Signal<DateTimeOffset> WaitCancelled { get; } = new();

        public Signal<Metadata> SeenHeaders { get; } = new();

        public void Register(GrpcServiceRegistry registry) => registry
            .AddUnary(Utf8.Unary("Echo"), (request, context) =>
            {
                Interlocked.Increment(ref _calls);
                SeenHeaders.Set(context.RequestHeaders);
                return Task.FromResult(request);
            })
            .AddServerStreaming(Utf8.ServerStreaming("Count"), async (request, writer, context) =>
            {
                Interlocked.Increment(ref _calls);
                for (var i = 1; i <= int.Parse(request, System.Globalization.CultureInfo.InvariantCulture); i++)
                {
                    await writer.WriteAsync(i.ToString(System.Globalization.CultureInfo.InvariantCulture));
                }

                context.ResponseTrailers.Add("x-total", request);
            })
            .AddUnary(Utf8.Unary("Wait"), async (_, context) =>
            {
                Interlocked.Increment(ref _calls);
                try
                {
                    await Task.Delay(Timeout.Infinite, context.CancellationToken);
                }
                catch (OperationCanceledException)
                {
                    WaitCancelled.Set(DateTimeOffset.UtcNow);
                    throw;
                }

                return "never";
            })
            .AddUnary(Utf8.Unary("Fail"), (_, context) =>
            {
                Interlocked.Increment(ref _calls);
                context.ResponseTrailers.Add("x-hint", "see docs").Add("x-hint-bin", [0xCA, 0xFE]);
                throw new RpcException(new Status(StatusCode.InvalidArgument, "bad: 100% ünïcode\n", new byte[] { 1, 2, 3, 0xFF }));
            });
    }

    private static async Task<(KestrelHost Server, RawHttp2 Raw, Service Service)> StartAsync(Action<GrpcServerOptions>? configure = null, bool withHttp1Listener = false)
    {
        var service = new Service();
        var server = await KestrelHost.StartGrpcAsync(service.Register, configure, withHttp1Listener);
        return (server, new RawHttp2(server.Address), service);
    }

    /// <summary>A normal call on the same connection still works: the server recovered from whatever came before.</summary>
    private static async Task AssertServerStillWorks(RawHttp2 raw)
    {
        var response = await raw.PostAsync(EchoPath, HelloFrame);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HelloFrame, response.Body);
        Assert.Equal("0", response.Trailer("grpc-status"));
    }

    [Fact]
    public async Task SuccessfulUnary_HeadersFramedBodyAndOkInTrailers()
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(EchoPath, HelloFrame);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(new Version(2, 0), response.Version);
        Assert.Equal("application/grpc", response.ContentType);
        Assert.Null(response.Header("grpc-status")); // not Trailers-Only: the status is in the trailers
        Assert.Null(response.Header("grpc-encoding")); // no compression asked for
        Assert.Equal(HelloFrame, response.Body);
        Assert.Equal("0", response.Trailer("grpc-status"));
        Assert.Null(response.Trailer("grpc-message")); // OK has no message
    }

    [Fact]
    public async Task ServerStreaming_BodyIsTheConcatenatedFrames_ThenTrailers()
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(CountPath, RawHttp2.Frame(Utf8.Bytes("3")));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/grpc", response.ContentType);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 1, (byte)'1', 0, 0, 0, 0, 1, (byte)'2', 0, 0, 0, 0, 1, (byte)'3' }, response.Body);
        Assert.Equal("0", response.Trailer("grpc-status"));
        Assert.Equal("3", response.Trailer("x-total"));
    }

    [Fact]
    public async Task ErrorAfterAMessage_StatusMessageAndDetailsAreInTheTrailersNotTheHeaders()
    {
        await using var server = await KestrelHost.StartGrpcAsync(r => r.AddServerStreaming(Utf8.ServerStreaming("Partial"), async (_, writer, context) =>
        {
            await writer.WriteAsync("hello");
            context.ResponseTrailers.Add("x-after", "1");
            throw new RpcException(new Status(StatusCode.DataLoss, "lost 50%", new byte[] { 0xAB }));
        }));
        using var raw = new RawHttp2(server.Address);

        var response = await raw.PostAsync("/" + TestService.Name + "/Partial", HelloFrame);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/grpc", response.ContentType);
        Assert.Null(response.Header("grpc-status"));
        Assert.Null(response.Header("grpc-message"));
        Assert.Equal(HelloFrame, response.Body);
        Assert.Equal("15", response.Trailer("grpc-status"));
        Assert.Equal("lost 50%25", response.Trailer("grpc-message"));
        Assert.Equal("qw==", response.Trailer("grpc-status-details-bin"));
        Assert.Equal("1", response.Trailer("x-after"));
    }

    [Fact]
    public async Task ServerStreaming_NoMessages_IsTrailersOnlyOk()
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(CountPath, RawHttp2.Frame(Utf8.Bytes("0")));

        response.AssertTrailersOnly(StatusCode.OK);
        Assert.Equal("0", response.Header("x-total")); // custom trailers travel in the same HEADERS frame
    }

    [Fact]
    public async Task UnknownMethod_IsTrailersOnly_WithStatusInTheHeadersAndNoBody()
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync("/" + TestService.Name + "/Missing", HelloFrame);

        response.AssertTrailersOnly(StatusCode.Unimplemented);
        Assert.Equal($"Method /{TestService.Name}/Missing is unimplemented.", response.Header("grpc-message"));
        Assert.Equal(0, service.Calls);
        await AssertServerStillWorks(raw);
    }

    [Fact]
    public async Task HandlerError_IsTrailersOnly_WithPercentEncodedMessageDetailsAndCustomTrailers()
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync("/" + TestService.Name + "/Fail", HelloFrame);

        response.AssertTrailersOnly(StatusCode.InvalidArgument);
        Assert.Equal("3", response.Header("grpc-status"));
        Assert.Equal("bad: 100%25 %C3%BCn%C3%AFcode%0A", response.Header("grpc-message"));
        Assert.Equal(Convert.ToBase64String(new byte[] { 1, 2, 3, 0xFF }), response.Header("grpc-status-details-bin"));
        Assert.Equal("see docs", response.Header("x-hint"));
        Assert.True(BinaryHeader.TryDecode(response.Header("x-hint-bin")!, out var hint));
        Assert.Equal(new byte[] { 0xCA, 0xFE }, hint);
    }

    [Theory]
    [InlineData("application/json")]
    [InlineData("text/plain")]
    [InlineData("application/grpc-web")]
    [InlineData("application/grpc+json")]
    public async Task WrongContentType_Is415_WithGrpcStatusInternalInHeaders(string contentType)
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(EchoPath, HelloFrame, contentType);

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Equal("13", response.Header("grpc-status"));
        Assert.Equal(PercentEncoding.Encode($"Content-Type '{contentType}' is not supported."), response.Header("grpc-message"));
        Assert.Empty(response.Body);
        Assert.Equal(0, service.Calls);
        await AssertServerStillWorks(raw);
    }

    [Fact]
    public async Task MissingContentType_Is415()
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var request = RawHttp2.Request(EchoPath, new ByteArrayContent(HelloFrame));
        request.Content!.Headers.Remove("Content-Type");
        var response = await raw.SendAsync(request);

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Equal("13", response.Header("grpc-status"));
        Assert.Equal(0, service.Calls);
    }

    [Theory]
    [InlineData("application/grpc+proto")]
    [InlineData("application/grpc; charset=utf-8")]
    public async Task GrpcContentTypeVariants_AreAccepted(string contentType)
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(EchoPath, HelloFrame, contentType);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HelloFrame, response.Body);
        Assert.Equal("0", response.Trailer("grpc-status"));
    }

    [Fact]
    public async Task NonPostMethod_Is405_WithGrpcStatus()
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var request = RawHttp2.Request(EchoPath, content: null);
        request.Method = HttpMethod.Get;
        var response = await raw.SendAsync(request);

        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("13", response.Header("grpc-status"));
        Assert.Equal(0, service.Calls);
        await AssertServerStillWorks(raw);
    }

    [Fact]
    public async Task Http11Request_Is426_WithGrpcStatus()
    {
        var (server, raw, service) = await StartAsync(withHttp1Listener: true);
        await using var _s = server;
        using var _r = raw;

        using var http1 = new HttpClient { BaseAddress = server.Http1Address, Timeout = Timeouts.Default };
        using var request = new HttpRequestMessage(HttpMethod.Post, EchoPath)
        {
            Version = HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(HelloFrame),
        };
        request.Content.Headers.TryAddWithoutValidation("Content-Type", "application/grpc");
        using var response = await http1.SendAsync(request).Within();

        Assert.Equal(new Version(1, 1), response.Version);
        Assert.Equal(HttpStatusCode.UpgradeRequired, response.StatusCode);
        Assert.Equal("13", string.Join(",", response.Headers.GetValues("grpc-status")));
        Assert.Equal(0, service.Calls);
    }

    public static TheoryData<string, byte[]> MalformedUnaryBodies => new()
    {
        { "empty body", [] },
        { "3 bytes: an incomplete prefix", [0, 0, 0] },
        { "prefix announces 10 bytes, 4 follow", [0, 0, 0, 0, 10, 1, 2, 3, 4] },
        { "two messages to a unary method", [.. HelloFrame, .. HelloFrame] },
        { "a message and a partial second prefix", [.. HelloFrame, 0, 0] },
        { "compressed flag 2", [2, 0, 0, 0, 5, 0x68, 0x65, 0x6C, 0x6C, 0x6F] },
        { "compressed flag 1 without grpc-encoding", [1, 0, 0, 0, 5, 0x68, 0x65, 0x6C, 0x6C, 0x6F] },
    };

    [Theory]
    [MemberData(nameof(MalformedUnaryBodies))]
    public async Task MalformedRequestBody_IsInternal_AndTheServerRecovers(string why, byte[] body)
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(EchoPath, body);

        response.AssertTrailersOnly(StatusCode.Internal);
        Assert.False(string.IsNullOrEmpty(response.Header("grpc-message")), why);
        Assert.Equal(0, service.Calls);
        await AssertServerStillWorks(raw);
    }

    [Fact]
    public async Task MessageTheMarshallerCannotParse_IsInternal()
    {
        var strictUtf8 = new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        var strict = new Method<string, string>(MethodType.Unary, TestService.Name, "Strict",
            new Marshaller<string>(Utf8.Marshaller.ComputeSize, Utf8.Marshaller.Write, seq => strictUtf8.GetString(seq.ToArray())),
            Utf8.Marshaller);
        var calls = 0;
        await using var server = await KestrelHost.StartGrpcAsync(r => r.AddUnary(strict, (request, _) =>
        {
            Interlocked.Increment(ref calls);
            return Task.FromResult(request);
        }));
        using var raw = new RawHttp2(server.Address);

        var response = await raw.PostAsync("/" + TestService.Name + "/Strict", [0, 0, 0, 0, 2, 0xC3, 0x28]);

        response.AssertTrailersOnly(StatusCode.Internal);
        Assert.StartsWith("Failed to deserialize a message", response.Header("grpc-message"), StringComparison.Ordinal);
        Assert.Equal(0, calls);
    }

    [Fact]
    public async Task MalformedFrame_OnAServerStreamingMethod_IsInternal()
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(CountPath, [0, 0, 0, 0, 10, 1, 2, 3, 4]);

        response.AssertTrailersOnly(StatusCode.Internal);
        Assert.Equal(0, service.Calls);
        await AssertServerStillWorks(raw);
    }

    [Fact]
    public async Task OversizedMessage_IsRefusedFromItsPrefixAlone_WhileTheRequestStreamIsStillOpen()
    {
        var (server, raw, service) = await StartAsync(o => o.MaxReceiveMessageSize = 1024);
        await using var _s = server;
        using var _r = raw;

        // Send only a prefix announcing 2 GiB and keep the request stream open: the server must answer
        // without waiting for (or buffering) the body.
        var release = new Signal();
        var content = new HeldOpenContent([0, 0x80, 0, 0, 0], release);
        try
        {
            using var response = await raw.SendHeadersReadAsync(RawHttp2.Request(EchoPath, content));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("8", string.Join(",", response.Headers.GetValues("grpc-status")));
            Assert.Contains("2147483648", string.Join(",", response.Headers.GetValues("grpc-message")), StringComparison.Ordinal);
            Assert.Empty(await response.Content.ReadAsByteArrayAsync().Within());
        }
        finally
        {
            release.Set();
        }

        Assert.Equal(0, service.Calls);
        await AssertServerStillWorks(raw);
    }

    [Fact]
    public async Task MessageOfExactlyTheLimit_IsAccepted()
    {
        var (server, raw, _) = await StartAsync(o => o.MaxReceiveMessageSize = 5);
        await using var _s = server;
        using var _r = raw;

        await AssertServerStillWorks(raw); // "hello" is 5 bytes
        var response = await raw.PostAsync(EchoPath, RawHttp2.Frame(Utf8.Bytes("hello!")));
        response.AssertTrailersOnly(StatusCode.ResourceExhausted);
    }

    [Fact]
    public async Task MessageSplitAcrossManyDataFrames_IsReassembled()
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        // Each write is flushed separately, so the 5-byte prefix and the payload arrive in several DATA frames.
        var frame = RawHttp2.Frame(Utf8.Bytes("split across frames"));
        var content = new ChunkedContent(frame, 1, 2, 1, 1, 3, 4);
        var response = await raw.SendAsync(RawHttp2.Request(EchoPath, content));

        Assert.Equal(frame, response.Body);
        Assert.Equal("0", response.Trailer("grpc-status"));
    }

    [Fact]
    public async Task ServerDeadline_FromGrpcTimeout_EndsTheCallWithDeadlineExceeded_WithoutAClientReset()
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        // This client never cancels: only the server's own deadline can end the call.
        var started = DateTimeOffset.UtcNow;
        var response = await raw.PostAsync(WaitPath, HelloFrame, headers: h => h.TryAddWithoutValidation("grpc-timeout", "100m"));

        response.AssertTrailersOnly(StatusCode.DeadlineExceeded);
        var cancelledAt = await service.WaitCancelled.WaitAsync();
        Assert.True(cancelledAt - started >= TimeSpan.FromMilliseconds(90), $"cancelled after {(cancelledAt - started).TotalMilliseconds} ms");
    }

    [Fact]
    public async Task ServerDeadline_UnaryHandlerThatReturnsLate_SendsNoMessageOnlyDeadlineExceeded()
    {
        var handlerReturned = new Signal();
        await using var server = await KestrelHost.StartGrpcAsync(r => r.AddUnary(Utf8.Unary("Late"), async (_, context) =>
        {
            // Ignores cancellation: waits for the deadline, then answers anyway.
            await Task.Delay(Timeout.Infinite, context.CancellationToken).ContinueWith(_ => { }, TaskScheduler.Default);
            handlerReturned.Set();
            return "too late";
        }));
        using var raw = new RawHttp2(server.Address);

        var response = await raw.PostAsync("/" + TestService.Name + "/Late", HelloFrame, headers: h => h.TryAddWithoutValidation("grpc-timeout", "50m"));

        await handlerReturned.WaitAsync();
        response.AssertTrailersOnly(StatusCode.DeadlineExceeded);
    }

    [Fact]
    public async Task ServerDeadline_DuringAServerStream_EndsWithDeadlineExceededInTrailers()
    {
        var lateWriteFailed = new Signal<Exception>();
        await using var server = await KestrelHost.StartGrpcAsync(r => r.AddServerStreaming(Utf8.ServerStreaming("Ticks"), async (_, writer, context) =>
        {
            for (var i = 0; i < 3; i++)
            {
                await writer.WriteAsync("tick");
            }

            await Task.Delay(Timeout.Infinite, context.CancellationToken).ContinueWith(_ => { }, TaskScheduler.Default);
            try
            {
                await writer.WriteAsync("after the deadline");
            }
            catch (Exception ex)
            {
                lateWriteFailed.Set(ex);
                throw;
            }
        }));
        using var raw = new RawHttp2(server.Address);

        var response = await raw.PostAsync("/" + TestService.Name + "/Ticks", HelloFrame, headers: h => h.TryAddWithoutValidation("grpc-timeout", "100m"));

        Assert.IsAssignableFrom<OperationCanceledException>(await lateWriteFailed.WaitAsync());
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Null(response.Header("grpc-status"));
        byte[] tick = [0, 0, 0, 0, 4, (byte)'t', (byte)'i', (byte)'c', (byte)'k'];
        Assert.Equal([.. tick, .. tick, .. tick], response.Body);
        Assert.Equal("4", response.Trailer("grpc-status"));
    }

    [Fact]
    public async Task Duplex_MalformedFrameMidStream_IsInternalAfterTheEchoedMessages()
    {
        await using var server = await KestrelHost.StartGrpcAsync(r => r.AddDuplexStreaming(Utf8.Duplex("Echo"), async (requests, responses, _) =>
        {
            while (await requests.MoveNextAsync())
            {
                await responses.WriteAsync(requests.Current);
            }
        }));
        using var raw = new RawHttp2(server.Address);

        var response = await raw.PostAsync(EchoPath, [.. HelloFrame, 2, 0, 0, 0, 1, 0x78]);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HelloFrame, response.Body);
        Assert.Equal("13", response.Trailer("grpc-status"));
        Assert.Contains("compressed flag", response.Trailer("grpc-message"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ConcurrentWritesFromOneHandler_NeverInterleaveFrames()
    {
        await using var server = await KestrelHost.StartGrpcAsync(r => r.AddServerStreaming(Utf8.ServerStreaming("Parallel"), (_, writer, _) =>
            Task.WhenAll(Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
            {
                for (var i = 0; i < 50; i++)
                {
                    await writer.WriteAsync($"writer-{w}-message-{i}-" + new string((char)('a' + w), 200 + i));
                }
            })))));
        using var raw = new RawHttp2(server.Address);

        var response = await raw.PostAsync("/" + TestService.Name + "/Parallel", HelloFrame);

        Assert.Equal("0", response.Trailer("grpc-status"));
        var buffer = new ReadOnlySequence<byte>(response.Body);
        var seen = new HashSet<string>();
        while (MessageFraming.TryReadMessage(ref buffer, 1 << 20, out var compressed, out var payload))
        {
            Assert.False(compressed);
            var text = Utf8.Marshaller.Parse(payload);
            Assert.Matches("^writer-(\\d)-message-(\\d+)-([a-d])+$", text);
            Assert.True(seen.Add(text));
        }

        Assert.Equal(0, buffer.Length);
        Assert.Equal(200, seen.Count);
    }

    [Theory]
    [InlineData("0S")]
    [InlineData("0n")]
    public async Task ZeroTimeout_IsDeadlineExceededBeforeTheHandlerRuns(string timeout)
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(EchoPath, HelloFrame, headers: h => h.TryAddWithoutValidation("grpc-timeout", timeout));

        response.AssertTrailersOnly(StatusCode.DeadlineExceeded);
        Assert.Equal(0, service.Calls);
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("123456789S")]
    [InlineData("10")]
    public async Task InvalidTimeout_IsIgnored(string timeout)
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(EchoPath, HelloFrame, headers: h => h.TryAddWithoutValidation("grpc-timeout", timeout));

        Assert.Equal(HelloFrame, response.Body);
        Assert.Equal("0", response.Trailer("grpc-status"));
    }

    [Theory]
    [InlineData("identity,gzip", true)]
    [InlineData("gzip", true)]
    [InlineData("deflate, gzip", true)]
    [InlineData("identity", false)]
    [InlineData(null, false)]
    public async Task ResponseCompression_OnlyWhenTheClientAcceptsGzip(string? acceptEncoding, bool compressed)
    {
        var (server, raw, _) = await StartAsync(o => o.ResponseCompression = GzipCompressionProvider.Instance);
        await using var _s = server;
        using var _r = raw;

        var text = string.Concat(Enumerable.Repeat("compressible ", 100));
        var response = await raw.PostAsync(EchoPath, RawHttp2.Frame(Utf8.Bytes(text)), headers: h =>
        {
            if (acceptEncoding is not null)
            {
                h.TryAddWithoutValidation("grpc-accept-encoding", acceptEncoding);
            }
        });

        Assert.Equal("0", response.Trailer("grpc-status"));
        var buffer = new ReadOnlySequence<byte>(response.Body);
        Assert.True(MessageFraming.TryReadMessage(ref buffer, 1 << 20, out var flag, out var payload));
        Assert.Equal(0, buffer.Length);
        Assert.Equal(compressed ? (byte)1 : (byte)0, response.Body[0]);
        Assert.Equal(compressed, flag);
        if (compressed)
        {
            Assert.Equal("gzip", response.Header("grpc-encoding"));
            Assert.True(payload.Length < text.Length / 4);
            Assert.Equal(text, MessageFraming.Decode(payload, true, Utf8.Marshaller, GzipCompressionProvider.Instance, 1 << 20));
        }
        else
        {
            Assert.Null(response.Header("grpc-encoding"));
            Assert.Equal(text, Utf8.Marshaller.Parse(payload));
        }
    }

    [Fact]
    public async Task NoResponseCompressionConfigured_IsIdentityEvenIfTheClientAcceptsGzip()
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(EchoPath, HelloFrame, headers: h => h.TryAddWithoutValidation("grpc-accept-encoding", "identity,gzip"));

        Assert.Null(response.Header("grpc-encoding"));
        Assert.Equal(HelloFrame, response.Body);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task GzipRequest_CompressedOrNotPerMessage_IsAccepted(bool compressMessage)
    {
        var (server, raw, _) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, "hello", Utf8.Marshaller, compressMessage ? GzipCompressionProvider.Instance : null, null);
        Assert.Equal(compressMessage ? (byte)1 : (byte)0, writer.WrittenSpan[0]);

        var response = await raw.PostAsync(EchoPath, writer.WrittenSpan.ToArray(), headers: h => h.TryAddWithoutValidation("grpc-encoding", "gzip"));

        Assert.Equal(HelloFrame, response.Body); // the client did not list gzip in grpc-accept-encoding
        Assert.Equal("0", response.Trailer("grpc-status"));
    }

    [Fact]
    public async Task GzipBombRequest_IsResourceExhausted()
    {
        var (server, raw, service) = await StartAsync(o => o.MaxReceiveMessageSize = 64 * 1024);
        await using var _s = server;
        using var _r = raw;

        var bomb = RawHttp2.Frame(Protocol.MessageFramingTests.GzipBomb(16 << 20), flag: 1);
        var response = await raw.PostAsync(EchoPath, bomb, headers: h => h.TryAddWithoutValidation("grpc-encoding", "gzip"));

        response.AssertTrailersOnly(StatusCode.ResourceExhausted);
        Assert.Equal(0, service.Calls);
        await AssertServerStillWorks(raw);
    }

    [Fact]
    public async Task UnsupportedRequestEncoding_IsUnimplemented_WithGrpcAcceptEncoding()
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        var response = await raw.PostAsync(EchoPath, HelloFrame, headers: h => h.TryAddWithoutValidation("grpc-encoding", "snappy"));

        response.AssertTrailersOnly(StatusCode.Unimplemented);
        Assert.Equal("identity,gzip", response.Header("grpc-accept-encoding"));
        Assert.Contains("snappy", response.Header("grpc-message"), StringComparison.Ordinal);
        Assert.Equal(0, service.Calls);
        await AssertServerStillWorks(raw);
    }

    [Fact]
    public async Task RequestMetadata_JoinedBinaryValues_AreSplitBeforeDecoding()
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        await raw.PostAsync(EchoPath, HelloFrame, headers: h =>
        {
            h.TryAddWithoutValidation("x-joined-bin", "AQI=,AwQF"); // padded, then un-padded
            h.TryAddWithoutValidation("x-unpadded-bin", "AQ");
            h.TryAddWithoutValidation("x-broken-bin", "!!!"); // not base64: dropped, not fatal
            h.TryAddWithoutValidation("x-text", "plain");
        });

        var metadata = await service.SeenHeaders.WaitAsync();
        Assert.Equal([new byte[] { 1, 2 }, new byte[] { 3, 4, 5 }], metadata.Where(e => e.Key == "x-joined-bin").Select(e => e.ValueBytes));
        Assert.Equal(new byte[] { 1 }, metadata.GetBytes("x-unpadded-bin"));
        Assert.DoesNotContain(metadata, e => e.Key == "x-broken-bin");
        Assert.Equal("plain", metadata.GetValue("x-text"));
    }

    [Fact]
    public async Task RequestMetadata_ReservedAndInvalidHeadersAreNotSurfaced()
    {
        var (server, raw, service) = await StartAsync();
        await using var _s = server;
        using var _r = raw;

        await raw.PostAsync(EchoPath, HelloFrame, headers: h =>
        {
            h.TryAddWithoutValidation("grpc-future-thing", "x");
            h.TryAddWithoutValidation("x-ok", "yes");
            h.TryAddWithoutValidation("grpc-accept-encoding", "identity");
        });

        var metadata = await service.SeenHeaders.WaitAsync();
        Assert.Equal("yes", metadata.GetValue("x-ok"));
        Assert.DoesNotContain(metadata, e => e.Key.StartsWith("grpc-", StringComparison.Ordinal) || e.Key == "te");
    }

    /// <summary>Writes its bytes, flushes, then keeps the request stream open until released.</summary>
    private sealed class HeldOpenContent(byte[] bytes, Signal release) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken)
        {
            await stream.WriteAsync(bytes, cancellationToken);
            await stream.FlushAsync(cancellationToken);
            try
            {
                await release.WaitAsync().WaitAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                // HttpClient stops sending once the server has ended the stream.
            }
        }

        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    /// <summary>Writes its bytes in chunks of the given sizes, flushing each (the rest in one chunk).</summary>
    private sealed class ChunkedContent(byte[] bytes, params int[] sizes) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken)
        {
            var offset = 0;
            foreach (var size in sizes.Append(int.MaxValue))
            {
                var n = Math.Min(size, bytes.Length - offset);
                if (n <= 0)
                {
                    break;
                }

                await stream.WriteAsync(bytes.AsMemory(offset, n), cancellationToken);
                await stream.FlushAsync(cancellationToken);
                offset += n;
            }
        }

        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
