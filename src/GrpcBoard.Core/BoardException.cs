namespace GrpcBoard.Core;

/// <summary>
/// Why the board refused an operation. One value per client-visible reason; the server's error table maps
/// each to a gRPC status code and an ErrorInfo reason of the same name.
/// </summary>
public enum BoardError
{
    InvalidArgument = 1,
    WorkflowNotFound,
    WorkflowAlreadyExists,
    WorkflowNotActive,
    WorkflowRevisionMismatch,
    TaskNotFound,
    TaskAlreadyExists,
    InvalidDependency,
    TaskAlreadyClaimed,
    TaskNotReady,
    TaskFinished,
    SkillsMismatch,
    FencingTokenStale,
    FencingTokenInvalid,
    LeaseExpired,
    ClaimNotHeld,
    ResultConflict,
    NoteVersionMismatch,
    NoteNotFound,
    HistoryCompacted,
    ValueTooLarge,
    InvalidPageToken,
    StoreUnavailable,
    StoreDataLoss,
    Conflict,
    LimitExceeded,
}

/// <summary>A refused operation: the reason, a sentence for people, and facts for programs.</summary>
public sealed class BoardException : Exception
{
    public BoardException(BoardError error, string message, IReadOnlyDictionary<string, string>? metadata = null, Exception? inner = null)
        : base(message, inner)
    {
        Error = error;
        Metadata = metadata ?? new Dictionary<string, string>();
    }

    public BoardError Error { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    public static BoardException Invalid(string field, string message) =>
        new(BoardError.InvalidArgument, message, new Dictionary<string, string> { ["field"] = field });

    /// <summary>
    /// A store that is full refused a change and wrote nothing of it: RESOURCE_EXHAUSTED, with the exhausted resource as
    /// metadata "limit" (error.proto, LIMIT_EXCEEDED). The same for every store, so clients tell "full" from "down".
    /// </summary>
    public static BoardException StoreFull(string limit, string message, Exception inner) =>
        new(BoardError.LimitExceeded, message, new Dictionary<string, string> { ["limit"] = limit }, inner);

    public static BoardException WorkflowNotFound(string workflowId) =>
        new(BoardError.WorkflowNotFound, $"Workflow '{workflowId}' does not exist.", new Dictionary<string, string> { ["workflow_id"] = workflowId });

    public static BoardException TaskNotFound(string workflowId, string taskId) =>
        new(BoardError.TaskNotFound, $"Task '{taskId}' does not exist in workflow '{workflowId}'.", new Dictionary<string, string> { ["task_id"] = taskId });
}
