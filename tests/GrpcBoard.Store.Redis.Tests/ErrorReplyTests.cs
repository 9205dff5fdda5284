using GrpcBoard.Core;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// How the store reads Redis's error replies to a commit: whether the script provably did not run (the batch is then
/// undone and the replica kept), and whether its callers hear UNAVAILABLE (worth a retry) or the error itself.
/// </summary>
public sealed class ErrorReplyTests
{
    [Theory]
    [InlineData("MOVED 3999 127.0.0.1:6381", false, true, true)]
    [InlineData("ASK 3999 127.0.0.1:6381", false, true, true)]
    [InlineData("TRYAGAIN Multiple keys request during rehashing of slot", false, true, true)]
    [InlineData("CLUSTERDOWN The cluster is down", false, true, true)]
    [InlineData("NOSCRIPT No matching script. Please use EVAL.", false, true, true)]
    [InlineData("LOADING Redis is loading the dataset in memory", false, true, true)]
    // Checked at every write of a script against a state that changes only between commands: heard at the first write.
    [InlineData("MISCONF Errors writing to the AOF file: No space left on device", false, true, true)]
    [InlineData("NOREPLICAS Not enough good replicas to write. script: 3c8c2bd, on @user_script:45.", false, true, true)]
    // WAIT's own errors come after a script that ran: never "did not run", whatever they say.
    [InlineData("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", true, false, true)]
    // A WAIT cut short by a planned cluster failover (found in .ci/run: the claim failed with this error, not UNAVAILABLE).
    [InlineData("UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)", true, false, true)]
    // A WAIT sent after the node became a replica (Redis's FAILOVER; found by its test: the raw error reached the caller).
    [InlineData("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.", true, false, true)]
    // Raised inside a script, possibly after some of its writes: neither.
    [InlineData("ERR Script attempted to access a non local key in a cluster node script: a4527414, on @user_script:73.", false, false, false)]
    public void AnErrorReply_IsReadAsRedisMeansIt(string reply, bool toWait, bool refusedBeforeRunning, bool unavailable)
    {
        var error = new RedisErrorReplyException(reply, toWait);
        Assert.Equal(refusedBeforeRunning, RedisStore.RefusedBeforeRunning(error));
        Assert.Equal(unavailable, RedisStore.CommitFailure(error) is BoardException { Error: BoardError.StoreUnavailable });
    }

    /// <summary>
    /// Redis refuses a script for memory only at its first write, and lets one that has written go on past the limit
    /// (scriptVerifyOOM in its script.c): an OOM reply proves the script wrote nothing. Its callers hear RESOURCE_EXHAUSTED.
    /// </summary>
    [Fact]
    public void OutOfMemory_ProvesTheScriptWroteNothing_AndIsALimitReached()
    {
        var error = new RedisErrorReplyException("OOM command not allowed when used memory > 'maxmemory'. script: 3c8c2bd, on @user_script:40.");
        Assert.True(RedisStore.RefusedBeforeRunning(error));
        var failure = Assert.IsType<BoardException>(RedisStore.CommitFailure(error));
        Assert.Equal(BoardError.LimitExceeded, failure.Error);
        Assert.Equal("redis_maxmemory", failure.Metadata["limit"]);
    }

    /// <summary>
    /// A commit that found no direct connection to go out on was never written: it did not run. A connection that
    /// failed with commands on it is another matter: those were written, and may have run.
    /// </summary>
    [Fact]
    public void ACommitNeverSent_DidNotRun_AndALostOneMayHave()
    {
        var notSent = NotSentException.Unavailable("no connection to the slot's node: Connection refused.");
        Assert.True(RedisStore.RefusedBeforeRunning(notSent));
        Assert.Same(notSent, RedisStore.CommitFailure(notSent));

        var lost = new BoardException(BoardError.StoreUnavailable, "Redis is unavailable: no reply to a commit within the command timeout.");
        Assert.False(RedisStore.RefusedBeforeRunning(lost));
    }
}
