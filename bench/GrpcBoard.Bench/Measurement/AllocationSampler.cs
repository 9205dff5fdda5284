using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace GrpcBoard.Bench.Measurement;

/// <summary>
/// Which types this process allocates, and how much of each, from the runtime's AllocationTick events: one for about every
/// 100 KB allocated, naming the type of the object that crossed the mark, so each type's share is sampled in proportion
/// to its bytes. With <c>--in-process</c> that covers the server and the load generator together.
/// </summary>
/// <remarks>
/// Why in the tool: the machine has no dotnet-trace, and the counters give a total only. A total said where to look
/// (11.9 KiB per claim); the types said what: a <c>System.Diagnostics.Activity</c> per call from the host's request
/// diagnostics, with its ExecutionContext changes (bench/GrpcBoard.Bench/JOURNAL.md).
/// </remarks>
public sealed class AllocationSampler : EventListener
{
    private const string RuntimeSource = "Microsoft-Windows-DotNETRuntime";
    private const long GcKeyword = 0x1;
    private readonly ConcurrentDictionary<string, long> _bytes = new(StringComparer.Ordinal);
    private volatile bool _recording;

    public void Start() => _recording = true;

    /// <summary>Stops recording; the sampled bytes per type, largest first.</summary>
    public IReadOnlyList<(string Type, long Bytes)> Stop()
    {
        _recording = false;
        return _bytes.OrderByDescending(kv => kv.Value).Select(kv => (kv.Key, kv.Value)).ToList();
    }

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == RuntimeSource)
        {
            // Verbose: AllocationTick is a verbose GC event.
            EnableEvents(source, EventLevel.Verbose, (EventKeywords)GcKeyword);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (!_recording || e.EventName is null || !e.EventName.StartsWith("GCAllocationTick", StringComparison.Ordinal) || e.PayloadNames is not { } names)
        {
            return;
        }

        var type = names.IndexOf("TypeName") is var t and >= 0 ? e.Payload![t] as string ?? "?" : "?";
        var amount = names.IndexOf("AllocationAmount64") is var a and >= 0 ? Convert.ToInt64(e.Payload![a], System.Globalization.CultureInfo.InvariantCulture) : 0;
        _bytes.AddOrUpdate(type, amount, (_, sum) => sum + amount);
    }
}
