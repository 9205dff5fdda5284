using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;
using GrpcBoard.Bench.Cli;

namespace GrpcBoard.Bench.Targets;

/// <summary>
/// A server in a child process: "dotnet GrpcBoard.Server.dll --port 0 ...", so the server and the load
/// generator have a garbage collector and a thread pool each. The address is read from the server's
/// "GrpcBoard listening on http://127.0.0.1:PORT/" line. Stopped with SIGTERM (then killed if it hangs).
/// </summary>
public sealed partial class ServerProcess : IServerTarget
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private readonly Process _process;
    private readonly DataDirectory? _data;
    private readonly Queue<string> _lastLines = new();
    private readonly EventHandler _onExit;

    private ServerProcess(Process process, DataDirectory? data, string dll)
    {
        _process = process;
        _data = data;
        Dll = dll;
        // If the tool dies without disposing (an unhandled exception), do not leave the server running.
        _onExit = (_, _) => KillNow();
        AppDomain.CurrentDomain.ProcessExit += _onExit;
    }

    public Uri Address { get; private set; } = null!;

    public int? ProcessId => _process.Id;

    public string Dll { get; }

    public string Description => $"child process pid {_process.Id}: dotnet {Dll}";

    public static async Task<ServerProcess> StartAsync(BenchOptions options, DataDirectory? data, string? redis, CancellationToken cancellationToken)
    {
        var dll = Path.GetFullPath(options.ServerDll ?? DefaultServerDll());
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"No server at {dll}: build it first (dotnet build -c Release), or pass --server-dll.", dll);
        }

        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(dll)!,
        };
        start.ArgumentList.Add(dll);
        foreach (var arg in ServerArguments(options, data, redis))
        {
            start.ArgumentList.Add(arg);
        }

        foreach (var (name, value) in options.ServerEnvironment)
        {
            start.Environment[name] = value;
        }

        var process = Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start.");
        var server = new ServerProcess(process, data, dll);
        try
        {
            server.Address = await server.WaitForAddressAsync(cancellationToken);
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>The server options the tool passes, in the server's own switches.</summary>
    public static IEnumerable<string> ServerArguments(BenchOptions options, DataDirectory? data, string? redis)
    {
        yield return "--port";
        yield return "0";
        yield return "--store";
        yield return options.Store;
        if (redis is not null)
        {
            yield return "--redis";
            yield return redis;
            yield return "--redis-prefix";
            yield return options.RedisPrefix;
        }
        if (data is not null)
        {
            yield return "--data";
            yield return data.Path;
            yield return "--synchronous";
            yield return options.Synchronous;
        }

        yield return "--log-level";
        yield return options.ServerLogLevel;
    }

    public async ValueTask DisposeAsync()
    {
        AppDomain.CurrentDomain.ProcessExit -= _onExit;
        if (!_process.HasExited)
        {
            // SIGTERM: the server stops Kestrel and closes its store cleanly.
            using (var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false }))
            {
                if (kill is not null)
                {
                    await kill.WaitForExitAsync();
                }
            }

            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try
            {
                await _process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine($"server pid {_process.Id} did not stop within 15 s of SIGTERM; killing it.");
                KillNow();
            }
        }

        _process.Dispose();
        _data?.Dispose();
    }

    private static string DefaultServerDll() =>
        typeof(ServerProcess).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "GrpcBoard.ServerDll")?.Value
        ?? throw new InvalidOperationException("This build does not know where the server is: pass --server-dll.");

    private async Task<Uri> WaitForAddressAsync(CancellationToken cancellationToken)
    {
        var found = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        _process.OutputDataReceived += (_, e) => OnLine(e.Data, found);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data, found);
        _process.EnableRaisingEvents = true;
        _process.Exited += (_, _) => found.TrySetException(new InvalidOperationException(
            $"The server exited with code {SafeExitCode()} before listening. Its last lines:\n  " + string.Join("\n  ", Snapshot())));
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(StartTimeout);
        try
        {
            return await found.Task.WaitAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"The server printed no 'GrpcBoard listening on' line within {StartTimeout.TotalSeconds} s. Its last lines:\n  " + string.Join("\n  ", Snapshot()));
        }
    }

    private void OnLine(string? line, TaskCompletionSource<Uri> found)
    {
        if (line is null)
        {
            return;
        }

        lock (_lastLines)
        {
            _lastLines.Enqueue(line);
            if (_lastLines.Count > 20)
            {
                _lastLines.Dequeue();
            }
        }

        if (ListeningLine().Match(line) is { Success: true } match)
        {
            found.TrySetResult(new Uri(match.Groups[1].Value));
        }
        else if (found.Task.IsCompleted)
        {
            // After start-up the server should be quiet at the chosen log level; pass on what it says.
            Console.Error.WriteLine($"[server] {line}");
        }
    }

    private string[] Snapshot()
    {
        lock (_lastLines)
        {
            return [.. _lastLines];
        }
    }

    private string SafeExitCode()
    {
        try
        {
            return _process.ExitCode.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (InvalidOperationException)
        {
            return "?";
        }
    }

    private void KillNow()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }

    [GeneratedRegex(@"GrpcBoard listening on (\S+)")]
    private static partial Regex ListeningLine();
}
