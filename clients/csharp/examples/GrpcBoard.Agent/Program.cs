// A small agent built on GrpcBoard.Client, for the README's tour and for cross-language tests.
//   plan    --workflow W                 create W and post a small task graph
//   work    --workflow W --worker ID     process tasks until --idle-exit seconds pass with none ready
//   watch   --workflow W [--from N]      print every change (resumes by itself after disconnects)
//   export  --workflow W [--json]        print the board as Markdown (or JSON)
//   claim   --workflow W --worker ID [--task T] [--lease-ms N] [--wait-ms N] [--announce]   one claim, as a JSON line
//           (--announce: {"waiting":true} first, just before the claim is sent, for races between claimers)
// Common: --target URL (default $GRPCBOARD_TARGET or http://127.0.0.1:50051).
using System.Text;
using System.Text.Json;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using Task = System.Threading.Tasks.Task;

var command = args.FirstOrDefault() ?? "help";
var options = ParseOptions(args.Skip(1).ToArray());
string Opt(string name, string fallback) => options.TryGetValue(name, out var v) ? v : fallback;
var target = Opt("target", Environment.GetEnvironmentVariable("GRPCBOARD_TARGET") ?? "http://127.0.0.1:50051");
var workflow = Opt("workflow", "demo");
using var client = new BoardClient(target);
using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};

try
{
    switch (command)
    {
        case "plan":
            await PlanAsync();
            break;
        case "work":
            await WorkAsync(Opt("worker", "worker-" + Environment.ProcessId));
            break;
        case "watch":
            await WatchAsync(long.Parse(Opt("from", "1"), System.Globalization.CultureInfo.InvariantCulture), int.Parse(Opt("count", "0"), System.Globalization.CultureInfo.InvariantCulture));
            break;
        case "export":
            var export = await client.ExportWorkflowAsync(new ExportWorkflowRequest { WorkflowId = workflow, Format = options.ContainsKey("json") ? ExportFormat.Json : ExportFormat.Markdown });
            Console.WriteLine(export.Content);
            break;
        case "claim":
            await ClaimOnceAsync();
            break;
        default:
            Console.WriteLine("commands: plan | work | watch | export | claim   (see the header of Program.cs for options)");
            return command == "help" ? 0 : 2;
    }
}
catch (BoardRpcException ex)
{
    Console.Error.WriteLine($"{ex.StatusCode} {ex.ReasonName}: {ex.Message}");
    return 1;
}
catch (OperationCanceledException) when (stop.IsCancellationRequested)
{
}

return 0;

async Task PlanAsync()
{
    var created = await client.CreateWorkflowAsync(new CreateWorkflowRequest
    {
        WorkflowId = workflow,
        Goal = "Write a short report on HTTP/2 flow control: research, two drafts in parallel, then a review.",
    });
    Console.WriteLine(created.Created ? $"created workflow {workflow}" : $"workflow {workflow} already exists");
    var steps = int.Parse(Opt("steps", "6"), System.Globalization.CultureInfo.InvariantCulture);
    TaskSpec Step(string id, string what, int priority, params string[] deps)
    {
        var spec = new TaskSpec
        {
            Id = id,
            Payload = ByteString.CopyFromUtf8(JsonSerializer.Serialize(new { what, steps })),
            ContentType = "application/json",
            Priority = priority,
            MaxAttempts = 5,
            RetryPolicy = new RetryPolicy { InitialBackoff = new Duration() },
        };
        spec.DependsOn.Add(deps);
        return spec;
    }

    var posted = await client.PostTasksAsync(new PostTasksRequest
    {
        WorkflowId = workflow,
        Tasks =
        {
            Step("research", "collect sources on HTTP/2 flow control", 10),
            Step("draft-intro", "draft the introduction", 5, "research"),
            Step("draft-details", "draft the WINDOW_UPDATE section", 5, "research"),
            Step("review", "review both drafts and merge them", 1, "draft-intro", "draft-details"),
        },
    });
    foreach (var task in posted.Tasks)
    {
        Console.WriteLine($"  {task.Id,-14} {task.State,-8} depends on [{string.Join(", ", task.DependsOn)}]");
    }

    Console.WriteLine($"revision {posted.Header.Revision}");
}

async Task WorkAsync(string workerId)
{
    var idleExit = TimeSpan.FromSeconds(double.Parse(Opt("idle-exit", "0"), System.Globalization.CultureInfo.InvariantCulture));
    var stepTime = TimeSpan.FromMilliseconds(double.Parse(Opt("step-ms", "1000"), System.Globalization.CultureInfo.InvariantCulture));
    var worker = client.CreateWorker(new BoardWorkerOptions
    {
        WorkflowId = workflow,
        WorkerId = workerId,
        LeaseDuration = TimeSpan.FromMilliseconds(double.Parse(Opt("lease-ms", "5000"), System.Globalization.CultureInfo.InvariantCulture)),
        ClaimWait = idleExit > TimeSpan.Zero ? idleExit : TimeSpan.FromSeconds(20),
    });
    Console.WriteLine($"{workerId} (pid {Environment.ProcessId}) working on {workflow} at {target}");
    var maxTasks = int.Parse(Opt("max-tasks", "0"), System.Globalization.CultureInfo.InvariantCulture);
    var done = 0;
    while (!stop.IsCancellationRequested && (maxTasks == 0 || done < maxTasks))
    {
        bool got;
        try
        {
            got = await RunOneAsync();
        }
        catch (BoardRpcException ex) when (ex.IsTransient)
        {
            // The server is restarting or unreachable: try again shortly rather than give up.
            Log($"claim failed ({ex.StatusCode}); retrying");
            await Task.Delay(1000, stop.Token);
            continue;
        }

        if (got)
        {
            done++;
        }
        else if (idleExit > TimeSpan.Zero)
        {
            Log("nothing ready; exiting");
            return;
        }
    }

    Task<bool> RunOneAsync() => worker.RunOnceAsync(async ctx =>
        {
            var start = ctx.LastCheckpoint.Length == 0 ? 0 : int.Parse(Encoding.UTF8.GetString(ctx.LastCheckpoint.Span), System.Globalization.CultureInfo.InvariantCulture);
            var steps = StepsOf(ctx.Task);
            Log($"claimed {ctx.Task.Id} (attempt {ctx.Task.Attempt}, token {ctx.FencingToken})" + (start > 0 ? $", resuming at step {start + 1}/{steps}" : ""));
            if (options.ContainsKey("hang-after-claim"))
            {
                Json(new { claimed = true, task_id = ctx.Task.Id, fencing_token = ctx.FencingToken });
                // A crashed process: no renewals, no release, no result.
                Environment.Exit(0);
            }

            for (var step = start + 1; step <= steps; step++)
            {
                await Task.Delay(stepTime, ctx.CancellationToken);
                await ctx.CheckpointAsync(Encoding.UTF8.GetBytes(step.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                Log($"  {ctx.Task.Id}: step {step}/{steps}");
            }

            Json(new { completed = ctx.Task.Id, fencing_token = ctx.FencingToken });
            return TaskOutcome.Text($"done by {workerId}");
        }, stop.Token);
}

async Task WatchAsync(long from, int count)
{
    var seen = 0;
    await foreach (var e in client.WatchAsync(new WatchRequest { WorkflowId = workflow, StartRevision = from }, stop.Token))
    {
        var subject = e.Task?.Id ?? e.Note?.Key ?? e.Workflow?.Id ?? "";
        var kind = EventReflection.Descriptor.EnumTypes[0].FindValueByNumber((int)e.Kind).Name["EVENT_KIND_".Length..];
        // With --count (the cross-language contract) or --jsonl: one JSON line per event, as the other clients print.
        if (options.ContainsKey("jsonl") || count > 0)
        {
            Json(new { revision = e.Revision, kind, task_id = e.Task?.Id, note_key = e.Note?.Key });
        }
        else
        {
            var detail = e.Task is { } t ? $"{t.State}{(t.Owner.Length > 0 ? " owner=" + t.Owner : "")} token={t.FencingToken}" : "";
            Console.WriteLine($"{e.Revision,6}  {kind,-20} {subject,-14} {detail} {(e.Actor.Length > 0 ? "by " + e.Actor : "")} {e.Reason}");
        }

        if (count > 0 && ++seen >= count)
        {
            return;
        }
    }
}

async Task ClaimOnceAsync()
{
    var request = new ClaimTaskRequest
    {
        WorkflowId = workflow,
        WorkerId = Opt("worker", "csharp"),
        TaskId = Opt("task", ""),
        LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(double.Parse(Opt("lease-ms", "30000"), System.Globalization.CultureInfo.InvariantCulture))),
        Wait = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(double.Parse(Opt("wait-ms", "0"), System.Globalization.CultureInfo.InvariantCulture))),
    };
    if (options.ContainsKey("announce"))
    {
        Json(new { waiting = true });
    }

    try
    {
        var response = await client.ClaimTaskAsync(request);
        Json(response.Task is null ? new { claimed = false } : new { claimed = true, task_id = response.Task.Id, fencing_token = response.FencingToken });
    }
    catch (BoardRpcException ex)
    {
        var code = string.Concat(ex.StatusCode.ToString().Select((c, i) => i > 0 && char.IsUpper(c) ? "_" + c : char.ToUpperInvariant(c).ToString()));
        Json(new { error = new { code, reason = ex.ReasonName, message = ex.Message } });
    }
}

// Tasks posted by plan carry {"steps": N}; any other payload is one step.
static int StepsOf(GrpcBoard.Api.V1.Task task)
{
    try
    {
        using var doc = JsonDocument.Parse(task.Payload.Memory);
        return doc.RootElement.TryGetProperty("steps", out var steps) ? Math.Max(1, steps.GetInt32()) : 1;
    }
    catch (JsonException)
    {
        return 1;
    }
}

void Log(string line) => Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {line}");

void Json(object value)
{
    Console.WriteLine(JsonSerializer.Serialize(value));
    Console.Out.Flush();
}

static Dictionary<string, string> ParseOptions(string[] argv)
{
    var result = new Dictionary<string, string>(StringComparer.Ordinal);
    for (var i = 0; i < argv.Length; i++)
    {
        if (!argv[i].StartsWith("--", StringComparison.Ordinal))
        {
            continue;
        }

        var name = argv[i][2..];
        var value = i + 1 < argv.Length && !argv[i + 1].StartsWith("--", StringComparison.Ordinal) ? argv[++i] : "true";
        result[name] = value;
    }

    return result;
}
