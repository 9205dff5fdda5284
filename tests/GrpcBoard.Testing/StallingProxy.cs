using System.Net;
using System.Net.Sockets;

namespace GrpcBoard.Testing;

/// <summary>
/// A TCP proxy on 127.0.0.1 in front of a server, for fault injection: <see cref="StallAll"/> stops
/// forwarding on every connection open so far without closing any, as a half-open connection would (the
/// peer's host gone, a NAT entry dropped). Connections made later are forwarded normally.
/// </summary>
public sealed class StallingProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Link> _links = [];
    private readonly Task _accepting;

    public StallingProxy(int targetPort)
    {
        _targetPort = targetPort;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public string Address => $"http://127.0.0.1:{Port}/";

    /// <summary>Connections accepted so far.</summary>
    public int Connections
    {
        get
        {
            lock (_links)
            {
                return _links.Count;
            }
        }
    }

    /// <summary>
    /// Stops forwarding bytes, both ways, on every connection open now. With <paramref name="resetOn"/>, a
    /// stalled connection on which the client then sends those bytes is reset, as a peer whose host came back
    /// answers a request on a connection it no longer knows; everything else stays unanswered (a client's own
    /// PINGs and WINDOW_UPDATEs do not carry the bytes).
    /// </summary>
    public void StallAll(byte[]? resetOn = null)
    {
        lock (_links)
        {
            foreach (var link in _links)
            {
                link.ResetOn = resetOn;
                link.Stalled = true;
            }
        }
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }

            var server = new TcpClient();
            await server.ConnectAsync(IPAddress.Loopback, _targetPort, _stop.Token);
            var link = new Link(client, server);
            lock (_links)
            {
                _links.Add(link);
            }

            _ = PumpAsync(link, client.GetStream(), server.GetStream(), fromClient: true);
            _ = PumpAsync(link, server.GetStream(), client.GetStream(), fromClient: false);
        }
    }

    private async Task PumpAsync(Link link, NetworkStream from, NetworkStream to, bool fromClient)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            while (true)
            {
                var n = await from.ReadAsync(buffer, _stop.Token);
                if (n == 0)
                {
                    break;
                }

                if (!link.Stalled)
                {
                    await to.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
                }
                else if (fromClient && link.ResetOn is { } marker && buffer.AsSpan(0, n).IndexOf(marker) >= 0)
                {
                    link.Reset();
                    break;
                }
            }
        }
        catch (Exception)
        {
            // A side closed or the proxy stops: the link is over.
        }
        finally
        {
            if (!link.Stalled)
            {
                link.Close();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        lock (_links)
        {
            foreach (var link in _links)
            {
                link.Close();
            }
        }

        _stop.Dispose();
    }

    private sealed class Link(TcpClient client, TcpClient server)
    {
        public volatile bool Stalled;
        public volatile byte[]? ResetOn;

        /// <summary>Closes the client's side with RST (linger 0), as an unknown connection is answered.</summary>
        public void Reset()
        {
            try
            {
                client.Client.LingerState = new LingerOption(true, 0);
            }
            catch (ObjectDisposedException)
            {
            }

            Close();
        }

        public void Close()
        {
            client.Dispose();
            server.Dispose();
        }
    }
}
