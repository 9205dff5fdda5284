using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using GrpcBoard.Api.V1;
using GrpcBoard.Bench.Measurement;
using GrpcBoard.Bench.Reporting;
using GrpcBoard.Client;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>
/// watch-fanout: --watchers Watch streams "from now" on one workflow, spread over --watch-channels client channels
/// (one HTTP/2 connection each; the server allows 1000 streams per connection), all in this process. Once every
/// stream has reported that it caught up, one writer makes --watch-rate PutNote changes per second for
/// --watch-seconds, each note's value holding the Stopwatch timestamp taken just before the call (CLOCK_MONOTONIC,
/// the same clock in every process of the machine). Measured: every watcher gets every change exactly once and in
/// order (revisions checked), delivery latency from that timestamp and from the moment the write call returned,
/// how long until the last watcher had each change, the server's RSS per idle watcher, and the CPU of server and
/// client (the client side of 10,000 streams is not free: it runs on the same two cores).
/// </summary>
public sealed class WatchFanoutScenario : IScenario
{
    public string Name => "watch-fanout";

    public string Description => "N Watch streams on one workflow over C channels; PutNote at a steady rate; every watcher gets every change? latency, server memory per watcher.";

    public async Task<int> RunAsync(BenchContext context)
    {
        var o = context.Options;
        var report = context.Report;
        var ct = context.CancellationToken;
        var events = Math.Max(1, (int)Math.Round(o.WatchRate * o.WatchDuration.TotalSeconds));
        report.Section("parameters");
        foreach (var (key, value) in o.Describe(TimeSpan.Zero).Where(p => p.Name is "scenario" or "server" or "store" or "server log level" or "server environment"))
        {
            report.Line(key, value);
        }

        report.Line("watchers", string.Create(Report.Culture, $"{o.Watchers} Watch streams from now (start_revision 0), all kinds, on one workflow"));
        report.Line("client channels", string.Create(Report.Culture, $"{o.WatchChannels} (one BoardClient/GrpcChannel each: {Math.Ceiling(o.Watchers / (double)o.WatchChannels):0} streams per connection), in this process"));
        report.Line("changes", string.Create(Report.Culture, $"{events} PutNote calls at {o.WatchRate:0.##}/s for {o.WatchDuration.TotalSeconds:0.##} s, one writer on its own channel, one key overwritten"));
        report.Line("target", context.Target.Description);

        var clients = Enumerable.Range(0, o.WatchChannels).Select(_ => new BoardClient(context.Target.Address.ToString())).ToArray();
        try
        {
            if (o.WarmupTasks > 0)
            {
                // The watch path of server and tool, JIT-compiled on a small round that is not counted.
                var warm = await RoundAsync(context, clients, $"bench-watch-warmup-{context.RunId}", Math.Min(o.Watchers, 500), Math.Min(events, 100), Math.Max(o.WatchRate, 50), null);
                report.Section("warm-up (not counted)");
                report.Line("round", string.Create(Report.Culture, $"{warm.Watchers.Length} watchers, {warm.Writes.Count} changes, {warm.Delivered} of {warm.Watchers.Length * (long)warm.Writes.Count} deliveries"));
                await warm.DisposeAsync();
            }

            var round = await RoundAsync(context, clients, $"bench-watch-{context.RunId}", o.Watchers, events, o.WatchRate, report);
            var exit = Verify(report, round);
            await round.DisposeAsync();
            return exit;
        }
        finally
        {
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }
    }

    /// <summary>Opens the watchers, measures memory, writes the changes, waits for their delivery; with a report, prints what it measured.</summary>
    private static async Task<FanoutRound> RoundAsync(BenchContext context, BoardClient[] clients, string workflowId, int watcherCount, int events, double rate, Report? report)
    {
        var ct = context.CancellationToken;
        var pid = context.Target.ProcessId;
        await BoardSetup.CreateWorkflowAsync(context.Clients.Main, workflowId, "watch fan-out benchmark", ct);
        var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var round = new FanoutRound(stop);

        await Task.Delay(TimeSpan.FromSeconds(report is null ? 0 : 2), ct);
        var rssBefore = Rss(pid);
        var toolBefore = Rss(Environment.ProcessId);
        var opening = Stopwatch.GetTimestamp();
        round.Watchers = Enumerable.Range(0, watcherCount).Select(_ => new Watcher(events)).ToArray();
        round.Loops = round.Watchers.Select((w, i) => w.RunAsync(clients[i % clients.Length], workflowId, stop.Token)).ToArray();
        var ready = Task.WhenAll(round.Watchers.Select(w => w.CaughtUp));
        if (await Task.WhenAny(ready, Task.Delay(TimeSpan.FromSeconds(120), ct)) != ready)
        {
            throw new TimeoutException($"Only {round.Watchers.Count(w => w.CaughtUp.IsCompletedSuccessfully)} of {watcherCount} watchers caught up within 120 s.");
        }

        var heads = (await ready).Distinct().ToArray();
        if (heads.Length != 1)
        {
            throw new InvalidOperationException($"The watchers caught up at different revisions ({string.Join(", ", heads.Take(5))}): something else wrote to {workflowId}.");
        }

        var opened = Stopwatch.GetElapsedTime(opening);
        round.Head = heads[0];
        if (report is not null)
        {
            // Idle: let the server settle (thread pool, buffers) before reading its memory.
            await Task.Delay(TimeSpan.FromSeconds(3), ct);
            var rssIdle = Rss(pid);
            var toolIdle = Rss(Environment.ProcessId);
            report.Section("watchers established");
            report.Line("open", string.Create(Report.Culture, $"{watcherCount} streams caught up in {opened.TotalSeconds:0.00} s ({watcherCount / opened.TotalSeconds:0} streams/s), all at revision {round.Head}"));
            report.Line("http/2 connections", CountConnections(context.Target.Address.Port) is { } n ? $"{n} established to port {context.Target.Address.Port} ({clients.Length} watch channels + {context.Clients.Count} for the writer)" : "unknown");
            if (rssBefore is { } before && rssIdle is { } idle)
            {
                report.Line("server rss", string.Create(Report.Culture, $"{before / 1024.0:0.0} MiB before, {idle / 1024.0:0.0} MiB with {watcherCount} idle watchers: {(idle - before) / 1024.0:0.0} MiB = {(idle - before) * 1024.0 / watcherCount / 1024:0.0} KiB per watcher"));
            }

            if (toolBefore is { } tb && toolIdle is { } ti)
            {
                report.Line("client rss", string.Create(Report.Culture, $"{(ti - tb) / 1024.0:0.0} MiB more in this process: {(ti - tb) / (double)watcherCount:0.0} KiB per watcher (client side)"));
            }
        }

        var window = new ResourceWindow(pid, context.Target.Companions);
        window.Start();
        var writing = Stopwatch.GetTimestamp();
        round.Writes = await WriteAsync(context.Clients.Main, workflowId, events, rate, ct);
        var writeSeconds = Stopwatch.GetElapsedTime(writing).TotalSeconds;

        // Delivered when every watcher has every change, or nothing moved for 10 s.
        var expected = watcherCount * (long)events;
        long last = -1;
        var lastMove = Stopwatch.GetTimestamp();
        while (round.Delivered < expected && Stopwatch.GetElapsedTime(lastMove) < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(50, ct);
            var now = round.Delivered;
            if (now != last)
            {
                last = now;
                lastMove = Stopwatch.GetTimestamp();
            }
        }

        var phase = Stopwatch.GetElapsedTime(writing);
        var usage = window.Stop();
        if (report is not null)
        {
            Results(report, round, events, writeSeconds, phase, usage);
        }

        return round;
    }

    private static void Results(Report report, FanoutRound round, int events, double writeSeconds, TimeSpan phase, ResourceUsage usage)
    {
        var writes = round.Writes;
        var expected = round.Watchers.Length * (long)events;
        report.Section("results: watch-fanout");
        report.Line("changes written", string.Create(Report.Culture,
            $"{writes.Count} in {writeSeconds:0.000} s ({writes.Count / writeSeconds:0.0}/s; asked {events / Math.Max(writeSeconds, 1e-9):0.0}), revisions {writes.FirstRevision}..{writes.LastRevision}, max lag behind schedule {writes.MaxLagMs:0.0} ms"));
        report.Line("deliveries", string.Create(Report.Culture,
            $"{round.Delivered} of {expected} ({round.Delivered / phase.TotalSeconds:0} per second over {phase.TotalSeconds:0.00} s until the last arrived)"));

        var fromSend = new List<LatencyRecorder>();
        var fromAck = new List<LatencyRecorder>();
        var lastWatcher = new LatencyRecorder(events);
        var slowest = new long[events];
        Array.Fill(slowest, long.MinValue);
        foreach (var w in round.Watchers)
        {
            var send = new LatencyRecorder(w.Count);
            var ack = new LatencyRecorder(w.Count);
            for (var i = 0; i < Math.Min(w.Count, events); i++)
            {
                var received = w.ReceivedAt[i];
                if (received == 0)
                {
                    continue;
                }

                send.Record(received - w.SentAt[i]);
                ack.Record(received - writes.AckAt[i]);
                slowest[i] = Math.Max(slowest[i], received - writes.SentAt[i]);
            }

            fromSend.Add(send);
            fromAck.Add(ack);
        }

        foreach (var s in slowest.Where(s => s != long.MinValue))
        {
            lastWatcher.Record(s);
        }

        report.LatencyTable(
        [
            ("PutNote (the write)", LatencyStats.From([writes.CallLatency])),
            ("delivery from send", LatencyStats.From(fromSend)),
            ("delivery from write ack", LatencyStats.From(fromAck)),
            ("last watcher, per change", LatencyStats.From([lastWatcher])),
        ]);
        report.Text("  (from send: receipt minus the timestamp in the note, taken before the PutNote call; from write ack: receipt minus the");
        report.Text("   moment PutNote returned, negative when the event arrived first; last watcher: per change, the slowest of all watchers, from send)");
        report.Section("resources while changes were written and delivered");
        report.Resources(usage, phase, Math.Max(1, round.Delivered), "delivery");
    }

    private static int Verify(Report report, FanoutRound round)
    {
        var writes = round.Writes;
        var events = writes.Count;
        report.Section("verification");
        var failures = 0;
        void Check(bool ok, string what)
        {
            report.Line(ok ? "ok" : "FAILED", what);
            failures += ok ? 0 : 1;
        }

        Check(writes.FirstRevision == round.Head + 1 && writes.LastRevision == round.Head + events,
            $"the changes are revisions {round.Head + 1}..{round.Head + events} (got {writes.FirstRevision}..{writes.LastRevision}): nothing else wrote");
        var complete = round.Watchers.Count(w => w.Count == events && w.Gaps == 0 && w.Unexpected == 0);
        Check(complete == round.Watchers.Length, $"every watcher got every change once, in order, no gaps ({complete} of {round.Watchers.Length})");
        var missing = round.Watchers.Sum(w => Math.Max(0, events - w.Count));
        var gaps = round.Watchers.Sum(w => w.Gaps);
        var unexpected = round.Watchers.Sum(w => w.Unexpected);
        var errors = round.Watchers.Where(w => w.Error is not null).ToArray();
        Check(missing == 0 && gaps == 0 && unexpected == 0, $"missing deliveries {missing}, revision gaps {gaps}, unexpected (duplicate, out of order, wrong note) {unexpected}");
        Check(errors.Length == 0, $"no watch stream failed ({errors.Length}{(errors.Length > 0 ? ": " + errors[0].Error!.Message : "")})");
        report.Line("verdict", failures == 0 ? "PASS" : $"FAIL ({failures} check(s))");
        return failures == 0 ? 0 : 1;
    }

    /// <summary>One writer, paced to a steady rate: change k is sent at start + k / rate (later if the previous call was slow).</summary>
    private static async Task<Writes> WriteAsync(BoardClient client, string workflowId, int events, double rate, CancellationToken ct)
    {
        var writes = new Writes(events);
        var value = new byte[8];
        var start = Stopwatch.GetTimestamp();
        for (var k = 0; k < events; k++)
        {
            var due = start + (long)(k / rate * Stopwatch.Frequency);
            while (Stopwatch.GetTimestamp() is var now && now < due)
            {
                var wait = (due - now) * 1000.0 / Stopwatch.Frequency;
                if (wait > 2)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(wait - 1.5), ct);
                }
                else
                {
                    Thread.Yield();
                }
            }

            var sent = Stopwatch.GetTimestamp();
            writes.MaxLagMs = Math.Max(writes.MaxLagMs, (sent - due) * 1000.0 / Stopwatch.Frequency);
            BinaryPrimitives.WriteInt64LittleEndian(value, sent);
            var response = await client.PutNoteAsync(new PutNoteRequest { WorkflowId = workflowId, Key = "fanout", Value = ByteString.CopyFrom(value), Writer = "bench-writer" }, new CallOptions(CancellationToken: ct));
            var acked = Stopwatch.GetTimestamp();
            writes.Add(sent, acked, response.Note.ModRevision);
        }

        return writes;
    }

    private static long? Rss(int? pid)
    {
        if (pid is null || !File.Exists($"/proc/{pid}/status"))
        {
            return null;
        }

        var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return line is null ? null : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }

    private static int? CountConnections(int port)
    {
        var count = 0;
        foreach (var file in new[] { "/proc/net/tcp", "/proc/net/tcp6" }.Where(File.Exists))
        {
            foreach (var line in File.ReadLines(file).Skip(1))
            {
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length > 3 && fields[3] == "01"
                    && int.Parse(fields[2].AsSpan(fields[2].LastIndexOf(':') + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture) == port)
                {
                    count++;
                }
            }
        }

        return File.Exists("/proc/net/tcp") ? count : null;
    }

    private sealed class FanoutRound(CancellationTokenSource stop) : IAsyncDisposable
    {
        public Watcher[] Watchers { get; set; } = [];

        public Task[] Loops { get; set; } = [];

        public Writes Writes { get; set; } = new(0);

        public long Head { get; set; }

        public long Delivered => Watchers.Sum(w => (long)Volatile.Read(ref w.Count));

        public async ValueTask DisposeAsync()
        {
            await stop.CancelAsync();
            await Task.WhenAny(Task.WhenAll(Loops), Task.Delay(TimeSpan.FromSeconds(30)));
            stop.Dispose();
        }
    }

    private sealed class Writes(int capacity)
    {
        public long[] SentAt { get; } = new long[capacity];

        public long[] AckAt { get; } = new long[capacity];

        public LatencyRecorder CallLatency { get; } = new(capacity);

        public int Count { get; private set; }

        public long FirstRevision { get; private set; }

        public long LastRevision { get; private set; }

        public double MaxLagMs { get; set; }

        public void Add(long sent, long acked, long revision)
        {
            SentAt[Count] = sent;
            AckAt[Count] = acked;
            CallLatency.Record(acked - sent);
            FirstRevision = Count == 0 ? revision : FirstRevision;
            LastRevision = revision;
            Count++;
        }
    }

    /// <summary>One Watch stream: receipt times by change index (revision - head - 1), checked for gaps and order as they come.</summary>
    private sealed class Watcher(int events)
    {
        private readonly TaskCompletionSource<long> _caughtUp = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private long _head;
        private long _last;

        public int Count;

        public long[] ReceivedAt { get; } = new long[events];

        public long[] SentAt { get; } = new long[events];

        public int Gaps { get; private set; }

        public int Unexpected { get; private set; }

        public Exception? Error { get; private set; }

        /// <summary>The revision the stream caught up at (the head when it started).</summary>
        public Task<long> CaughtUp => _caughtUp.Task;

        public async Task RunAsync(BoardClient client, string workflowId, CancellationToken ct)
        {
            try
            {
                await using var call = client.Watch(new WatchRequest { WorkflowId = workflowId, StartRevision = 0 }, new CallOptions(CancellationToken: ct));
                await foreach (var message in call.ReadAllAsync(ct).ConfigureAwait(false))
                {
                    if (message.Progress is { CaughtUp: true } progress && !_caughtUp.Task.IsCompleted)
                    {
                        _head = _last = progress.Revision;
                        _caughtUp.TrySetResult(progress.Revision);
                    }
                    else if (message.Event is { } e)
                    {
                        var now = Stopwatch.GetTimestamp();
                        var index = e.Revision - _head - 1;
                        if (e.Revision != _last + 1)
                        {
                            if (e.Revision > _last + 1)
                            {
                                Gaps++;
                            }
                            else
                            {
                                Unexpected++;
                                continue;
                            }
                        }

                        _last = e.Revision;
                        if (index < 0 || index >= ReceivedAt.Length || e.Note is not { Key: "fanout" } note || note.Value.Length != 8)
                        {
                            Unexpected++;
                            continue;
                        }

                        ReceivedAt[index] = now;
                        SentAt[index] = BinaryPrimitives.ReadInt64LittleEndian(note.Value.Span);
                        Volatile.Write(ref Count, Count + 1);
                    }
                }
            }
            catch (Exception ex) when (ct.IsCancellationRequested && ex is OperationCanceledException or RpcException)
            {
                // Stopped by the scenario.
            }
            catch (Exception ex)
            {
                Error = ex;
                _caughtUp.TrySetException(ex);
            }
        }
    }
}
