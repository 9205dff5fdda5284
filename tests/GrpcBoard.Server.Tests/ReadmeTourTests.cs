using GrpcBoard.Api.V1;
using GrpcBoard.Testing;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>
/// The README's tour with the example agent it shows (clients/csharp/examples/GrpcBoard.Agent), shortened:
/// plan the task graph, two workers process it, export the board as Markdown and as JSON. (Killing a
/// worker mid-task and having its task finished by another is the cross-language tests' part.)
/// </summary>
public sealed class ReadmeTourTests
{
    [Fact]
    public async Task PlanTwoWorkersAndExport_AsTheReadmeShows()
    {
        await using var harness = await ServerHarness.StartAsync();
        string[] common = ["--workflow", "tour", "--target", harness.Address];

        var plan = await RunAsync(["plan", .. common, "--steps", "2"]);
        Assert.Contains("created workflow tour", plan, StringComparison.Ordinal);
        Assert.Contains("review         Pending", plan, StringComparison.Ordinal);

        // Each worker stops once no task was ready for its --idle-exit: after the graph is done.
        string[] work = ["work", .. common, "--step-ms", "50", "--lease-ms", "2000", "--idle-exit", "2"];
        await Task.WhenAll(RunAsync([.. work, "--worker", "alice"]), RunAsync([.. work, "--worker", "bob"]));

        var view = await harness.Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "tour" }).Within();
        Assert.Equal(4, view.Workflow.TaskCounts.Completed);

        var markdown = await RunAsync(["export", .. common]);
        Assert.Contains("4 of 4 tasks completed.", markdown, StringComparison.Ordinal);
        foreach (var id in new[] { "research", "draft-intro", "draft-details", "review" })
        {
            Assert.Contains($"### `{id}`", markdown, StringComparison.Ordinal);
        }

        var json = await RunAsync(["export", .. common, "--json"]);
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        Assert.Equal(4, doc.RootElement.GetProperty("tasks").GetArrayLength());
    }

    private static Task<string> RunAsync(string[] args) => Agent.CSharp.RunForOutputAsync(args);
}
