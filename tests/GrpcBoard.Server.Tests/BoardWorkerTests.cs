using System.Threading.Channels;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Server.Hosting;
using GrpcBoard.Testing;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using Microsoft.Extensions.Logging;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>BoardWorker against a real server: lease renewal, and final writes across outages and refusals.</summary>
public sealed class BoardWorkerTests
{
    /// <summary>
    /// The server process stops (kill -9) while a worker holds a task, and comes back on the same port and
    /// data directory only after the completion has failed more often than a fixed budget of five attempts
    /// allows: the worker is still retrying (its lease has a minute left), and the task ends COMPLETED with
    /// its result and token.
    /// </summary>
    [Fact]
    public async Task Completion_IsRetriedAcrossAServerRestart_AndLands()
    {
        using var data = new TempDirectory();
        var port = Ports.Free().ToString(System.Globalization.CultureInfo.InvariantCulture);
        var server = await ServerProcess.StartAsync("--port", port, "--data", data.Path);
        try
        {
            using var calls = new CallRecorder(TimeProvider.System);
            using var client = new BoardClient(server.Address, new BoardClientOptions { Channel = new GrpcChannelOptions { HttpHandler = calls } });
            await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "restart" }).Within();
            await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "restart", Tasks = { new TaskSpec { Id = "report" } } }).Within();

            var started = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
            var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var worker = client.CreateWorker(new BoardWorkerOptions { WorkflowId = "restart", WorkerId = "steady", LeaseDuration = TimeSpan.FromMinutes(1), ClaimWait = TimeSpan.FromSeconds(5) });
            var run = worker.RunOnceAsync(async ctx =>
            {
                started.SetResult(ctx.FencingToken);
                await finish.Task;
                return TaskOutcome.Text("the finished report");
            }, CancellationToken.None);
            var token = await started.Task.Within();

            await server.KillAsync();
            finish.SetResult();
            // Six refused connections: one more attempt than the old fixed budget (five, about a second) made.
            var sixthFailure = calls.WaitForAsync(c => c.Count(a => a.Method == "CompleteTask" && a.Failed) >= 6);
            var first = await Task.WhenAny(sixthFailure, run).Within(TimeSpan.FromSeconds(30));
            Assert.True(first == sixthFailure && !run.IsCompleted,
                $"the worker gave up after {calls.Snapshot().Count(a => a.Method == "CompleteTask")} attempts, with most of a minute of lease left");

            await server.DisposeAsync();
            server = await ServerProcess.StartAsync("--port", port, "--data", data.Path);
            Assert.True(await run.Within(TimeSpan.FromSeconds(30)));
            Assert.Equal((1, 0), (worker.Completed, worker.LostClaims));

            var stored = (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = "restart", TaskId = "report" }).Within()).Task;
            Assert.Equal(TaskState.Completed, stored.State);
            Assert.Equal("the finished report", stored.Result.ToStringUtf8());
            Assert.Equal(token, stored.FencingToken);
            Assert.Equal("steady", stored.Owner);
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    /// <summary>
    /// The server is gone for good while a worker's completion is retried: the worker tries until its lease
    /// would have ended and never after, counted on its own clock from when the claim was sent. The client's
    /// clock is manual, and moves only by the backoffs the worker asks for, so the check is exact.
    /// </summary>
    [Fact]
    public async Task CompletionRetries_StopWhenTheLeaseWouldHaveEnded_NeverAfter()
    {
        var clock = new ManualTimeProvider(DateTimeOffset.UtcNow);
        BoardServer? server = await BoardServer.StartAsync(new ServerSettings { Port = 0, Store = "memory" }, Quiet);
        try
        {
            using var calls = new CallRecorder(clock);
            var log = new RecordingLogger();
            using var client = new BoardClient(server.Address.ToString(), new BoardClientOptions { Channel = new GrpcChannelOptions { HttpHandler = calls, TimeProvider = clock } });
            await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "gone" }).Within();
            await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "gone", Tasks = { new TaskSpec { Id = "t" } } }).Within();

            var lease = TimeSpan.FromSeconds(10);
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var worker = client.CreateWorker(new BoardWorkerOptions
            {
                WorkflowId = "gone",
                WorkerId = "w",
                LeaseDuration = lease,
                RenewInterval = TimeSpan.FromHours(1),
                ClaimWait = TimeSpan.FromSeconds(5),
                Logger = log,
            });
            var claimSent = clock.GetTimestamp();
            var run = worker.RunOnceAsync(async _ =>
            {
                started.SetResult();
                await finish.Task;
                return TaskOutcome.Text("late");
            }, CancellationToken.None);
            await started.Task.Within();

            await server.DisposeAsync();
            server = null;
            finish.SetResult();
            // Each backoff is logged once its timer exists: move the clock by exactly that much, until it gives up.
            while (await log.NextAsync(e => e.Message.Contains("retrying in", StringComparison.Ordinal) || e.Message.StartsWith("Gave up", StringComparison.Ordinal)).Within() is { } entry
                && entry.Message.Contains("retrying in", StringComparison.Ordinal))
            {
                clock.Advance((TimeSpan)entry.State["Delay"]!);
            }

            Assert.True(await run.Within());
            Assert.Equal((0, 0), (worker.Completed, worker.LostClaims));
            var attempts = calls.Snapshot().Where(a => a.Method == "CompleteTask").Select(a => clock.GetElapsedTime(claimSent, a.Timestamp)).ToList();
            Assert.True(attempts.Count > 5, $"{attempts.Count} attempts");
            Assert.All(attempts, at => Assert.True(at < lease, $"an attempt {at} after the claim was sent, with a lease of {lease}"));
            Assert.True(attempts[^1] > lease - TimeSpan.FromMilliseconds(100), $"the last attempt was {lease - attempts[^1]} before the lease's end");
        }
        finally
        {
            if (server is not null)
            {
                await server.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// A completion fails while the server restarts, and the next attempt is refused (another worker holds the
    /// task now, with a newer token): the refusal ends the retries at once, with the lease far from over.
    /// </summary>
    [Fact]
    public async Task CompletionRetries_EndAtOnce_WhenTheTokenIsStale()
    {
        using var data = new TempDirectory();
        var clock = new ManualTimeProvider(DateTimeOffset.UtcNow);
        var settings = new ServerSettings { Port = Ports.Free(), Store = "embedded", DataDirectory = data.Path };
        BoardServer? server = await BoardServer.StartAsync(settings, Quiet);
        try
        {
            using var calls = new CallRecorder(clock);
            var log = new RecordingLogger();
            using var client = new BoardClient(server.Address.ToString(), new BoardClientOptions { Channel = new GrpcChannelOptions { HttpHandler = calls, TimeProvider = clock } });
            await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "stale" }).Within();
            await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "stale", Tasks = { new TaskSpec { Id = "t" } } }).Within();

            var started = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
            var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var worker = client.CreateWorker(new BoardWorkerOptions
            {
                WorkflowId = "stale",
                WorkerId = "old",
                LeaseDuration = TimeSpan.FromMinutes(1),
                RenewInterval = TimeSpan.FromHours(1),
                ClaimWait = TimeSpan.FromSeconds(5),
                Logger = log,
            });
            var run = worker.RunOnceAsync(async ctx =>
            {
                started.SetResult(ctx.FencingToken);
                await finish.Task;
                return TaskOutcome.Text("stale result");
            }, CancellationToken.None);
            var token = await started.Task.Within();

            // Another worker takes the task over (the first one's release stands in for its lease running out).
            await client.ReleaseTaskAsync(new ReleaseTaskRequest { WorkflowId = "stale", TaskId = "t", FencingToken = token }).Within();
            var usurper = await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "stale", TaskId = "t", WorkerId = "new" }).Within();

            await server.DisposeAsync();
            server = null;
            finish.SetResult();
            var retrying = await log.NextAsync(e => e.Message.Contains("retrying in", StringComparison.Ordinal)).Within();
            server = await BoardServer.StartAsync(settings, Quiet);
            clock.Advance((TimeSpan)retrying.State["Delay"]!);

            Assert.True(await run.Within());
            Assert.Equal((0, 1), (worker.Completed, worker.LostClaims));
            Assert.Equal(2, calls.Snapshot().Count(a => a.Method == "CompleteTask"));
            var refused = await log.NextAsync(e => e.Message.Contains("was refused", StringComparison.Ordinal)).Within();
            Assert.Equal(ErrorReason.FencingTokenStale, Assert.IsType<BoardRpcException>(refused.Exception).Reason);
            Assert.DoesNotContain(log.Entries, e => e.Message.Contains("retrying in", StringComparison.Ordinal) && e != retrying);

            var stored = (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = "stale", TaskId = "t" }).Within()).Task;
            Assert.Equal((TaskState.Claimed, "new", usurper.FencingToken), (stored.State, stored.Owner, stored.FencingToken));
        }
        finally
        {
            if (server is not null)
            {
                await server.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// A handler runs for more than three lease durations (2 s each; with 1 s, a renewal delayed by a busy
    /// machine by 0.7 s already loses the lease) while the worker renews in the background: the server, which
    /// expires leases every 20 ms, never expires this one, and the task completes with the worker's first and
    /// only fencing token.
    /// </summary>
    [Fact]
    public async Task BackgroundRenewal_KeepsTheLeaseAlive_ForThreeLeaseDurations()
    {
        await using var harness = await ServerHarness.StartAsync(new ServerSettings { Port = 0, Store = "memory", TimerPollMilliseconds = 20 });
        var client = harness.Client;
        var created = await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "long" }).Within();
        await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "long", Tasks = { new TaskSpec { Id = "slow" } } }).Within();

        var lease = TimeSpan.FromSeconds(2);
        var started = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var log = new RecordingLogger();
        var worker = client.CreateWorker(new BoardWorkerOptions { WorkflowId = "long", WorkerId = "patient", LeaseDuration = lease, ClaimWait = TimeSpan.FromSeconds(5), Logger = log });
        var run = worker.RunOnceAsync(async ctx =>
        {
            started.TrySetResult(ctx.FencingToken);
            await finish.Task.WaitAsync(ctx.CancellationToken);
            return TaskOutcome.Text("slow and steady");
        }, CancellationToken.None);
        var token = await started.Task.Within();

        // Watch the task until a renewal is committed three lease durations (server time) after the claim.
        using var watching = new CancellationTokenSource(TestTimeouts.Default);
        Timestamp? claimedAt = null;
        var renewals = 0;
        var seen = new List<string>();
        await foreach (var e in client.WatchAsync(new WatchRequest { WorkflowId = "long", StartRevision = created.Header.Revision + 1 }, watching.Token))
        {
            seen.Add($"{e.Time.ToDateTimeOffset():HH:mm:ss.fff} {e.Kind}");
            Assert.True(e.Kind != EventKind.TaskLeaseExpired, $"The lease expired. Events:\n{string.Join('\n', seen)}\nWorker:\n{string.Join('\n', log.Entries.Select(l => $"{l.At:HH:mm:ss.fff} {l.Level} {l.Message} {l.Exception?.Message}"))}");
            if (e.Kind == EventKind.TaskClaimed)
            {
                claimedAt = e.Time;
            }
            else if (e.Kind == EventKind.TaskLeaseRenewed && claimedAt is not null)
            {
                renewals++;
                if (renewals >= 2 && e.Time.ToDateTimeOffset() - claimedAt.ToDateTimeOffset() >= 3 * lease)
                {
                    break;
                }
            }
        }

        finish.SetResult();
        Assert.True(await run.Within());
        Assert.Equal((1, 0), (worker.Completed, worker.LostClaims));

        var stored = (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = "long", TaskId = "slow" }).Within()).Task;
        Assert.Equal(TaskState.Completed, stored.State);
        Assert.Equal(token, stored.FencingToken);
        Assert.Equal("slow and steady", stored.Result.ToStringUtf8());
        Assert.Equal(1, stored.Attempt);

        var history = await client.WatchAsync(new WatchRequest { WorkflowId = "long", StartRevision = 1 }).Within(stored.ModRevision).ToListAsync();
        Assert.DoesNotContain(history, e => e.Kind == EventKind.TaskLeaseExpired);
        Assert.Single(history, e => e.Kind == EventKind.TaskClaimed);
        Assert.True(history.Count(e => e.Kind == EventKind.TaskLeaseRenewed) >= renewals);
        Assert.Equal(EventKind.TaskCompleted, history[^1].Kind);
    }

    private static readonly BoardServerOverrides Quiet = new() { Logging = l => l.SetMinimumLevel(LogLevel.Warning) };
}

/// <summary>An HTTP handler that records every gRPC call the client sends: method, clock reading, and whether the request failed to get a response.</summary>
internal sealed class CallRecorder(TimeProvider clock) : DelegatingHandler(new SocketsHttpHandler { EnableMultipleHttp2Connections = true, UseProxy = false })
{
    private readonly object _lock = new();
    private readonly List<Attempt> _attempts = [];
    private readonly List<(Func<IReadOnlyList<Attempt>, bool> Condition, TaskCompletionSource Done)> _waiters = [];

    public sealed record Attempt(string Method, long Timestamp, bool Failed);

    public IReadOnlyList<Attempt> Snapshot()
    {
        lock (_lock)
        {
            return [.. _attempts];
        }
    }

    /// <summary>Completes when the recorded calls satisfy <paramref name="condition"/>.</summary>
    public Task WaitForAsync(Func<IReadOnlyList<Attempt>, bool> condition)
    {
        lock (_lock)
        {
            if (condition(_attempts))
            {
                return Task.CompletedTask;
            }

            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((condition, done));
            return done.Task;
        }
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var method = request.RequestUri!.AbsolutePath.Split('/')[^1];
        var at = clock.GetTimestamp();
        try
        {
            var response = await base.SendAsync(request, cancellationToken);
            Record(new Attempt(method, at, Failed: false));
            return response;
        }
        catch
        {
            Record(new Attempt(method, at, Failed: true));
            throw;
        }
    }

    private void Record(Attempt attempt)
    {
        lock (_lock)
        {
            _attempts.Add(attempt);
            foreach (var waiter in _waiters.Where(w => w.Condition(_attempts)).ToList())
            {
                _waiters.Remove(waiter);
                waiter.Done.TrySetResult();
            }
        }
    }
}

/// <summary>A logger that keeps every entry with its structured values, and lets a test await the next matching one.</summary>
internal sealed class RecordingLogger : ILogger
{
    private readonly Channel<Entry> _unread = Channel.CreateUnbounded<Entry>();
    private readonly List<Entry> _entries = [];

    public sealed record Entry(DateTimeOffset At, LogLevel Level, string Message, IReadOnlyDictionary<string, object?> State, Exception? Exception);

    public IReadOnlyList<Entry> Entries
    {
        get
        {
            lock (_entries)
            {
                return [.. _entries];
            }
        }
    }

    /// <summary>The next entry not read yet that matches; entries before it are skipped.</summary>
    public async Task<Entry> NextAsync(Func<Entry, bool> match)
    {
        while (true)
        {
            var entry = await _unread.Reader.ReadAsync();
            if (match(entry))
            {
                return entry;
            }
        }
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var values = state as IEnumerable<KeyValuePair<string, object?>> ?? [];
        var entry = new Entry(DateTimeOffset.UtcNow, logLevel, formatter(state, exception), values.ToDictionary(kv => kv.Key, kv => kv.Value), exception);
        lock (_entries)
        {
            _entries.Add(entry);
        }

        _unread.Writer.TryWrite(entry);
    }
}
