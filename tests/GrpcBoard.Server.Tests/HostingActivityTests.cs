using System.Diagnostics;
using GrpcBoard.Api.V1;
using GrpcBoard.Server.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>
/// The host's per-request Activity: not started when nobody traces (it cost an Activity, a log scope and ExecutionContext
/// changes per call, BoardServer's logging filter), still started for a tracer that listens.
/// </summary>
public sealed class HostingActivityTests
{
    private const string HostActivity = "Microsoft.AspNetCore.Hosting.HttpRequestIn";

    [Fact]
    public async Task Calls_RunWithoutTheHostsActivity_WhenNobodyTraces_EvenWithEveryLogLevelEnabled()
    {
        var witness = new ActivityWitness();
        await MakeCallsAsync(witness);

        Assert.True(witness.InCalls > 0, "the witness saw no call");
        Assert.Equal(0, witness.WithHostActivity);
    }

    [Fact]
    public async Task Calls_RunInTheHostsActivity_WhenATracerListens()
    {
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == "Microsoft.AspNetCore",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        var witness = new ActivityWitness();
        await MakeCallsAsync(witness);

        Assert.True(witness.WithHostActivity > 0, "no call ran in the host's Activity");
    }

    private static async Task MakeCallsAsync(ActivityWitness witness)
    {
        // A provider that takes every level: without the filter, the host would start its Activity for every call.
        await using var harness = await ServerHarness.StartAsync(
            overrides: new BoardServerOverrides { TimeProvider = witness, Logging = l => l.AddProvider(new EverythingEnabled()).SetMinimumLevel(LogLevel.Trace) });
        witness.Watching = true;
        await harness.Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "wf", Goal = "activity" });
        await harness.Client.PostTasksAsync(new PostTasksRequest { WorkflowId = "wf", Tasks = { new TaskSpec { Id = "t1" } } });
        await harness.Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "wf", WorkerId = "w", LeaseDuration = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(1)) });
        witness.Watching = false;
    }

    /// <summary>The server's clock; it notes, on each reading inside a call, whether the call runs in the host's Activity.</summary>
    private sealed class ActivityWitness : TimeProvider
    {
        public volatile bool Watching;
        private int _inCalls;
        private int _withHostActivity;

        public int InCalls => Volatile.Read(ref _inCalls);

        public int WithHostActivity => Volatile.Read(ref _withHostActivity);

        public override DateTimeOffset GetUtcNow()
        {
            if (Watching)
            {
                Interlocked.Increment(ref _inCalls);
                if (Activity.Current is { OperationName: HostActivity })
                {
                    Interlocked.Increment(ref _withHostActivity);
                }
            }

            return base.GetUtcNow();
        }
    }

    private sealed class EverythingEnabled : ILoggerProvider, ILogger
    {
        public ILogger CreateLogger(string categoryName) => this;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
        }

        public void Dispose()
        {
        }
    }
}
