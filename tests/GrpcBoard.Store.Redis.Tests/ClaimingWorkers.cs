using System.Collections.Concurrent;
using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Workers that claim without pause on one workflow while Redis fails over, as clients do: UNAVAILABLE is counted and
/// retried after a short back-off, any other failure fails the test, and every acknowledged claim is kept for the
/// checks on accepted effects (<see cref="StopAsync"/>, <see cref="AssertHeldAsync"/>).
/// </summary>
public sealed class ClaimingWorkers
{
    private readonly ConcurrentQueue<ClaimResult> _acknowledged = new();
    private readonly CancellationTokenSource _stop = new();
    private Task[] _workers = [];
    private readonly SemaphoreSlim _posting = new(1, 1);
    private int _unavailable;
    private int _morePosted;
    private string? _lastRefusal;

    private ClaimingWorkers()
    {
    }

    public int Acknowledged => _acknowledged.Count;

    /// <summary>Calls that failed with UNAVAILABLE: their claims' outcome is unknown, so each may have committed.</summary>
    public int Unavailable => Volatile.Read(ref _unavailable);

    /// <summary>Posts tasks t0..t(count-1), a thousand (the most a batch holds) at a time.</summary>
    public static async Task PostAsync(Coordinator board, string wf, int count)
    {
        foreach (var chunk in Enumerable.Range(0, count).Chunk(1000))
        {
            await board.PostTasksAsync(wf, chunk.Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
        }
    }

    /// <summary>
    /// What each test under load does first: posts 3,000 tasks (the workers post more if they claim them all), starts
    /// eight workers, and waits for their first 50 claims, made before <paramref name="before"/>.
    /// </summary>
    public static async Task<ClaimingWorkers> StartAsync(Coordinator board, string wf, string before)
    {
        await PostAsync(board, wf, 3000);
        var workers = Start(board, wf, 8);
        await workers.UntilAsync(50, "50 claims before " + before);
        return workers;
    }

    /// <summary>Starts <paramref name="count"/> workers, w0..w(count-1).</summary>
    private static ClaimingWorkers Start(Coordinator board, string wf, int count)
    {
        var workers = new ClaimingWorkers();
        workers._workers = Enumerable.Range(0, count).Select(w => Task.Run(async () =>
        {
            while (!workers._stop.IsCancellationRequested)
            {
                try
                {
                    var claim = await board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = $"w{w}" }, default);
                    if (claim.Task is null)
                    {
                        await workers.PostMoreAsync(board, wf);
                        continue;
                    }

                    workers._acknowledged.Enqueue(claim);
                }
                catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
                {
                    Interlocked.Increment(ref workers._unavailable);
                    Volatile.Write(ref workers._lastRefusal, ex.Message);
                    await Task.Delay(10);
                }
            }
        })).ToArray();
        return workers;
    }

    /// <summary>
    /// The workers claimed every task: in-process they claim thousands a second, so a step of the test that takes longer
    /// than usual (a failover, a slot move, redis-cli starting) let them claim all 3,000 posted, once in CI and once here.
    /// One worker posts a thousand more, with names of their own, while the others wait for it. A post whose outcome is
    /// unknown (UNAVAILABLE) is not repeated: its tasks may be there, and the next one gets other names.
    /// </summary>
    private async Task PostMoreAsync(Coordinator board, string wf)
    {
        await _posting.WaitAsync();
        try
        {
            if ((await board.GetWorkflowAsync(wf, default)).Counts[TaskState.Ready] > 0)
            {
                return;
            }

            var chunk = ++_morePosted;
            await board.PostTasksAsync(wf, Enumerable.Range(0, 1000).Select(i => new TaskSpec { Id = $"more{chunk}-{i}" }).ToArray(), default);
        }
        catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
        {
            // Not a claim: it does not count among the refused ones, whose claims may have committed.
            await Task.Delay(10);
        }
        finally
        {
            _posting.Release();
        }
    }

    /// <summary>Waits until at least <paramref name="total"/> claims have been acknowledged; throws at once what a worker failed with.</summary>
    public Task UntilAsync(int total, string what, TimeSpan? within = null) => Until(() => _acknowledged.Count >= total, what, within);

    /// <summary>Waits until at least <paramref name="total"/> calls have been refused with UNAVAILABLE; throws at once what a worker failed with.</summary>
    public Task UntilRefusedAsync(int total, string what, TimeSpan? within = null) => Until(() => Unavailable >= total, what, within);

    /// <summary>On a timeout, says how many claims were refused and why the last one was: a store that kept refusing says so.</summary>
    private async Task Until(Func<bool> done, string what, TimeSpan? within)
    {
        try
        {
            await TestTimeouts.Eventually(async () =>
            {
                if (_workers.FirstOrDefault(w => w.IsFaulted) is { } failed)
                {
                    await failed;
                }

                return done();
            }, what, within);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"{ex.Message}; {Acknowledged} claims acknowledged, {Unavailable} refused with UNAVAILABLE, the last because: {Volatile.Read(ref _lastRefusal) ?? "(none)"}", ex);
        }
    }

    /// <summary>Stops the workers and returns the acknowledged claims, having checked that no task and no fencing token was given twice.</summary>
    public async Task<ClaimResult[]> StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_workers).Within();
        _stop.Dispose();
        var claims = _acknowledged.ToArray();
        Assert.Equal(claims.Length, claims.Select(c => c.Task!.Id).Distinct().Count());
        Assert.Equal(claims.Length, claims.Select(c => c.Task!.FencingToken).Distinct().Count());
        return claims;
    }

    /// <summary>
    /// What a store opened afresh (<paramref name="reader"/>) holds: every acknowledged claim with its owner and token, and
    /// no more claims than those plus the ones whose outcome was unknown.
    /// </summary>
    public async Task AssertHeldAsync(Coordinator reader, string wf, ClaimResult[] claims)
    {
        foreach (var claim in claims)
        {
            var task = (await reader.GetTaskAsync(wf, claim.Task!.Id, default).Within()).Task;
            Assert.Equal(TaskState.Claimed, task.State);
            Assert.Equal((claim.Task.Owner, claim.Task.FencingToken), (task.Owner, task.FencingToken));
        }

        Assert.InRange((await reader.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed], claims.Length, claims.Length + Unavailable);
    }
}
