namespace GrpcBoard.Wire.Tests.Protocol;

/// <summary>Content-type rules, reserved headers, HTTP → gRPC status mapping, status code numbers, encodings.</summary>
public class GrpcProtocolTests
{
    [Theory]
    [InlineData("application/grpc")]
    [InlineData("application/grpc+proto")]
    [InlineData("application/grpc;charset=utf-8")]
    [InlineData("application/grpc; charset=utf-8")]
    [InlineData("application/grpc+proto; x=y")]
    [InlineData("Application/GRPC")] // media types are case-insensitive
    public void IsGrpcContentType_Accepts(string contentType)
    {
        Assert.True(GrpcProtocol.IsGrpcContentType(contentType));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("application/json")]
    [InlineData("text/plain")]
    [InlineData("application/grpcx")]
    [InlineData("application/grpc-web")]
    [InlineData("application/grpc-web+proto")]
    [InlineData("application/grpc+json")] // a codec this implementation does not speak
    [InlineData("application/grpc+protobuf")]
    [InlineData("application/gr")]
    public void IsGrpcContentType_Rejects(string? contentType)
    {
        Assert.False(GrpcProtocol.IsGrpcContentType(contentType));
    }

    [Theory]
    [InlineData(":path")]
    [InlineData(":authority")]
    [InlineData("grpc-status")]
    [InlineData("grpc-message")]
    [InlineData("grpc-timeout")]
    [InlineData("GRPC-Encoding")]
    [InlineData("content-type")]
    [InlineData("te")]
    [InlineData("host")]
    [InlineData("content-length")]
    [InlineData("connection")]
    [InlineData("accept-encoding")]
    [InlineData("")]
    public void IsReservedHeader_ProtocolAndTransportHeaders(string name)
    {
        Assert.True(GrpcProtocol.IsReservedHeader(name));
    }

    [Theory]
    [InlineData("authorization")]
    [InlineData("x-custom")]
    [InlineData("x-trace-bin")]
    [InlineData("tenant")]
    public void IsReservedHeader_CustomMetadataIsNot(string name)
    {
        Assert.False(GrpcProtocol.IsReservedHeader(name));
    }

    /// <summary>doc/http-grpc-status-mapping.md.</summary>
    [Theory]
    [InlineData(400, StatusCode.Internal)]
    [InlineData(401, StatusCode.Unauthenticated)]
    [InlineData(403, StatusCode.PermissionDenied)]
    [InlineData(404, StatusCode.Unimplemented)]
    [InlineData(429, StatusCode.Unavailable)]
    [InlineData(502, StatusCode.Unavailable)]
    [InlineData(503, StatusCode.Unavailable)]
    [InlineData(504, StatusCode.Unavailable)]
    [InlineData(415, StatusCode.Unknown)]
    [InlineData(500, StatusCode.Unknown)]
    [InlineData(301, StatusCode.Unknown)]
    [InlineData(418, StatusCode.Unknown)]
    public void StatusFromHttpStatus_FollowsTheMappingTable(int httpStatus, StatusCode expected)
    {
        Assert.Equal(expected, GrpcProtocol.StatusFromHttpStatus(httpStatus));
    }

    /// <summary>doc/statuscodes.md: the numbers are part of the wire format.</summary>
    [Theory]
    [InlineData(StatusCode.OK, 0)]
    [InlineData(StatusCode.Cancelled, 1)]
    [InlineData(StatusCode.Unknown, 2)]
    [InlineData(StatusCode.InvalidArgument, 3)]
    [InlineData(StatusCode.DeadlineExceeded, 4)]
    [InlineData(StatusCode.NotFound, 5)]
    [InlineData(StatusCode.AlreadyExists, 6)]
    [InlineData(StatusCode.PermissionDenied, 7)]
    [InlineData(StatusCode.ResourceExhausted, 8)]
    [InlineData(StatusCode.FailedPrecondition, 9)]
    [InlineData(StatusCode.Aborted, 10)]
    [InlineData(StatusCode.OutOfRange, 11)]
    [InlineData(StatusCode.Unimplemented, 12)]
    [InlineData(StatusCode.Internal, 13)]
    [InlineData(StatusCode.Unavailable, 14)]
    [InlineData(StatusCode.DataLoss, 15)]
    [InlineData(StatusCode.Unauthenticated, 16)]
    public void StatusCode_NumbersMatchTheSpec(StatusCode code, int number)
    {
        Assert.Equal(number, (int)code);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("identity")]
    [InlineData("IDENTITY")]
    public void TryGetProvider_IdentityOrAbsent_IsNoProvider(string? encoding)
    {
        Assert.True(MessageCompression.TryGetProvider(encoding, out var provider));
        Assert.Null(provider);
    }

    [Fact]
    public void TryGetProvider_Gzip()
    {
        Assert.True(MessageCompression.TryGetProvider("gzip", out var provider));
        Assert.Same(GzipCompressionProvider.Instance, provider);
        Assert.Equal("gzip", provider!.EncodingName);
    }

    [Theory]
    [InlineData("snappy")]
    [InlineData("deflate")]
    [InlineData("br")]
    [InlineData("gzip,identity")] // grpc-encoding names one coding, not a list
    public void TryGetProvider_Unsupported(string encoding)
    {
        Assert.False(MessageCompression.TryGetProvider(encoding, out var provider));
        Assert.Null(provider);
    }

    [Theory]
    [InlineData("identity,gzip", true)]
    [InlineData("gzip", true)]
    [InlineData("identity, gzip", true)]
    [InlineData(" gzip ,deflate", true)]
    [InlineData("GZIP", true)]
    [InlineData("identity", false)]
    [InlineData("gzipx", false)]
    [InlineData("x-gzip", false)]
    [InlineData("identity,deflate", false)]
    [InlineData("", false)]
    [InlineData(null, false)]
    public void Accepts_ParsesTheCommaSeparatedList(string? acceptEncoding, bool expected)
    {
        Assert.Equal(expected, MessageCompression.Accepts(acceptEncoding, "gzip"));
    }

    [Fact]
    public void AcceptEncodingValue_ListsIdentityAndGzip()
    {
        Assert.Equal("identity,gzip", MessageCompression.AcceptEncodingValue);
    }

    [Fact]
    public void MethodFullName_IsSlashServiceSlashMethod()
    {
        var method = new Method<string, string>(MethodType.Unary, "pkg.v1.Svc", "Do", Infrastructure.Utf8.Marshaller, Infrastructure.Utf8.Marshaller);
        Assert.Equal("/pkg.v1.Svc/Do", method.FullName);
    }
}
