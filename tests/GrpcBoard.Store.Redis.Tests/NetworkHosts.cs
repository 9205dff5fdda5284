using System.Diagnostics;
using System.Globalization;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>A fact that needs <see cref="NetworkHosts"/> (root, for network namespaces) and redis-server.</summary>
public sealed class HostsFactAttribute : FactAttribute
{
    public HostsFactAttribute() => Skip = RedisProcess.SkipReason ?? NetworkHosts.SkipReason;
}

/// <summary>A theory that needs <see cref="NetworkHosts"/>, skipped as <see cref="HostsFactAttribute"/> is.</summary>
public sealed class HostsTheoryAttribute : TheoryAttribute
{
    public HostsTheoryAttribute() => Skip = RedisProcess.SkipReason ?? NetworkHosts.SkipReason;
}

/// <summary>
/// Hosts of their own on this one machine: Linux network namespaces, each with its own network stack, its own
/// loopback and one address on a bridge (10.a.b.0/24, chosen not to clash with this machine's routes), where this
/// machine, the hosts' router and the tests' client, is .1. A server in a host is reached only over the bridge, by
/// the address another host would use; it cannot reach 127.0.0.1 of this machine. Cutting a host's link drops its
/// packets in both directions without a reset, as a network partition does, and the connections open across it stay
/// open, stalled, as they would between machines.
/// </summary>
public sealed class NetworkHosts : IAsyncDisposable
{
    private static readonly Lazy<string?> Probe = new(ProbeNamespaces);

    private readonly string _id;
    private readonly string _subnet;
    private readonly int _count;

    private NetworkHosts(string id, string subnet, int count)
    {
        _id = id;
        _subnet = subnet;
        _count = count;
    }

    /// <summary>Why tests with hosts skip here (null: they run): creating a network namespace needs root.</summary>
    public static string? SkipReason => Probe.Value;

    /// <summary>This machine's address on the bridge: where the hosts reach a Redis of this machine.</summary>
    public string RouterAddress => $"{_subnet}.1";

    /// <summary>The address of host <paramref name="host"/> (0-based).</summary>
    public string AddressOf(int host) => $"{_subnet}.{host + 2}";

    /// <summary>The network namespace of host <paramref name="host"/>.</summary>
    public string NamespaceOf(int host) => $"gbt{_id}-{host}";

    private string Bridge => $"gbt{_id}br";

    /// <summary>This machine's end of host <paramref name="host"/>'s link (a veth pair, the other end in the host).</summary>
    private string LinkOf(int host) => $"gbt{_id}h{host}";

    public static async Task<NetworkHosts> CreateAsync(int count)
    {
        var routes = await RunAsync("ip", "-4", "route", "show", "table", "all");
        var subnet = Enumerable.Range(0, 50)
            .Select(_ => $"10.{Random.Shared.Next(200, 255)}.{Random.Shared.Next(0, 256)}")
            .First(candidate => !routes.Contains(candidate + ".", StringComparison.Ordinal));
        var hosts = new NetworkHosts(Random.Shared.Next(0x1000, 0x10000).ToString("x4", CultureInfo.InvariantCulture), subnet, count);
        try
        {
            await RunAsync("ip", "link", "add", hosts.Bridge, "type", "bridge");
            await RunAsync("ip", "addr", "add", $"{hosts.RouterAddress}/24", "dev", hosts.Bridge);
            await RunAsync("ip", "link", "set", hosts.Bridge, "up");
            for (var host = 0; host < count; host++)
            {
                var ns = hosts.NamespaceOf(host);
                var inside = $"gbt{hosts._id}i{host}";
                await RunAsync("ip", "netns", "add", ns);
                await RunAsync("ip", "link", "add", hosts.LinkOf(host), "type", "veth", "peer", "name", inside);
                await RunAsync("ip", "link", "set", inside, "netns", ns);
                await RunAsync("ip", "link", "set", hosts.LinkOf(host), "master", hosts.Bridge);
                await RunAsync("ip", "link", "set", hosts.LinkOf(host), "up");
                await RunAsync("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up");
                await RunAsync("ip", "netns", "exec", ns, "ip", "link", "set", inside, "name", "eth0");
                await RunAsync("ip", "netns", "exec", ns, "ip", "addr", "add", $"{hosts.AddressOf(host)}/24", "dev", "eth0");
                await RunAsync("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up");
            }
        }
        catch
        {
            await hosts.DisposeAsync();
            throw;
        }

        return hosts;
    }

    /// <summary>A GrpcBoard server process in host <paramref name="host"/>.</summary>
    public Task<ServerProcess> StartServerAsync(int host, params string[] args) =>
        ServerProcess.StartAsync(["ip", "netns", "exec", NamespaceOf(host)], args);

    /// <summary>Cuts host <paramref name="host"/> off: its packets, and those sent to it, are dropped from now on.</summary>
    public Task CutAsync(int host) => RunAsync("ip", "link", "set", LinkOf(host), "down");

    /// <summary>Joins host <paramref name="host"/> to the network again after <see cref="CutAsync"/>.</summary>
    public Task RestoreAsync(int host) => RunAsync("ip", "link", "set", LinkOf(host), "up");

    /// <summary>
    /// Cuts host <paramref name="host"/> off <paramref name="address"/> only (a blackhole route in the host: what it sends
    /// there is dropped, so neither side's data is acknowledged); it still reaches, and is reached by, everyone else.
    /// </summary>
    public Task CutFromAsync(int host, string address) =>
        RunAsync("ip", "netns", "exec", NamespaceOf(host), "ip", "route", "add", "blackhole", address + "/32");

    /// <summary>Undoes <see cref="CutFromAsync"/>.</summary>
    public Task RestoreToAsync(int host, string address) =>
        RunAsync("ip", "netns", "exec", NamespaceOf(host), "ip", "route", "del", "blackhole", address + "/32");

    /// <summary>
    /// The TCP connections established in host <paramref name="host"/>, from its own <c>/proc/net/tcp</c> and
    /// <c>tcp6</c> (.NET's sockets are dual-stack: their IPv4 connections are listed there, as IPv4-mapped addresses),
    /// each as its local and remote end (address:port): which hosts its processes talk to, and which side opened the
    /// connection (the remote end of a connection it accepted is the peer's ephemeral port).
    /// </summary>
    public async Task<IReadOnlyList<(string Local, string Remote)>> ConnectionsInAsync(int host)
    {
        var connections = new List<(string, string)>();
        foreach (var table in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            foreach (var line in (await RunAsync("ip", "netns", "exec", NamespaceOf(host), "cat", table)).Split('\n').Skip(1))
            {
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length > 3 && fields[3] == "01" && Endpoint(fields[1]) is { } local && Endpoint(fields[2]) is { } remote)
                {
                    connections.Add((local, remote));
                }
            }
        }

        return connections;

        // The address as the kernel's 32-bit words in hex (this machine's byte order), a colon, the port in hex; an
        // IPv6 address only if it is IPv4-mapped (::ffff:a.b.c.d), the only kind these hosts have.
        static string? Endpoint(string field)
        {
            var parts = field.Split(':');
            var words = parts[0];
            if (words.Length == 32)
            {
                if (!words.StartsWith("0000000000000000FFFF0000", StringComparison.OrdinalIgnoreCase))
                {
                    return null;
                }

                words = words[24..];
            }

            var address = BitConverter.GetBytes(uint.Parse(words, NumberStyles.HexNumber, CultureInfo.InvariantCulture));
            return $"{string.Join('.', address)}:{int.Parse(parts[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture)}";
        }
    }

    /// <summary>Deletes the hosts (their links go with them) and the bridge; stop the processes in them first.</summary>
    public async ValueTask DisposeAsync()
    {
        for (var host = 0; host < _count; host++)
        {
            await TryRunAsync("ip", "netns", "del", NamespaceOf(host));
            await TryRunAsync("ip", "link", "del", LinkOf(host));
        }

        await TryRunAsync("ip", "link", "del", Bridge);
    }

    private static string? ProbeNamespaces()
    {
        var name = $"gbtprobe{Environment.ProcessId}";
        try
        {
            RunAsync("ip", "netns", "add", name).GetAwaiter().GetResult();
            TryRunAsync("ip", "netns", "del", name).GetAwaiter().GetResult();
            return null;
        }
        catch (Exception ex)
        {
            return $"Needs network namespaces (root, and iproute2's ip): {ex.Message}";
        }
    }

    private static async Task TryRunAsync(params string[] command)
    {
        try
        {
            await RunAsync(command);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }

    private static async Task<string> RunAsync(params string[] command)
    {
        var info = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in command.Skip(1))
        {
            info.ArgumentList.Add(a);
        }

        Process process;
        try
        {
            process = Process.Start(info)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException($"{command[0]} could not be run: {ex.Message}", ex);
        }

        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync().Within();
            if (process.ExitCode != 0)
            {
                throw new InvalidOperationException($"{string.Join(' ', command)} exited {process.ExitCode}: {(await error).Trim()}");
            }

            return await output;
        }
    }
}
