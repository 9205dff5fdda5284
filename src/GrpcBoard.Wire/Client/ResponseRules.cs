using System.Globalization;

namespace GrpcBoard.Wire.Client;

/// <summary>
/// How a client reads a gRPC response's headers and trailers, whichever HTTP/2 transport carried them
/// (HttpClient for streams, the channel's own connection for unary calls), and the statuses the client itself
/// gives a call: the spec's rules live here once. Headers are looked up through a function so each transport
/// keeps its own header collection.
/// </summary>
internal static class ResponseRules
{
    public static readonly Status DeadlineBeforeStart = new(StatusCode.DeadlineExceeded, "The deadline passed before the call started.");

    public static readonly Status DeadlinePassed = new(StatusCode.DeadlineExceeded, "The deadline passed before the call completed.");

    public static readonly Status CancelledByCaller = new(StatusCode.Cancelled, "The call was cancelled by the caller.");

    public static readonly Status ChannelDisposed = new(StatusCode.Unavailable, "The channel has been disposed.");

    public static readonly Status NoStatusTrailer = new(StatusCode.Internal, "The response ended without a grpc-status trailer.");

    /// <summary>A unary call ended OK but without its one message: a protocol error.</summary>
    public static readonly Status UnaryWithoutMessage = new(StatusCode.Internal, "The server ended a unary call with OK but sent no response message.");

    public static readonly Status UnaryWithExtraMessage = new(StatusCode.Internal, "The server sent more than one response message for a unary call.");

    /// <summary>
    /// Checks the response headers. Returns a status when the call has already ended: an HTTP error, a
    /// non-gRPC response, a Trailers-Only response (grpc-status in the headers), or a message encoding this
    /// client cannot decode. Otherwise returns null and the decompressor for the response's messages.
    /// </summary>
    public static Status? Validate(int httpStatus, string? reason, string? contentType, Func<string, string?> header, out ICompressionProvider? decompression)
    {
        decompression = null;
        if (httpStatus != 200)
        {
            // A gRPC server may still have sent a status with the HTTP error (e.g. 415 with INTERNAL).
            return ReadStatus(header) ?? new Status(GrpcProtocol.StatusFromHttpStatus(httpStatus),
                string.Create(CultureInfo.InvariantCulture, $"Bad gRPC response: HTTP status {httpStatus}{(reason is null ? "" : $" ({reason})")}."));
        }

        if (!GrpcProtocol.IsGrpcContentType(contentType))
        {
            return new Status(StatusCode.Internal, $"Bad gRPC response: content-type '{contentType}' is not application/grpc.");
        }

        if (ReadStatus(header) is { } trailersOnly)
        {
            return trailersOnly;
        }

        if (header(GrpcProtocol.EncodingHeader) is { } encoding && !MessageCompression.TryGetProvider(encoding, out decompression))
        {
            return new Status(StatusCode.Internal, $"The server used message encoding '{encoding}', which this client cannot decode.");
        }

        return null;
    }

    /// <summary>The status these headers carry (grpc-status, grpc-message, grpc-status-details-bin), if any.</summary>
    public static Status? ReadStatus(Func<string, string?> header) => ReadStatus(header, static (h, name) => h(name));

    /// <summary>As <see cref="ReadStatus(Func{string, string?})"/>, with the headers passed along: no closure per call.</summary>
    public static Status? ReadStatus<TState>(TState state, Func<TState, string, string?> header)
    {
        if (header(state, GrpcProtocol.StatusHeader) is not { } text)
        {
            return null;
        }

        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var code))
        {
            return new Status(StatusCode.Unknown, $"Unparseable grpc-status '{text}'.");
        }

        var message = header(state, GrpcProtocol.MessageHeader) is { } m ? PercentEncoding.Decode(m) : "";
        ReadOnlyMemory<byte> details = default;
        if (header(state, GrpcProtocol.StatusDetailsHeader) is { } d && BinaryHeader.TryDecode(d, out var bytes))
        {
            details = bytes;
        }

        // Codes outside 0-16 are legal on the wire; other implementations keep the number as it is.
        return new Status((StatusCode)code, message, details);
    }

    /// <summary>Whether a received header is custom metadata, rather than the protocol's or the transport's own.</summary>
    public static bool IsMetadata(string name) =>
        !GrpcProtocol.IsReservedHeader(name)
        && !name.Equals("date", StringComparison.OrdinalIgnoreCase)
        && !name.Equals("server", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// A reset of one stream maps by its error code (the spec's "Errors" section). Errors of the whole
    /// connection are not mapped here: they are UNAVAILABLE, as in other gRPC clients.
    /// </summary>
    public static StatusCode StatusFromStreamReset(long errorCode) => errorCode switch
    {
        0x7 => StatusCode.Unavailable, // REFUSED_STREAM: safe to retry
        0x8 => StatusCode.Cancelled, // CANCEL
        0xB => StatusCode.ResourceExhausted, // ENHANCE_YOUR_CALM
        0xC => StatusCode.PermissionDenied, // INADEQUATE_SECURITY
        _ => StatusCode.Internal,
    };
}
