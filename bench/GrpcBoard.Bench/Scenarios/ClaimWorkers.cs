using System.Diagnostics;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Bench.LoadGen;
using GrpcBoard.Bench.Measurement;
using GrpcBoard.Client;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>How a run of claim workers ended: counts, durations and errors of all workers together.</summary>
public sealed class ClaimRun
{
    public required TimeSpan Wall { get; init; }
    public required long StartTimestamp { get; init; }
    public required long EndTimestamp { get; init; }
    public required IReadOnlyList<ClaimWorker> Workers { get; init; }
    public required RateTimeline Timeline { get; init; }

    public long Claims => Workers.Sum(w => w.Claims);
    public long Completions => Workers.Sum(w => w.Completions);
    public long EmptyClaims => Workers.Sum(w => w.EmptyClaims);
    public long AlreadyCompleted => Workers.Sum(w => w.AlreadyCompleted);
    public long Errors => Workers.Sum(w => w.Errors.Total);
    public bool DeadlineReached => Workers.Any(w => w.StoppedByDeadline);

    public ErrorTally MergedErrors()
    {
        var all = new ErrorTally();
        foreach (var w in Workers)
        {
            all.Add(w.Errors);
        }

        return all;
    }

    /// <summary>
    /// Runs <paramref name="workers"/> closed-loop workers until no task is ready (or the deadline passes); worker i
    /// works on workflow i mod the number of workflows. Each loops ClaimTask (next ready task) and, when
    /// <paramref name="complete"/>, CompleteTask; with <paramref name="claimNext"/>, each CompleteTask also claims the
    /// worker's next task (CompleteTaskRequest.claim_next), and ClaimTask is called only when it returned none.
    /// Calls go through <paramref name="generator"/>'s connections of <paramref name="clients"/>.
    /// </summary>
    public static async Task<ClaimRun> ExecuteAsync(
        ClientPool clients, LoadGenerator generator, IReadOnlyList<string> workflowIds, int workers, int expectedTasks, TimeSpan lease, bool complete, int resultBytes, TimeSpan? duration, CancellationToken cancellationToken, bool claimNext = false)
    {
        var connections = await clients.ClaimCallsAsync(generator, cancellationToken);
        var perWorker = expectedTasks / workers + expectedTasks / workers / 4 + 256;
        var pool = Enumerable.Range(0, workers).Select(i => new ClaimWorker(i, perWorker, complete, complete && claimNext)).ToList();
        var result = ByteString.CopyFrom(new byte[resultBytes]);
        var start = Stopwatch.GetTimestamp();
        var stopAt = duration is { } d ? start + (long)(d.TotalSeconds * Stopwatch.Frequency) : long.MaxValue;
        var timeline = new RateTimeline(start);
        var running = pool.Select(w => System.Threading.Tasks.Task.Run(
            () => w.RunAsync(connections[w.Index % connections.Count], workflowIds[w.Index % workflowIds.Count], lease, result, stopAt, timeline, cancellationToken), cancellationToken)).ToArray();
        await System.Threading.Tasks.Task.WhenAll(running);
        var end = Stopwatch.GetTimestamp();
        return new ClaimRun
        {
            Wall = Stopwatch.GetElapsedTime(start, end),
            StartTimestamp = start,
            EndTimestamp = end,
            Workers = pool,
            Timeline = timeline,
        };
    }
}

/// <summary>
/// One closed-loop worker: one call at a time. Durations go into preallocated per-worker arrays
/// (Stopwatch ticks), so recording takes no lock and no allocation during the run.
/// </summary>
public sealed class ClaimWorker(int index, int expected, bool complete, bool claimNext = false)
{
    /// <summary>A worker that fails this many calls in a row gives up (the server is gone or refusing).</summary>
    private const int MaxConsecutiveErrors = 50;

    public int Index { get; } = index;

    public LatencyRecorder ClaimLatency { get; } = new(expected);

    public LatencyRecorder CompleteLatency { get; } = new(complete ? expected : 0);

    public LatencyRecorder PairLatency { get; } = new(complete ? expected : 0);

    public long Claims { get; private set; }

    public long Completions { get; private set; }

    public long EmptyClaims { get; private set; }

    public long AlreadyCompleted { get; private set; }

    public bool StoppedByDeadline { get; private set; }

    public ErrorTally Errors { get; } = new();

    public async System.Threading.Tasks.Task RunAsync(IClaimCalls client, string workflowId, TimeSpan lease, ByteString result, long stopAt, RateTimeline timeline, CancellationToken cancellationToken)
    {
        // One request object per worker, reused: the client serializes it before the call returns.
        var claim = new ClaimTaskRequest
        {
            WorkflowId = workflowId,
            WorkerId = "bench-worker-" + Index.ToString(System.Globalization.CultureInfo.InvariantCulture),
            LeaseDuration = Duration.FromTimeSpan(lease),
        };
        var completion = new CompleteTaskRequest { WorkflowId = workflowId, Result = result, ResultContentType = "application/octet-stream" };
        if (claimNext)
        {
            completion.ClaimNext = new ClaimNext { LeaseDuration = Duration.FromTimeSpan(lease) };
        }

        // The claim a completion made for this worker (claim_next), taken instead of calling ClaimTask.
        ClaimTaskResponse? carried = null;
        var consecutiveErrors = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            var t0 = Stopwatch.GetTimestamp();
            if (t0 >= stopAt)
            {
                StoppedByDeadline = true;
                return;
            }

            ClaimTaskResponse claimed;
            if (carried is not null)
            {
                claimed = carried;
                carried = null;
            }
            else
            {
                try
                {
                    claimed = await client.ClaimTaskAsync(claim, cancellationToken).ConfigureAwait(false);
                }
                catch (BoardRpcException ex) when (!cancellationToken.IsCancellationRequested)
                {
                    Errors.Add("ClaimTask", ex);
                    if (++consecutiveErrors >= MaxConsecutiveErrors)
                    {
                        return;
                    }

                    continue;
                }

                if (claimed.Task is not null)
                {
                    ClaimLatency.Record(Stopwatch.GetTimestamp() - t0);
                }
            }

            var t1 = Stopwatch.GetTimestamp();
            if (claimed.Task is null)
            {
                // Nothing ready: every remaining task is claimed by another worker (or done).
                EmptyClaims++;
                return;
            }

            Claims++;
            if (!complete)
            {
                timeline.Add(t1);
                consecutiveErrors = 0;
                continue;
            }

            completion.TaskId = claimed.Task.Id;
            completion.FencingToken = claimed.FencingToken;
            try
            {
                var done = await client.CompleteTaskAsync(completion, cancellationToken).ConfigureAwait(false);
                var t2 = Stopwatch.GetTimestamp();
                CompleteLatency.Record(t2 - t1);
                PairLatency.Record(t2 - t0);
                Completions++;
                if (done.AlreadyCompleted)
                {
                    AlreadyCompleted++;
                }

                if (done.NextTask is { } next)
                {
                    carried = new ClaimTaskResponse { Task = next, FencingToken = done.NextFencingToken };
                }

                timeline.Add(t2);
                consecutiveErrors = 0;
            }
            catch (BoardRpcException ex) when (!cancellationToken.IsCancellationRequested)
            {
                Errors.Add("CompleteTask", ex);
                if (++consecutiveErrors >= MaxConsecutiveErrors)
                {
                    return;
                }
            }
        }
    }
}

/// <summary>Failed calls by operation, status and reason, with one example message each.</summary>
public sealed class ErrorTally
{
    private readonly Dictionary<string, (long Count, string Example)> _byKind = new(StringComparer.Ordinal);

    public long Total { get; private set; }

    public IEnumerable<(string Kind, long Count, string Example)> Kinds =>
        _byKind.OrderByDescending(x => x.Value.Count).Select(x => (x.Key, x.Value.Count, x.Value.Example));

    public void Add(string operation, BoardRpcException error) =>
        Add($"{operation} {error.StatusCode} {error.ReasonName}".TrimEnd(), 1, error.Status.Detail);

    public void Add(ErrorTally other)
    {
        foreach (var (kind, (count, example)) in other._byKind)
        {
            Add(kind, count, example);
        }
    }

    private void Add(string kind, long count, string example)
    {
        _byKind[kind] = _byKind.TryGetValue(kind, out var current) ? (current.Count + count, current.Example) : (count, example);
        Total += count;
    }
}
