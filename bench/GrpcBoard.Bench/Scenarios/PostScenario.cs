using GrpcBoard.Bench.Reporting;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>
/// post: creates a workflow and posts --tasks ready tasks on an existing server (--target), then stops,
/// leaving the board for an external load generator (h2load, ghz) to claim from.
/// </summary>
public sealed class PostScenario : IScenario
{
    public string Name => "post";

    public string Description => "With --target: create a workflow, post N tasks, print its id, and stop (for external load generators).";

    public async Task<int> RunAsync(BenchContext context)
    {
        var o = context.Options;
        if (o.Target is null)
        {
            Console.Error.WriteLine("post needs --target: a server the tool starts is stopped when the tool ends.");
            return 2;
        }

        var workflowId = $"bench-{context.RunId}";
        await BoardSetup.CreateWorkflowAsync(context.Clients.Main, workflowId, "benchmark board for an external load generator", context.CancellationToken);
        var took = await BoardSetup.PostTasksAsync(context.Clients.Main, workflowId, o.Tasks, o.BatchSize, o.PayloadBytes, context.CancellationToken);
        context.Report.Section("posted");
        context.Report.Line("workflow", workflowId);
        context.Report.Line("tasks", string.Create(Report.Culture, $"{o.Tasks} in {took.TotalSeconds:0.00} s ({o.Tasks / took.TotalSeconds:0} tasks/s)"));
        return 0;
    }
}
