using System.Net;
using System.Net.Sockets;

namespace GrpcBoard.Testing;

/// <summary>Ports for servers that tests start as processes of their own (redis-server, GrpcBoard.Server).</summary>
public static class Ports
{
    /// <summary>
    /// A port nobody listens on, for a server about to start, below the kernel's range for the local ports of outgoing
    /// connections (<c>ip_local_port_range</c>, 32768 and up by default); with <paramref name="alsoFree"/>, the port that
    /// far above it is free too (a Redis Cluster node's bus port, +10000). Why not a port the kernel picks (bind to 0):
    /// that is one of the outgoing range, so between the pick and the server's bind any outgoing connection of the
    /// machine could take it, and the tests open many (the Redis stores' role and eviction-policy checks, a connection
    /// each time): a redis-server once exited in .ci/run, its port taken.
    /// </summary>
    public static int Free(int? alsoFree = null)
    {
        var outgoingFrom = OutgoingPortsFrom();
        if (outgoingFrom > 20_000)
        {
            var highest = Math.Min(outgoingFrom - 10_000, 30_000);
            for (var attempt = 0; attempt < 1000; attempt++)
            {
                var port = Random.Shared.Next(10_000, highest);
                if (CanListen(port) && (alsoFree is not { } offset || CanListen(port + offset)))
                {
                    return port;
                }
            }
        }

        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static int OutgoingPortsFrom()
    {
        try
        {
            return int.Parse(File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[])['\t', ' '], StringSplitOptions.RemoveEmptyEntries)[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
            return 0;
        }
    }

    private static bool CanListen(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
