using System.Collections.Concurrent;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Testing;
using GrpcBoard.Wire.Client;
using Google.Protobuf;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>
/// A connection that goes silent without closing (half-open: the peer's host gone, a NAT entry dropped)
/// fails nothing by itself. The C# channel pings its connections while calls are open and drops one that
/// does not answer, and a watch reopens a stream that stays silent past its idle timeout; either way it
/// resumes on a new connection, without gaps or duplicates.
/// </summary>
public sealed class WatchLivenessTests
{
    [Fact]
    public Task AWatchOnAConnectionThatGoesSilent_ResumesOnANewOne_WithoutGapsOrDuplicates() =>
        SilentConnectionAsync(
            new BoardClientOptions
            {
                // SocketsHttpHandler's smallest ping interval; the defaults (15 s, 10 s) work the same, slower.
                // No idle timeout: the pings alone must find the dead connection.
                Channel = new GrpcChannelOptions { KeepAliveInterval = TimeSpan.FromSeconds(1), KeepAliveTimeout = TimeSpan.FromSeconds(1) },
                WatchIdleTimeout = TimeSpan.Zero,
            },
            progressInterval: null,
            resetOnRequest: false);

    [Fact]
    public Task AWatchWithoutPings_ReopensAfterItsIdleTimeout_AndResumesOnANewConnection() =>
        SilentConnectionAsync(
            new BoardClientOptions
            {
                // No pings: only the idle timeout (3 progress intervals = 600 ms) notices the silence. The
                // reopened stream's request makes the dead connection show itself (the proxy resets it, as a
                // peer answers a connection it no longer knows), and the watch resumes on a new one.
                Channel = new GrpcChannelOptions { KeepAliveInterval = Timeout.InfiniteTimeSpan },
            },
            progressInterval: TimeSpan.FromMilliseconds(200),
            resetOnRequest: true);

    private static async Task SilentConnectionAsync(BoardClientOptions options, TimeSpan? progressInterval, bool resetOnRequest)
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var proxy = new StallingProxy(harness.Server.Address.Port);
        using var throughProxy = new BoardClient(proxy.Address, options);
        await harness.Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "quiet" }).Within();
        Task Put(int i) => harness.Client.PutNoteAsync(new PutNoteRequest { WorkflowId = "quiet", Key = "k", Value = ByteString.CopyFromUtf8(i.ToString(System.Globalization.CultureInfo.InvariantCulture)) });

        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        var seen = new ConcurrentQueue<long>();
        var sixth = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watching = Task.Run(async () =>
        {
            var request = new WatchRequest { WorkflowId = "quiet", StartRevision = 1 };
            if (progressInterval is { } interval)
            {
                request.ProgressInterval = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(interval);
            }

            await foreach (var e in throughProxy.WatchAsync(request, cts.Token))
            {
                seen.Enqueue(e.Revision);
                if (seen.Count == 6)
                {
                    sixth.TrySetResult();
                }

                if (seen.Count == 11)
                {
                    return;
                }
            }
        });

        for (var i = 0; i < 5; i++)
        {
            await Put(i).Within();
        }

        await sixth.Task.Within();
        proxy.StallAll(resetOn: resetOnRequest ? "quiet"u8.ToArray() : null);
        for (var i = 5; i < 10; i++)
        {
            await Put(i).Within();
        }

        await watching.Within();
        Assert.Equal(Enumerable.Range(1, 11).Select(r => (long)r), seen);
        Assert.True(proxy.Connections >= 2, "the watch resumed on the silent connection");
    }
}
