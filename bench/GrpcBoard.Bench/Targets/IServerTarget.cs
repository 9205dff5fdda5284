namespace GrpcBoard.Bench.Targets;

/// <summary>The server under test: where to call it and, when known, which process to measure.</summary>
public interface IServerTarget : IAsyncDisposable
{
    /// <summary>The gRPC address, e.g. http://127.0.0.1:41234/.</summary>
    Uri Address { get; }

    /// <summary>The server's process id for CPU accounting; null when unknown.</summary>
    int? ProcessId { get; }

    /// <summary>One line saying what this target is (printed with the results).</summary>
    string Description { get; }
}
