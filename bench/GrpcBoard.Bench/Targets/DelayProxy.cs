using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace GrpcBoard.Bench.Targets;

/// <summary>
/// --redis-delay-ms: a TCP relay between the server(s) and Redis that holds every chunk for at least the given
/// time in each direction, standing in for a Redis on another host. This machine has loopback only and no
/// netem qdisc, so the delay is made here. Sleeps have millisecond granularity: a chunk waits its delay plus up to
/// about 1 ms, and the mean delay actually added is reported (<see cref="Describe"/>), not the requested one.
/// Chunks stay in order; chunks already due when the relay wakes go out together, so the delay does not limit
/// throughput. The relay's threads run in the load generator's process and are named "delay relay".
/// </summary>
public sealed class DelayProxy : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly IPEndPoint _upstream;
    private readonly long _delayTicks;
    private readonly List<Socket> _sockets = [];
    private readonly CancellationTokenSource _stop = new();
    private long _chunks;
    private long _addedTicks;

    private DelayProxy(Socket listener, IPEndPoint upstream, TimeSpan delay)
    {
        _listener = listener;
        _upstream = upstream;
        _delayTicks = (long)(delay.TotalSeconds * Stopwatch.Frequency);
        Endpoint = $"127.0.0.1:{((IPEndPoint)listener.LocalEndPoint!).Port.ToString(CultureInfo.InvariantCulture)}";
        Delay = delay;
    }

    /// <summary>Where the servers connect instead of Redis.</summary>
    public string Endpoint { get; }

    public TimeSpan Delay { get; }

    public static DelayProxy Start(string upstream, TimeSpan delay)
    {
        var parts = upstream.Split(':');
        var target = new IPEndPoint(IPAddress.Parse(parts[0]), int.Parse(parts[1], CultureInfo.InvariantCulture));
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(64);
        var proxy = new DelayProxy(listener, target, delay);
        StartThread("delay relay accept", proxy.AcceptLoop);
        return proxy;
    }

    /// <summary>The mean delay each relayed chunk got, one way, and how many chunks were relayed.</summary>
    public string Describe()
    {
        var chunks = Interlocked.Read(ref _chunks);
        var mean = chunks == 0 ? 0 : Interlocked.Read(ref _addedTicks) * 1000.0 / Stopwatch.Frequency / chunks;
        return string.Create(CultureInfo.InvariantCulture,
            $"{Delay.TotalMilliseconds:0.###} ms asked each way; {mean:0.###} ms added on average over {chunks} chunks (both ways; a round trip adds twice this)");
    }

    private static void StartThread(string name, Action body) =>
        new Thread(() => body()) { IsBackground = true, Name = name }.Start();

    private void AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = _listener.Accept();
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }

            var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            client.NoDelay = true;
            try
            {
                server.Connect(_upstream);
            }
            catch (SocketException)
            {
                client.Dispose();
                server.Dispose();
                continue;
            }

            lock (_sockets)
            {
                _sockets.Add(client);
                _sockets.Add(server);
            }

            Relay(client, server);
            Relay(server, client);
        }
    }

    /// <summary>One direction: a reader that stamps each chunk with its due time, and a writer that sends it then.</summary>
    private void Relay(Socket from, Socket to)
    {
        var queue = new Queue<(long Due, long Received, byte[] Data)>();
        var ended = false;
        StartThread("delay relay in", () =>
        {
            var buffer = new byte[64 * 1024];
            try
            {
                int n;
                while ((n = from.Receive(buffer)) > 0)
                {
                    var now = Stopwatch.GetTimestamp();
                    lock (queue)
                    {
                        queue.Enqueue((now + _delayTicks, now, buffer.AsSpan(0, n).ToArray()));
                        Monitor.Pulse(queue);
                    }
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }

            lock (queue)
            {
                ended = true;
                Monitor.Pulse(queue);
            }
        });
        StartThread("delay relay out", () =>
        {
            try
            {
                while (true)
                {
                    (long Due, long Received, byte[] Data) head;
                    lock (queue)
                    {
                        while (queue.Count == 0 && !ended)
                        {
                            Monitor.Wait(queue);
                        }

                        if (queue.Count == 0)
                        {
                            break;
                        }

                        head = queue.Peek();
                    }

                    var wait = head.Due - Stopwatch.GetTimestamp();
                    if (wait > 0)
                    {
                        // Thread.Sleep truncates to whole milliseconds, and Sleep(0) only yields: round up, or
                        // the relay spins on the shared cores for the last fraction of each delay.
                        Thread.Sleep((int)Math.Ceiling(wait * 1000.0 / Stopwatch.Frequency));
                    }

                    // Everything due by now goes out in this wake-up, in order.
                    while (true)
                    {
                        (long Due, long Received, byte[] Data) item;
                        var now = Stopwatch.GetTimestamp();
                        lock (queue)
                        {
                            if (queue.Count == 0 || queue.Peek().Due > now)
                            {
                                break;
                            }

                            item = queue.Dequeue();
                        }

                        to.Send(item.Data);
                        Interlocked.Increment(ref _chunks);
                        Interlocked.Add(ref _addedTicks, Stopwatch.GetTimestamp() - item.Received);
                    }
                }

                to.Shutdown(SocketShutdown.Send);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                from.Dispose();
                to.Dispose();
            }
        });
    }

    public ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Dispose();
        lock (_sockets)
        {
            foreach (var socket in _sockets)
            {
                socket.Dispose();
            }
        }

        _stop.Dispose();
        return ValueTask.CompletedTask;
    }
}
