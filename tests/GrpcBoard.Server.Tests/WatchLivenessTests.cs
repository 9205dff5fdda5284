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
/// does not answer, so a watch on it resumes on a new connection, without gaps or duplicates.
/// </summary>
public sealed class WatchLivenessTests
{
    [Fact]
    public async Task AWatchOnAConnectionThatGoesSilent_ResumesOnANewOne_WithoutGapsOrDuplicates()
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var proxy = new StallingProxy(harness.Server.Address.Port);
        using var throughProxy = new BoardClient(proxy.Address, new BoardClientOptions
        {
            // SocketsHttpHandler's smallest ping interval; the defaults (15 s, 10 s) work the same, slower.
            Channel = new GrpcChannelOptions { KeepAliveInterval = TimeSpan.FromSeconds(1), KeepAliveTimeout = TimeSpan.FromSeconds(1) },
        });
        await harness.Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "quiet" }).Within();
        Task Put(int i) => harness.Client.PutNoteAsync(new PutNoteRequest { WorkflowId = "quiet", Key = "k", Value = ByteString.CopyFromUtf8(i.ToString(System.Globalization.CultureInfo.InvariantCulture)) });

        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        var seen = new ConcurrentQueue<long>();
        var sixth = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watching = Task.Run(async () =>
        {
            await foreach (var e in throughProxy.WatchAsync(new WatchRequest { WorkflowId = "quiet", StartRevision = 1 }, cts.Token))
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
        proxy.StallAll();
        for (var i = 5; i < 10; i++)
        {
            await Put(i).Within();
        }

        await watching.Within();
        Assert.Equal(Enumerable.Range(1, 11).Select(r => (long)r), seen);
        Assert.True(proxy.Connections >= 2, "the watch resumed on the silent connection");
    }
}
