using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Core;
using GrpcBoard.Wire;
using Status = GrpcBoard.Wire.Status;
using StatusCode = GrpcBoard.Wire.StatusCode;

namespace GrpcBoard.Server.Mapping;

/// <summary>
/// The one table from domain errors to gRPC status codes. The status also carries a google.rpc.Status with
/// an ErrorInfo whose reason is the ErrorReason name (grpc-status-details-bin), so clients act on reasons,
/// not text.
/// </summary>
public static class ErrorTable
{
    public static StatusCode For(BoardError error) => error switch
    {
        BoardError.InvalidArgument => StatusCode.InvalidArgument,
        BoardError.WorkflowNotFound => StatusCode.NotFound,
        BoardError.WorkflowAlreadyExists => StatusCode.AlreadyExists,
        BoardError.WorkflowNotActive => StatusCode.FailedPrecondition,
        BoardError.WorkflowRevisionMismatch => StatusCode.FailedPrecondition,
        BoardError.TaskNotFound => StatusCode.NotFound,
        BoardError.TaskAlreadyExists => StatusCode.AlreadyExists,
        BoardError.InvalidDependency => StatusCode.FailedPrecondition,
        BoardError.TaskAlreadyClaimed => StatusCode.FailedPrecondition,
        BoardError.TaskNotReady => StatusCode.FailedPrecondition,
        BoardError.TaskFinished => StatusCode.FailedPrecondition,
        BoardError.SkillsMismatch => StatusCode.FailedPrecondition,
        BoardError.FencingTokenStale => StatusCode.FailedPrecondition,
        BoardError.FencingTokenInvalid => StatusCode.FailedPrecondition,
        BoardError.LeaseExpired => StatusCode.FailedPrecondition,
        BoardError.ClaimNotHeld => StatusCode.FailedPrecondition,
        BoardError.ResultConflict => StatusCode.FailedPrecondition,
        BoardError.NoteVersionMismatch => StatusCode.FailedPrecondition,
        BoardError.NoteNotFound => StatusCode.NotFound,
        BoardError.HistoryCompacted => StatusCode.OutOfRange,
        BoardError.ValueTooLarge => StatusCode.InvalidArgument,
        BoardError.InvalidPageToken => StatusCode.InvalidArgument,
        BoardError.StoreUnavailable => StatusCode.Unavailable,
        BoardError.StoreDataLoss => StatusCode.DataLoss,
        BoardError.Conflict => StatusCode.Aborted,
        BoardError.LimitExceeded => StatusCode.ResourceExhausted,
        _ => StatusCode.Unknown,
    };

    public static Status ToStatus(BoardException ex)
    {
        var code = For(ex.Error);
        // BoardError mirrors ErrorReason number for number (BoardFunctionalTests checks it name by name).
        return new Status(code, ex.Message, RichStatus.Encode((int)code, ex.Message, (ErrorReason)(int)ex.Error, ex.Metadata));
    }

    /// <summary>Exception mapper for the wire layer: domain errors by the table, anything else left to it.</summary>
    public static Status? Map(Exception ex) => ex switch
    {
        BoardException board => ToStatus(board),
        _ => null,
    };
}
