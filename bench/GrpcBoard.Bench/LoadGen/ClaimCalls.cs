using Google.Protobuf;
using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;

namespace GrpcBoard.Bench.LoadGen;

/// <summary>Which client the workers call the board with.</summary>
public enum LoadGenerator
{
    /// <summary>GrpcBoard's C# client (BoardClient over HttpClient), as an application would call the board.</summary>
    Sdk,

    /// <summary>The bench's frame-level HTTP/2 client (<see cref="LeanH2Connection"/>), to measure the server, not the client.</summary>
    Lean,

    /// <summary>
    /// nghttp2's h2load, a C program: compare's h2load part only (<see cref="Scenarios.H2loadClaims"/>), claim-only,
    /// the same request over and over. Never a worker's client.
    /// </summary>
    H2load,
}

/// <summary>The two calls a claim worker makes, through one connection of the chosen load generator.</summary>
public interface IClaimCalls
{
    /// <exception cref="BoardRpcException">The call failed.</exception>
    Task<ClaimTaskResponse> ClaimTaskAsync(ClaimTaskRequest request, CancellationToken cancellationToken);

    /// <exception cref="BoardRpcException">The call failed.</exception>
    Task<CompleteTaskResponse> CompleteTaskAsync(CompleteTaskRequest request, CancellationToken cancellationToken);
}

/// <summary>Through GrpcBoard's C# client.</summary>
public sealed class SdkClaimCalls(BoardClient client) : IClaimCalls
{
    public Task<ClaimTaskResponse> ClaimTaskAsync(ClaimTaskRequest request, CancellationToken cancellationToken) =>
        client.ClaimTaskAsync(request, new CallOptions(CancellationToken: cancellationToken));

    public Task<CompleteTaskResponse> CompleteTaskAsync(CompleteTaskRequest request, CancellationToken cancellationToken) =>
        client.CompleteTaskAsync(request, new CallOptions(CancellationToken: cancellationToken));
}

/// <summary>Through the lean load generator; a cancelled run fails the connection (and so every call on it).</summary>
public sealed class LeanClaimCalls(LeanH2Connection connection) : IClaimCalls
{
    private readonly byte[] _claimHeaders = connection.RequestHeaders(BoardMethods.ClaimTask.FullName);
    private readonly byte[] _completeHeaders = connection.RequestHeaders(BoardMethods.CompleteTask.FullName);

    public async Task<ClaimTaskResponse> ClaimTaskAsync(ClaimTaskRequest request, CancellationToken cancellationToken) =>
        ClaimTaskResponse.Parser.ParseFrom(await CallAsync(_claimHeaders, request).ConfigureAwait(false));

    public async Task<CompleteTaskResponse> CompleteTaskAsync(CompleteTaskRequest request, CancellationToken cancellationToken) =>
        CompleteTaskResponse.Parser.ParseFrom(await CallAsync(_completeHeaders, request).ConfigureAwait(false));

    private async Task<byte[]> CallAsync(byte[] headers, IMessage request)
    {
        try
        {
            return await connection.CallAsync(headers, request.ToByteArray()).ConfigureAwait(false);
        }
        catch (RpcException ex)
        {
            throw new BoardRpcException(ex);
        }
    }
}
