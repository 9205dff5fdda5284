using System.Buffers;
using System.Buffers.Text;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// A blocking RESP connection of our own to one Redis node or sentinel, over TCP or TLS (<see cref="RedisTls"/>):
/// the direct commit connection and the questions to sentinels. StackExchange.Redis's connections are its own.
/// </summary>
internal sealed class RespLink : IDisposable
{
    private readonly Socket _socket;

    private RespLink(Socket socket, Stream stream)
    {
        _socket = socket;
        Stream = stream;
        Reader = new RespReader(stream);
    }

    public Stream Stream { get; }

    public RespReader Reader { get; }

    /// <summary>
    /// Connects (and with <paramref name="tls"/>, authenticates) within <paramref name="timeout"/>. Reads and writes
    /// then time out after <paramref name="timeout"/> too, until <see cref="WaitWithoutTimeout"/>.
    /// </summary>
    public static async Task<RespLink> OpenAsync(EndPoint endpoint, RedisTls? tls, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(timeout);
            await (endpoint switch
            {
                DnsEndPoint dns => socket.ConnectAsync(dns.Host, dns.Port, deadline.Token),
                _ => socket.ConnectAsync(endpoint, deadline.Token),
            }).ConfigureAwait(false);
            socket.ReceiveTimeout = socket.SendTimeout = (int)timeout.TotalMilliseconds;
            Stream stream = new NetworkStream(socket, ownsSocket: true);
            if (tls is not null)
            {
                try
                {
                    stream = await tls.AuthenticateAsync(stream, endpoint, deadline.Token).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is System.Security.Authentication.AuthenticationException or IOException)
                {
                    // The handshake's own messages ("Authentication failed, see inner exception") do not say it was TLS.
                    throw new IOException($"TLS with {endpoint} failed: {Describe(ex)}", ex);
                }
                catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
                {
                    // A server without TLS takes the ClientHello for the start of a command and waits for the rest.
                    throw new IOException($"TLS with {endpoint} failed: no handshake within {timeout.TotalMilliseconds:0} ms (does it speak TLS on this port?)", ex);
                }
            }

            return new RespLink(socket, stream);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// One command on a connection of its own (over TLS, with AUTH, as configured), for a question to one node that
    /// StackExchange.Redis cannot ask it: <c>ROLE</c> of every listed node, whatever it thinks their roles are, or <c>INFO</c>,
    /// which it sends only in its admin mode. An error reply throws, as do a connection refused and the timeout.
    /// </summary>
    public static async Task<object?> AskAsync(EndPoint endpoint, RedisTls? tls, string? password, TimeSpan timeout, CancellationToken cancellationToken, params string[] command)
    {
        using var link = await OpenAsync(endpoint, tls, timeout, cancellationToken).ConfigureAwait(false);
        if (!string.IsNullOrEmpty(password))
        {
            link.Call("AUTH", password);
        }

        return link.Call(command);
    }

    /// <summary>
    /// Why <paramref name="endpoint"/> does not serve us, or null when it does: connects (over TLS, with AUTH, as
    /// configured) and PINGs. StackExchange.Redis 1.2.6 says only that no connection is available; this says whether the
    /// connection was refused, TLS failed (and which side refused whom) or AUTH was refused.
    /// </summary>
    public static async Task<string?> WhyNotAsync(EndPoint endpoint, RedisTls? tls, string? password, TimeSpan timeout)
    {
        RespLink? link = null;
        try
        {
            link = await OpenAsync(endpoint, tls, timeout, default).ConfigureAwait(false);
            if (!string.IsNullOrEmpty(password))
            {
                link.Call("AUTH", password);
            }

            link.Call("PING");
            return null;
        }
        catch (IOException ex) when (link is not null && tls is { HasClientCertificate: false })
        {
            // With TLS 1.3 the server checks the client's certificate after the client has finished its handshake, so
            // a missing one shows as a connection closed at the first command.
            return $"TLS: the connection closed after the handshake, before any reply; Redis asks for a client certificate unless tls-auth-clients is no, and none is configured ({Describe(ex)})";
        }
        catch (Exception ex)
        {
            return Describe(ex);
        }
        finally
        {
            link?.Dispose();
        }
    }

    /// <summary>An exception's message, with its innermost one when that says more (the OpenSSL error of a failed handshake, say).</summary>
    private static string Describe(Exception ex)
    {
        var inner = ex;
        while (inner.InnerException is not null)
        {
            inner = inner.InnerException;
        }

        return inner == ex || ex.Message.Contains(inner.Message, StringComparison.Ordinal) ? ex.Message : $"{ex.Message} ({inner.Message})";
    }

    /// <summary>
    /// Reads block until data comes: for a reader thread whose replies are timed by a watchdog instead. A read that
    /// times out cannot be resumed on TLS (the stream may hold part of a record), so none may time out there.
    /// </summary>
    public void WaitWithoutTimeout() => _socket.ReceiveTimeout = 0;

    /// <summary>Reads fail after <paramref name="timeout"/> without data; the link is then done for (see <see cref="WaitWithoutTimeout"/>).</summary>
    public void ReadTimeout(TimeSpan timeout) => _socket.ReceiveTimeout = (int)timeout.TotalMilliseconds;

    /// <summary>Sends one command and reads its reply; an error reply throws.</summary>
    public object? Call(params string[] command)
    {
        Send(command);
        var reply = Reader.ReadValue();
        return reply is RespError error ? throw new InvalidOperationException($"Redis refused {command[0]}: {error.Message}") : reply;
    }

    /// <summary>Sends one command without reading its reply.</summary>
    public void Send(params string[] command)
    {
        var buffer = new ArrayBufferWriter<byte>();
        ArrayHeader(buffer, command.Length);
        foreach (var part in command)
        {
            Bulk(buffer, Encoding.UTF8.GetBytes(part));
        }

        Stream.Write(buffer.WrittenSpan);
    }

    /// <summary>
    /// Closes the socket, which fails a read or write under way on another thread; the stream is disposed by
    /// <see cref="Dispose"/>, once nothing uses it.
    /// </summary>
    public void Abort() => _socket.Dispose();

    public void Dispose()
    {
        _socket.Dispose();
        Stream.Dispose();
    }

    public static void ArrayHeader(ArrayBufferWriter<byte> w, int count)
    {
        w.Write("*"u8);
        Number(w, count);
        w.Write("\r\n"u8);
    }

    public static void Bulk(ArrayBufferWriter<byte> w, ReadOnlySpan<byte> value)
    {
        w.Write("$"u8);
        Number(w, value.Length);
        w.Write("\r\n"u8);
        w.Write(value);
        w.Write("\r\n"u8);
    }

    /// <summary>A number as a bulk string, as RESP takes numeric arguments (WAIT's count, EVALSHA's number of keys).</summary>
    public static void Bulk(ArrayBufferWriter<byte> w, long value)
    {
        Span<byte> digits = stackalloc byte[20];
        Utf8Formatter.TryFormat(value, digits, out var written);
        Bulk(w, digits[..written]);
    }

    private static void Number(ArrayBufferWriter<byte> w, long value)
    {
        var span = w.GetSpan(20);
        Utf8Formatter.TryFormat(value, span, out var written);
        w.Advance(written);
    }
}
