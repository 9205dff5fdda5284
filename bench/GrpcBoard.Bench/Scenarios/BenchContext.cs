using System.Globalization;
using GrpcBoard.Bench.Cli;
using GrpcBoard.Bench.LoadGen;
using GrpcBoard.Bench.Reporting;
using GrpcBoard.Bench.Targets;
using GrpcBoard.Client;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>What a scenario runs against: the options, the server, the clients and the report.</summary>
public sealed class BenchContext(BenchOptions options, IServerTarget target, ClientPool clients, Report report, CancellationToken cancellationToken)
{
    public BenchOptions Options { get; } = options;

    public IServerTarget Target { get; } = target;

    public ClientPool Clients { get; } = clients;

    public Report Report { get; } = report;

    public CancellationToken CancellationToken { get; } = cancellationToken;

    /// <summary>Distinguishes this run's workflows from earlier runs' on a reused (--target) server.</summary>
    public string RunId { get; } = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" + Random.Shared.Next(1000, 9999).ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// The client side's connections: one <see cref="BoardClient"/> (one GrpcChannel, one SocketsHttpHandler, so
/// one HTTP/2 connection while streams stay under the server's limit) per --connections, and, once a run asks
/// for the lean load generator, as many <see cref="LeanH2Connection"/>s; workers are spread over them round-robin.
/// Setup calls and checks always go through the C# client.
/// </summary>
public sealed class ClientPool : IAsyncDisposable
{
    private readonly Uri[] _addresses;
    private readonly BoardClient[] _clients;
    private readonly IClaimCalls[] _sdkCalls;
    private LeanH2Connection[]? _lean;
    private IClaimCalls[]? _leanCalls;

    /// <summary>Connection i goes to server i mod the number of servers; every server gets one at least.</summary>
    public ClientPool(IReadOnlyList<Uri> servers, int connections)
    {
        connections = Math.Max(connections, servers.Count);
        _addresses = [.. Enumerable.Range(0, connections).Select(i => servers[i % servers.Count])];
        _clients = [.. _addresses.Select(a => new BoardClient(a.ToString()))];
        _sdkCalls = [.. _clients.Select(c => new SdkClaimCalls(c))];
        Servers = servers;
    }

    /// <summary>The servers' addresses; setup calls and checks go to the first.</summary>
    public IReadOnlyList<Uri> Servers { get; }

    public Uri Address => Servers[0];

    public int Count => _clients.Length;

    /// <summary>Lean connections opened so far (0 until a run uses the lean load generator).</summary>
    public int LeanCount => _lean?.Length ?? 0;

    /// <summary>Socket writes of the given load generator's connections so far.</summary>
    public long Writes(LoadGenerator generator) =>
        generator switch
        {
            LoadGenerator.Sdk => _clients.Sum(c => c.Channel.OwnConnectionWrites),
            LoadGenerator.Lean => (_lean ?? []).Sum(c => c.Writes),
            _ => 0,
        };

    /// <summary>The client for setup calls and checks.</summary>
    public BoardClient Main => _clients[0];

    /// <summary>One entry per connection of the given load generator; worker i uses entry i mod the count.</summary>
    public async Task<IReadOnlyList<IClaimCalls>> ClaimCallsAsync(LoadGenerator generator, CancellationToken cancellationToken)
    {
        if (generator == LoadGenerator.Sdk)
        {
            return _sdkCalls;
        }

        if (generator != LoadGenerator.Lean)
        {
            throw new ArgumentException($"{generator} is an external program, not a client of this tool's workers.", nameof(generator));
        }

        if (_leanCalls is null)
        {
            _lean = await Task.WhenAll(_addresses.Select(a => LeanH2Connection.ConnectAsync(a, cancellationToken)));
            _leanCalls = [.. _lean.Select(c => new LeanClaimCalls(c))];
        }

        return _leanCalls;
    }

    /// <summary>Established TCP connections from this machine to the servers' ports (read from /proc/net/tcp*), or null when unknown.</summary>
    public int? CountConnections()
    {
        var ports = Servers.Select(s => s.Port).ToHashSet();
        var count = 0;
        var any = false;
        foreach (var file in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            if (!File.Exists(file))
            {
                continue;
            }

            any = true;
            foreach (var line in File.ReadLines(file).Skip(1))
            {
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                // fields: sl local_address rem_address st ...; "01" is ESTABLISHED; the port is the hex after ':'.
                if (fields.Length > 3 && fields[3] == "01"
                    && ports.Contains(int.Parse(fields[2].AsSpan(fields[2].LastIndexOf(':') + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture)))
                {
                    count++;
                }
            }
        }

        return any ? count : null;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var connection in _lean ?? [])
        {
            await connection.DisposeAsync();
        }

        foreach (var client in _clients)
        {
            client.Dispose();
        }
    }
}
