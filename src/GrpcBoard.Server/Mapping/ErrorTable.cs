using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Core;
using GrpcBoard.Wire;
using Status = GrpcBoard.Wire.Status;
using StatusCode = GrpcBoard.Wire.StatusCode;

namespace GrpcBoard.Server.Mapping;

/// <summary>
/// The one table from domain errors to gRPC: a status code, and a google.rpc.Status with an ErrorInfo
/// whose reason is the ErrorReason name (grpc-status-details-bin), so clients act on reasons, not text.
/// </summary>
public static class ErrorTable
{
    public static (StatusCode Code, ErrorReason Reason) For(BoardError error) => error switch
    {
        BoardError.InvalidArgument => (StatusCode.InvalidArgument, ErrorReason.InvalidArgument),
        BoardError.WorkflowNotFound => (StatusCode.NotFound, ErrorReason.WorkflowNotFound),
        BoardError.WorkflowAlreadyExists => (StatusCode.AlreadyExists, ErrorReason.WorkflowAlreadyExists),
        BoardError.WorkflowNotActive => (StatusCode.FailedPrecondition, ErrorReason.WorkflowNotActive),
        BoardError.WorkflowRevisionMismatch => (StatusCode.FailedPrecondition, ErrorReason.WorkflowRevisionMismatch),
        BoardError.TaskNotFound => (StatusCode.NotFound, ErrorReason.TaskNotFound),
        BoardError.TaskAlreadyExists => (StatusCode.AlreadyExists, ErrorReason.TaskAlreadyExists),
        BoardError.InvalidDependency => (StatusCode.FailedPrecondition, ErrorReason.InvalidDependency),
        BoardError.TaskAlreadyClaimed => (StatusCode.FailedPrecondition, ErrorReason.TaskAlreadyClaimed),
        BoardError.TaskNotReady => (StatusCode.FailedPrecondition, ErrorReason.TaskNotReady),
        BoardError.TaskFinished => (StatusCode.FailedPrecondition, ErrorReason.TaskFinished),
        BoardError.SkillsMismatch => (StatusCode.FailedPrecondition, ErrorReason.SkillsMismatch),
        BoardError.FencingTokenStale => (StatusCode.FailedPrecondition, ErrorReason.FencingTokenStale),
        BoardError.FencingTokenInvalid => (StatusCode.FailedPrecondition, ErrorReason.FencingTokenInvalid),
        BoardError.LeaseExpired => (StatusCode.FailedPrecondition, ErrorReason.LeaseExpired),
        BoardError.ClaimNotHeld => (StatusCode.FailedPrecondition, ErrorReason.ClaimNotHeld),
        BoardError.ResultConflict => (StatusCode.FailedPrecondition, ErrorReason.ResultConflict),
        BoardError.NoteVersionMismatch => (StatusCode.FailedPrecondition, ErrorReason.NoteVersionMismatch),
        BoardError.NoteNotFound => (StatusCode.NotFound, ErrorReason.NoteNotFound),
        BoardError.HistoryCompacted => (StatusCode.OutOfRange, ErrorReason.HistoryCompacted),
        BoardError.ValueTooLarge => (StatusCode.InvalidArgument, ErrorReason.ValueTooLarge),
        BoardError.InvalidPageToken => (StatusCode.InvalidArgument, ErrorReason.InvalidPageToken),
        BoardError.StoreUnavailable => (StatusCode.Unavailable, ErrorReason.StoreUnavailable),
        BoardError.StoreDataLoss => (StatusCode.DataLoss, ErrorReason.StoreDataLoss),
        BoardError.Conflict => (StatusCode.Aborted, ErrorReason.Conflict),
        BoardError.LimitExceeded => (StatusCode.ResourceExhausted, ErrorReason.LimitExceeded),
        _ => (StatusCode.Unknown, ErrorReason.Unspecified),
    };

    public static Status ToStatus(BoardException ex)
    {
        var (code, reason) = For(ex.Error);
        return new Status(code, ex.Message, RichStatus.Encode((int)code, ex.Message, reason, ex.Metadata));
    }

    /// <summary>Exception mapper for the wire layer: domain errors by the table, anything else left to it.</summary>
    public static Status? Map(Exception ex) => ex switch
    {
        BoardException board => ToStatus(board),
        _ => null,
    };
}
