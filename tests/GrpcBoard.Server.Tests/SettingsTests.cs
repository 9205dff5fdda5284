using System.Diagnostics;
using GrpcBoard.Server.Hosting;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Server.Tests;

/// <summary>
/// Process-wide environment variables set by a test: no other test runs meanwhile, since the servers
/// other tests start as child processes would inherit them.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessEnvironmentCollection
{
    public const string Name = "process environment";
}

/// <summary>Settings come from the command line, GRPCBOARD_* variables and appsettings.json, in that order of precedence.</summary>
[Collection(ProcessEnvironmentCollection.Name)]
public sealed class SettingsTests
{
    [Fact]
    public void CommandLine_WinsOverEnvironment_WhichWinsOverAppSettings()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(Path.Combine(dir.Path, "appsettings.json"), """
            { "GrpcBoard": { "Port": 7000, "DataDirectory": "/from/json", "MaxEventsPerWorkflow": 5000, "Store": "memory" } }
            """);
        Environment.SetEnvironmentVariable("GRPCBOARD_DATA", "/from/env");
        Environment.SetEnvironmentVariable("GRPCBOARD_PORT", "7100");
        try
        {
            var settings = ServerSettings.Load(["--port", "7200"], dir.Path);
            Assert.Equal(7200, settings.Port);
            Assert.Equal("/from/env", settings.DataDirectory);
            Assert.Equal(5000, settings.MaxEventsPerWorkflow);
            Assert.Equal("memory", settings.Store);
            Assert.Equal("127.0.0.1", settings.Host);
        }
        finally
        {
            Environment.SetEnvironmentVariable("GRPCBOARD_DATA", null);
            Environment.SetEnvironmentVariable("GRPCBOARD_PORT", null);
        }
    }

    [Theory]
    [InlineData("--prot", "Unknown option '--prot'")]
    [InlineData("--port=70000", "is not a TCP port")]
    [InlineData("--store=sqlite", "is not one of embedded, memory, redis")]
    [InlineData("--redis-batches=0", "--redis-batches must be auto or a positive number, not '0'")]
    [InlineData("--redis-batches=many", "--redis-batches must be auto or a positive number, not 'many'")]
    [InlineData("--redis-turn-lease-ms=0", "--redis-turn-ms must not be negative, and --redis-turn-lease-ms must be at least 1")]
    [InlineData("--redis-replicas=-1", "--redis-replicas must not be negative, and --redis-replica-timeout-ms must be at least 1")]
    [InlineData("--redis-replica-timeout-ms=0", "--redis-replicas must not be negative, and --redis-replica-timeout-ms must be at least 1")]
    [InlineData("--redis-sentinel-confirm-ms=1000", "--redis-sentinel-confirm-ms must be longer than the 1,000 ms between questions")]
    public void BadOptions_AreRefusedWithAClearMessage(string arg, string message)
    {
        var ex = Assert.Throws<ArgumentException>(() => ServerSettings.Load([arg], Path.GetTempPath()));
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Help_ListsEveryOption_WithItsDefaultAndVariable()
    {
        var info = new ProcessStartInfo("dotnet", $"{Path.Combine(AppContext.BaseDirectory, "GrpcBoard.Server.dll")} --help") { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(info)!;
        var output = await process.StandardOutput.ReadToEndAsync().Within();
        await process.WaitForExitAsync().Within();
        Assert.Equal(0, process.ExitCode);
        foreach (var option in ServerSettings.Options)
        {
            Assert.Contains(option.Switch, output, StringComparison.Ordinal);
            Assert.Contains(option.EnvironmentVariable, output, StringComparison.Ordinal);
        }

        Assert.Contains("default: 50051", output, StringComparison.Ordinal);
        Assert.Contains("default: ./data", output, StringComparison.Ordinal);
    }
}
