using System.Text.RegularExpressions;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace GrpcBoard.Bench.Targets;

/// <summary>
/// A program the tool needs from the machine (redis-server, redis-benchmark, etcd): where it is, and which
/// Debian package brings it when it is missing, so a missing tool is one clear sentence instead of a crash.
/// </summary>
public sealed record ExternalTool(string Name, string Package)
{
    public static readonly ExternalTool RedisServer = new("redis-server", "redis-server");
    public static readonly ExternalTool RedisBenchmark = new("redis-benchmark", "redis-tools");
    public static readonly ExternalTool Etcd = new("etcd", "etcd-server");
    public static readonly ExternalTool H2load = new("h2load", "nghttp2-client");

    /// <summary>The full path of the program on PATH, or null.</summary>
    public string? Find()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, Name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>The program's path; throws <see cref="MissingToolException"/> saying how to install it.</summary>
    public string Require() => Find() ?? throw new MissingToolException(this);

    public string InstallHint => $"{Name} is not on PATH: install it with 'apt-get install {Package}' (Debian/Ubuntu), or put it on PATH.";
}

public sealed class MissingToolException(ExternalTool tool) : Exception(tool.InstallHint)
{
    public ExternalTool Tool { get; } = tool;
}

/// <summary>What a load-generating program printed, and how long it ran by this tool's clock (start to exit).</summary>
public sealed record ProgramRun(string Output, string Errors, TimeSpan Wall)
{
    /// <summary>The failure of a run whose output cannot be used (it failed, or printed what cannot be read): its exit code and what it printed.</summary>
    public InvalidOperationException Unusable(string name, int exitCode = 0) => new($"{name} exited with code {exitCode} and printed:\n{Output}\n{Errors}");
}

/// <summary>A program that runs to its end (redis-benchmark, h2load): run it, read what it printed, fail if it failed.</summary>
public static class ProgramRunner
{
    /// <summary>
    /// Runs <paramref name="tool"/> to its exit. A non-zero exit code fails with what it printed on both streams; past
    /// <paramref name="limit"/> it is killed and a <see cref="TimeoutException"/> says so (with <paramref name="overdue"/>
    /// as its message, if given).
    /// </summary>
    public static async Task<ProgramRun> RunAsync(string tool, IEnumerable<string> arguments, TimeSpan? limit, string? overdue, CancellationToken ct)
    {
        var name = Path.GetFileName(tool);
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        var started = Stopwatch.GetTimestamp();
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{name} did not start.");
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (limit is { } l)
        {
            timeout.CancelAfter(l);
        }

        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            await process.WaitForExitAsync(CancellationToken.None);
            ct.ThrowIfCancellationRequested();
            throw new TimeoutException(overdue ?? $"{name} did not finish within {limit!.Value.TotalSeconds:0} s.");
        }

        var wall = Stopwatch.GetElapsedTime(started);
        var run = new ProgramRun(await stdout, await stderr, wall);
        return process.ExitCode == 0 ? run : throw run.Unusable(name, process.ExitCode);
    }
}

/// <summary>
/// A child process the tool started (redis-server, etcd): output kept for error messages, stopped with SIGTERM
/// and then killed if it hangs, also when the tool exits without disposing it. Its temporary directory, if any,
/// is deleted after it stopped.
/// </summary>
public sealed class ExternalProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Queue<string> _lastLines = new();
    private readonly EventHandler _onExit;
    private readonly string? _deleteDirectory;
    private readonly Regex? _readyLine;
    private readonly TaskCompletionSource<Match> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _disposed;

    private ExternalProcess(Process process, string name, string? deleteDirectory, Regex? readyLine)
    {
        _process = process;
        Name = name;
        _deleteDirectory = deleteDirectory;
        _readyLine = readyLine;
        _onExit = (_, _) => KillNow();
        AppDomain.CurrentDomain.ProcessExit += _onExit;
        _process.EnableRaisingEvents = true;
        _process.Exited += (_, _) => _ready.TrySetException(new InvalidOperationException(
            $"{Name} exited with code {SafeExitCode()} while starting. Its last lines:\n  {LastLines()}"));
        _process.OutputDataReceived += (_, e) => Keep(e.Data);
        _process.ErrorDataReceived += (_, e) => Keep(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>The first output line matching the start's ready pattern; fails if the process exits first.</summary>
    public Task<Match> ReadyLine => _ready.Task;

    public string Name { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <param name="readyLine">A line the process prints once it is ready (see <see cref="ReadyLine"/>); after it, its output is passed on to stderr.</param>
    public static ExternalProcess Start(
        string file,
        IEnumerable<string> arguments,
        string name,
        string? workingDirectory = null,
        string? deleteDirectory = null,
        IEnumerable<KeyValuePair<string, string>>? environment = null,
        Regex? readyLine = null)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? [])
        {
            start.Environment[key] = value;
        }

        var process = Process.Start(start) ?? throw new InvalidOperationException($"{file} did not start.");
        return new ExternalProcess(process, name, deleteDirectory, readyLine);
    }

    /// <summary>Polls <paramref name="ready"/> until it returns true; fails with the process's last lines if it exits or the time runs out.</summary>
    public async Task WaitUntilReadyAsync(Func<Task<bool>> ready, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"{Name} exited with code {_process.ExitCode} while starting. Its last lines:\n  {LastLines()}");
            }

            try
            {
                if (await ready())
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or HttpRequestException or TaskCanceledException)
            {
                // Not listening yet.
            }

            if (Stopwatch.GetTimestamp() > deadline)
            {
                throw new TimeoutException($"{Name} was not ready within {timeout.TotalSeconds:0} s. Its last lines:\n  {LastLines()}");
            }

            await Task.Delay(50, cancellationToken);
        }
    }

    public string LastLines()
    {
        lock (_lastLines)
        {
            return string.Join("\n  ", _lastLines);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        AppDomain.CurrentDomain.ProcessExit -= _onExit;
        if (!_process.HasExited)
        {
            Terminate(_process.Id);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try
            {
                await _process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine($"{Name} pid {_process.Id} did not stop within 15 s of SIGTERM; killing it.");
                KillNow();
            }
        }

        _process.Dispose();
        if (_deleteDirectory is not null)
        {
            try
            {
                Directory.Delete(_deleteDirectory, recursive: true);
            }
            catch (IOException)
            {
                // Left behind in the temporary directory; nothing depends on it.
            }
        }
    }

    /// <summary>A free TCP port on 127.0.0.1 (free when asked; the caller binds it right away).</summary>
    public static int FreeLoopbackPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>SIGTERM on Linux, so the program shuts down cleanly; elsewhere a kill.</summary>
    private void Terminate(int pid)
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            _ = SysKill(pid, 15);
        }
        else
        {
            KillNow();
        }
    }

    private void Keep(string? line)
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

        if (_readyLine is null)
        {
            return;
        }

        if (_readyLine.Match(line) is { Success: true } match)
        {
            _ready.TrySetResult(match);
        }
        else if (_ready.Task.IsCompletedSuccessfully)
        {
            // After start-up the process should be quiet at the chosen log level; pass on what it says.
            Console.Error.WriteLine($"[{Name}] {line}");
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

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int signal);
}
