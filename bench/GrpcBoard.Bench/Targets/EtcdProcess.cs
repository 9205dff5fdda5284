using System.Globalization;

namespace GrpcBoard.Bench.Targets;

/// <summary>
/// A single-member etcd the tool starts for one run: client and peer ports free on 127.0.0.1, a new temporary
/// data directory, everything else etcd's defaults (fsync of the WAL on every commit). Stopped with SIGTERM and
/// its directory deleted on dispose.
/// </summary>
public sealed class EtcdProcess : IAsyncDisposable
{
    private readonly ExternalProcess _process;

    private EtcdProcess(ExternalProcess process, Uri clientUrl, string directory)
    {
        _process = process;
        ClientUrl = clientUrl;
        Directory = directory;
    }

    /// <summary>gRPC and HTTP (JSON gateway, /health) on the same port.</summary>
    public Uri ClientUrl { get; }

    public int Pid => _process.Pid;

    public string Directory { get; }

    public string Description => $"etcd pid {Pid} on {ClientUrl} (single member, data dir {Directory}, default fsync)";

    public static async Task<EtcdProcess> StartAsync(CancellationToken cancellationToken)
    {
        var file = ExternalTool.Etcd.Require();
        for (var attempt = 1; ; attempt++)
        {
            var directory = System.IO.Directory.CreateTempSubdirectory("grpcboard-bench-etcd-").FullName;
            var client = $"http://127.0.0.1:{ExternalProcess.FreeLoopbackPort().ToString(CultureInfo.InvariantCulture)}";
            var peer = $"http://127.0.0.1:{ExternalProcess.FreeLoopbackPort().ToString(CultureInfo.InvariantCulture)}";
            string[] arguments =
            [
                "--name", "bench", "--data-dir", Path.Combine(directory, "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", "bench=" + peer, "--initial-cluster-state", "new",
                "--logger", "zap", "--log-level", "warn",
            ];
            var process = ExternalProcess.Start(file, arguments, "etcd", directory, deleteDirectory: directory);
            var etcd = new EtcdProcess(process, new Uri(client + "/"), directory);
            try
            {
                using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
                await process.WaitUntilReadyAsync(async () =>
                    (await http.GetStringAsync(new Uri(etcd.ClientUrl, "health"), cancellationToken)).Contains("\"true\"", StringComparison.Ordinal),
                    TimeSpan.FromSeconds(30), cancellationToken);
                return etcd;
            }
            catch (Exception ex) when (attempt < 3 && ex is InvalidOperationException)
            {
                await etcd.DisposeAsync();
            }
            catch
            {
                await etcd.DisposeAsync();
                throw;
            }
        }
    }

    public ValueTask DisposeAsync() => _process.DisposeAsync();
}
