using System.Diagnostics;
using Google.Protobuf;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>Workflows and tasks a scenario needs before it measures anything.</summary>
public static class BoardSetup
{
    public static async Task CreateWorkflowAsync(BoardClient client, string workflowId, string goal, CancellationToken cancellationToken)
    {
        var request = new CreateWorkflowRequest { WorkflowId = workflowId, Goal = goal };
        request.Labels["created-by"] = "grpcboard-bench";
        await client.CreateWorkflowAsync(request, new Wire.Client.CallOptions(CancellationToken: cancellationToken));
    }

    /// <summary>Posts <paramref name="count"/> independent ready tasks in batches (ids from <paramref name="firstId"/> on); returns how long it took.</summary>
    public static async Task<TimeSpan> PostTasksAsync(BoardClient client, string workflowId, int count, int batchSize, int payloadBytes, CancellationToken cancellationToken, int firstId = 0)
    {
        var payload = ByteString.CopyFrom(Enumerable.Range(0, payloadBytes).Select(i => (byte)('a' + (i % 26))).ToArray());
        var started = Stopwatch.GetTimestamp();
        for (var first = 0; first < count; first += batchSize)
        {
            var request = new PostTasksRequest { WorkflowId = workflowId };
            for (var i = first; i < Math.Min(count, first + batchSize); i++)
            {
                request.Tasks.Add(new TaskSpec { Id = TaskId(firstId + i), Payload = payload, ContentType = "application/octet-stream" });
            }

            // A large batch on a cold, durable server can take a while: allow more than the default 30 s.
            var response = await client.PostTasksAsync(request, new Wire.Client.CallOptions(Deadline: DateTimeOffset.UtcNow.AddMinutes(5), CancellationToken: cancellationToken));
            if (response.Tasks.Count + response.ExistingTaskIds.Count != request.Tasks.Count)
            {
                throw new InvalidOperationException($"PostTasks answered for {response.Tasks.Count + response.ExistingTaskIds.Count} of {request.Tasks.Count} tasks.");
            }
        }

        return Stopwatch.GetElapsedTime(started);
    }

    public static async Task<TaskCounts> CountsAsync(BoardClient client, string workflowId, CancellationToken cancellationToken)
    {
        var response = await client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = workflowId }, new Wire.Client.CallOptions(CancellationToken: cancellationToken));
        return response.Workflow.TaskCounts;
    }

    public static string TaskId(int i) => "t" + i.ToString("D7", System.Globalization.CultureInfo.InvariantCulture);
}
