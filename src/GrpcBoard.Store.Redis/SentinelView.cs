using System.Net;
using System.Net.Sockets;
using System.Text;
using GrpcBoard.Core;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// Redis Sentinel, asked which node is the primary of the group it monitors. Selected by a configuration with
/// <c>serviceName=NAME</c>, whose endpoints are then the sentinels (as in StackExchange.Redis 2.x), and the store
/// connects to the primary alone.
///
/// Why ask Sentinel rather than give the store every node and follow the roles: after a failover, an old primary
/// that comes back with its data calls itself a primary, and Sentinel waits four publish periods (8 s by default, sentinel.c)
/// before turning it into a replica. A client that trusts roles sees two primaries meanwhile and may read and
/// write on the stale one (with a list of nodes the store refuses calls then, <see cref="NodeListView"/>; Sentinel
/// lets them go on). The sentinels' answer belongs to the failover's epoch. And StackExchange.Redis 1.2.6
/// can send SENTINEL commands but does not route data commands through a sentinel, so this is our own.
/// </summary>
internal sealed class SentinelView
{
    private readonly EndPoint[] _sentinels;
    private readonly string? _password;
    private readonly RedisTls? _tls;
    private readonly TimeSpan _timeout;

    /// <summary>The sentinel that answered last, asked first next time.</summary>
    private volatile int _preferred;

    private SentinelView(EndPoint[] sentinels, string serviceName, string? password, RedisTls? tls, TimeSpan timeout, bool majority)
    {
        _sentinels = sentinels;
        ServiceName = serviceName;
        _password = password;
        _tls = tls;
        _timeout = timeout;
        Majority = majority;
    }

    /// <summary>Whether a primary must be named by more than half of the sentinels (<see cref="RedisStoreOptions.SentinelMajority"/>).</summary>
    public bool Majority { get; }

    /// <summary>The group's name in the sentinels' configuration (<c>sentinel monitor NAME ...</c>).</summary>
    public string ServiceName { get; }

    /// <summary>
    /// A view when <paramref name="config"/> names a service (its endpoints are sentinels), else null. Each
    /// sentinel, and then the node it names, gets at most <paramref name="timeout"/> to answer. With
    /// <paramref name="tls"/>, sentinels and nodes alike are reached over TLS, as the data connections.
    /// </summary>
    public static SentinelView? From(ConfigurationOptions config, RedisTls? tls, TimeSpan timeout, bool majority = false)
    {
        if (string.IsNullOrEmpty(config.ServiceName))
        {
            return null;
        }

        if (config.EndPoints.Count == 0)
        {
            throw new ArgumentException("With serviceName=, the Redis configuration lists the sentinels (host:26379,...).");
        }

        return new SentinelView([.. config.EndPoints], config.ServiceName, config.Password, tls, timeout, majority);
    }

    /// <summary>
    /// The configuration for the data connections: <paramref name="config"/>'s options (password, database,
    /// timeouts) with the primary as its one endpoint.
    /// </summary>
    public static ConfigurationOptions ForPrimary(ConfigurationOptions config, EndPoint primary)
    {
        var data = config.Clone();
        data.ServiceName = null;
        data.EndPoints.Clear();
        data.EndPoints.Add(primary);
        return data;
    }

    /// <summary>
    /// The primary's address, from the first sentinel that answers (each is asked in turn, the one that answered
    /// last first), checked with ROLE on the node itself: a sentinel cut off from the others can name an old
    /// primary. UNAVAILABLE when no sentinel names a node that answers as the primary; an argument error when one
    /// answers that it monitors no such group (a configuration mistake). These are the steps Redis's guidelines
    /// for Sentinel clients give.
    /// </summary>
    public async Task<EndPoint> PrimaryAsync(CancellationToken cancellationToken)
    {
        if (Majority)
        {
            return await MajorityPrimaryAsync(cancellationToken).ConfigureAwait(false);
        }

        var failures = new List<string>();
        var preferred = _preferred;
        for (var i = 0; i < _sentinels.Length; i++)
        {
            var index = (preferred + i) % _sentinels.Length;
            var sentinel = _sentinels[index];
            try
            {
                var primary = await AskAsync(sentinel, cancellationToken).ConfigureAwait(false);
                await ExpectPrimaryAsync(primary, cancellationToken).ConfigureAwait(false);
                _preferred = index;
                return primary;
            }
            catch (Exception ex) when (ex is InvalidOperationException || Unreachable(ex, cancellationToken))
            {
                failures.Add($"{sentinel}: {ex.Message}");
            }
        }

        throw new BoardException(BoardError.StoreUnavailable,
            $"Redis is unavailable: no sentinel named the primary of '{ServiceName}' ({string.Join("; ", failures)}).");
    }

    /// <summary>
    /// The primary more than half of the sentinels listed name, asked together, checked with ROLE. UNAVAILABLE when no
    /// address has that many (sentinels down or unreachable count against it, as do ones naming another node); an argument
    /// error when no sentinel names any and one monitors no such group.
    /// </summary>
    private async Task<EndPoint> MajorityPrimaryAsync(CancellationToken cancellationToken)
    {
        var answers = await Task.WhenAll(_sentinels.Select(async sentinel =>
        {
            try
            {
                return (Sentinel: sentinel, Primary: await AskAsync(sentinel, cancellationToken).ConfigureAwait(false), Error: (Exception?)null);
            }
            catch (Exception ex) when (ex is ArgumentException || Unreachable(ex, cancellationToken))
            {
                return (Sentinel: sentinel, Primary: (EndPoint?)null, Error: ex);
            }
        })).ConfigureAwait(false);

        var needed = (_sentinels.Length / 2) + 1;
        var most = answers.Where(a => a.Primary is not null).GroupBy(a => a.Primary!).MaxBy(g => g.Count());
        if (most is null || most.Count() < needed)
        {
            if (most is null && answers.FirstOrDefault(a => a.Error is ArgumentException).Error is { } misconfigured)
            {
                throw misconfigured;
            }

            throw new BoardException(BoardError.StoreUnavailable,
                $"Redis is unavailable: no {needed} of the {_sentinels.Length} sentinels name the same primary of '{ServiceName}' ("
                + string.Join("; ", answers.Select(a => $"{a.Sentinel}: {(a.Primary is { } p ? "names " + p : a.Error!.Message)}")) + ").");
        }

        try
        {
            await ExpectPrimaryAsync(most.Key, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException || Unreachable(ex, cancellationToken))
        {
            throw new BoardException(BoardError.StoreUnavailable,
                $"Redis is unavailable: {most.Count()} of the {_sentinels.Length} sentinels name the primary of '{ServiceName}', but {ex.Message}.", inner: ex);
        }

        return most.Key;
    }

    /// <summary>
    /// A sentinel or node that could not be asked: down, unreachable, refusing the TLS handshake, answering garbage, or
    /// not answering within its timeout (a cancellation that is not the caller's). InvalidOperationException (a node that
    /// is not the primary) and ArgumentException (a sentinel that monitors no such group) are for each caller to judge.
    /// </summary>
    private static bool Unreachable(Exception ex, CancellationToken cancellationToken) =>
        ex is SocketException or IOException or InvalidDataException or System.Security.Authentication.AuthenticationException
        || ex is OperationCanceledException && !cancellationToken.IsCancellationRequested;

    private async Task<EndPoint> AskAsync(EndPoint sentinel, CancellationToken cancellationToken)
    {
        using var link = await RespLink.OpenAsync(sentinel, _tls, _timeout, cancellationToken).ConfigureAwait(false);
        AuthenticateToSentinel(link);

        var reply = link.Call("SENTINEL", "get-master-addr-by-name", ServiceName);
        if (reply is null)
        {
            throw new ArgumentException($"The sentinel at {sentinel} monitors no group named '{ServiceName}'.");
        }

        if (reply is not object?[] { Length: 2 } address || address[0] is not byte[] host || address[1] is not byte[] port
            || !int.TryParse(Encoding.ASCII.GetString(port), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var portNumber))
        {
            throw new InvalidDataException("the sentinel's answer to get-master-addr-by-name is not an address");
        }

        var name = Encoding.ASCII.GetString(host);
        return IPAddress.TryParse(name, out var ip) ? new IPEndPoint(ip, portNumber) : new DnsEndPoint(name, portNumber);
    }

    private async Task ExpectPrimaryAsync(EndPoint node, CancellationToken cancellationToken)
    {
        RespLink link;
        try
        {
            link = await RespLink.OpenAsync(node, _tls, _timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SocketException || ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            // Said so, or it reads as if the sentinel had refused: it names a primary that is down (a failover not begun yet).
            throw new InvalidOperationException($"it names {node}, which does not answer ({ex.Message})", ex);
        }

        using var _ = link;
        if (!string.IsNullOrEmpty(_password))
        {
            link.Call("AUTH", _password);
        }

        var role = link.Call("ROLE") is object?[] { Length: > 0 } reply && reply[0] is byte[] name ? Encoding.ASCII.GetString(name) : "?";
        if (role != "master")
        {
            throw new InvalidOperationException($"it names {node}, which answers ROLE as '{role}' (a failover under way?)");
        }
    }

    /// <summary>
    /// Listens for the sentinels' <c>+switch-master</c> announcements and calls <paramref name="onSwitch"/> for each one
    /// about this group, and once whenever a subscription starts (a switch may have come while none was listening),
    /// until <paramref name="cancellationToken"/> is cancelled. One sentinel at a time (the one that answered last
    /// first), on a thread of its own, since its reads block.
    ///
    /// Why, when the store asks every second anyway: Redis's guidelines for Sentinel clients suggest both. The
    /// announcement moves the store within a round trip of the switch instead of up to a second later, during which
    /// every write fails; the polling stays, because an announcement can be missed (pub/sub delivers at most once).
    /// A sentinel that goes quiet without closing the connection is found by a PING every few seconds.
    /// </summary>
    public Thread ListenForSwitches(Action onSwitch, CancellationToken cancellationToken)
    {
        var thread = new Thread(() => ListenLoop(onSwitch, cancellationToken)) { IsBackground = true, Name = "GrpcBoard Sentinel switches" };
        thread.Start();
        return thread;
    }

    /// <summary>How often a subscribed sentinel is PINGed; no data for three of these ends the subscription.</summary>
    internal static TimeSpan SubscriptionPing { get; } = TimeSpan.FromSeconds(5);

    private void ListenLoop(Action onSwitch, CancellationToken cancellationToken)
    {
        var attempt = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            var sentinel = _sentinels[(_preferred + attempt) % _sentinels.Length];
            try
            {
                ListenTo(sentinel, onSwitch, cancellationToken);
            }
            catch (Exception ex) when (ex is SocketException or IOException or InvalidDataException or InvalidOperationException or ObjectDisposedException
                or System.Security.Authentication.AuthenticationException or OperationCanceledException)
            {
                // The next sentinel, after a pause, while the store goes on polling.
            }

            attempt++;
            cancellationToken.WaitHandle.WaitOne(TimeSpan.FromSeconds(1));
        }
    }

    private void ListenTo(EndPoint sentinel, Action onSwitch, CancellationToken cancellationToken)
    {
        using var link = RespLink.OpenAsync(sentinel, _tls, _timeout, cancellationToken).GetAwaiter().GetResult();
        using var abort = cancellationToken.Register(link.Abort);
        AuthenticateToSentinel(link);

        if (link.Call("SUBSCRIBE", "+switch-master") is not object?[] { Length: 3 } confirmed || !IsText(confirmed[0], "subscribe"))
        {
            throw new InvalidDataException("the sentinel did not confirm the subscription");
        }

        // No read may time out and be resumed (TLS); one that times out ends this subscription, which is then dropped.
        link.ReadTimeout(TimeSpan.FromTicks(SubscriptionPing.Ticks * 3));
        var writes = new object();
        using var ping = new Timer(_ =>
        {
            try
            {
                lock (writes)
                {
                    link.Send("PING");
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                link.Abort();
            }
        }, null, SubscriptionPing, SubscriptionPing);
        onSwitch();
        while (true)
        {
            if (link.Reader.ReadValue() is object?[] { Length: 3 } message && IsText(message[0], "message")
                && message[2] is byte[] payload && Encoding.UTF8.GetString(payload).Split(' ') is [var name, ..] && name == ServiceName)
            {
                onSwitch();
            }
        }
    }

    /// <summary>AUTH with the configuration's password, if any.</summary>
    private void AuthenticateToSentinel(RespLink link)
    {
        if (string.IsNullOrEmpty(_password))
        {
            return;
        }

        try
        {
            link.Call("AUTH", _password);
        }
        catch (InvalidOperationException ex) when (ex.Message.Contains("without any password configured", StringComparison.Ordinal))
        {
            // The password is the data nodes'; sentinels without one of their own take the query as it is.
        }
    }

    private static bool IsText(object? value, string text) => value is byte[] bytes && Encoding.ASCII.GetString(bytes) == text;
}
