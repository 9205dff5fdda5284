using System.Diagnostics;
using System.Text.Json;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Server.Tests;

/// <summary>A fact that needs buf (installed by .ci/setup); skipped without it except in CI.</summary>
public sealed class BufFactAttribute : FactAttribute
{
    public BufFactAttribute()
    {
        if (!File.Exists(BufCurlTests.Buf) && Environment.GetEnvironmentVariable("CI") != "true")
        {
            Skip = "Needs buf: run .ci/setup.";
        }
    }
}

/// <summary>buf curl (connect-go speaking the gRPC protocol) discovers the API through reflection and calls it.</summary>
public sealed class BufCurlTests : IAsyncLifetime
{
    public static readonly string Buf = Path.Combine(RepoPaths.Root, ".ci", "tools", "node_modules", ".bin", "buf");

    private ServerHarness _harness = null!;

    public async Task InitializeAsync() => _harness = await ServerHarness.StartAsync();

    public async Task DisposeAsync() => await _harness.DisposeAsync();

    [BufFact]
    public async Task BufCurl_ListsAndCallsTheService_ThroughReflection()
    {
        var list = await RunAsync("--list-methods", _harness.Address);
        Assert.Contains("grpcboard.v1.BoardService/ClaimTask", list);
        Assert.Contains("grpc.health.v1.Health/Check", list);

        var created = JsonDocument.Parse(await RunAsync("-d", "{\"workflowId\":\"via-buf\",\"goal\":\"g\"}", _harness.Address + "grpcboard.v1.BoardService/CreateWorkflow"));
        Assert.True(created.RootElement.GetProperty("created").GetBoolean());
        Assert.Equal("WORKFLOW_STATUS_ACTIVE", created.RootElement.GetProperty("workflow").GetProperty("status").GetString());

        var error = await RunAsync("-d", "{\"workflowId\":\"missing\"}", _harness.Address + "grpcboard.v1.BoardService/GetWorkflow", expectFailure: true);
        Assert.Contains("not_found", error);
        Assert.Contains("google.rpc.ErrorInfo", error);
    }

    private static async Task<string> RunAsync(string option, string value, string? url = null, bool expectFailure = false)
    {
        var info = new ProcessStartInfo(Buf) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "curl", "--protocol", "grpc", "--http2-prior-knowledge", option, value })
        {
            info.ArgumentList.Add(a);
        }

        if (url is not null)
        {
            info.ArgumentList.Add(url);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().Within(TimeSpan.FromSeconds(60));
        Assert.True(expectFailure ? process.ExitCode != 0 : process.ExitCode == 0, $"buf curl exit {process.ExitCode}: {await stderr}");
        return await stdout + await stderr;
    }

}
