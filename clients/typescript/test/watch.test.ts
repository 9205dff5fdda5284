// Watch: resuming after real disconnects with no gap and no duplicate, OUT_OF_RANGE on compacted history,
// the end of a deleted workflow's stream, and the resume rule itself.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  BoardClient,
  BoardError,
  EventKind,
  EventSchema,
  HistoryCompactedError,
  WatchProgressSchema,
  WatchResponseSchema,
  WatchResume,
  duration,
  utf8,
  type Event,
} from "../src/index.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { startProxy, type TcpProxy } from "./helpers/proxy.js";
import { deferred, uniqueId, withTimeout } from "./helpers/util.js";

const T = { timeout: 60_000 };

function assertConsecutive(revisions: bigint[], from: bigint, to: bigint): void {
  const expected: bigint[] = [];
  for (let r = from; r <= to; r++) expected.push(r);
  assert.deepEqual(revisions, expected, "every revision exactly once, in order");
}

describe("watch against a server", () => {
  let server: TestServer;
  let client: BoardClient;
  let proxy: TcpProxy;

  before(async () => {
    server = await startServer();
    client = new BoardClient(server.target, { defaultTimeoutMs: 10_000 });
    proxy = await startProxy(server.target);
  });

  after(async () => {
    client?.close();
    await proxy?.close();
    await server?.stop();
  });

  test("resumes after forced disconnects mid-stream: consecutive revisions, no duplicates, no gaps", T, async () => {
    const id = uniqueId("watch-resume");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    // History to replay: 1 (created) + 60 notes.
    for (let i = 0; i < 60; i++) {
      await client.putNote({ workflowId: id, key: `n/${i}`, value: utf8("x".repeat(2000)) });
    }
    const viaProxy = new BoardClient(proxy.target);
    const stop = new AbortController();
    const revisions: bigint[] = [];
    const reconnects: bigint[] = [];
    const total = 1 + 60 + 40 + 40;
    let writer: Promise<void> | undefined;
    try {
      const accepted = proxy.accepted;
      const consume = (async () => {
        for await (const e of viaProxy.watch(
          { workflowId: id, startRevision: 1n },
          { signal: stop.signal, maxBackoffMs: 200, onReconnect: (_err, next) => reconnects.push(next) },
        )) {
          revisions.push(e.revision);
          if (revisions.length === 10) {
            // Mid-replay: cut the connection while the server is still sending history.
            proxy.dropAll();
          }
          if (revisions.length === 70) {
            // Live phase: keep writing while the connection is cut again.
            writer = (async () => {
              for (let i = 0; i < 40; i++) {
                await client.putNote({ workflowId: id, key: `live/${i}`, value: utf8("y") });
                if (i === 10) proxy.dropAll();
              }
            })();
          }
          if (revisions.length === 61) {
            // Caught up with history: more changes after this disconnect must arrive too.
            proxy.dropAll();
            for (let i = 0; i < 40; i++) {
              await client.putNote({ workflowId: id, key: `gap/${i}`, value: utf8("z") });
            }
          }
          if (revisions.length >= total) return;
        }
      })();
      await withTimeout(consume, 45_000, `${total} events`);
      await withTimeout(writer ?? Promise.resolve(), 10_000, "the writer");
      assertConsecutive(revisions, 1n, BigInt(total));
      assert.ok(reconnects.length >= 3, `reconnected ${reconnects.length} times`);
      assert.ok(proxy.accepted - accepted >= 4, "new TCP connections were opened");
      // Each reconnect resumed right after what had been delivered.
      for (const next of reconnects) {
        assert.ok(next >= 2n && next <= BigInt(total) + 1n);
      }
    } finally {
      stop.abort();
      viaProxy.close();
    }
  });

  test("a watch from now (0) resumes from progress without missing changes made while disconnected", T, async () => {
    const id = uniqueId("watch-now");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.putNote({ workflowId: id, key: "before", value: utf8("old") });
    const viaProxy = new BoardClient(proxy.target);
    const stop = new AbortController();
    const seen: Event[] = [];
    let reconnects = 0;
    const progressed = deferred<bigint>();
    try {
      const it = viaProxy.watch(
        { workflowId: id, startRevision: 0n, progressInterval: duration(100) },
        { signal: stop.signal, maxBackoffMs: 200, onReconnect: () => reconnects++, onProgress: (p) => progressed.resolve(p.revision) },
      );
      const consume = (async () => {
        for await (const e of it) {
          seen.push(e);
          if (seen.length === 3) return;
        }
      })();
      // The stream reports its position (revision 2), then is cut and changes are made while it is down.
      assert.equal(await withTimeout(progressed.promise, 10_000, "a progress message"), 2n);
      proxy.dropAll();
      await client.putNote({ workflowId: id, key: "during-1", value: utf8("a") });
      await client.putNote({ workflowId: id, key: "during-2", value: utf8("b") });
      await client.putNote({ workflowId: id, key: "after", value: utf8("c") });
      await withTimeout(consume, 20_000, "three events");
      assert.deepEqual(
        seen.map((e) => [e.revision, e.note?.key]),
        [
          [3n, "during-1"],
          [4n, "during-2"],
          [5n, "after"],
        ],
      );
      assert.ok(reconnects >= 1);
    } finally {
      stop.abort();
      viaProxy.close();
    }
  });

  test("a silently stalled stream (half-open connection) is dropped after the idle timeout and resumed without gaps", T, async () => {
    const id = uniqueId("watch-stall");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const viaProxy = new BoardClient(proxy.target);
    const stop = new AbortController();
    const revisions: bigint[] = [];
    const reconnects: { error: BoardError; next: bigint }[] = [];
    const first = deferred();
    const reconnected = deferred();
    const total = 1n + 10n + 10n;
    try {
      const accepted = proxy.accepted;
      // Progress every 200 ms and no idleTimeoutMs: the default idle timeout is 600 ms.
      const consume = (async () => {
        for await (const e of viaProxy.watch(
          { workflowId: id, startRevision: 1n, progressInterval: duration(200) },
          {
            signal: stop.signal,
            maxBackoffMs: 200,
            onReconnect: (error, next) => {
              reconnects.push({ error, next });
              reconnected.resolve();
            },
          },
        )) {
          revisions.push(e.revision);
          if (e.revision === 1n) first.resolve();
          if (e.revision >= total) return;
        }
      })();
      await withTimeout(first.promise, 10_000, "the first event");
      // The connection goes silent: no error, no close, no bytes. Changes keep being made meanwhile.
      proxy.stallAll();
      for (let i = 0; i < 10; i++) {
        await client.putNote({ workflowId: id, key: `during/${i}`, value: utf8("x") });
      }
      await withTimeout(reconnected.promise, 10_000, "the watch to give up on the silent stream");
      // Live changes after the reconnect arrive too.
      for (let i = 0; i < 10; i++) {
        await client.putNote({ workflowId: id, key: `after/${i}`, value: utf8("y") });
      }
      await withTimeout(consume, 20_000, `${total} events through a new connection`);
      assertConsecutive(revisions, 1n, total);
      assert.equal(reconnects[0]!.error.codeName, "DEADLINE_EXCEEDED");
      assert.equal(reconnects[0]!.next, 2n, "resumed right after the last delivered revision");
      assert.ok(proxy.accepted > accepted + 1, "the stalled connection was replaced by a new one");
    } finally {
      stop.abort();
      viaProxy.close();
    }
  });

  test("a quiet but healthy stream is kept: progress messages reset the idle timeout", T, async () => {
    const id = uniqueId("watch-quiet");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const stop = new AbortController();
    let reconnects = 0;
    let progress = 0;
    const enough = deferred();
    try {
      const it = client.watch(
        { workflowId: id, startRevision: 2n, progressInterval: duration(100) },
        {
          signal: stop.signal,
          idleTimeoutMs: 350,
          onReconnect: () => reconnects++,
          onProgress: () => {
            // Twelve progress messages: about 1.2 s, over three idle timeouts, without a single event.
            if (++progress === 12) enough.resolve();
          },
        },
      );
      const consume = it.next().catch(() => undefined);
      await withTimeout(enough.promise, 15_000, "twelve progress messages");
      assert.equal(reconnects, 0, "no reconnect while progress arrives");
      stop.abort();
      await consume;
    } finally {
      stop.abort();
    }
  });

  test("unknown workflow: the watch throws NOT_FOUND / WORKFLOW_NOT_FOUND instead of retrying", T, async () => {
    const it = client.watch({ workflowId: uniqueId("nowhere"), startRevision: 1n });
    const e = await withTimeout(it.next().then(() => undefined, (err: unknown) => err), 10_000, "the watch to fail");
    assert.ok(e instanceof BoardError, `BoardError, got ${String(e)}`);
    assert.equal(e.codeName, "NOT_FOUND");
    assert.equal(e.reason, "WORKFLOW_NOT_FOUND");
  });

  test("deleting the workflow delivers WORKFLOW_DELETED and ends the iteration", T, async () => {
    const id = uniqueId("watch-delete");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const kinds: EventKind[] = [];
    const consume = (async () => {
      for await (const e of client.watch({ workflowId: id, startRevision: 1n })) {
        kinds.push(e.kind);
        if (e.kind === EventKind.WORKFLOW_CREATED) await client.deleteWorkflow({ workflowId: id });
      }
    })();
    await withTimeout(consume, 10_000, "the stream to end");
    assert.deepEqual(kinds, [EventKind.WORKFLOW_CREATED, EventKind.WORKFLOW_DELETED]);
  });

  test("aborting the signal ends a watch that is waiting for events", T, async () => {
    const id = uniqueId("watch-abort");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const stop = new AbortController();
    const it = client.watch({ workflowId: id, startRevision: 2n }, { signal: stop.signal });
    const next = it.next().then(
      () => "value",
      (err: unknown) => err,
    );
    setTimeout(() => stop.abort(new Error("enough")), 200);
    const result = await withTimeout(next, 10_000, "the aborted watch");
    assert.ok(result instanceof Error && result.message === "enough", `the abort reason, got ${String(result)}`);
  });
});

describe("watch with compacted history", () => {
  let server: TestServer;
  let client: BoardClient;

  before(async () => {
    // Needs its own server: only 16 events retained per workflow.
    server = await startServer({ args: ["--history", "16"], own: true });
    client = new BoardClient(server.target, { defaultTimeoutMs: 10_000 });
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("watching from a compacted revision throws OUT_OF_RANGE / HISTORY_COMPACTED with oldest_revision", T, async () => {
    const id = uniqueId("watch-compacted");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    for (let i = 0; i < 45; i++) {
      await client.putNote({ workflowId: id, key: `k/${i}`, value: utf8(String(i)) });
    }
    const head = (await client.getWorkflow({ workflowId: id })).workflow!.revision;
    assert.equal(head, 46n);

    const it = client.watch({ workflowId: id, startRevision: 1n });
    const e = await withTimeout(it.next().then(() => undefined, (err: unknown) => err), 10_000, "the watch to fail");
    assert.ok(e instanceof HistoryCompactedError, `HistoryCompactedError, got ${String(e)}`);
    assert.ok(e instanceof BoardError, "still a BoardError");
    assert.equal(e.name, "HistoryCompactedError");
    assert.equal(e.codeName, "OUT_OF_RANGE");
    assert.equal(e.reason, "HISTORY_COMPACTED");
    assert.equal(e.isTransient, false);
    const oldest = BigInt(e.metadata.oldest_revision ?? "0");
    assert.ok(oldest > 1n && oldest <= head, `oldest_revision ${oldest}`);
    assert.equal(e.oldestRevision, oldest, "the oldest available revision, as a bigint");
    assert.equal(e.headRevision, head);
    assert.equal(e.metadata.revision, String(head));
    // The raw stream reports it the same way.
    const raw = await withTimeout(
      client.watchStream({ workflowId: id, startRevision: 1n }).next().then(() => undefined, (err: unknown) => err),
      10_000,
      "the raw stream to fail",
    );
    assert.ok(raw instanceof HistoryCompactedError && raw.oldestRevision === oldest, `HistoryCompactedError, got ${String(raw)}`);

    // From the oldest retained revision on, the history is complete.
    const revisions: bigint[] = [];
    const stop = new AbortController();
    await withTimeout(
      (async () => {
        for await (const ev of client.watch({ workflowId: id, startRevision: oldest }, { signal: stop.signal })) {
          revisions.push(ev.revision);
          if (ev.revision === head) return;
        }
      })(),
      10_000,
      "the retained history",
    );
    stop.abort();
    assertConsecutive(revisions, oldest, head);
  });
});

describe("WatchResume", () => {
  const event = (revision: bigint) => create(WatchResponseSchema, { message: { case: "event", value: create(EventSchema, { revision }) } });
  const progress = (revision: bigint) => create(WatchResponseSchema, { message: { case: "progress", value: create(WatchProgressSchema, { revision }) } });

  test("next start is the last delivered revision + 1; duplicates after a resume are dropped", () => {
    const r = new WatchResume(41n);
    assert.equal(r.accept(event(41n))?.revision, 41n);
    assert.equal(r.accept(event(42n))?.revision, 42n);
    assert.equal(r.accept(event(43n))?.revision, 43n);
    assert.equal(r.nextStart, 44n);
    // The new stream re-sends 43 (sent before the drop but not read): delivered once only.
    assert.equal(r.accept(event(43n)), undefined);
    assert.equal(r.accept(event(44n))?.revision, 44n);
  });

  test("progress moves the start forward but never back", () => {
    const r = new WatchResume(0n);
    assert.equal(r.accept(progress(57n)), undefined);
    assert.equal(r.nextStart, 58n);
    r.accept(progress(10n));
    assert.equal(r.nextStart, 58n);
    assert.equal(r.accept(event(58n))?.revision, 58n);
    assert.equal(r.nextStart, 59n);
  });
});
