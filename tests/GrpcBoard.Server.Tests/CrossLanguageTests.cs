using System.Diagnostics;
using System.Text.Json;
using System.Threading.Channels;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Storage;
using GrpcBoard.Server.Hosting;
using GrpcBoard.Store.Embedded;
using GrpcBoard.Testing;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>Needs the Python client's runtime and the built TypeScript client; skipped without them except in CI.</summary>
public sealed class CrossLanguageFactAttribute : FactAttribute
{
    public CrossLanguageFactAttribute()
    {
        if (!Agent.AllAvailable && Environment.GetEnvironmentVariable("CI") != "true")
        {
            Skip = "Needs /usr/bin/python3 with grpc, node, and a built TypeScript client (npm run build in clients/typescript).";
        }
    }
}

/// <summary>One of the three clients' command lines (same commands, same JSON lines).</summary>
public sealed record Agent(string Name, string File, string[] Prefix, Dictionary<string, string> Environment)
{
    private static readonly string Root = RepoPaths.Root;

    public static readonly Agent Python = new("python", "/usr/bin/python3", ["-m", "grpcboard.cli"], new() { ["PYTHONPATH"] = Path.Combine(Root, "clients", "python") });
    public static readonly Agent TypeScript = new("typescript", "node", [Path.Combine(Root, "clients", "typescript", "dist", "cli.js")], []);
    public static readonly Agent CSharp = new("csharp", "dotnet", [Path.Combine(Root, "clients", "csharp", "examples", "GrpcBoard.Agent", "bin", Configuration(), "net10.0", "GrpcBoard.Agent.dll")], []);

    public static bool AllAvailable => PythonPeer.Available && System.IO.File.Exists(TypeScript.Prefix[0]) && System.IO.File.Exists("/usr/bin/node");

    public Process Start(params string[] args)
    {
        var info = new ProcessStartInfo(File) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in Prefix.Concat(args))
        {
            info.ArgumentList.Add(a);
        }

        foreach (var (k, v) in Environment)
        {
            info.Environment[k] = v;
        }

        return Process.Start(info)!;
    }

    /// <summary>Runs to the end and returns its JSON lines.</summary>
    public async Task<List<JsonElement>> RunAsync(params string[] args) =>
        (await RunForOutputAsync(args)).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();

    /// <summary>Runs to the end (at most a minute) and returns what it printed; fails the test unless it exited with 0.</summary>
    public async Task<string> RunForOutputAsync(params string[] args)
    {
        using var process = Start(args);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{Name} {string.Join(' ', args)} did not finish:\n{await stderr}");
        }

        Assert.True(process.ExitCode == 0, $"{Name} {string.Join(' ', args)} exited {process.ExitCode}:\n{await stdout}\n{await stderr}");
        return await stdout;
    }

    /// <summary>Reads the process's stdout until a JSON line satisfies <paramref name="match"/>.</summary>
    public static async Task<JsonElement> ReadUntilAsync(Process process, Func<JsonElement, bool> match)
    {
        while (await process.StandardOutput.ReadLineAsync().WaitAsync(TestTimeouts.Default) is { } line)
        {
            if (line.StartsWith('{') && JsonDocument.Parse(line).RootElement.Clone() is var json && match(json))
            {
                return json;
            }
        }

        throw new InvalidOperationException("The process ended before printing the expected line: " + await process.StandardError.ReadToEndAsync());
    }

    /// <summary>Starts the command and reads its JSON lines as they come.</summary>
    public RunningAgent Launch(params string[] args) => new(Name, Start(args));

    /// <summary>Debug or Release: the configuration these tests (and so the agent) were built in.</summary>
    private static string Configuration() => new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;

}

/// <summary>The C#, Python and TypeScript clients on one board: the same guarantees whoever calls.</summary>
public sealed class CrossLanguageTests : IAsyncLifetime
{
    private static readonly Agent[] Agents = [Agent.Python, Agent.TypeScript, Agent.CSharp];

    private ServerHarness _harness = null!;

    private string Target => _harness.Address;

    private readonly CountingStoreFactory _store = new();

    public async Task InitializeAsync() =>
        _harness = await ServerHarness.StartAsync(
            new ServerSettings { Port = 0, Store = "memory", TimerPollMilliseconds = 20 },
            new BoardServerOverrides { StoreFactory = _store.Create });

    public async Task DisposeAsync() => await _harness.DisposeAsync();

    /// <summary>
    /// A real race, four rounds: the Python, TypeScript and C# claimers each start a waiting claim for the next
    /// ready task of an empty workflow; only once the server has seen all three look for a task (and wait) is
    /// the one task posted, so the three are woken by the same commit. Exactly one gets it, with the token the
    /// server keeps; the history has one claim; the other two keep waiting and, when the workflow is deleted,
    /// end with NOT_FOUND (WORKFLOW_NOT_FOUND).
    /// </summary>
    [CrossLanguageFact]
    public async Task ClaimRace_BetweenPythonTypeScriptAndCSharp_HasExactlyOneWinner()
    {
        // A waiting claim looks once, then again only when woken: without the periodic re-check, each
        // transaction on a round's workflow between its creation and the post is one claimer's first look.
        _harness.Server.Coordinator.ClaimRecheckInterval = TimeSpan.FromMinutes(10);
        var client = _harness.Client;
        for (var round = 0; round < 4; round++)
        {
            var workflow = $"race-{round}";
            await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = workflow }).Within();
            var allLooking = _store.WaitForTransactionsAsync(workflow, 1 + Agents.Length);
            var claimers = Agents.Select(a => a.Launch("claim", "--target", Target, "--workflow", workflow, "--worker", a.Name, "--wait-ms", "60000", "--announce")).ToArray();
            try
            {
                foreach (var claimer in claimers)
                {
                    Assert.True((await claimer.NextLineAsync(TimeSpan.FromSeconds(60))).GetProperty("waiting").GetBoolean());
                }

                await allLooking.Within(TimeSpan.FromSeconds(60));
                await client.PostTasksAsync(new PostTasksRequest { WorkflowId = workflow, Tasks = { new TaskSpec { Id = "prize" } } }).Within();

                var answers = claimers.Select(c => c.NextLineAsync(TimeSpan.FromSeconds(60))).ToArray();
                var first = await Task.WhenAny(answers).Within();
                var winner = claimers[Array.IndexOf(answers, first)];
                var won = await first;
                Assert.True(won.TryGetProperty("claimed", out var claimed) && claimed.GetBoolean(), $"{winner.Name} answered first, with {won}");
                Assert.Equal("prize", won.GetProperty("task_id").GetString());

                var stored = (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = workflow, TaskId = "prize" }).Within()).Task;
                Assert.Equal((TaskState.Claimed, winner.Name, won.GetProperty("fencing_token").GetInt64()), (stored.State, stored.Owner, stored.FencingToken));
                var history = await client.WatchAsync(new WatchRequest { WorkflowId = workflow, StartRevision = 1 }).Within(stored.ModRevision).ToListAsync();
                Assert.Equal(winner.Name, Assert.Single(history, e => e.Kind == EventKind.TaskClaimed).Actor);

                // The losers are still waiting; deleting the workflow ends their waits.
                await client.DeleteWorkflowAsync(new DeleteWorkflowRequest { WorkflowId = workflow }).Within();
                foreach (var (claimer, answer) in claimers.Zip(answers).Where(p => p.First != winner))
                {
                    var line = await answer.Within();
                    Assert.True(line.TryGetProperty("error", out var error), $"{claimer.Name} lost the race but answered {line}");
                    Assert.Equal(("NOT_FOUND", "WORKFLOW_NOT_FOUND"), (error.GetProperty("code").GetString(), error.GetProperty("reason").GetString()));
                }

                foreach (var claimer in claimers)
                {
                    Assert.Equal(0, await claimer.ExitCodeAsync());
                }
            }
            finally
            {
                foreach (var claimer in claimers)
                {
                    claimer.Dispose();
                }
            }
        }
    }

    [CrossLanguageFact]
    public async Task Watchers_InEachLanguage_SeeTheSameEvents_InTheSameOrder()
    {
        var client = _harness.Client;
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "mirror" }).Within();
        const int changes = 40;
        var watchers = Agents.Select(a => a.RunAsync("watch", "--target", Target, "--workflow", "mirror", "--from", "1", "--count", (changes + 1).ToString(System.Globalization.CultureInfo.InvariantCulture))).ToArray();
        for (var i = 0; i < changes / 4; i++)
        {
            await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "mirror", Tasks = { new TaskSpec { Id = $"t{i}" } } }).Within();
            var claim = await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "mirror", TaskId = $"t{i}", WorkerId = "w" }).Within();
            await client.CompleteTaskAsync(new CompleteTaskRequest { WorkflowId = "mirror", TaskId = $"t{i}", FencingToken = claim.FencingToken }).Within();
            await client.PutNoteAsync(new PutNoteRequest { WorkflowId = "mirror", Key = $"n{i}", Value = ByteString.CopyFromUtf8("x") }).Within();
        }

        var seen = await Task.WhenAll(watchers).Within(TimeSpan.FromSeconds(90));
        var rendered = seen.Select(lines => lines.Select(l => $"{l.GetProperty("revision").GetInt64()} {l.GetProperty("kind").GetString()} {Text(l, "task_id")} {Text(l, "note_key")}").ToArray()).ToArray();
        Assert.Equal(changes + 1, rendered[0].Length);
        Assert.Equal(Enumerable.Range(1, changes + 1).Select(i => (long)i), seen[0].Select(l => l.GetProperty("revision").GetInt64()));
        Assert.Equal(rendered[0], rendered[1]);
        Assert.Equal(rendered[0], rendered[2]);
        Assert.Equal("1 WORKFLOW_CREATED  ", rendered[0][0]);
        Assert.Equal("4 TASK_COMPLETED t0 ", rendered[0][3]);
    }

    [CrossLanguageFact]
    public async Task AKilledWorkersTask_IsFinishedByAWorkerInAnotherLanguage()
    {
        var client = _harness.Client;
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "relay" }).Within();
        foreach (var (crasher, finisher) in new[] { (Agent.Python, Agent.TypeScript), (Agent.TypeScript, Agent.CSharp), (Agent.CSharp, Agent.Python) })
        {
            var task = $"job-{crasher.Name}";
            await client.PostTasksAsync(new PostTasksRequest
            {
                WorkflowId = "relay",
                Tasks = { new TaskSpec { Id = task, RetryPolicy = new RetryPolicy { InitialBackoff = new Duration() } } },
            }).Within();

            using var crashing = crasher.Start("work", "--target", Target, "--workflow", "relay", "--worker", crasher.Name, "--lease-ms", "1000", "--hang-after-claim");
            var claimed = await Agent.ReadUntilAsync(crashing, l => l.TryGetProperty("claimed", out _));
            Assert.Equal(task, claimed.GetProperty("task_id").GetString());
            var oldToken = claimed.GetProperty("fencing_token").GetInt64();
            if (!crashing.HasExited)
            {
                crashing.Kill(entireProcessTree: true);
            }

            var finished = await finisher.RunAsync("work", "--target", Target, "--workflow", "relay", "--worker", finisher.Name, "--max-tasks", "1", "--lease-ms", "5000");
            var completed = Assert.Single(finished, l => l.TryGetProperty("completed", out _));
            Assert.Equal(task, completed.GetProperty("completed").GetString());
            Assert.True(completed.GetProperty("fencing_token").GetInt64() > oldToken);

            var stored = (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = "relay", TaskId = task }).Within()).Task;
            Assert.Equal(TaskState.Completed, stored.State);
            Assert.Equal(finisher.Name, stored.Owner);
            Assert.Equal($"done by {finisher.Name}", stored.Result.ToStringUtf8());
            Assert.True(stored.LastError.LeaseExpired);
        }
    }

    private static string Text(JsonElement line, string property) =>
        line.TryGetProperty(property, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString()! : "";
}

/// <summary>An agent's process, its stdout read as JSON lines as they come; killed when disposed if still running.</summary>
public sealed class RunningAgent : IDisposable
{
    private readonly Process _process;
    private readonly Channel<JsonElement> _lines = Channel.CreateUnbounded<JsonElement>();
    private readonly Task<string> _stderr;

    public RunningAgent(string name, Process process)
    {
        Name = name;
        _process = process;
        _stderr = process.StandardError.ReadToEndAsync();
        _ = Task.Run(async () =>
        {
            while (await process.StandardOutput.ReadLineAsync() is { } line)
            {
                if (line.StartsWith('{'))
                {
                    _lines.Writer.TryWrite(JsonDocument.Parse(line).RootElement.Clone());
                }
            }

            _lines.Writer.TryComplete();
        });
    }

    public string Name { get; }

    /// <summary>The next JSON line; fails with the process's stderr if it ends first.</summary>
    public async Task<JsonElement> NextLineAsync(TimeSpan timeout)
    {
        try
        {
            return await _lines.Reader.ReadAsync().AsTask().WaitAsync(timeout);
        }
        catch (ChannelClosedException)
        {
            await _process.WaitForExitAsync().WaitAsync(timeout);
            throw new InvalidOperationException($"{Name} exited ({_process.ExitCode}) before printing another line:\n{await _stderr}");
        }
    }

    public async Task<int> ExitCodeAsync()
    {
        await _process.WaitForExitAsync().WaitAsync(TestTimeouts.Default);
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        _process.Dispose();
    }
}

/// <summary>Creates the server's store (the in-memory one, counting transactions), and lets the test reach it.</summary>
internal sealed class CountingStoreFactory
{
    public CountingStore? Store { get; private set; }

    public IBoardStore Create(EventHub hub) => Store = new CountingStore(new EmbeddedStore(new EmbeddedStoreOptions(), hub));

    public Task WaitForTransactionsAsync(string workflowId, int count) => Store!.WaitForTransactionsAsync(workflowId, count);
}
