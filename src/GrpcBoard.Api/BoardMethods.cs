using Google.Protobuf;
using GrpcBoard.Api.V1;
using GrpcBoard.Wire;

namespace GrpcBoard.Api;

/// <summary>
/// Every method of grpcboard.v1.BoardService with its marshallers: the single table that the server
/// binds handlers to and the client calls through. A test checks it against the proto descriptor.
/// </summary>
public static class BoardMethods
{
    public const string ServiceName = "grpcboard.v1.BoardService";

    public static readonly Method<CreateWorkflowRequest, CreateWorkflowResponse> CreateWorkflow = Unary(CreateWorkflowRequest.Parser, CreateWorkflowResponse.Parser);
    public static readonly Method<GetWorkflowRequest, GetWorkflowResponse> GetWorkflow = Unary(GetWorkflowRequest.Parser, GetWorkflowResponse.Parser);
    public static readonly Method<ListWorkflowsRequest, ListWorkflowsResponse> ListWorkflows = Unary(ListWorkflowsRequest.Parser, ListWorkflowsResponse.Parser);
    public static readonly Method<UpdateWorkflowRequest, UpdateWorkflowResponse> UpdateWorkflow = Unary(UpdateWorkflowRequest.Parser, UpdateWorkflowResponse.Parser);
    public static readonly Method<DeleteWorkflowRequest, DeleteWorkflowResponse> DeleteWorkflow = Unary(DeleteWorkflowRequest.Parser, DeleteWorkflowResponse.Parser);
    public static readonly Method<PostTasksRequest, PostTasksResponse> PostTasks = Unary(PostTasksRequest.Parser, PostTasksResponse.Parser);
    public static readonly Method<GetTaskRequest, GetTaskResponse> GetTask = Unary(GetTaskRequest.Parser, GetTaskResponse.Parser);
    public static readonly Method<ListTasksRequest, ListTasksResponse> ListTasks = Unary(ListTasksRequest.Parser, ListTasksResponse.Parser);
    public static readonly Method<CancelTaskRequest, CancelTaskResponse> CancelTask = Unary(CancelTaskRequest.Parser, CancelTaskResponse.Parser);
    public static readonly Method<ClaimTaskRequest, ClaimTaskResponse> ClaimTask = Unary(ClaimTaskRequest.Parser, ClaimTaskResponse.Parser);
    public static readonly Method<RenewLeaseRequest, RenewLeaseResponse> RenewLease = Unary(RenewLeaseRequest.Parser, RenewLeaseResponse.Parser);
    public static readonly Method<ReleaseTaskRequest, ReleaseTaskResponse> ReleaseTask = Unary(ReleaseTaskRequest.Parser, ReleaseTaskResponse.Parser);
    public static readonly Method<CheckpointRequest, CheckpointResponse> Checkpoint = Unary(CheckpointRequest.Parser, CheckpointResponse.Parser);
    public static readonly Method<CompleteTaskRequest, CompleteTaskResponse> CompleteTask = Unary(CompleteTaskRequest.Parser, CompleteTaskResponse.Parser);
    public static readonly Method<FailTaskRequest, FailTaskResponse> FailTask = Unary(FailTaskRequest.Parser, FailTaskResponse.Parser);
    public static readonly Method<PutNoteRequest, PutNoteResponse> PutNote = Unary(PutNoteRequest.Parser, PutNoteResponse.Parser);
    public static readonly Method<GetNoteRequest, GetNoteResponse> GetNote = Unary(GetNoteRequest.Parser, GetNoteResponse.Parser);
    public static readonly Method<ListNotesRequest, ListNotesResponse> ListNotes = Unary(ListNotesRequest.Parser, ListNotesResponse.Parser);
    public static readonly Method<DeleteNoteRequest, DeleteNoteResponse> DeleteNote = Unary(DeleteNoteRequest.Parser, DeleteNoteResponse.Parser);
    public static readonly Method<WatchRequest, WatchResponse> Watch = Create(MethodType.ServerStreaming, WatchRequest.Parser, WatchResponse.Parser);
    public static readonly Method<ExportWorkflowRequest, ExportWorkflowResponse> ExportWorkflow = Unary(ExportWorkflowRequest.Parser, ExportWorkflowResponse.Parser);

    private static Method<TRequest, TResponse> Unary<TRequest, TResponse>(MessageParser<TRequest> request, MessageParser<TResponse> response)
        where TRequest : IMessage<TRequest>
        where TResponse : IMessage<TResponse> =>
        Create(MethodType.Unary, request, response);

    /// <summary>The method name is the request type's name without "Request", the proto naming rule buf enforces.</summary>
    private static Method<TRequest, TResponse> Create<TRequest, TResponse>(MethodType type, MessageParser<TRequest> request, MessageParser<TResponse> response)
        where TRequest : IMessage<TRequest>
        where TResponse : IMessage<TResponse>
    {
        var name = typeof(TRequest).Name;
        name = name[..^"Request".Length];
        return new Method<TRequest, TResponse>(type, ServiceName, name, ProtobufMarshaller.For(request), ProtobufMarshaller.For(response));
    }
}
