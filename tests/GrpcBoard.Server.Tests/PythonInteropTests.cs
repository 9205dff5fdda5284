using System.Diagnostics;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Server.Tests;

/// <summary>
/// A fact that needs Debian's python3-grpcio. It is skipped on a machine without it, except in CI (CI=true),
/// where a missing peer is a failure: the interop tests must run there.
/// </summary>
public sealed class PythonFactAttribute : FactAttribute
{
    public PythonFactAttribute()
    {
        if (!PythonPeer.Available && Environment.GetEnvironmentVariable("CI") != "true")
        {
            Skip = "Needs /usr/bin/python3 with grpc (apt install python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc).";
        }
    }
}

/// <summary>Stubs generated once from the repository's protos with Debian's protoc 3.21 and grpc_python_plugin.</summary>
public sealed class PythonPeer : IDisposable
{
    public const string Python = "/usr/bin/python3";

    private static readonly Lazy<bool> IsAvailable = new(() =>
        File.Exists(Python) && File.Exists("/usr/bin/grpc_python_plugin") && Run(Python, "-c \"import grpc, google.protobuf\"", ".").ExitCode == 0);

    private readonly TempDirectory _gen = new();

    public PythonPeer()
    {
        if (!Available)
        {
            return;
        }

        var root = RepoPaths.Root;
        var protos = string.Join(' ', Directory.GetFiles(Path.Combine(root, "protos", "grpcboard", "v1"), "*.proto").Select(p => Path.GetRelativePath(Path.Combine(root, "protos"), p)));
        Generate($"-I protos --python_out={_gen.Path} --grpc_python_out={_gen.Path} --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin {protos}", root);
        // The installed grpc package owns the "grpc" module namespace, so the health stubs go in at the top level.
        File.Copy(Path.Combine(root, "src", "GrpcBoard.Server", "Protos", "grpc", "health", "v1", "health.proto"), Path.Combine(_gen.Path, "health.proto"));
        Generate($"-I {_gen.Path} --python_out={_gen.Path} --grpc_python_out={_gen.Path} --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin {Path.Combine(_gen.Path, "health.proto")}", root);
        Generate($"-I src/GrpcBoard.Api/Protos --python_out={_gen.Path} google/rpc/status.proto google/rpc/error_details.proto", root);
        Script = Path.Combine(AppContext.BaseDirectory, "interop", "python", "interop_client.py");
    }

    public static bool Available => IsAvailable.Value;

    public string GeneratedPath => _gen.Path;

    public string Script { get; } = "";

    public (int ExitCode, string Output) RunCase(string target, string testCase) =>
        Run(Python, $"{Script} --target {target} --gen {_gen.Path} --case {testCase}", AppContext.BaseDirectory);

    public void Dispose() => _gen.Dispose();

    private static void Generate(string arguments, string workingDirectory)
    {
        var (code, output) = Run("/usr/bin/protoc", arguments, workingDirectory);
        if (code != 0)
        {
            throw new InvalidOperationException("protoc failed: " + output);
        }
    }

    private static (int ExitCode, string Output) Run(string file, string arguments, string workingDirectory)
    {
        var info = new ProcessStartInfo(file, arguments) { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            return (-1, "timed out\n" + stdout.Result + stderr.Result);
        }

        return (process.ExitCode, stdout.Result + stderr.Result);
    }

}

/// <summary>Debian's grpcio (the C-core gRPC implementation) as a real peer of our own protocol code.</summary>
public sealed class PythonInteropTests(PythonPeer peer) : IClassFixture<PythonPeer>, IAsyncLifetime
{
    private ServerHarness _harness = null!;

    public async Task InitializeAsync() => _harness = await ServerHarness.StartAsync();

    public async Task DisposeAsync() => await _harness.DisposeAsync();

    [PythonFact]
    public void UnaryCalls() => Pass("unary");

    [PythonFact]
    public void AWatchStream_DeliversContiguousRevisions() => Pass("watch");

    [PythonFact]
    public void ADeadline_EndsAStreamWithDeadlineExceeded() => Pass("deadline");

    [PythonFact]
    public void ErrorStatuses_CarryErrorInfoInStatusDetails() => Pass("error");

    [PythonFact]
    public void GzipCompressedMessages() => Pass("gzip");

    [PythonFact]
    public void HealthChecking() => Pass("health");

    private void Pass(string testCase)
    {
        var target = $"127.0.0.1:{_harness.Server.Address.Port}";
        var (code, output) = peer.RunCase(target, testCase);
        Assert.True(code == 0, $"python interop case '{testCase}' failed (exit {code}):\n{output}");
        Assert.Contains($"PASS {testCase}", output, StringComparison.Ordinal);
    }
}
