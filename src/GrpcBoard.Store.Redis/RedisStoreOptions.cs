namespace GrpcBoard.Store.Redis;

public sealed class RedisStoreOptions
{
    /// <summary>StackExchange.Redis configuration: "host:port" (several for a cluster), plus options.</summary>
    public string Configuration { get; set; } = "127.0.0.1:6379";

    /// <summary>First part of every key; lets several boards share one Redis.</summary>
    public string KeyPrefix { get; set; } = "gb";

    /// <summary>Events kept per workflow in its stream; older ones are trimmed (XTRIM MINID).</summary>
    public int MaxEventsPerWorkflow { get; set; } = 100_000;

    /// <summary>Most recent events per workflow kept in each instance's replica, so watchers catch up without Redis.</summary>
    public int RecentEventsInMemory { get; set; } = 4096;

    /// <summary>
    /// Commit batches of one workflow sent to Redis before the first is answered. Each is built on the one
    /// before it; more in flight means smaller batches and less waiting, at a cost per batch. Null chooses by
    /// where Redis runs (<see cref="BatchesInFlight"/>).
    /// </summary>
    public int? MaxBatchesInFlight { get; set; }

    /// <summary>
    /// The batches in flight this configuration gets: <see cref="MaxBatchesInFlight"/> when set, else 1 when
    /// every configured endpoint is on this host (a loopback address or "localhost"), else 2.
    ///
    /// Why: with appendfsync always, Redis fsyncs once per event-loop pass that wrote, so each batch costs
    /// about one fsync. On the same host the round trip is short and the fsync dominates, and a second batch in
    /// flight only halves the batches: on this project's 2-core machine, 6 alternating runs gave one batch
    /// 15% less Redis CPU per claim in every run and 10% more claims per second on average. Across hosts the
    /// network round trip dominates, and a second batch hides it.
    /// </summary>
    public int BatchesInFlight => BatchesInFlightFor(StackExchange.Redis.ConfigurationOptions.Parse(Configuration).EndPoints);

    /// <summary>
    /// <see cref="BatchesInFlight"/> for the Redis nodes the store works with. With Sentinel (<c>serviceName=</c>) the
    /// configuration lists the sentinels, which often run next to the server while the primary does not, so the store
    /// asks with the primary the sentinels named.
    /// </summary>
    internal int BatchesInFlightFor(IReadOnlyCollection<System.Net.EndPoint> endpoints) => MaxBatchesInFlight ?? (AllEndpointsLocal(endpoints) ? 1 : 2);

    private static bool AllEndpointsLocal(IReadOnlyCollection<System.Net.EndPoint> endpoints)
    {
        return endpoints.Count > 0 && endpoints.All(e => e switch
        {
            System.Net.IPEndPoint ip => System.Net.IPAddress.IsLoopback(ip.Address),
            System.Net.DnsEndPoint dns => string.Equals(dns.Host, "localhost", StringComparison.OrdinalIgnoreCase),
            _ => false,
        });
    }

    /// <summary>
    /// PEM file of the certificate authorities that Redis's (and the sentinels') certificates must chain to, with
    /// <c>ssl=true</c> in <see cref="Configuration"/>; null: the machine's trust store. Only these are trusted when given.
    /// </summary>
    public string? TlsCaFile { get; set; }

    /// <summary>PEM certificate this server shows Redis over TLS (Redis asks for one unless <c>tls-auth-clients no</c>); with <see cref="TlsKeyFile"/>.</summary>
    public string? TlsCertificateFile { get; set; }

    /// <summary>PEM private key of <see cref="TlsCertificateFile"/>, in the clear or encrypted (PKCS#8, with <see cref="TlsKeyPassword"/>).</summary>
    public string? TlsKeyFile { get; set; }

    /// <summary>Password of an encrypted <see cref="TlsKeyFile"/>.</summary>
    public string? TlsKeyPassword { get; set; }

    /// <summary>
    /// Commits go over a connection of their own, read by a dedicated thread (<see cref="CommitConnection"/>, over TLS too): to the
    /// primary (alone or with its replicas, or named by Sentinel), or on a Redis Cluster one to the master of each workflow's
    /// slot (<see cref="ClusterLinks"/>); when false, through StackExchange.Redis.
    /// </summary>
    public bool DirectCommits { get; set; } = true;

    /// <summary>
    /// Redis replicas that must hold a committed batch before its callers hear that it committed (Redis's
    /// <c>WAIT</c>, sent right after the commit script on the same connection); 0, the default: none.
    ///
    /// Why: Redis replicates asynchronously, so a replica promoted after its primary died can miss the last
    /// writes the primary acknowledged, and with them claims, results and fencing tokens that callers were
    /// told about (which would then be handed out again). With this set, a batch the replicas did not all get
    /// within <see cref="ReplicaWaitTimeout"/> fails with UNAVAILABLE: it is on the primary, but whether it
    /// survives a failover is unknown, as for a lost reply. On a Redis Cluster, the replicas of the workflow's master,
    /// and only with <see cref="DirectCommits"/>: StackExchange.Redis 1.2.6 cannot send WAIT to the node that owns a
    /// workflow's slot, the direct connections can.
    /// </summary>
    public int ReplicasToWaitFor { get; set; }

    /// <summary>How long a commit waits for <see cref="ReplicasToWaitFor"/> replicas (shorter than the command timeout).</summary>
    public TimeSpan ReplicaWaitTimeout { get; set; } = TimeSpan.FromSeconds(1);

    internal ReplicaWait ReplicaWait => new(ReplicasToWaitFor, (long)ReplicaWaitTimeout.TotalMilliseconds);

    /// <summary>An instance drops its replica of a workflow nobody used for this long (it loads again on the next call).</summary>
    public TimeSpan ReplicaIdleTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long an instance keeps a workflow's turn before passing it to an instance that waits for it
    /// (<see cref="Scripts.Commit"/>). Longer turns make fewer handovers, each of which costs the next
    /// instance a catch-up read, but make the waiting instance's callers wait longer.
    /// </summary>
    public TimeSpan TurnLength { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>
    /// A turn not renewed by a commit for this long lapses, so an instance that died or went idle holding it
    /// delays the others by at most this much. It must cover a handover: the next instance's catch-up read
    /// and first commit.
    /// </summary>
    public TimeSpan TurnLease { get; set; } = TimeSpan.FromMilliseconds(30);

    /// <summary>Times a transaction is re-run after losing a race before the call fails with ABORTED.</summary>
    public int MaxConflictRetries { get; set; } = 64;

    /// <summary>
    /// A file in which this server keeps the store epoch it works with (null: none). A server restarted after
    /// Redis came back empty then finds a different epoch in Redis than in its file, and refuses with
    /// DATA_LOSS, instead of starting a board whose revisions and fencing tokens begin again at 1.
    /// </summary>
    public string? EpochFile { get; set; }

    /// <summary>
    /// With Sentinel, how often the sentinels are asked which node is the primary. A switch they announce
    /// (<c>+switch-master</c>) is followed at once; this catches one that was missed.
    /// </summary>
    public TimeSpan SentinelPollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// With Sentinel: follow only a primary that more than half of the sentinels listed name (all are asked together), and
    /// refuse calls with UNAVAILABLE once no such majority has confirmed the current primary for
    /// <see cref="SentinelConfirmWindow"/>. Why: one sentinel can name a node that still answers as a primary after the
    /// others failed it over (a sentinel cut off with the old primary, or one restarted with an old configuration), and a
    /// write there is lost when that node becomes a replica. The cost: with half of the sentinels unreachable, calls stop.
    /// Off by default (the first sentinel that answers is followed, its answer checked with ROLE).
    /// </summary>
    public bool SentinelMajority { get; set; }

    /// <summary>
    /// With <see cref="SentinelMajority"/>: how long a majority's confirmation of the primary lets calls through. Keep it, plus
    /// the command timeout, below the sentinels' <c>down-after-milliseconds</c>: calls on a primary cut off from the majority
    /// then stop before the majority can have failed it over.
    /// </summary>
    public TimeSpan SentinelConfirmWindow { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>
    /// How long a question to one node on a connection of its own may take (a sentinel, a listed node's role, a primary's
    /// eviction policy): the command timeout, at most 1 s, as Redis's guidelines for Sentinel clients suggest (a short
    /// timeout per node, then the next), so that a node that does not answer holds up the others' checks little.
    /// </summary>
    internal TimeSpan QuestionTimeout => TimeSpan.FromMilliseconds(Math.Min(CommandTimeoutMilliseconds, 1000));

    /// <summary>
    /// With a list of nodes (a primary and its replicas, no Sentinel): how often every listed node is asked its role. While
    /// more than one answers as the primary, calls are refused with UNAVAILABLE (<see cref="NodeListView"/>).
    /// </summary>
    public TimeSpan NodeListCheckInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How often each primary's <c>maxmemory-policy</c> is read; while one may evict the board's keys (<c>allkeys-*</c>),
    /// calls are refused. Also read at start, which fails on such a policy.
    /// </summary>
    public TimeSpan EvictionPolicyCheckInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often the store epoch is checked to detect a Redis that lost its data.</summary>
    public TimeSpan EpochCheckInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How often a pass over every workflow's timers starts, repairing timer hints lost in a crash.</summary>
    public TimeSpan TimerRescanInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Workflows whose timers a pass re-reads per background tick (<see cref="EpochCheckInterval"/>): bounds its load.</summary>
    public int TimerRescanBatch { get; set; } = 256;

    /// <summary>Milliseconds a call waits for Redis before failing with UNAVAILABLE.</summary>
    public int CommandTimeoutMilliseconds { get; set; } = 5000;

    /// <summary>
    /// Fault injection for tests: called after a workflow id is registered, before its creation commits;
    /// throwing abandons the creation there, as a crash or a cancelled call would.
    /// </summary>
    public Action<string>? AfterRegister { get; set; }

    /// <summary>
    /// Fault injection for tests: called with the first configured endpoint (with Sentinel, the primary it named) before
    /// the direct commit connection opens; throwing fails the opening there, as a node that refuses connections would.
    /// </summary>
    public Action<System.Net.EndPoint>? BeforeCommitConnectionOpens { get; set; }

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Configuration) || string.IsNullOrWhiteSpace(KeyPrefix) || KeyPrefix.Contains('{') || KeyPrefix.Contains('}'))
        {
            throw new ArgumentException("Redis configuration and a key prefix without braces are required.");
        }

        if (TurnLength < TimeSpan.Zero || TurnLease < TimeSpan.FromMilliseconds(1))
        {
            throw new ArgumentException("TurnLength must not be negative, and TurnLease must be at least 1 ms.");
        }

        if (ReplicasToWaitFor < 0 || ReplicasToWaitFor > 0
            && (ReplicaWaitTimeout < TimeSpan.FromMilliseconds(1) || ReplicaWaitTimeout.TotalMilliseconds >= CommandTimeoutMilliseconds))
        {
            throw new ArgumentException("ReplicasToWaitFor must not be negative, and ReplicaWaitTimeout must be at least 1 ms and shorter than the command timeout.");
        }

        if (SentinelPollInterval <= TimeSpan.Zero || SentinelMajority && SentinelConfirmWindow <= SentinelPollInterval
            || NodeListCheckInterval <= TimeSpan.Zero || EvictionPolicyCheckInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException("SentinelPollInterval, NodeListCheckInterval and EvictionPolicyCheckInterval must be positive, and SentinelConfirmWindow longer than SentinelPollInterval.");
        }

        if (MaxEventsPerWorkflow < 16 || MaxConflictRetries < 1 || RecentEventsInMemory < 16 || MaxBatchesInFlight is < 1 || TimerRescanBatch < 1)
        {
            throw new ArgumentException("MaxEventsPerWorkflow and RecentEventsInMemory must be at least 16, MaxConflictRetries, MaxBatchesInFlight and TimerRescanBatch at least 1.");
        }
    }
}

/// <summary>What a commit waits for after it ran: <see cref="RedisStoreOptions.ReplicasToWaitFor"/> replicas, for at most this long.</summary>
internal readonly record struct ReplicaWait(int Replicas, long TimeoutMs);
