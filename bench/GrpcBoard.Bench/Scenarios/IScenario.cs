namespace GrpcBoard.Bench.Scenarios;

/// <summary>
/// One benchmark. A scenario gets a running target, clients and the options, prints its own parameters and
/// results through the context's report, and returns the exit code (0, or 1 when its checks failed).
/// To add one: implement this and list it in <see cref="ScenarioCatalog"/>.
/// </summary>
public interface IScenario
{
    string Name { get; }

    string Description { get; }

    Task<int> RunAsync(BenchContext context);
}

/// <summary>
/// A scenario that starts every system it measures itself (compare: several servers, a redis-server, etcd), so the
/// tool starts no server for it.
/// </summary>
public interface ISelfHostedScenario : IScenario
{
    Task<int> RunAsync(Cli.BenchOptions options, Reporting.Report report, CancellationToken cancellationToken);
}

public static class ScenarioCatalog
{
    public static IReadOnlyList<IScenario> All { get; } =
    [
        new ClaimScenario("claim-complete", completes: true),
        new ClaimScenario("claim-only", completes: false),
        new PostScenario(),
        new CompareScenario(),
        new WatchFanoutScenario(),
    ];

    public static IScenario? Find(string name) => All.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase));
}
