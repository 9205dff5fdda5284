using GrpcBoard.Api;
using GrpcBoard.Core.Storage;
using GrpcBoard.Server.Protocol.Health;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Server;

namespace GrpcBoard.Server.Services;

/// <summary>
/// grpc.health.v1.Health: SERVING while the store can commit, NOT_SERVING while it cannot (an embedded
/// store recovering from a failed disk commit, an unreachable Redis). Load balancers and supervisors
/// can route around an instance whose store is down.
/// </summary>
public sealed class HealthService(IBoardStore store, TimeProvider time)
{
    private const string ServiceName = "grpc.health.v1.Health";

    private static readonly Method<HealthCheckRequest, HealthCheckResponse> CheckMethod =
        new(MethodType.Unary, ServiceName, "Check", ProtobufMarshaller.For(HealthCheckRequest.Parser), ProtobufMarshaller.For(HealthCheckResponse.Parser));

    private static readonly Method<HealthCheckRequest, HealthCheckResponse> WatchMethod =
        new(MethodType.ServerStreaming, ServiceName, "Watch", ProtobufMarshaller.For(HealthCheckRequest.Parser), ProtobufMarshaller.For(HealthCheckResponse.Parser));

    /// <summary>How often Watch re-checks the store.</summary>
    public TimeSpan WatchInterval { get; set; } = TimeSpan.FromSeconds(1);

    public GrpcServiceRegistry Register(GrpcServiceRegistry registry) => registry
        .AddUnary(CheckMethod, Check)
        .AddServerStreaming(WatchMethod, Watch);

    public async Task<HealthCheckResponse> Check(HealthCheckRequest request, ServerCallContext context)
    {
        if (!IsKnown(request.Service))
        {
            throw new RpcException(StatusCode.NotFound, $"Unknown service '{request.Service}'.");
        }

        return new HealthCheckResponse { Status = await StatusAsync(context.CancellationToken) };
    }

    public async Task Watch(HealthCheckRequest request, IServerStreamWriter<HealthCheckResponse> responses, ServerCallContext context)
    {
        HealthCheckResponse.Types.ServingStatus? last = null;
        while (!context.CancellationToken.IsCancellationRequested)
        {
            var status = IsKnown(request.Service)
                ? await StatusAsync(context.CancellationToken)
                : HealthCheckResponse.Types.ServingStatus.ServiceUnknown;
            if (status != last)
            {
                await responses.WriteAsync(new HealthCheckResponse { Status = status }, context.CancellationToken);
                last = status;
            }

            await Task.Delay(WatchInterval, time, context.CancellationToken);
        }
    }

    private static bool IsKnown(string service) => service is "" or BoardMethods.ServiceName;

    private async Task<HealthCheckResponse.Types.ServingStatus> StatusAsync(CancellationToken ct) =>
        await store.CheckHealthAsync(ct)
            ? HealthCheckResponse.Types.ServingStatus.Serving
            : HealthCheckResponse.Types.ServingStatus.NotServing;
}
