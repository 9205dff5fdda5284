namespace GrpcBoard.Wire;

/// <summary>Header names and fixed values of the gRPC over HTTP/2 protocol (doc/PROTOCOL-HTTP2.md).</summary>
public static class GrpcProtocol
{
    public const string ContentType = "application/grpc";
    public const string StatusHeader = "grpc-status";
    public const string MessageHeader = "grpc-message";
    public const string StatusDetailsHeader = "grpc-status-details-bin";
    public const string TimeoutHeader = "grpc-timeout";
    public const string EncodingHeader = "grpc-encoding";
    public const string AcceptEncodingHeader = "grpc-accept-encoding";
    public const string MessageTypeHeader = "grpc-message-type";
    public const string TeHeader = "te";
    public const string TeTrailers = "trailers";
    public const string IdentityEncoding = "identity";

    /// <summary>The 5-byte prefix of every message: a compressed flag and a big-endian length.</summary>
    public const int MessageHeaderSize = 5;

    /// <summary>Default limit on a received message, as in other gRPC implementations.</summary>
    public const int DefaultMaxReceiveMessageSize = 4 * 1024 * 1024;

    /// <summary>
    /// True for "application/grpc", "application/grpc+proto" and either with parameters
    /// ("application/grpc; charset=utf-8"). Other subtypes (+json) name a codec we do not speak.
    /// </summary>
    public static bool IsGrpcContentType(string? contentType)
    {
        if (contentType is null || !contentType.StartsWith(ContentType, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var rest = contentType.AsSpan(ContentType.Length);
        if (rest.IsEmpty || rest[0] == ';')
        {
            return true;
        }

        if (rest.StartsWith("+proto", StringComparison.OrdinalIgnoreCase))
        {
            rest = rest["+proto".Length..];
            return rest.IsEmpty || rest[0] == ';';
        }

        return false;
    }

    /// <summary>
    /// The headers a client or server must not receive as custom metadata: pseudo-headers, the protocol's
    /// own grpc-* headers, and HTTP headers the transport owns.
    /// </summary>
    public static bool IsReservedHeader(string name) =>
        name.Length == 0
        || name[0] == ':'
        || name.StartsWith("grpc-", StringComparison.OrdinalIgnoreCase)
        || name.Equals("content-type", StringComparison.OrdinalIgnoreCase)
        || name.Equals("te", StringComparison.OrdinalIgnoreCase)
        || name.Equals("host", StringComparison.OrdinalIgnoreCase)
        || name.Equals("content-length", StringComparison.OrdinalIgnoreCase)
        || name.Equals("connection", StringComparison.OrdinalIgnoreCase)
        || name.Equals("accept-encoding", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Status for an HTTP response that is not a gRPC response, per doc/http-grpc-status-mapping.md.
    /// </summary>
    public static StatusCode StatusFromHttpStatus(int httpStatus) => httpStatus switch
    {
        400 => StatusCode.Internal,
        401 => StatusCode.Unauthenticated,
        403 => StatusCode.PermissionDenied,
        404 => StatusCode.Unimplemented,
        429 or 502 or 503 or 504 => StatusCode.Unavailable,
        _ => StatusCode.Unknown,
    };
}
