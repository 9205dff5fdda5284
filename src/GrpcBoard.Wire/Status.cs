namespace GrpcBoard.Wire;

/// <summary>
/// The outcome of a call: a code, a human-readable detail (sent percent-encoded in grpc-message)
/// and optional rich details (a serialized google.rpc.Status, sent in grpc-status-details-bin).
/// </summary>
public readonly record struct Status(StatusCode Code, string Detail, ReadOnlyMemory<byte> DetailsBin = default)
{
    public static readonly Status Ok = new(StatusCode.OK, "");

    public override string ToString() => $"Status(StatusCode=\"{Code}\", Detail=\"{Detail}\")";
}
