using System.Collections.Concurrent;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// Which instance holds each workflow's turn, as far as this instance has heard, and where that instance
/// takes calls: the basis of forwarding (<see cref="RedisStore.PreferredServer"/>).
///
/// Why forward at all: turns keep several instances writing one workflow correct and fair, but while one
/// instance holds the turn, the callers of every other instance wait, and each handover costs the next holder
/// a catch-up read and a commit round trip. With Redis on another host (measured with a relay adding 1.4 ms
/// each way, 2 instances, 64 workers on one workflow) that gave 2,585 claims/s, a quarter of one instance
/// alone. Sending the call to the holder instead costs one hop between servers and keeps every caller in the
/// holder's batches, as etcd followers send proposals to the leader.
///
/// What is heard: every commit notification names the instance that committed (it took or renewed the turn),
/// every "holder|&gt;|next" notification names the next holder, and a batch refused with -2 names the holder
/// and when its turn lapses. All of it is a hint: a holder whose turn lapsed or passed serves a forwarded call
/// like any other (it waits for the turn), so a stale hint costs time, never correctness.
/// </summary>
internal sealed class TurnRouting(string self, TimeSpan lease, Func<string, Task<string?>> lookUpAddress)
{
    /// <summary>How long an instance's address is trusted before it is read again.</summary>
    private const long AddressTtlMs = 10_000;

    /// <summary>How long an address that refused a connection is not used.</summary>
    private const long UnreachableMs = 1_000;

    private readonly long _leaseMs = (long)lease.TotalMilliseconds;
    private readonly ConcurrentDictionary<string, Holder> _holders = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Address> _addresses = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _unreachable = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, bool> _lookingUp = new(StringComparer.Ordinal);

    private sealed record Holder(string Instance, long UntilMs);

    private sealed record Address(string? Url, long FetchedMs);

    private static long NowMs => Environment.TickCount64;

    /// <summary>The instance committed to the workflow (or was passed its turn) just now.</summary>
    public void Committed(string workflowId, string instance) => Held(workflowId, instance, _leaseMs);

    /// <summary>The instance holds the workflow's turn for this long at most.</summary>
    public void Held(string workflowId, string instance, long forMs) =>
        _holders[workflowId] = new Holder(instance, NowMs + forMs);

    /// <summary>
    /// The address of the other instance that holds the workflow's turn now, if it is known and reachable;
    /// null to serve the call here. An address not known yet is looked up in the background (this call is
    /// served here meanwhile).
    /// </summary>
    public string? PreferredServer(string workflowId)
    {
        if (HolderElsewhere(workflowId) is not { } instance)
        {
            return null;
        }

        var known = _addresses.TryGetValue(instance, out var address);
        if (!known || NowMs - address!.FetchedMs > AddressTtlMs)
        {
            LookUp(instance);
        }

        return known && address!.Url is { } url && !(_unreachable.TryGetValue(url, out var until) && until > NowMs) ? url : null;
    }

    /// <summary>
    /// Like <see cref="PreferredServer"/>, but waits for the holder's address when it is not known yet: for a
    /// call that was just refused for the holder's turn, one read beats waiting for the turn.
    /// </summary>
    public async Task<string?> PreferredServerAsync(string workflowId)
    {
        if (HolderElsewhere(workflowId) is { } instance && !_addresses.ContainsKey(instance))
        {
            await FetchAsync(instance).ConfigureAwait(false);
        }

        return PreferredServer(workflowId);
    }

    /// <summary>Forgets holders not heard of for a minute (workflows nobody writes any more), so the map stays small.</summary>
    public void Prune()
    {
        var before = NowMs - 60_000;
        foreach (var (workflowId, holder) in _holders)
        {
            if (holder.UntilMs < before)
            {
                _holders.TryRemove(new KeyValuePair<string, Holder>(workflowId, holder));
            }
        }
    }

    /// <summary>A forwarded call could not even connect to this address: serve here for a while.</summary>
    public void Unreachable(string url) => _unreachable[url] = NowMs + UnreachableMs;

    /// <summary>The other instance that holds the workflow's turn, as far as this one has heard; null if none.</summary>
    private string? HolderElsewhere(string workflowId) =>
        _holders.TryGetValue(workflowId, out var holder) && holder.Instance != self && holder.UntilMs > NowMs ? holder.Instance : null;

    /// <summary>Reads the instance's address into the cache; with Redis unavailable, leaves the cache as it was.</summary>
    private async Task FetchAsync(string instance)
    {
        try
        {
            _addresses[instance] = new Address(await lookUpAddress(instance).ConfigureAwait(false), NowMs);
        }
        catch (Exception)
        {
            // Calls are served here meanwhile, and the next one asks again.
        }
    }

    private void LookUp(string instance)
    {
        if (_lookingUp.TryAdd(instance, true))
        {
            _ = Task.Run(async () =>
            {
                await FetchAsync(instance).ConfigureAwait(false);
                _lookingUp.TryRemove(instance, out _);
            });
        }
    }
}
