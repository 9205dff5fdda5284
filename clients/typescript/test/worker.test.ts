// The worker loop against a real server: completion, failure, non-retryable failure, release on stop,
// server-side blocking claims, and lease loss (renewals blocked) with a second worker taking over.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Interceptor } from "@connectrpc/connect";
import {
  BoardClient,
  BoardError,
  ClaimLostError,
  NonRetryableError,
  TaskOutcome,
  TaskState,
  duration,
  fromUtf8,
  toMs,
  utf8,
  type ClaimTaskRequest,
  type WorkerEvent,
} from "../src/index.js";
import { useServerAndClient, type TestServer } from "./helpers/server.js";
import { aborted, deferred, expectBoardError, uniqueId, withTimeout } from "./helpers/util.js";

let server: TestServer;
let client: BoardClient;
useServerAndClient((s, c) => {
  server = s;
  client = c;
});

const T = { timeout: 30_000 };

async function workflowWith(prefix: string, tasks: Parameters<BoardClient["postTasks"]>[0]["tasks"]): Promise<string> {
  const id = uniqueId(prefix);
  await client.createWorkflow({ workflowId: id, goal: "worker test" });
  if (tasks?.length) {
    await client.postTasks({ workflowId: id, tasks });
  }
  return id;
}

/** Collects worker events and lets a test await the n-th event of a type. */
function eventLog() {
  const events: WorkerEvent[] = [];
  const waiters: { type: WorkerEvent["type"]; n: number; resolve: () => void }[] = [];
  return {
    events,
    onEvent(e: WorkerEvent) {
      events.push(e);
      for (const w of [...waiters]) {
        if (events.filter((x) => x.type === w.type).length >= w.n) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    },
    until(type: WorkerEvent["type"], n = 1): Promise<void> {
      if (events.filter((x) => x.type === type).length >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ type, n, resolve }));
    },
  };
}

describe("worker", () => {
  test("claims ready tasks in dependency order, checkpoints, and completes them with the fencing token", T, async () => {
    const id = await workflowWith("wk-complete", [
      { id: "research", payload: utf8("topic") },
      { id: "draft", dependsOn: ["research"] },
      { id: "review", dependsOn: ["draft"] },
    ]);
    const log = eventLog();
    const stop = new AbortController();
    const order: string[] = [];
    const worker = client.createWorker({ workflowId: id, workerId: "w-complete", claimWaitMs: 5_000, onEvent: log.onEvent });
    const running = worker.run(async (ctx) => {
      order.push(ctx.task.id);
      assert.equal(ctx.lastCheckpoint.length, 0);
      await ctx.checkpoint(`started ${ctx.task.id}`);
      return TaskOutcome.json({ task: ctx.task.id, token: String(ctx.fencingToken) });
    }, stop.signal);
    await withTimeout(log.until("completed", 3), 15_000, "three completions");
    stop.abort();
    await withTimeout(running, 10_000, "the worker to stop");

    assert.deepEqual(order, ["research", "draft", "review"]);
    assert.equal(worker.completed, 3);
    assert.equal(worker.failed, 0);
    for (const e of log.events.filter((x) => x.type === "completed")) {
      const task = (await client.getTask({ workflowId: id, taskId: e.task.id })).task!;
      assert.equal(task.state, TaskState.COMPLETED);
      assert.equal(task.owner, "w-complete");
      assert.equal(task.fencingToken, e.fencingToken);
      assert.equal(task.resultContentType, "application/json");
      assert.deepEqual(JSON.parse(fromUtf8(task.result)), { task: task.id, token: String(e.fencingToken) });
      assert.equal(fromUtf8(task.checkpoint), `started ${task.id}`);
    }
  });

  test("each completion claims the next task (claim_next); a claim held when stopping is released", T, async () => {
    const id = await workflowWith("wk-next", [
      { id: "a", priority: 3 },
      { id: "b", priority: 2 },
      { id: "c", priority: 1 },
    ]);
    const log = eventLog();
    const stop = new AbortController();
    const worker = client.createWorker({
      workflowId: id,
      workerId: "w-next",
      claimWaitMs: 5_000,
      onEvent: (e) => {
        log.onEvent(e);
        // Stop right after b's completion has claimed c: the worker holds c without having run it.
        if (e.type === "completed" && e.task.id === "b") stop.abort();
      },
    });
    const ran: string[] = [];
    const running = worker.run(async (ctx) => {
      ran.push(ctx.task.id);
      return TaskOutcome.text("ok");
    }, stop.signal);
    await withTimeout(running, 15_000, "the worker to stop");

    assert.deepEqual(ran, ["a", "b"]);
    const completed = log.events.filter((e) => e.type === "completed");
    assert.deepEqual(completed.map((e) => [e.task.id, e.response.nextTask?.id]), [["a", "b"], ["b", "c"]]);
    // b's claim is the one a's completion made, with its token.
    const claimedB = log.events.find((e) => e.type === "claimed" && e.task.id === "b")!;
    assert.equal(claimedB.fencingToken, completed[0].response.nextFencingToken);
    const released = log.events.filter((e) => e.type === "released");
    assert.deepEqual(released.map((e) => e.task.id), ["c"]);
    const c = (await client.getTask({ workflowId: id, taskId: "c" })).task!;
    assert.equal(c.state, TaskState.READY);
    assert.equal(c.attempt, 0);
  });

  test("a throwing handler fails the attempt (retried); NonRetryableError dead-letters at once", T, async () => {
    const id = await workflowWith("wk-fail", [
      { id: "flaky", maxAttempts: 3, retryPolicy: { initialBackoff: duration(0) } },
      { id: "broken", maxAttempts: 3 },
    ]);
    const log = eventLog();
    const stop = new AbortController();
    const attempts = new Map<string, number>();
    const worker = client.createWorker({ workflowId: id, workerId: "w-fail", claimWaitMs: 5_000, onEvent: log.onEvent });
    const running = worker.run(async (ctx) => {
      const n = (attempts.get(ctx.task.id) ?? 0) + 1;
      attempts.set(ctx.task.id, n);
      if (ctx.task.id === "broken") throw new NonRetryableError("input is malformed");
      if (n === 1) throw new Error("temporary glitch");
      return TaskOutcome.text("fine");
    }, stop.signal);
    await withTimeout(Promise.all([log.until("failed", 2), log.until("completed", 1)]), 15_000, "two failures and a completion");
    stop.abort();
    await withTimeout(running, 10_000, "the worker to stop");

    const flaky = (await client.getTask({ workflowId: id, taskId: "flaky" })).task!;
    assert.equal(flaky.state, TaskState.COMPLETED);
    assert.equal(flaky.attempt, 2);
    assert.equal(flaky.lastError?.message, "temporary glitch");
    assert.equal(flaky.lastError?.nonRetryable, false);
    assert.equal(fromUtf8(flaky.result), "fine");
    assert.equal(flaky.resultContentType, "text/plain; charset=utf-8");

    const broken = (await client.getTask({ workflowId: id, taskId: "broken" })).task!;
    assert.equal(broken.state, TaskState.DEAD_LETTERED);
    assert.equal(broken.attempt, 1, "not retried");
    assert.equal(broken.lastError?.message, "input is malformed");
    assert.equal(broken.lastError?.nonRetryable, true);
    assert.equal(worker.failed, 2);
    const failedBroken = log.events.find((e) => e.type === "failed" && e.task.id === "broken");
    assert.ok(failedBroken?.type === "failed" && failedBroken.response.willRetry === false);
  });

  test("stopping the worker aborts the handler and releases the task without counting the attempt", T, async () => {
    const id = await workflowWith("wk-stop", [{ id: "long" }]);
    const log = eventLog();
    const stop = new AbortController();
    const started = deferred<AbortSignal>();
    const worker = client.createWorker({ workflowId: id, workerId: "w-stop", claimWaitMs: 5_000, onEvent: log.onEvent });
    const running = worker.run(async (ctx) => {
      started.resolve(ctx.signal);
      await aborted(ctx.signal);
      throw ctx.signal.reason;
    }, stop.signal);
    const signal = await withTimeout(started.promise, 10_000, "the handler to start");
    assert.equal((await client.getTask({ workflowId: id, taskId: "long" })).task?.state, TaskState.CLAIMED);
    stop.abort(new Error("shutting down"));
    await withTimeout(running, 10_000, "the worker to stop");
    assert.equal(signal.aborted, true);
    assert.equal((signal.reason as Error).message, "shutting down");
    assert.ok(log.events.some((e) => e.type === "released"));

    const task = (await client.getTask({ workflowId: id, taskId: "long" })).task!;
    assert.equal(task.state, TaskState.READY);
    assert.equal(task.attempt, 0);
    assert.equal(worker.failed, 0);
  });

  test("claims wait on the server (one ClaimTask call while idle, no busy polling) and wake up on a post", T, async () => {
    const id = await workflowWith("wk-wait", []);
    const claims: ClaimTaskRequest[] = [];
    const counting: Interceptor = (next) => async (req) => {
      if (req.method.name === "ClaimTask" && !req.stream) claims.push(req.message as ClaimTaskRequest);
      return next(req);
    };
    const watched = new BoardClient(server.target, { interceptors: [counting] });
    const log = eventLog();
    const stop = new AbortController();
    try {
      // The board's own clock of idleness: a watch gets a progress message every 250 ms while nothing changes.
      const quiet = deferred();
      let progress = 0;
      const watching = client.watch(
        { workflowId: id, startRevision: 0n, progressInterval: duration(250) },
        { signal: stop.signal, onProgress: () => ++progress === 6 && quiet.resolve() },
      );
      const watchEnded = watching.next().catch(() => undefined);
      const worker = watched.createWorker({ workflowId: id, workerId: "w-wait", claimWaitMs: 8_000, onEvent: log.onEvent });
      const running = worker.run(async () => TaskOutcome.text("ok"), stop.signal);
      // Idle for six progress intervals (1.5 s): a polling worker would call ClaimTask again and again.
      await withTimeout(quiet.promise, 10_000, "six progress messages of an idle board");
      assert.equal(claims.length, 1, "one blocking claim while idle");
      assert.equal(toMs(claims[0]!.wait), 8_000);
      const posted = Date.now();
      await client.postTasks({ workflowId: id, tasks: [{ id: "wake" }] });
      await withTimeout(log.until("claimed"), 5_000, "the claim");
      assert.ok(Date.now() - posted < 1_000, "the waiting claim returned as soon as the task was posted");
      await withTimeout(log.until("completed"), 5_000, "the completion");
      stop.abort();
      await withTimeout(running, 10_000, "the worker to stop");
      await watchEnded;
    } finally {
      stop.abort();
      watched.close();
    }
  });

  test("an unknown workflow stops run() with NOT_FOUND / WORKFLOW_NOT_FOUND instead of retrying", T, async () => {
    const worker = client.createWorker({ workflowId: uniqueId("wk-missing"), workerId: "w", claimWaitMs: 1_000 });
    await withTimeout(
      expectBoardError(worker.run(async () => TaskOutcome.text("never")), "NOT_FOUND", "WORKFLOW_NOT_FOUND"),
      10_000,
      "run() to fail",
    );
  });

  test("a cancelled task aborts the handler with the server's reason and nothing is written", T, async () => {
    const id = await workflowWith("wk-cancel", [{ id: "doomed" }]);
    const log = eventLog();
    const started = deferred();
    const worker = client.createWorker({ workflowId: id, workerId: "w-cancel", leaseMs: 3_000, renewIntervalMs: 100, claimWaitMs: 5_000, onEvent: log.onEvent });
    const once = worker.runOnce(async (ctx) => {
      started.resolve();
      const reason = await withTimeout(aborted(ctx.signal), 10_000, "the handler's signal");
      assert.ok(reason instanceof BoardError && reason.isClaimLost, `claim-lost reason, got ${String(reason)}`);
      return TaskOutcome.text("too late");
    });
    await withTimeout(started.promise, 10_000, "the handler to start");
    await client.cancelTask({ workflowId: id, taskId: "doomed", reason: "changed plans" });
    assert.equal(await withTimeout(once, 10_000, "runOnce"), true);
    assert.equal(worker.lostClaims, 1);
    assert.equal(worker.completed, 0);
    const task = (await client.getTask({ workflowId: id, taskId: "doomed" })).task!;
    assert.equal(task.state, TaskState.CANCELLED);
    assert.equal(task.result.length, 0);
  });
});

/** Shifts Date.now() (the local wall clock) by offsetMs until the returned function is called. */
function skewWallClock(offsetMs: number): () => void {
  const realNow = Date.now;
  Date.now = () => realNow.call(Date) + offsetMs;
  return () => {
    Date.now = realNow;
  };
}

describe("lease clock", () => {
  test("a local wall clock an hour ahead of the server's does not end a lease that is being renewed", T, async () => {
    const id = await workflowWith("wk-skew-ahead", [{ id: "steady" }]);
    let renewals = 0;
    const renewedThrice = deferred();
    const counting: Interceptor = (next) => async (req) => {
      const res = await next(req);
      if (req.method.name === "RenewLease" && ++renewals === 3) renewedThrice.resolve();
      return res;
    };
    const skewed = new BoardClient(server.target, { defaultTimeoutMs: 10_000, interceptors: [counting] });
    const restore = skewWallClock(3_600_000);
    try {
      const worker = skewed.createWorker({ workflowId: id, workerId: "w-ahead", leaseMs: 2_000, renewIntervalMs: 200, claimWaitMs: 5_000 });
      let signalled: unknown;
      const ran = await withTimeout(
        worker.runOnce(async (ctx) => {
          // Three renewals (the lease end moves on each); a worker misreading the clock would abort the handler first.
          await Promise.race([renewedThrice.promise, aborted(ctx.signal).then((reason) => (signalled = reason))]);
          return TaskOutcome.text("kept the lease");
        }),
        15_000,
        "runOnce",
      );
      assert.equal(ran, true);
      assert.equal(signalled, undefined, `the handler's signal fired: ${String(signalled)}`);
      assert.ok(renewals >= 3);
      assert.equal(worker.lostClaims, 0);
      assert.equal(worker.completed, 1);
      const task = (await client.getTask({ workflowId: id, taskId: "steady" })).task!;
      assert.equal(task.state, TaskState.COMPLETED);
      assert.equal(fromUtf8(task.result), "kept the lease");
    } finally {
      restore();
      skewed.close();
    }
  });

  test("a local wall clock an hour behind does not stretch the lease: with renewals blocked the signal fires when it ends", T, async () => {
    const id = await workflowWith("wk-skew-behind", [{ id: "partitioned", retryPolicy: { initialBackoff: duration(0) } }]);
    const leaseMs = 2_000;
    let block = false;
    let lastGrantSent = 0;
    const renewed = deferred();
    const partition: Interceptor = (next) => async (req) => {
      const sent = performance.now();
      if (req.method.name === "RenewLease" && block) {
        await new Promise((_, reject) => {
          if (req.signal.aborted) reject(req.signal.reason);
          req.signal.addEventListener("abort", () => reject(req.signal.reason), { once: true });
        });
      }
      const res = await next(req);
      if (req.method.name === "RenewLease" || req.method.name === "ClaimTask") {
        lastGrantSent = sent;
        if (req.method.name === "RenewLease") renewed.resolve();
      }
      return res;
    };
    const skewed = new BoardClient(server.target, { defaultTimeoutMs: 10_000, interceptors: [partition] });
    const restore = skewWallClock(-3_600_000);
    try {
      const worker = skewed.createWorker({ workflowId: id, workerId: "w-behind", leaseMs, renewIntervalMs: 300, claimWaitMs: 5_000 });
      const started = deferred<AbortSignal>();
      const once = worker.runOnce(async (ctx) => {
        started.resolve(ctx.signal);
        await aborted(ctx.signal);
        return TaskOutcome.text("must be discarded");
      });
      const signal = await withTimeout(started.promise, 10_000, "the handler to start");
      await withTimeout(renewed.promise, 5_000, "a renewal");
      block = true;
      const reason = await withTimeout(aborted(signal), 8_000, "the handler's signal (the lease has ended)");
      const firedAfter = performance.now() - lastGrantSent;
      assert.ok(reason instanceof ClaimLostError, `lease-lost reason, got ${String(reason)}`);
      // The lease ran for leaseMs from the last grant's request; the signal fires then, not an hour later.
      assert.ok(firedAfter >= leaseMs - 50 && firedAfter < leaseMs + 1_500, `fired ${Math.round(firedAfter)} ms after the last grant`);
      assert.equal(await withTimeout(once, 10_000, "runOnce"), true);
      assert.equal(worker.lostClaims, 1);
      assert.equal(worker.completed, 0);
    } finally {
      restore();
      skewed.close();
    }
  });
});

describe("lease loss", () => {
  test("blocked renewals: the handler's signal fires and a second worker completes with a higher token", T, async () => {
    const id = await workflowWith("wk-lease", [{ id: "contested", retryPolicy: { initialBackoff: duration(0) } }]);

    // Worker A's connection lets renewals through until told to block them (a network partition for RenewLease).
    let blockRenewals = false;
    let renewalsSent = 0;
    const renewed = deferred();
    const partition: Interceptor = (next) => async (req) => {
      if (req.method.name === "RenewLease") {
        if (blockRenewals) {
          await new Promise((_, reject) => {
            if (req.signal.aborted) reject(req.signal.reason);
            req.signal.addEventListener("abort", () => reject(req.signal.reason), { once: true });
          });
        }
        const res = await next(req);
        renewalsSent++;
        renewed.resolve();
        return res;
      }
      return next(req);
    };
    const clientA = new BoardClient(server.target, { interceptors: [partition] });
    const logA = eventLog();
    const started = deferred<bigint>();
    let abortReason: unknown;
    try {
      const workerA = clientA.createWorker({ workflowId: id, workerId: "worker-a", leaseMs: 2_000, renewIntervalMs: 300, claimWaitMs: 5_000, onEvent: logA.onEvent });
      const runA = workerA.runOnce(async (ctx) => {
        started.resolve(ctx.fencingToken);
        abortReason = await withTimeout(aborted(ctx.signal), 10_000, "worker A's signal");
        return TaskOutcome.text("by worker-a (must be discarded)");
      });
      const tokenA = await withTimeout(started.promise, 10_000, "worker A to start");
      // Renewing works at first.
      await withTimeout(renewed.promise, 5_000, "a renewal");
      assert.ok(renewalsSent >= 1);
      blockRenewals = true;

      assert.equal(await withTimeout(runA, 10_000, "worker A's claim to end"), true);
      assert.ok(abortReason instanceof ClaimLostError, `lease-lost reason, got ${String(abortReason)}`);
      assert.equal(workerA.lostClaims, 1);
      assert.equal(workerA.completed, 0);
      assert.ok(logA.events.some((e) => e.type === "lost"));

      // Worker B (healthy connection) gets the task once the server has expired A's lease.
      const workerB = client.createWorker({ workflowId: id, workerId: "worker-b", leaseMs: 5_000, claimWaitMs: 10_000 });
      let tokenB = 0n;
      let checkpointSeen = "";
      const claimedB = await withTimeout(
        workerB.runOnce(async (ctx) => {
          tokenB = ctx.fencingToken;
          checkpointSeen = fromUtf8(ctx.lastCheckpoint);
          return TaskOutcome.text("by worker-b");
        }),
        15_000,
        "worker B",
      );
      assert.equal(claimedB, true);
      assert.ok(tokenB > tokenA, `B's token ${tokenB} > A's ${tokenA}`);
      assert.equal(checkpointSeen, "");

      const task = (await client.getTask({ workflowId: id, taskId: "contested" })).task!;
      assert.equal(task.state, TaskState.COMPLETED);
      assert.equal(task.owner, "worker-b");
      assert.equal(task.fencingToken, tokenB);
      assert.equal(fromUtf8(task.result), "by worker-b");
      assert.equal(task.attempt, 2, "A's expired attempt counted");
      assert.equal(task.lastError?.leaseExpired, true);
      assert.equal(task.lastError?.workerId, "worker-a");

      // A late write with A's token is refused by the server.
      await expectBoardError(
        clientA.completeTask({ workflowId: id, taskId: "contested", fencingToken: tokenA, result: utf8("late") }),
        "FAILED_PRECONDITION",
        "FENCING_TOKEN_STALE",
      );
    } finally {
      clientA.close();
    }
  });
});
