using System.Net;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Watch;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// A Redis Cluster of three masters with a replica each (six redis-servers), which fails over by itself when a master
/// is killed. With <c>--redis-replicas 1</c> every acknowledged write is on the slot's replica before it is answered
/// (WAIT, sent to the slot's node over the direct connection), so the promoted replica holds every acknowledged claim.
/// </summary>
public sealed class ClusterFailoverTests
{
    private const string Prefix = "cf";
    private readonly ManualTimeProvider _time = new();

    /// <summary>The nodes, each with its id, port, its master's id (empty for a master) and whether it serves <paramref name="slot"/>, from CLUSTER NODES.</summary>
    private static async Task<List<(string Id, int Port, string MasterId, bool ServesSlot)>> NodesAsync(RedisProcess any, int slot)
    {
        var nodes = new List<(string, int, string, bool)>();
        foreach (var line in (await any.CliAsync("CLUSTER", "NODES")).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Split(' ');
            var port = int.Parse(parts[1].Split('@')[0].Split(':')[1], System.Globalization.CultureInfo.InvariantCulture);
            var serves = parts.Skip(8).Select(range => range.Split('-')).Any(bounds => bounds.Length == 2
                && int.Parse(bounds[0], System.Globalization.CultureInfo.InvariantCulture) <= slot
                && slot <= int.Parse(bounds[1], System.Globalization.CultureInfo.InvariantCulture));
            nodes.Add((parts[0], port, parts[3] == "-" ? "" : parts[3], serves));
        }

        return nodes;
    }

    /// <summary>
    /// Starts six cluster nodes, creates the cluster (three masters, a replica each) and returns them with the master
    /// that owns <paramref name="wf"/>'s slot and its replica, in sync. The caller kills the processes.
    /// </summary>
    private static async Task<(RedisProcess Master, RedisProcess Replica)> StartClusterAsync(List<RedisProcess> processes, string wf)
    {
        for (var i = 0; i < 6; i++)
        {
            processes.Add(await RedisProcess.StartAsync(false, RedisProcess.ClusterNodeArgs(3000)));
        }

        await RedisProcess.CreateClusterAsync(processes, replicasPerMaster: 1);

        // The master of the workflow's slot, and its replica once in sync.
        var slot = int.Parse((await processes[0].CliAsync("CLUSTER", "KEYSLOT", "{" + wf + "}")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        await TestTimeouts.Eventually(async () => (await NodesAsync(processes[0], slot)).Count(n => n.MasterId != "") == 3, "every master to have its replica");
        var nodes = await NodesAsync(processes[0], slot);
        var masterId = nodes.Single(n => n.ServesSlot).Id;
        var master = processes.Single(p => p.Port == nodes.Single(n => n.Id == masterId).Port);
        var replica = processes.Single(p => p.Port == nodes.Single(n => n.MasterId == masterId).Port);
        await master.UntilReplicasAcknowledgeAsync("{" + wf + "}probe");
        return (master, replica);
    }

    /// <summary>The cluster's processes, every one killed on dispose.</summary>
    /// <summary>Waits until <paramref name="node"/> answers ROLE with <paramref name="role"/> ("master" or "slave").</summary>
    private static Task UntilRoleAsync(RedisProcess node, string role, string what, TimeSpan within) =>
        TestTimeouts.Eventually(async () => (await node.CliAsync("ROLE")).StartsWith(role, StringComparison.Ordinal), what, within);

    private sealed class Nodes : IAsyncDisposable
    {
        public List<RedisProcess> All { get; } = [];

        public async ValueTask DisposeAsync()
        {
            foreach (var process in All)
            {
                await process.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// A move of <paramref name="wf"/>'s slot from <paramref name="source"/>, the master that owns it, to another master, with
    /// the slot as redis-cli takes it and every master with its id.
    /// </summary>
    private static async Task<SlotMove> SlotMoveAsync(List<RedisProcess> processes, RedisProcess source, string wf)
    {
        var slot = (await source.CliAsync("CLUSTER", "KEYSLOT", "{" + wf + "}")).Trim();
        var masters = (await NodesAsync(source, int.Parse(slot, System.Globalization.CultureInfo.InvariantCulture))).Where(n => n.MasterId == "")
            .Select(n => (n.Id, Process: processes.Single(p => p.Port == n.Port))).ToList();
        var (targetId, target) = masters.First(m => m.Process != source);
        return new SlotMove(slot, masters, source, masters.Single(m => m.Process == source).Id, target, targetId);
    }

    private sealed record SlotMove(string Slot, List<(string Id, RedisProcess Process)> Masters, RedisProcess Source, string SourceId, RedisProcess Target, string TargetId)
    {
        /// <summary>As redis-cli begins a move: the slot IMPORTING on the target, then MIGRATING on the source.</summary>
        public async Task BeginAsync()
        {
            Assert.Equal("OK", (await Target.CliAsync("CLUSTER", "SETSLOT", Slot, "IMPORTING", SourceId)).Trim());
            Assert.Equal("OK", (await Source.CliAsync("CLUSTER", "SETSLOT", Slot, "MIGRATING", TargetId)).Trim());
        }

        /// <summary>As redis-cli ends it: the slot the target's on every master, the target first, so that the slot always has an owner that serves it.</summary>
        public async Task FinishAsync()
        {
            foreach (var (_, master) in Masters.OrderBy(m => m.Process == Target ? 0 : m.Process == Source ? 1 : 2))
            {
                Assert.Equal("OK", (await master.CliAsync("CLUSTER", "SETSLOT", Slot, "NODE", TargetId)).Trim());
            }
        }
    }

    /// <summary>
    /// What the cluster holds, read by a store opened afresh: every claim the workers had acknowledged, with its owner and
    /// token (<see cref="ClaimingWorkers.AssertHeldAsync"/>); and <paramref name="store"/> never found a data loss.
    /// </summary>
    private async Task AssertHeldAsync(IEnumerable<RedisProcess> nodes, RedisStore store, ClaimingWorkers workers, string wf, ClaimResult[] claims)
    {
        var (reader, readerBoard) = await OpenAsync(nodes, replicas: 0);
        await using var _ = reader;
        await workers.AssertHeldAsync(readerBoard, wf, claims);
        Assert.Null(store.DataLoss);
    }

    /// <summary>A store on the cluster, waiting for <paramref name="replicas"/> replicas, and a board on it.</summary>
    private async Task<(RedisStore Store, Coordinator Board)> OpenAsync(IEnumerable<RedisProcess> nodes, int replicas = 1, TimeProvider? time = null)
    {
        var hub = new EventHub();
        var store = await RedisStore.ConnectAsync(Options(nodes, replicas), hub);
        return (store, new Coordinator(store, hub, time ?? _time, new BoardLimits()));
    }

    /// <summary>
    /// Replicas get 1 s to acknowledge: with 500 ms, a workflow's creation once found its replica late on a loaded
    /// machine ("reached 0 of 1 replicas within 500 ms"). Half the command timeout, so a WAIT that runs out is still
    /// answered before the direct connection's watchdog gives up on it.
    /// </summary>
    private static RedisStoreOptions Options(IEnumerable<RedisProcess> nodes, int replicas = 1) => new()
    {
        Configuration = string.Join(",", nodes.Select(p => p.Endpoint)),
        KeyPrefix = Prefix,
        ReplicasToWaitFor = replicas,
        ReplicaWaitTimeout = TimeSpan.FromMilliseconds(1000),
        CommandTimeoutMilliseconds = 2000,
    };

    /// <summary>
    /// WAIT goes to the slot's node: with that node's replica paused (SIGSTOP), a claim on the workflow fails with
    /// UNAVAILABLE ("reached 0 of 1 replicas") and so do a log read by a store that loads it and its listing; with another master's
    /// replica paused, claims go on. Sent wherever StackExchange.Redis sends a command without a key, WAIT would count
    /// another node's replicas: with the log read sent that way (changed by hand), the read passed in one run of two.
    /// </summary>
    [RedisFact]
    public async Task WaitCountsTheReplicaOfTheSlotsNode()
    {
        await using var nodes = new Nodes();
        var processes = nodes.All;
        // Slot 14674: owned by the third master, not the first node listed, where a command without a key tends to go.
        const string wf = "routing";
        var (_, replica) = await StartClusterAsync(processes, wf);
        var (store, board) = await OpenAsync(processes);
        await using (store)
        {
            await board.CreateWorkflowAsync(wf, "WAIT on the slot's node", null, default).Within();
            await board.PostTasksAsync(wf, Enumerable.Range(0, 20).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
            await UntilAvailable.CallAsync(() => board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default), "a claim",
                until: _ => store.DirectCommitCount > 0);

            RedisProcess? otherReplica = null;
            foreach (var node in processes.Where(p => p != replica))
            {
                if ((await node.CliAsync("ROLE")).StartsWith("slave", StringComparison.Ordinal))
                {
                    otherReplica = node;
                }
            }

            Assert.NotNull(otherReplica);
            await otherReplica.PauseAsync();
            try
            {
                Assert.NotNull((await board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default).Within()).Task);
            }
            finally
            {
                await otherReplica.ResumeAsync();
            }

            // Opened before the pause (StackExchange.Redis connects to every node), it has not read the workflow yet.
            var (reader, readerBoard) = await OpenAsync(processes);
            await using var _ = reader;
            await replica.PauseAsync();
            try
            {
                var refused = await Assert.ThrowsAsync<BoardException>(() => board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default)).Within();
                Assert.Equal(BoardError.StoreUnavailable, refused.Error);
                Assert.Contains("reached 0 of 1 replicas", refused.Message, StringComparison.Ordinal);

                var read = await Assert.ThrowsAsync<BoardException>(() => readerBoard.GetWorkflowAsync(wf, default)).Within();
                Assert.Equal(BoardError.StoreUnavailable, read.Error);
                Assert.Contains("reached 0 of 1 replicas", read.Message, StringComparison.Ordinal);

                var listing = await Assert.ThrowsAsync<BoardException>(() => readerBoard.ListWorkflowsAsync(null, null, 10, default)).Within();
                Assert.Contains("reached 0 of 1 replicas", listing.Message, StringComparison.Ordinal);
            }
            finally
            {
                await replica.ResumeAsync();
            }

            var listed = await UntilAvailable.CallAsync(() => readerBoard.ListWorkflowsAsync(null, null, 10, default), "the listing once the replica resumed");
            Assert.Equal(wf, Assert.Single(listed.Items).Workflow.Id);
        }
    }

    /// <summary>
    /// Resharding under load: eight workers claim while the workflow's slot moves to another master one key at a time,
    /// and after each key until eight more of their calls were refused, so that each way of splitting the workflow's keys
    /// between the two nodes is met by calls (as between the MIGRATE batches of <c>redis-cli --cluster reshard</c>). No
    /// script may run on part of a workflow: one that
    /// reached a key already moved would stop half-written, and one sent on by ASK would write keys not moved yet onto
    /// the target, where MIGRATE then refuses them (BUSYKEY). So every MIGRATE succeeds, no call fails other than with
    /// UNAVAILABLE, claims go on once the slot is the target's, the target holds every acknowledged claim, and a watcher on
    /// another store, resuming after UNAVAILABLE, sees every revision once and in order, each acknowledged claim among them. Without
    /// the key every script declares and nobody writes (<see cref="RedisKeys.ScriptKeys"/>), a worker failed within
    /// seconds: "Script attempted to access a non local key", after the commit had written its records and events.
    /// With replicas waited for, commits go over the direct connection only; without, through StackExchange.Redis too.
    /// </summary>
    [RedisTheory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task UnderLoad_TheWorkflowsSlotMovesKeyByKey_NoScriptRunsOnPartOfIt(int replicas)
    {
        await using var nodes = new Nodes();
        var processes = nodes.All;
        const string wf = "reshard";
        var (source, _) = await StartClusterAsync(processes, wf);
        var move = await SlotMoveAsync(processes, source, wf);
        var (slot, target) = (move.Slot, move.Target);
        var (store, board) = await OpenAsync(processes, replicas);
        await using (store)
        {
            await board.CreateWorkflowAsync(wf, "resharding", null, default).Within();
            // A watcher on another store, resuming after the revision it saw last whenever its stream fails, as a client does.
            // Its board runs on the real clock, with progress every 200 ms: a live event is read from the log when another
            // instance's notice comes, and that read can fail while this store's connection finds the slot's new master
            // (it is then not tried again); the watch semantics are that an idle watcher asks the store before each
            // progress, and that is what delivers it (docs/watch.md). On the test's manual clock no progress came, and
            // the watcher stopped short of the last claims in 6 runs of 6.
            var (watcherStore, watcherBoard) = await OpenAsync(processes, replicas, TimeProvider.System);
            await using var __ = watcherStore;
            using var stopWatching = new CancellationTokenSource();
            var seen = new List<EventRecord>();
            var watching = Task.Run(async () =>
            {
                while (!stopWatching.IsCancellationRequested)
                {
                    try
                    {
                        await foreach (var item in watcherBoard.WatchAsync(wf, seen.Count == 0 ? 1 : seen[^1].Revision + 1, WatchFilter.All, TimeSpan.FromMilliseconds(200), stopWatching.Token))
                        {
                            if (item is WatchItem.Change change)
                            {
                                lock (seen)
                                {
                                    seen.Add(change.Event);
                                }
                            }
                        }
                    }
                    catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
                    {
                        await Task.Delay(10);
                    }
                    catch (OperationCanceledException) when (stopWatching.IsCancellationRequested)
                    {
                    }
                }
            });
            var workers = await ClaimingWorkers.StartAsync(board, wf, "the slot moves");

            await move.BeginAsync();
            var moved = new List<string>();
            while ((await source.CliAsync("CLUSTER", "GETKEYSINSLOT", slot, "1")).Trim() is { Length: > 0 } key)
            {
                var migrate = (await source.CliAsync("MIGRATE", "127.0.0.1", target.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), key, "0", "5000")).Trim();
                Assert.True(migrate == "OK", $"MIGRATE {key} after {string.Join(", ", moved)}: {migrate}");
                moved.Add(key);
                // The workflow stays split this way until the workers have met it: eight more of their calls refused (a
                // call refused just before the MIGRATE may be among them; eight make that one of several).
                await workers.UntilRefusedAsync(workers.Unavailable + 8, $"calls refused with {string.Join(", ", moved)} moved");
            }

            await move.FinishAsync();

            Assert.True(moved.Count >= 4, "the workflow's keys: " + string.Join(", ", moved));
            var beforeOwned = workers.Acknowledged;
            await workers.UntilAsync(beforeOwned + 50, "50 claims once the target owns the slot", TimeSpan.FromSeconds(60));
            var claims = await workers.StopAsync();
            Assert.True(workers.Unavailable > 0, "calls should have been refused while the slot moved");

            // The watcher saw every revision once, in order, across the move, up to the last acknowledged claim.
            var last = claims.Max(c => c.Revision);
            await TestTimeouts.Eventually(() =>
            {
                lock (seen)
                {
                    return Task.FromResult(seen.Count > 0 && seen[^1].Revision >= last);
                }
            }, "the watcher to see the last claim");
            await stopWatching.CancelAsync();
            await watching.Within();
            Assert.Equal(Enumerable.Range(1, seen.Count).Select(r => (long)r), seen.Select(e => e.Revision));
            var claimed = seen.Where(e => e.Kind == EventKind.TaskClaimed).ToDictionary(e => e.Revision, e => (e.Task!.Id, e.Task.FencingToken));
            Assert.All(claims, c => Assert.Equal((c.Task!.Id, c.Task.FencingToken), claimed[c.Revision]));

            await AssertHeldAsync(processes, store, workers, wf, claims);
            Assert.Equal("", (await source.CliAsync("CLUSTER", "GETKEYSINSLOT", slot, "10")).Trim());
        }
    }

    /// <summary>
    /// The same with the tool operators use, <c>redis-cli --cluster reshard</c>: it moves the source master's first 60 slots
    /// to another master, the workflow's slot (the 28th) among them, with 4,000 other keys in that slot so that its move
    /// lasts long enough for the workers to meet it. The tool must succeed (a script that wrote keys not moved yet onto
    /// the target would make its MIGRATE fail with BUSYKEY), no call may fail other than with UNAVAILABLE, claims go on
    /// afterwards, and the target holds every acknowledged claim. One key per MIGRATE (<c>--cluster-pipeline 1</c>; the
    /// default is 10) leaves the workflow's keys split between the nodes for most of the move: without the key every script
    /// declares and nobody writes, both cases failed in 2 runs of 2 ("Script attempted to access a non local key"); with
    /// redis-cli's default of 10 keys per MIGRATE they passed without it in 2 runs of 2, as the workflow's few keys then
    /// mostly move together.
    /// </summary>
    [RedisTheory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task UnderLoad_RedisCliReshardMovesTheWorkflowsSlot_EveryAcknowledgedClaimHeld(int replicas)
    {
        await using var nodes = new Nodes();
        var processes = nodes.All;
        // Slot 5488: redis-cli --cluster create gives the second master slots 5461-10922, so this is the 28th slot the tool takes.
        const string wf = "reshard-tool-653";
        var (source, _) = await StartClusterAsync(processes, wf);
        var move = await SlotMoveAsync(processes, source, wf);
        Assert.Equal("5488", move.Slot);
        var (sourceId, targetId) = (move.SourceId, move.TargetId);
        await source.CliStdinAsync(string.Concat(Enumerable.Range(0, 4000).Select(i => $"SET {{{wf}}}filler:{i} x\n")));
        Assert.True(int.Parse(await source.CliAsync("CLUSTER", "COUNTKEYSINSLOT", move.Slot), System.Globalization.CultureInfo.InvariantCulture) >= 4000);

        var (store, board) = await OpenAsync(processes, replicas);
        await using (store)
        {
            await board.CreateWorkflowAsync(wf, "resharding with redis-cli", null, default).Within();
            var workers = await ClaimingWorkers.StartAsync(board, wf, "the reshard");

            var output = await RedisProcess.ClusterToolAsync(source,
                ["reshard", source.Endpoint, "--cluster-from", sourceId, "--cluster-to", targetId, "--cluster-slots", "60", "--cluster-pipeline", "1"], TimeSpan.FromSeconds(120));
            Assert.Equal(targetId, (await NodesAsync(source, 5488)).Single(n => n.ServesSlot).Id);
            Assert.Equal("0", (await source.CliAsync("CLUSTER", "COUNTKEYSINSLOT", move.Slot)).Trim());

            var beforeOwned = workers.Acknowledged;
            await workers.UntilAsync(beforeOwned + 50, "50 claims once the target owns the slot", TimeSpan.FromSeconds(60));
            var claims = await workers.StopAsync();
            Assert.True(workers.Unavailable > 0, "calls should have been refused while the slot moved; redis-cli said:\n" + output);

            await AssertHeldAsync(processes, store, workers, wf, claims);
        }
    }

    /// <summary>
    /// A batch Redis refused before running it is undone, and the replica kept. With the workflow's slot marked as
    /// moving (IMPORTING on another master, MIGRATING on its own; no key moved), every claim fails with UNAVAILABLE: the
    /// commit is refused (ASK), and so is each catch-up's read of the log. Once the slot is stable again, claims go on
    /// where they were, with the next tasks and fencing tokens, and the store has not loaded the workflow again. Before,
    /// such a batch counted as a lost reply, and the replica was dropped and loaded again, every record of it.
    /// </summary>
    [RedisTheory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task ABatchRefusedBeforeItRan_IsUndone_TheReplicaIsKept(int replicas)
    {
        await using var nodes = new Nodes();
        var processes = nodes.All;
        const string wf = "refused";
        var (source, _) = await StartClusterAsync(processes, wf);
        var move = await SlotMoveAsync(processes, source, wf);
        var (store, board) = await OpenAsync(processes, replicas);
        await using (store)
        {
            await board.CreateWorkflowAsync(wf, "refused before running", null, default).Within();
            await ClaimingWorkers.PostAsync(board, wf, 100);
            var claims = new List<ClaimResult>();
            async Task ClaimAsync() => claims.Add(await UntilAvailable.CallAsync(() => board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default), "a claim"));
            for (var i = 0; i < 5; i++)
            {
                await ClaimAsync();
            }

            var loads = store.Loads;
            await move.BeginAsync();
            for (var i = 0; i < 5; i++)
            {
                var refused = await Assert.ThrowsAsync<BoardException>(() => board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default)).Within();
                Assert.Equal(BoardError.StoreUnavailable, refused.Error);
            }

            Assert.Equal("OK", (await source.CliAsync("CLUSTER", "SETSLOT", move.Slot, "STABLE")).Trim());
            Assert.Equal("OK", (await move.Target.CliAsync("CLUSTER", "SETSLOT", move.Slot, "STABLE")).Trim());
            for (var i = 0; i < 5; i++)
            {
                await ClaimAsync();
            }

            Assert.Equal(loads, store.Loads);
            // Ten tasks, with tokens in the order of the claims; and, read afresh, the refused claims took nothing.
            Assert.Equal(10, claims.Select(c => c.Task!.Id).Distinct().Count());
            Assert.Equal(claims.Select(c => c.Task!.FencingToken).Order(), claims.Select(c => c.Task!.FencingToken));
            Assert.Equal(claims.Count, claims.Select(c => c.Task!.FencingToken).Distinct().Count());
            var (reader, readerBoard) = await OpenAsync(processes, replicas: 0);
            await using var _ = reader;
            Assert.Equal(10, (await readerBoard.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed]);
            Assert.Null(store.DataLoss);
        }
    }

    /// <summary>
    /// After the workflow's slot moved, a store that reaches it only through its direct connections (replicas waited for)
    /// goes where the MOVED reply says: the call that met MOVED fails with UNAVAILABLE, and the next one commits on the
    /// slot's new master. Before, the store sent on to the old master until StackExchange.Redis read the cluster's slots
    /// again (at most once a second), and every call failed meanwhile: without the change, 1,000 calls in a row were
    /// refused, in 2 runs of 2. With the slots read again on MOVED but the reply's master not followed, 2 runs of 2
    /// passed, the new view arriving before the next call: following the reply makes that certain rather than a race.
    /// </summary>
    [RedisFact]
    public async Task AfterTheSlotMoved_TheNextCallGoesWhereMovedSaid()
    {
        await using var nodes = new Nodes();
        var processes = nodes.All;
        const string wf = "moved";
        var (source, _) = await StartClusterAsync(processes, wf);
        var move = await SlotMoveAsync(processes, source, wf);
        var (store, board) = await OpenAsync(processes, replicas: 1);
        await using (store)
        {
            await board.CreateWorkflowAsync(wf, "moved", null, default).Within();
            await ClaimingWorkers.PostAsync(board, wf, 100);
            for (var i = 0; i < 5; i++)
            {
                await UntilAvailable.CallAsync(() => board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default), "a claim");
            }

            // The slot moves whole: its keys in one MIGRATE, then it is the target's on every master.
            await move.BeginAsync();
            var keys = (await source.CliAsync("CLUSTER", "GETKEYSINSLOT", move.Slot, "100")).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("OK", (await source.CliAsync(["MIGRATE", "127.0.0.1", move.Target.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "", "0", "5000", "KEYS", .. keys])).Trim());
            await move.FinishAsync();

            var refused = 0;
            ClaimResult? claim = null;
            while (claim is null && refused < 1000)
            {
                try
                {
                    claim = await board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default).Within();
                }
                catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
                {
                    refused++;
                }
            }

            Assert.True(refused <= 1, $"{refused} calls refused after the slot moved");
            Assert.NotNull(claim?.Task);
            var (reader, readerBoard) = await OpenAsync(processes, replicas: 0);
            await using var _ = reader;
            Assert.Equal(6, (await readerBoard.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed]);
            Assert.Null(store.DataLoss);
        }
    }

    /// <summary>
    /// A planned failover, as for a rolling upgrade: <c>CLUSTER FAILOVER</c> on the replica of the workflow's master while
    /// eight workers claim. The replica takes over once it has everything the master had, and the old master becomes its
    /// replica (which the new master needs, to WAIT for). No call fails other than with UNAVAILABLE, claims go on, and the
    /// new master holds every acknowledged claim with its owner and token.
    /// </summary>
    [RedisTheory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task UnderLoad_APlannedFailover_EveryAcknowledgedClaimHeld(int replicas)
    {
        await using var nodes = new Nodes();
        var processes = nodes.All;
        const string wf = "planned";
        var (master, replica) = await StartClusterAsync(processes, wf);
        var (store, board) = await OpenAsync(processes, replicas);
        await using (store)
        {
            await board.CreateWorkflowAsync(wf, "planned failover", null, default).Within();
            var workers = await ClaimingWorkers.StartAsync(board, wf, "the failover");
            Assert.Equal("OK", (await replica.CliAsync("CLUSTER", "FAILOVER")).Trim());
            await UntilRoleAsync(replica, "master", "the replica to take over", TimeSpan.FromSeconds(30));
            var beforeSwitch = workers.Acknowledged;
            await workers.UntilAsync(beforeSwitch + 50, "50 claims after the failover", TimeSpan.FromSeconds(60));
            var claims = await workers.StopAsync();
            // The old master turns into a replica once it hears of the new configuration, which can come after the claims.
            await UntilRoleAsync(master, "slave", "the old master to follow the new one", TimeSpan.FromSeconds(30));

            await AssertHeldAsync(processes, store, workers, wf, claims);

            // The direct connection to the old master, which owns no slot now, is closed; the new master's is kept.
            await TestTimeouts.Eventually(
                async () =>
                {
                    await board.GetWorkflowAsync(wf, default); // a commit of reads: the links are looked at
                    var linked = store.ClusterLinkNodes.OfType<IPEndPoint>().Select(e => e.Port).ToList();
                    return !linked.Contains(master.Port) && linked.Contains(replica.Port);
                },
                "the direct connection to the demoted master to be closed",
                TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>
    /// Eight workers claim without pause, waiting for one replica, while the master of the workflow's slot is killed: the
    /// cluster promotes its replica, and the old master comes back as a replica of it (the new master needs one to wait
    /// for). Every acknowledged claim took another task with another fencing token, and the promoted replica holds each
    /// with its owner and token.
    /// </summary>
    [RedisFact]
    public async Task UnderLoad_AMasterKilled_ItsReplicaTakesOver_WithEveryAcknowledgedClaim()
    {
        await using var nodes = new Nodes();
        var processes = nodes.All;
        const string wf = "failover";
        var (master, replica) = await StartClusterAsync(processes, wf);
        var (store, board) = await OpenAsync(processes);
        await using (store)
        {
            await board.CreateWorkflowAsync(wf, "cluster failover", null, default).Within();
            var workers = await ClaimingWorkers.StartAsync(board, wf, "the failover");
            Assert.True(store.DirectCommitCount > 0, "commits should go over the direct connection to the slot's node");
            var beforeKill = workers.Acknowledged;
            await master.KillAsync();
            await UntilRoleAsync(replica, "master", "the cluster to promote the replica", TimeSpan.FromSeconds(60));
            // The old master comes back (its nodes.conf in its directory) as a replica of the promoted one, which needs one to WAIT for.
            await master.StartAgainAsync();
            await TestTimeouts.Eventually(async () => (await master.CliAsync("INFO", "replication")).Contains("master_link_status:up", StringComparison.Ordinal),
                "the old master to follow the promoted replica", TimeSpan.FromSeconds(60));
            await workers.UntilAsync(beforeKill + 50, "50 claims after the failover", TimeSpan.FromSeconds(60));
            var claims = await workers.StopAsync();

            // What the promoted replica holds, read by a store opened afresh.
            await AssertHeldAsync(processes, store, workers, wf, claims);
        }
    }
}
