using System.Buffers;
using System.Net;
using System.Net.Sockets;
using GrpcBoard.Testing;
using GrpcBoard.Wire.Client;
using GrpcBoard.Wire.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace GrpcBoard.Wire.Tests.Functional;

/// <summary>
/// GrpcChannel against hand-written Kestrel responses: broken deployments, HTTP errors, odd-but-legal responses
/// and RST_STREAM. The spec: implementations must synthesize a Status when the response has none, map HTTP
/// statuses per doc/http-grpc-status-mapping.md and RST_STREAM codes per PROTOCOL-HTTP2.md "Errors".
/// </summary>
public class ClientResponseHandlingTests
{
    /// <summary>Which transport carries unary calls: the channel's own HTTP/2 connections here, HttpClient in the class below.</summary>
    protected virtual bool HttpClientForCalls => false;

    private GrpcChannel CreateChannel(KestrelHost server, Action<GrpcChannelOptions>? configure = null) =>
        server.CreateChannel(o =>
        {
            o.HttpClientForCalls = HttpClientForCalls;
            configure?.Invoke(o);
        });

    private static readonly Method<string, string> Unary = Utf8.Unary("Any");
    private static readonly Method<string, string> Stream = Utf8.ServerStreaming("AnyStream");

    private static byte[] Frame(string text, byte flag = 0) => RawHttp2.Frame(Utf8.Bytes(text), flag);

    private async Task<RpcException> CallFailsAsync(RequestDelegate respond)
    {
        await using var server = await KestrelHost.StartAsync(respond);
        using var channel = CreateChannel(server);
        return await Timeouts.ThrowsRpc(() => channel.UnaryAsync(Unary, "request"));
    }

    private async Task<string> CallAsync(RequestDelegate respond)
    {
        await using var server = await KestrelHost.StartAsync(respond);
        using var channel = CreateChannel(server);
        return await channel.UnaryAsync(Unary, "request").Within();
    }

    private static async Task Grpc(HttpContext context, params byte[][] frames)
    {
        context.Response.ContentType = "application/grpc";
        foreach (var frame in frames)
        {
            await context.Response.Body.WriteAsync(frame);
        }
    }

    [Theory]
    [InlineData(400, StatusCode.Internal)]
    [InlineData(401, StatusCode.Unauthenticated)]
    [InlineData(403, StatusCode.PermissionDenied)]
    [InlineData(404, StatusCode.Unimplemented)]
    [InlineData(429, StatusCode.Unavailable)]
    [InlineData(502, StatusCode.Unavailable)]
    [InlineData(503, StatusCode.Unavailable)]
    [InlineData(504, StatusCode.Unavailable)]
    [InlineData(500, StatusCode.Unknown)]
    [InlineData(302, StatusCode.Unknown)]
    public async Task HttpErrorWithoutGrpcStatus_IsMappedFromTheHttpStatus(int httpStatus, StatusCode expected)
    {
        var ex = await CallFailsAsync(context =>
        {
            context.Response.StatusCode = httpStatus;
            context.Response.ContentType = "text/html";
            return context.Response.WriteAsync("<html>proxy error</html>");
        });

        Assert.Equal(expected, ex.StatusCode);
        Assert.Contains($"HTTP status {httpStatus}", ex.Status.Detail, StringComparison.Ordinal);
    }

    /// <summary>
    /// A redirect is not followed: HttpClient would re-send the call (a 307 or 308 with its body) somewhere the
    /// caller did not choose, and a call that changes state must not run twice or elsewhere unseen. Other gRPC
    /// clients report it as an HTTP status (UNKNOWN) too.
    /// </summary>
    [Theory]
    [InlineData(301)]
    [InlineData(302)]
    [InlineData(307)]
    [InlineData(308)]
    public async Task ARedirect_IsNotFollowed(int httpStatus)
    {
        var redirectedTo = 0;
        var ex = await CallFailsAsync(async context =>
        {
            if (context.Request.Path.StartsWithSegments("/elsewhere", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref redirectedTo);
                context.Response.Headers["grpc-status"] = "0";
                await Grpc(context, Frame("redirected"));
                return;
            }

            context.Response.StatusCode = httpStatus;
            context.Response.Headers.Location = "/elsewhere" + context.Request.Path;
        });

        Assert.Equal(StatusCode.Unknown, ex.StatusCode);
        Assert.Contains($"HTTP status {httpStatus}", ex.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(0, Volatile.Read(ref redirectedTo));
    }

    [Fact]
    public async Task HttpErrorWithAGrpcStatus_UsesTheExplicitStatus()
    {
        var ex = await CallFailsAsync(context =>
        {
            context.Response.StatusCode = 503;
            context.Response.Headers["grpc-status"] = "8";
            context.Response.Headers["grpc-message"] = "slow down";
            return Task.CompletedTask;
        });

        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal("slow down", ex.Status.Detail);
    }

    [Theory]
    [InlineData("text/html")]
    [InlineData("application/json")]
    [InlineData(null)]
    public async Task Http200WithANonGrpcContentType_IsInternal(string? contentType)
    {
        var ex = await CallFailsAsync(context =>
        {
            if (contentType is not null)
            {
                context.Response.ContentType = contentType;
            }

            return context.Response.WriteAsync("not grpc");
        });

        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Contains("content-type", ex.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ResponseWithoutGrpcStatus_IsInternal()
    {
        var ex = await CallFailsAsync(context => Grpc(context, Frame("message but no trailers")));

        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Contains("grpc-status", ex.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnaryWithOkButNoMessage_IsInternal()
    {
        var ex = await CallFailsAsync(context =>
        {
            context.Response.ContentType = "application/grpc";
            context.Response.Headers["grpc-status"] = "0";
            return Task.CompletedTask;
        });

        Assert.Equal(StatusCode.Internal, ex.StatusCode);
    }

    [Fact]
    public async Task UnaryWithTwoMessages_IsInternal()
    {
        var ex = await CallFailsAsync(async context =>
        {
            await Grpc(context, Frame("one"), Frame("two"));
            context.Response.AppendTrailer("grpc-status", "0");
        });

        Assert.Equal(StatusCode.Internal, ex.StatusCode);
    }

    [Fact]
    public async Task UnaryMessageFollowedByAnErrorStatus_FailsTheCall()
    {
        // The message alone does not make the call a success: the status in the trailers decides.
        var ex = await CallFailsAsync(async context =>
        {
            await Grpc(context, Frame("partial"));
            context.Response.AppendTrailer("grpc-status", "10");
            context.Response.AppendTrailer("grpc-message", "aborted late");
        });

        Assert.Equal(StatusCode.Aborted, ex.StatusCode);
        Assert.Equal("aborted late", ex.Status.Detail);
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("-1")]
    [InlineData("1.0")]
    public async Task UnparseableGrpcStatus_IsUnknown(string value)
    {
        var ex = await CallFailsAsync(async context =>
        {
            await Grpc(context, Frame("m"));
            context.Response.AppendTrailer("grpc-status", value);
        });

        Assert.Equal(StatusCode.Unknown, ex.StatusCode);
    }

    [Fact]
    public async Task UnknownResponseEncoding_IsInternal()
    {
        var ex = await CallFailsAsync(async context =>
        {
            context.Response.Headers["grpc-encoding"] = "snappy";
            await Grpc(context, Frame("m", flag: 1));
            context.Response.AppendTrailer("grpc-status", "0");
        });

        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Contains("snappy", ex.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CompressedFlagWithoutGrpcEncoding_IsInternal()
    {
        var ex = await CallFailsAsync(async context =>
        {
            await Grpc(context, Frame("m", flag: 1));
            context.Response.AppendTrailer("grpc-status", "0");
        });

        Assert.Equal(StatusCode.Internal, ex.StatusCode);
    }

    [Fact]
    public async Task GzipResponse_IsDecompressed()
    {
        var writer = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(writer, "gzipped by a foreign server", Utf8.Marshaller, GzipCompressionProvider.Instance, null);
        var frame = writer.WrittenSpan.ToArray();

        var result = await CallAsync(async context =>
        {
            context.Response.Headers["grpc-encoding"] = "gzip";
            await Grpc(context, frame);
            context.Response.AppendTrailer("grpc-status", "0");
        });

        Assert.Equal("gzipped by a foreign server", result);
    }

    [Fact]
    public async Task ResponseEndingInsideAMessage_IsInternal()
    {
        var ex = await CallFailsAsync(async context =>
        {
            await Grpc(context, [0, 0, 0, 0, 10, 1, 2, 3, 4]);
            context.Response.AppendTrailer("grpc-status", "0");
        });

        Assert.Equal(StatusCode.Internal, ex.StatusCode);
    }

    [Fact]
    public async Task MessageSplitAcrossDataFrames_IsReassembled()
    {
        var frame = Frame("a message in pieces");
        var result = await CallAsync(async context =>
        {
            context.Response.ContentType = "application/grpc";
            foreach (var chunk in new[] { frame[..1], frame[1..4], frame[4..6], frame[6..] })
            {
                await context.Response.Body.WriteAsync(chunk);
                await context.Response.Body.FlushAsync();
            }

            context.Response.AppendTrailer("grpc-status", "0");
        });

        Assert.Equal("a message in pieces", result);
    }

    [Fact]
    public async Task TrailersOnlyError_MessageIsPercentDecodedLeniently_AndDetailsUnpaddedBase64()
    {
        var ex = await CallFailsAsync(context =>
        {
            context.Response.ContentType = "application/grpc";
            context.Response.Headers["grpc-status"] = "5";
            context.Response.Headers["grpc-message"] = "caf%C3%A9 %zz 100%";
            context.Response.Headers["grpc-status-details-bin"] = "AQID/w"; // un-padded
            context.Response.Headers["x-custom"] = "v";
            return Task.CompletedTask;
        });

        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
        Assert.Equal("café %zz 100%", ex.Status.Detail);
        Assert.Equal(new byte[] { 1, 2, 3, 0xFF }, ex.Status.DetailsBin.ToArray());
        Assert.Equal("v", ex.Trailers.GetValue("x-custom"));
    }

    [Fact]
    public async Task Trailers_JoinedBinaryValuesAreSplit_AndServerHeadersAreNotMetadata()
    {
        await using var server = await KestrelHost.StartAsync(async context =>
        {
            context.Response.Headers["x-header"] = "h";
            await Grpc(context, Frame("m"));
            context.Response.AppendTrailer("grpc-status", "0");
            context.Response.AppendTrailer("x-joined-bin", "AQI=,AwQF");
            context.Response.AppendTrailer("x-text", "t");
        });
        using var channel = CreateChannel(server);

        await using var call = channel.ServerStreaming(Stream, "");
        var headers = await call.GetResponseHeadersAsync().Within();
        Assert.Equal(["m"], await call.ReadAllAsync().ToListWithin());

        Assert.Equal("h", headers.GetValue("x-header"));
        Assert.DoesNotContain(headers, e => e.Key is "date" or "server" or "content-type" || e.Key.StartsWith("grpc-", StringComparison.Ordinal));
        Assert.Equal([new byte[] { 1, 2 }, new byte[] { 3, 4, 5 }], call.Trailers.Where(e => e.Key == "x-joined-bin").Select(e => e.ValueBytes));
        Assert.Equal("t", call.Trailers.GetValue("x-text"));
    }

    /// <summary>RST_STREAM error code → status (PROTOCOL-HTTP2.md, "Errors").</summary>
    [Theory]
    [InlineData(0x0, StatusCode.Internal)] // NO_ERROR without a status
    [InlineData(0x1, StatusCode.Internal)] // PROTOCOL_ERROR
    [InlineData(0x2, StatusCode.Internal)] // INTERNAL_ERROR
    [InlineData(0x8, StatusCode.Cancelled)] // CANCEL
    [InlineData(0xB, StatusCode.ResourceExhausted)] // ENHANCE_YOUR_CALM
    [InlineData(0xC, StatusCode.PermissionDenied)] // INADEQUATE_SECURITY
    public async Task RstStreamAfterAMessage_IsMappedFromTheErrorCode(int errorCode, StatusCode expected)
    {
        var clientHasFirst = new Signal();
        await using var server = await KestrelHost.StartAsync(async context =>
        {
            await Grpc(context, Frame("first"));
            await context.Response.Body.FlushAsync();
            // Reset only once the client has the message, so that it cannot be discarded with the stream.
            await clientHasFirst.WaitAsync();
            context.Features.Get<IHttpResetFeature>()!.Reset(errorCode);
        });
        using var channel = CreateChannel(server);

        await using var call = channel.ServerStreaming(Stream, "");
        await using var messages = call.ReadAllAsync().GetAsyncEnumerator();
        Assert.True(await messages.MoveNextAsync().Within());
        Assert.Equal("first", messages.Current);
        clientHasFirst.Set();

        var ex = await Timeouts.ThrowsRpc(async () => await messages.MoveNextAsync());
        Assert.True(expected == ex.StatusCode, $"expected {expected}, got {ex.StatusCode}: {ex.Status.Detail} ({Describe(ex.InnerException)})");
    }

    private static string Describe(Exception? ex) =>
        ex is null ? "" : ex.GetType().Name + ": " + ex.Message + (ex.InnerException is null ? "" : " ← " + Describe(ex.InnerException));

    [Theory]
    [InlineData(0x2, StatusCode.Internal)]
    [InlineData(0x7, StatusCode.Unavailable)] // REFUSED_STREAM: nothing was processed
    [InlineData(0x8, StatusCode.Cancelled)]
    [InlineData(0xB, StatusCode.ResourceExhausted)]
    [InlineData(0xC, StatusCode.PermissionDenied)]
    public async Task RstStreamBeforeResponseHeaders_IsMappedFromTheErrorCode(int errorCode, StatusCode expected)
    {
        var ex = await CallFailsAsync(context =>
        {
            context.Features.Get<IHttpResetFeature>()!.Reset(errorCode);
            return Task.CompletedTask;
        });

        Assert.True(expected == ex.StatusCode, $"expected {expected}, got {ex.StatusCode}: {ex.Status.Detail} ({Describe(ex.InnerException)})");
    }

    /// <summary>
    /// A connection that fails as a whole is UNAVAILABLE, whatever its HTTP/2 error code: Kestrel, when it is
    /// shutting down, answers a connection it has just accepted with GOAWAY before any SETTINGS, and a peer
    /// that does not speak HTTP/2 sends bytes that read as an oversized first frame.
    /// </summary>
    [Theory]
    [InlineData("goaway-no-error")]
    [InlineData("goaway-protocol-error")]
    [InlineData("http1")]
    public async Task AConnectionThatFailsBeforeSettings_IsUnavailable(string peer)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var serving = Task.Run(async () =>
        {
            // HttpClient may retry on a fresh connection, so answer every connection the same way.
            while (true)
            {
                using var socket = await listener.AcceptSocketAsync();
                var preface = new byte[24];
                await socket.ReceiveAsync(preface);
                byte[] reply = peer switch
                {
                    "goaway-no-error" => GoAway(errorCode: 0x0),
                    "goaway-protocol-error" => GoAway(errorCode: 0x1),
                    _ => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8.ToArray(),
                };
                await socket.SendAsync(reply);
                socket.Shutdown(SocketShutdown.Both);
            }
        });

        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}", new GrpcChannelOptions { HttpClientForCalls = HttpClientForCalls });
        var ex = await Timeouts.ThrowsRpc(() => channel.UnaryAsync(Unary, "x"));
        Assert.True(ex.StatusCode == StatusCode.Unavailable, $"got {ex.StatusCode}: {ex.Status.Detail} ({Describe(ex.InnerException)})");
        listener.Stop();
        await Assert.ThrowsAnyAsync<Exception>(() => serving);

        static byte[] GoAway(uint errorCode)
        {
            // Frame header: length 8, type GOAWAY (0x7), no flags, stream 0; then last-stream-id 0 and the code.
            var frame = new byte[9 + 8];
            frame[2] = 8;
            frame[3] = 0x7;
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(13), errorCode);
            return frame;
        }
    }

    [Fact]
    public async Task NothingListening_IsUnavailable()
    {
        // A bound but not listening socket: connections to its port are refused, and no other test can take it.
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)socket.LocalEndPoint!).Port;

        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{port}", new GrpcChannelOptions { HttpClientForCalls = HttpClientForCalls });
        var ex = await Timeouts.ThrowsRpc(() => channel.UnaryAsync(Unary, "x"));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
    }

    [Fact]
    public async Task ClientDeadline_FiresEvenIfTheServerIgnoresGrpcTimeout()
    {
        var arrived = new Signal();
        var release = new Signal();
        await using var server = await KestrelHost.StartAsync(async context =>
        {
            arrived.Set();
            // A server that ignores grpc-timeout and never answers until the client goes away.
            try
            {
                await release.WaitAsync(TimeSpan.FromSeconds(10)).WaitAsync(context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                release.Set();
            }
        });

        // The deadline passes only once the server has the request (a clock the test moves): with a short real
        // deadline, a loaded machine could spend it all connecting, and the server would have no stream to see reset.
        var clock = new ManualTimeProvider(DateTimeOffset.UtcNow);
        using var channel = CreateChannel(server, o => o.TimeProvider = clock);
        var call = channel.UnaryAsync(Unary, "x", new CallOptions(Deadline: clock.GetUtcNow().AddSeconds(30)));
        await arrived.WaitAsync();
        clock.Advance(TimeSpan.FromSeconds(31));

        var ex = await Timeouts.ThrowsRpc(() => call);
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        await release.WaitAsync(); // the server saw the client's RST_STREAM
    }

    [Fact]
    public async Task GrpcTimeoutHeader_IsSentWithTheRemainingTime()
    {
        var seen = new Signal<string>();
        await using var server = await KestrelHost.StartAsync(async context =>
        {
            seen.Set(context.Request.Headers["grpc-timeout"].ToString());
            await Grpc(context, Frame("ok"));
            context.Response.AppendTrailer("grpc-status", "0");
        });
        using var channel = CreateChannel(server);

        await channel.UnaryAsync(Unary, "x", new CallOptions(Deadline: DateTimeOffset.UtcNow.AddSeconds(30))).Within();
        var header = await seen.WaitAsync();
        Assert.True(GrpcTimeout.TryParse(header, out var timeout), header);
        Assert.InRange(timeout, TimeSpan.FromSeconds(25), TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task RequestHeaders_FollowTheSpec()
    {
        var seen = new Signal<IHeaderDictionary>();
        var body = new Signal<byte[]>();
        await using var server = await KestrelHost.StartAsync(async context =>
        {
            var copy = new HeaderDictionary();
            foreach (var (key, value) in context.Request.Headers)
            {
                copy[key] = value;
            }

            copy[":method"] = context.Request.Method;
            copy[":path"] = context.Request.Path.Value;
            copy[":protocol-version"] = context.Request.Protocol;
            seen.Set(copy);
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer);
            body.Set(buffer.ToArray());
            await Grpc(context, Frame("ok"));
            context.Response.AppendTrailer("grpc-status", "0");
        });
        using var channel = CreateChannel(server);

        await channel.UnaryAsync(Unary, "hi").Within();
        var headers = await seen.WaitAsync();

        Assert.Equal("POST", headers[":method"]);
        Assert.Equal($"/{TestService.Name}/Any", headers[":path"]);
        Assert.Equal("HTTP/2", headers[":protocol-version"]);
        Assert.Equal("application/grpc", headers.ContentType);
        Assert.Equal("trailers", headers["te"]);
        Assert.Equal("identity,gzip", headers["grpc-accept-encoding"]);
        Assert.False(headers.ContainsKey("grpc-encoding")); // no compression configured
        Assert.False(headers.ContainsKey("grpc-timeout")); // no deadline: infinite
        Assert.StartsWith("grpcboard-dotnet/", headers.UserAgent.ToString(), StringComparison.Ordinal);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 2, (byte)'h', (byte)'i' }, await body.WaitAsync());
    }
}

/// <summary>Every test above again, with unary calls sent through HttpClient as streaming calls are.</summary>
public sealed class ClientResponseHandlingTestsOverHttpClient : ClientResponseHandlingTests
{
    protected override bool HttpClientForCalls => true;
}
