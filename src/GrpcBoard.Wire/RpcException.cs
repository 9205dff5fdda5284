namespace GrpcBoard.Wire;

/// <summary>A call ended with a non-OK status. Thrown by clients; thrown by handlers to choose the status.</summary>
public sealed class RpcException : Exception
{
    public RpcException(Status status, Metadata? trailers = null, Exception? inner = null)
        : base(status.ToString(), inner)
    {
        Status = status;
        Trailers = trailers ?? Metadata.Empty;
    }

    public RpcException(StatusCode code, string detail)
        : this(new Status(code, detail))
    {
    }

    public Status Status { get; }

    public StatusCode StatusCode => Status.Code;

    /// <summary>Trailers received with the status (client side), or to send with it (server side).</summary>
    public Metadata Trailers { get; }
}
