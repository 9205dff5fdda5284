using System.Net;
using System.Text;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// The nodes of a configuration that lists a standalone primary and its replicas (<c>--redis primary:6379,replica:6379</c>),
/// each asked for its role with <c>ROLE</c> on a connection of its own.
///
/// Why: with a list, nothing but the roles says which node is the primary, and after a failover an old primary that
/// comes back with its data answers as a primary too. Nobody turns it into a replica (there is no Sentinel), so the two
/// stay primaries until an operator acts. StackExchange.Redis 1.2.6 then sends to either, and a store that opens
/// meanwhile may pick the old one: two servers would hand out the same task with the same fencing token, one on each
/// side. The store asks every listed node itself, every second, and refuses calls while more than one answers as the
/// primary (<see cref="RedisStore"/>): unavailable rather than split.
/// </summary>
internal sealed class NodeListView
{
    private readonly EndPoint[] _nodes;
    private readonly string? _password;
    private readonly RedisTls? _tls;
    private readonly TimeSpan _timeout;

    private NodeListView(EndPoint[] nodes, string? password, RedisTls? tls, TimeSpan timeout)
    {
        _nodes = nodes;
        _password = password;
        _tls = tls;
        _timeout = timeout;
    }

    /// <summary>A view when <paramref name="config"/> lists more than one node and no Sentinel service, else null.</summary>
    public static NodeListView? From(ConfigurationOptions config, RedisTls? tls, TimeSpan timeout) =>
        string.IsNullOrEmpty(config.ServiceName) && config.EndPoints.Count > 1
            ? new NodeListView([.. config.EndPoints], config.Password, tls, timeout)
            : null;

    /// <summary>
    /// The listed nodes that answer <c>ROLE</c> as a primary, all asked together. A node that does not answer within the
    /// timeout, or answers with an error, is not among them: one this server cannot reach cannot take its writes either.
    /// </summary>
    public async Task<IReadOnlyList<EndPoint>> PrimariesAsync(CancellationToken cancellationToken)
    {
        var roles = await Task.WhenAll(_nodes.Select(node => RoleAsync(node, cancellationToken))).ConfigureAwait(false);
        return [.. _nodes.Where((_, i) => roles[i] == "master")];
    }

    private async Task<string?> RoleAsync(EndPoint node, CancellationToken cancellationToken)
    {
        try
        {
            return await RespLink.AskAsync(node, _tls, _password, _timeout, cancellationToken, "ROLE").ConfigureAwait(false) is object?[] { Length: > 0 } reply
                && reply[0] is byte[] name ? Encoding.ASCII.GetString(name) : null;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            return null;
        }
    }
}
