using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GrpcBoard.Testing;

/// <summary>The server as a separate process (dotnet GrpcBoard.Server.dll), for kill -9 tests.</summary>
public sealed partial class ServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly System.Text.StringBuilder _output;

    private ServerProcess(Process process, string address, System.Text.StringBuilder output)
    {
        _process = process;
        Address = address;
        _output = output;
    }

    /// <summary>What the server printed so far (its log, at Warning and above), for a failing test's message.</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public string Address { get; }

    public int Pid => _process.Id;

    public static Task<ServerProcess> StartAsync(params string[] args) => StartAsync([], args);

    /// <summary>
    /// The server run by <paramref name="launcher"/> (a command that runs the rest of its arguments, such as
    /// <c>ip netns exec NAME</c>, and becomes that process), or directly when it is empty.
    /// </summary>
    public static async Task<ServerProcess> StartAsync(IReadOnlyList<string> launcher, params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "GrpcBoard.Server.dll");
        var info = new ProcessStartInfo(launcher.Count > 0 ? launcher[0] : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (launcher.Count > 0)
        {
            foreach (var a in launcher.Skip(1))
            {
                info.ArgumentList.Add(a);
            }

            info.ArgumentList.Add("dotnet");
        }

        info.ArgumentList.Add(dll);
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        info.Environment["GRPCBOARD_LOG_LEVEL"] = "Warning";
        var process = Process.Start(info)!;
        var ready = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new System.Text.StringBuilder();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                // stderr is read on another thread and may still be appending: read the text under the lock.
                string text;
                lock (output)
                {
                    text = output.ToString();
                }

                ready.TrySetException(new InvalidOperationException("The server exited before listening. Output:\n" + text));
                return;
            }

            lock (output)
            {
                output.AppendLine(e.Data);
            }

            const string marker = "GrpcBoard listening on ";
            if (e.Data.StartsWith(marker, StringComparison.Ordinal))
            {
                ready.TrySetResult(e.Data[marker.Length..].Split(' ')[0]);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            lock (output)
            {
                output.AppendLine(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            return new ServerProcess(process, await ready.Task.WaitAsync(TimeSpan.FromSeconds(60)), output);
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
    }

    /// <summary>SIGTERM: a graceful stop, as a process supervisor asks for one.</summary>
    public void Terminate()
    {
        if (Kill(_process.Id, 15) != 0)
        {
            throw new InvalidOperationException($"kill({_process.Id}, SIGTERM) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    /// <summary>SIGKILL: no shutdown code runs, nothing is flushed.</summary>
    public async Task KillAsync()
    {
        _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await KillAsync();
        }

        _process.Dispose();
    }
}
