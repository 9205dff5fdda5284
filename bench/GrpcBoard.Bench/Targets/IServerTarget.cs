namespace GrpcBoard.Bench.Targets;

/// <summary>The server under test: where to call it and, when known, which process to measure.</summary>
public interface IServerTarget : IAsyncDisposable
{
    /// <summary>The gRPC address, e.g. http://127.0.0.1:41234/.</summary>
    Uri Address { get; }

    /// <summary>Every server's address: more than one with --instances, the first being <see cref="Address"/>.</summary>
    IReadOnlyList<Uri> Addresses => [Address];

    /// <summary>The server's process id for CPU accounting; null when unknown.</summary>
    int? ProcessId { get; }

    /// <summary>One line saying what this target is (printed with the results).</summary>
    string Description { get; }

    /// <summary>
    /// Other processes that belong to the system under test (the redis-server of a Redis-store server): their CPU
    /// is reported with the server's and not counted as other load on the machine.
    /// </summary>
    IReadOnlyList<CompanionProcess> Companions => [];

    /// <summary>host:port of the Redis behind a --store redis server, for its command statistics; null otherwise.</summary>
    string? RedisEndpoint => null;

    /// <summary>With --redis-delay-ms: the delay the relay to Redis actually added so far; null without a relay.</summary>
    string? RelayReport => null;
}

/// <summary>A process measured with the server: a name for the report and its pid.</summary>
public sealed record CompanionProcess(string Name, int Pid);
