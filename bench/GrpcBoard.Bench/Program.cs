using GrpcBoard.Bench.Cli;
using GrpcBoard.Bench.Reporting;
using GrpcBoard.Bench.Scenarios;
using GrpcBoard.Bench.Targets;

var help = BenchOptions.Help(ScenarioCatalog.All.Select(s => (s.Name, s.Description)));
if (args.Length == 0 || args.Contains("--help") || args.Contains("-h"))
{
    Console.Write(help);
    return args.Length == 0 ? 2 : 0;
}

var scenario = ScenarioCatalog.Find(args[0]);
if (scenario is null)
{
    Console.Error.WriteLine($"Unknown scenario '{args[0]}'.\n\n{help}");
    return 2;
}

BenchOptions options;
try
{
    options = BenchOptions.Parse(scenario.Name, args[1..]);
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message);
    return 2;
}

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    // First Ctrl+C: stop the workers and shut the server down cleanly.
    e.Cancel = true;
    cancel.Cancel();
};

var report = new Report(Console.Out);
report.Text($"GrpcBoard benchmark: {scenario.Name}");
report.Section("machine");
report.Machine();

if (scenario is ISelfHostedScenario selfHosted)
{
    try
    {
        return await selfHosted.RunAsync(options, report, cancel.Token);
    }
    catch (OperationCanceledException) when (cancel.IsCancellationRequested)
    {
        Console.Error.WriteLine("Cancelled.");
        return 130;
    }
}

IServerTarget started;
try
{
    started = await ServerTargets.StartAsync(options, cancel.Token);
}
catch (MissingToolException ex)
{
    // --store redis without redis-server on this machine: say what to install instead of a stack trace.
    Console.Error.WriteLine(ex.Message);
    return 3;
}

await using var target = started;
await using var clients = new ClientPool(target.Addresses, options.Connections);
try
{
    return await scenario.RunAsync(new BenchContext(options, target, clients, report, cancel.Token));
}
catch (OperationCanceledException) when (cancel.IsCancellationRequested)
{
    Console.Error.WriteLine("Cancelled.");
    return 130;
}
