using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using GrpcBoard.Client;
using GrpcBoard.Server.Hosting;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Server.Tests;

/// <summary>A real server on 127.0.0.1 (Kestrel, HTTP/2) and a client for it; one per test.</summary>
public sealed class ServerHarness : IAsyncDisposable
{
    private ServerHarness(BoardServer server, BoardClient client)
    {
        Server = server;
        Client = client;
    }

    public BoardServer Server { get; }

    public BoardClient Client { get; }

    public string Address => Server.Address.ToString();

    public static async Task<ServerHarness> StartAsync(ServerSettings? settings = null, BoardServerOverrides? overrides = null)
    {
        settings ??= new ServerSettings { Port = 0, Store = "memory" };
        overrides ??= new BoardServerOverrides { Logging = l => l.SetMinimumLevel(LogLevel.Warning) };
        if (overrides.Logging is null)
        {
            overrides = new BoardServerOverrides
            {
                TimeProvider = overrides.TimeProvider,
                Limits = overrides.Limits,
                WatchOptions = overrides.WatchOptions,
                StoreFactory = overrides.StoreFactory,
                Logging = l => l.SetMinimumLevel(LogLevel.Warning),
            };
        }

        var server = await BoardServer.StartAsync(settings, overrides);
        return new ServerHarness(server, new BoardClient(server.Address.ToString()));
    }

    public BoardClient NewClient(BoardClientOptions? options = null) => new(Address, options);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Server.DisposeAsync();
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>The server as a separate process (dotnet GrpcBoard.Server.dll), for kill -9 tests.</summary>
public sealed partial class ServerProcess : IAsyncDisposable
{
    private readonly Process _process;

    private ServerProcess(Process process, string address)
    {
        _process = process;
        Address = address;
    }

    public string Address { get; }

    public int Pid => _process.Id;

    public static async Task<ServerProcess> StartAsync(params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "GrpcBoard.Server.dll");
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
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
                ready.TrySetException(new InvalidOperationException("The server exited before listening. Output:\n" + output));
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
            return new ServerProcess(process, await ready.Task.WaitAsync(TimeSpan.FromSeconds(60)));
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
