using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using GrpcBoard.Api;
using GrpcBoard.Bench.Cli;
using GrpcBoard.Bench.Etcd.Wire;
using GrpcBoard.Bench.LoadGen;
using GrpcBoard.Bench.Measurement;
using GrpcBoard.Bench.Reporting;
using GrpcBoard.Bench.Targets;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>etcd's gRPC methods the tool calls, through GrpcBoard's own wire client.</summary>
public static class EtcdMethods
{
    public static readonly Method<TxnRequest, TxnResponse> Txn = new(MethodType.Unary, "etcdserverpb.KV", "Txn", ProtobufMarshaller.For(TxnRequest.Parser), ProtobufMarshaller.For(TxnResponse.Parser));
    public static readonly Method<RangeRequest, RangeResponse> Range = new(MethodType.Unary, "etcdserverpb.KV", "Range", ProtobufMarshaller.For(RangeRequest.Parser), ProtobufMarshaller.For(RangeResponse.Parser));
    public static readonly Method<LeaseGrantRequest, LeaseGrantResponse> LeaseGrant = new(MethodType.Unary, "etcdserverpb.Lease", "LeaseGrant", ProtobufMarshaller.For(LeaseGrantRequest.Parser), ProtobufMarshaller.For(LeaseGrantResponse.Parser));
}

/// <summary>
/// The claim done with etcd: a transaction "if create_revision(key) == 0 then put key with a lease", each on a new
/// key, by W closed-loop clients (one call at a time each) over --connections HTTP/2 connections, against an etcd
/// the tool starts (single member, fsync on), through the same load generator as the board's claims (GrpcBoard's
/// wire client or the lean one), so that both pay the same client cost on the shared cores. One lease is granted
/// up front and reused. Checked afterwards: every transaction succeeded, a range count finds exactly that many keys,
/// and a second claim of a taken key fails its compare.
/// </summary>
public static class EtcdClaims
{
    private const string Prefix = "claim/";
    private const int MaxConsecutiveErrors = 50;

    public static async Task<CompareRow> RunAsync(BenchOptions o, LoadGenerator generator, Report report, CancellationToken ct)
    {
        report.Section($"etcd: claim = Txn(if create_revision(key) == 0 then put(key, lease)), {Describe(generator)}");
        await using var etcd = await EtcdProcess.StartAsync(ct);
        report.Line("target", etcd.Description);
        report.Line("load", string.Create(Report.Culture, $"{o.Workers} closed-loop clients over {o.Connections} HTTP/2 connection(s) of {Describe(generator)}, {o.EtcdTxns} transactions on new keys '{Prefix}NNNNNNNN'"));
        var channels = Enumerable.Range(0, o.Connections).Select(_ => GrpcChannel.ForAddress(etcd.ClientUrl)).ToArray();
        LeanH2Connection[] lean = [];
        try
        {
            if (generator == LoadGenerator.Lean)
            {
                lean = await Task.WhenAll(Enumerable.Range(0, o.Connections).Select(_ => LeanH2Connection.ConnectAsync(etcd.ClientUrl, ct)));
            }

            var txnHeaders = lean.Select(c => c.RequestHeaders(EtcdMethods.Txn.FullName)).ToArray();
            Func<int, TxnRequest, Task<TxnResponse>> txn = generator == LoadGenerator.Lean
                ? async (worker, request) => TxnResponse.Parser.ParseFrom(await lean[worker % lean.Length].CallAsync(txnHeaders[worker % lean.Length], request.ToByteArray()).ConfigureAwait(false))
                : (worker, request) => channels[worker % channels.Length].UnaryAsync(EtcdMethods.Txn, request, Deadline(ct));
            var lease = await channels[0].UnaryAsync(EtcdMethods.LeaseGrant, new LeaseGrantRequest { TTL = 3600 }, Deadline(ct));
            report.Line("lease", string.Create(Report.Culture, $"{lease.ID} (TTL {lease.TTL} s), granted once and put on every key"));
            if (o.WarmupTasks > 0)
            {
                // Rounds until this tool's JIT is quiet (at most 25 methods compiled in a round), as the claim scenarios do.
                var started = Stopwatch.GetTimestamp();
                for (var round = 0; ; round++)
                {
                    var before = JitActivity.Take(null);
                    var warm = await RunAsync(txn, $"warmup{round}/", o.WarmupTasks, o.Workers, lease.ID, ct);
                    var (methods, _) = JitActivity.Take(null).Since(before);
                    report.Line($"warm-up round {round + 1}", string.Create(Report.Culture, $"{warm.Succeeded} transactions in {warm.Wall.TotalSeconds:0.00} s; JIT: {methods} methods compiled here{(methods <= 25 ? " - quiet" : "")}"));
                    if (methods <= 25 || Stopwatch.GetElapsedTime(started) >= o.WarmupLimit)
                    {
                        break;
                    }
                }
            }

            var window = new ResourceWindow(null, [new CompanionProcess("etcd", etcd.Pid)]);
            window.Start();
            var run = await RunAsync(txn, Prefix, o.EtcdTxns, o.Workers, lease.ID, ct);
            var usage = window.Stop();

            var seconds = run.Wall.TotalSeconds;
            var latency = LatencyStats.From(run.Latencies);
            report.Line("wall time", string.Create(Report.Culture, $"{seconds:0.000} s"));
            report.Line("transactions", string.Create(Report.Culture, $"{run.Succeeded} succeeded ({run.Succeeded / seconds:0.0} claims/s), {run.Failed} compare failed, {run.Errors} errors"));
            report.LatencyTable([("Txn", latency)]);
            report.Section("resources during the measured run");
            report.Resources(usage, run.Wall, run.Succeeded, "claim");

            report.Section("verification (from etcd)");
            var count = await channels[0].UnaryAsync(EtcdMethods.Range, new RangeRequest { Key = Key(""), RangeEnd = RangeEndOf(Prefix), CountOnly = true }, Deadline(ct));
            var again = await channels[0].UnaryAsync(EtcdMethods.Txn, ClaimRequest(Key(Name(0)), ByteString.CopyFromUtf8("second"), lease.ID), Deadline(ct));
            var checks = new List<(bool Ok, string What)>
            {
                (run.Succeeded == o.EtcdTxns, $"every transaction took its key ({run.Succeeded} of {o.EtcdTxns}; {run.Errors} errors)"),
                (count.Count == o.EtcdTxns, $"keys under '{Prefix}' == transactions ({count.Count} vs {o.EtcdTxns})"),
                (!again.Succeeded, $"a second claim of {Name(0)} fails its compare (succeeded={again.Succeeded})"),
            };
            foreach (var (ok, what) in checks)
            {
                report.Line(ok ? "ok" : "FAILED", what);
            }

            var verified = checks.All(c => c.Ok);
            report.Line("verdict", verified ? "PASS" : "FAIL");
            return new CompareRow("etcd 3.4 (Txn, fsync)", "claim (Txn create_revision==0 → put+lease)", generator, o.Workers, run.Succeeded, seconds, run.Succeeded / seconds, latency.P50Ms, latency.P99Ms, usage.OtherCores(run.Wall), verified, "");
        }
        finally
        {
            foreach (var connection in lean)
            {
                await connection.DisposeAsync();
            }

            foreach (var channel in channels)
            {
                channel.Dispose();
            }
        }
    }

    private sealed record TxnRun(TimeSpan Wall, long Succeeded, long Failed, long Errors, IReadOnlyList<LatencyRecorder> Latencies);

    private static string Describe(LoadGenerator generator) => generator == LoadGenerator.Lean ? "the lean HTTP/2 client" : "GrpcBoard's wire client";

    private static async Task<TxnRun> RunAsync(Func<int, TxnRequest, Task<TxnResponse>> txn, string prefix, int count, int workers, long lease, CancellationToken ct)
    {
        var next = -1;
        long succeeded = 0, failed = 0, errors = 0;
        var recorders = Enumerable.Range(0, workers).Select(_ => new LatencyRecorder(count / workers + 256)).ToArray();
        var start = Stopwatch.GetTimestamp();
        await Task.WhenAll(Enumerable.Range(0, workers).Select(w => Task.Run(async () =>
        {
            var value = ByteString.CopyFromUtf8("worker-" + w.ToString(CultureInfo.InvariantCulture));
            var recorder = recorders[w];
            var consecutiveErrors = 0;
            int i;
            while ((i = Interlocked.Increment(ref next)) < count && !ct.IsCancellationRequested)
            {
                var request = ClaimRequest(Key(prefix + i.ToString("D8", CultureInfo.InvariantCulture)), value, lease);
                var t0 = Stopwatch.GetTimestamp();
                try
                {
                    var response = await txn(w, request).ConfigureAwait(false);
                    recorder.Record(Stopwatch.GetTimestamp() - t0);
                    if (response.Succeeded)
                    {
                        Interlocked.Increment(ref succeeded);
                    }
                    else
                    {
                        Interlocked.Increment(ref failed);
                    }

                    consecutiveErrors = 0;
                }
                catch (RpcException) when (!ct.IsCancellationRequested)
                {
                    Interlocked.Increment(ref errors);
                    if (++consecutiveErrors >= MaxConsecutiveErrors)
                    {
                        return;
                    }
                }
            }
        }, ct)));
        return new TxnRun(Stopwatch.GetElapsedTime(start), succeeded, failed, errors, recorders);
    }

    private static TxnRequest ClaimRequest(ByteString key, ByteString value, long lease) => new()
    {
        Compare = { new Compare { Result = Compare.Types.CompareResult.Equal, Target = Compare.Types.CompareTarget.Create, Key = key, CreateRevision = 0 } },
        Success = { new RequestOp { RequestPut = new PutRequest { Key = key, Value = value, Lease = lease } } },
    };

    private static string Name(int i) => Prefix + i.ToString("D8", CultureInfo.InvariantCulture);

    private static ByteString Key(string name) => ByteString.CopyFromUtf8(name.Length == 0 ? Prefix : name);

    /// <summary>The end of a prefix range: the prefix with its last byte plus one ("claim/" → "claim0").</summary>
    private static ByteString RangeEndOf(string prefix) => ByteString.CopyFromUtf8(prefix[..^1] + (char)(prefix[^1] + 1));

    private static CallOptions Deadline(CancellationToken ct) => new(Deadline: DateTimeOffset.UtcNow.AddSeconds(30), CancellationToken: ct);
}
