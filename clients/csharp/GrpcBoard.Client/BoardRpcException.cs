using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Wire;

namespace GrpcBoard.Client;

/// <summary>
/// A call the board refused or could not complete: the gRPC status, and when the server sent one, the
/// ErrorInfo reason (what to do about it is documented per reason in error.proto) with its metadata.
/// </summary>
public sealed class BoardRpcException : Exception
{
    /// <summary>Wraps a wire-level failure, decoding the rich status details if present.</summary>
    public BoardRpcException(RpcException inner)
        : base(inner.Status.Detail, inner)
    {
        Status = inner.Status;
        var info = RichStatus.DecodeErrorInfo(inner.Status.DetailsBin.Span);
        Reason = info is null ? ErrorReason.Unspecified : RichStatus.ParseReason(info.Reason);
        ReasonName = info?.Reason ?? "";
        Metadata = info?.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value) ?? new Dictionary<string, string>();
    }

    /// <summary>The status the call ended with.</summary>
    public Status Status { get; }

    /// <summary>The status code (for example FAILED_PRECONDITION).</summary>
    public StatusCode StatusCode => Status.Code;

    /// <summary>Why the board refused the call; <see cref="ErrorReason.Unspecified"/> for transport failures.</summary>
    public ErrorReason Reason { get; }

    /// <summary>The reason as sent (useful when this client is older than the server).</summary>
    public string ReasonName { get; }

    /// <summary>Facts that come with the reason, such as "fencing_token" or "oldest_revision".</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// True when the claim this call was made under is gone for good (stale token, expired lease, ended
    /// claim): the worker must stop working on the task.
    /// </summary>
    public bool IsClaimLost => Reason is ErrorReason.FencingTokenStale or ErrorReason.FencingTokenInvalid
        or ErrorReason.LeaseExpired or ErrorReason.ClaimNotHeld or ErrorReason.TaskFinished
        || (Reason is ErrorReason.TaskNotFound or ErrorReason.WorkflowNotFound);

    /// <summary>True when retrying the same call later may succeed (server or store unavailable, a lost race).</summary>
    public bool IsTransient => StatusCode is StatusCode.Unavailable or StatusCode.Aborted
        || (StatusCode is StatusCode.Internal or StatusCode.Unknown or StatusCode.Cancelled && Reason == ErrorReason.Unspecified);
}
