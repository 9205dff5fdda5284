using System.Net;
using GrpcBoard.Core;
using GrpcBoard.Testing;
using StackExchange.Redis;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// What the direct connection does with the replies that make it useless for what comes next, or for one slot: the
/// commands already sent behind such a reply still get their own replies. A command that was sent and then failed
/// unanswered counts as lost (its commit may have run), and its replica is loaded again from Redis.
///
/// Each command here is a log read (a nonexistent workflow's, answered with its empty head) followed by a WAIT for one
/// replica that no node has: Redis answers the WAIT only after its 300 ms, and the command behind it only after that,
/// so the reply behind is never already read when the one before it is handled.
/// </summary>
[Collection(RedisClusterCollection.Name)]
public sealed class CommitConnectionTests(RedisClusterFixture cluster)
{
    private static readonly ReplicaWait WaitWithNoReplica = new(1, 300);

    private static readonly RedisKeys Keys = new("cc");

    /// <summary>What the reply callbacks threw: they run on the connection's reader thread, where an assertion would be lost.</summary>
    private readonly System.Collections.Concurrent.ConcurrentQueue<Exception> _callbackErrors = new();

    private static Task<(object? Value, long? Replicas)> ReadAsync(CommitConnection link, string wf) =>
        link.ReadAsync(Scripts.ReadLog, Keys.ScriptKeys(wf), [1, 10, 0]);

    private static async Task<string> RefusedAsync(Task<(object? Value, long? Replicas)> read)
    {
        var error = await Assert.ThrowsAsync<RedisErrorReplyException>(() => read.Within());
        Assert.True(RedisStore.RefusedBeforeRunning(error), error.Message);
        return error.Message;
    }

    private static async Task AnsweredAsync(Task<(object? Value, long? Replicas)> read)
    {
        var (value, replicas) = await read.Within();
        Assert.IsType<object?[]>(value);
        Assert.Equal(0, replicas);
    }

    /// <summary>
    /// After SCRIPT FLUSH the next command is answered NOSCRIPT: the connection takes no more, but the one sent behind
    /// it gets its reply (NOSCRIPT too: it did not run) instead of failing unanswered; then the connection closes.
    /// </summary>
    [RedisFact]
    public async Task AfterNoScript_TheCommandsAlreadySentAreAnswered_AndNothingMoreIsSent()
    {
        await using var redis = await RedisProcess.StartAsync();
        var config = ConfigurationOptions.Parse(redis.Endpoint);
        using var link = await CommitConnection.OpenToAsync(config.EndPoints[0], config, null, TimeSpan.FromSeconds(5), WaitWithNoReplica, _callbackErrors.Enqueue);
        await AnsweredAsync(ReadAsync(link, "before"));

        Assert.Equal("OK", (await redis.CliAsync("SCRIPT", "FLUSH")).Trim());
        var first = ReadAsync(link, "first");
        var behind = ReadAsync(link, "behind");

        Assert.StartsWith("NOSCRIPT", await RefusedAsync(first), StringComparison.Ordinal);
        Assert.True(link.IsBroken);
        Assert.StartsWith("NOSCRIPT", await RefusedAsync(behind), StringComparison.Ordinal);
        var refused = await Assert.ThrowsAsync<BoardException>(() => ReadAsync(link, "after"));
        Assert.Equal(BoardError.StoreUnavailable, refused.Error);
        Assert.Empty(_callbackErrors);
    }

    /// <summary>
    /// A retired connection (its node was demoted to a replica) answers what was already sent on it, takes nothing more,
    /// and closes: at once when nothing is pending, else after the last reply.
    /// </summary>
    [RedisFact]
    public async Task Retired_TheCommandsAlreadySentAreAnswered_ThenTheConnectionCloses()
    {
        await using var redis = await RedisProcess.StartAsync();
        var config = ConfigurationOptions.Parse(redis.Endpoint);
        async Task<int> ClientsAsync() => (await redis.CliAsync("CLIENT", "LIST")).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;
        var alone = await ClientsAsync();

        using var busy = await CommitConnection.OpenToAsync(config.EndPoints[0], config, null, TimeSpan.FromSeconds(5), WaitWithNoReplica, _callbackErrors.Enqueue);
        using var idle = await CommitConnection.OpenToAsync(config.EndPoints[0], config, null, TimeSpan.FromSeconds(5), WaitWithNoReplica, _callbackErrors.Enqueue);
        Assert.Equal(alone + 2, await ClientsAsync());

        var pending = ReadAsync(busy, "pending"); // answered only after its WAIT's 300 ms
        busy.Retire();
        idle.Retire();
        Assert.True(busy.IsBroken);
        var refused = await Assert.ThrowsAsync<BoardException>(() => ReadAsync(busy, "after"));
        Assert.Equal(BoardError.StoreUnavailable, refused.Error);
        await AnsweredAsync(pending);

        await TestTimeouts.Eventually(async () => await ClientsAsync() == alone, "both connections to be closed", TimeSpan.FromSeconds(10));
        Assert.Empty(_callbackErrors);
    }

    /// <summary>
    /// A node answers MOVED for a slot it does not own. Followed (the cluster's links send that slot elsewhere), the
    /// connection stays for the node's own slots: the command behind is answered, and so is one sent afterwards. Not
    /// followed, it takes no more commands, and the one behind is answered all the same.
    /// </summary>
    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AMovedReply_LeavesTheCommandsBehindItAnswered(bool followed)
    {
        var config = ConfigurationOptions.Parse(cluster.Configuration);
        using var redis = await ConnectionMultiplexer.ConnectAsync(config);
        EndPoint OwnerOf(string wf) =>
            redis.GetServer(config.EndPoints[0]).ClusterConfiguration!.GetBySlot(redis.HashSlot(Keys.ScriptKeys(wf)[0]))!.EndPoint;
        const string local = "local";
        var node = OwnerOf(local);
        var remote = Enumerable.Range(0, 100).Select(i => "remote" + i).First(wf => !OwnerOf(wf).Equals(node));

        var told = new List<string>();
        using var link = await CommitConnection.OpenToAsync(node, config, null, TimeSpan.FromSeconds(5), WaitWithNoReplica, _callbackErrors.Enqueue, reply =>
        {
            lock (told)
            {
                told.Add(reply);
            }

            return followed;
        });
        var moved = ReadAsync(link, remote);
        var behind = ReadAsync(link, local);

        Assert.StartsWith("MOVED", await RefusedAsync(moved), StringComparison.Ordinal);
        await AnsweredAsync(behind);
        Assert.Single(told);
        Assert.Equal(!followed, link.IsBroken);
        if (followed)
        {
            await AnsweredAsync(ReadAsync(link, local));
        }
        else
        {
            var refused = await Assert.ThrowsAsync<BoardException>(() => ReadAsync(link, local));
            Assert.Equal(BoardError.StoreUnavailable, refused.Error);
        }

        Assert.Empty(_callbackErrors);
    }
}
