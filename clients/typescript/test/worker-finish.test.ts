// The worker's final writes (complete, fail, release) against a server that goes away: UNAVAILABLE is retried
// with backoff until the lease would have ended (so a brief restart loses no result), never after it, and a
// FAILED_PRECONDITION ends the retries at once.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { BoardClient, TaskOutcome, TaskState, fromUtf8 } from "../src/index.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { deferred, uniqueId, withTimeout } from "./helpers/util.js";

const T = { timeout: 90_000 };

/** Records when each call of the given method was sent (performance.now()) and how it ended. */
function recorder(method: string) {
  const calls: { sent: number; ok: boolean; code?: string }[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const failedCount = () => calls.filter((c) => !c.ok).length;
  const interceptor: Interceptor = (next) => async (req) => {
    if (req.method.name !== method) return next(req);
    const call: { sent: number; ok: boolean; code?: string } = { sent: performance.now(), ok: false };
    calls.push(call);
    try {
      const res = await next(req);
      call.ok = true;
      return res;
    } catch (error) {
      call.code = Code[ConnectError.from(error).code];
      throw error;
    } finally {
      for (const w of [...waiters]) {
        if (failedCount() >= w.n) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    }
  };
  return {
    calls,
    interceptor,
    /** Resolves once n calls have failed. */
    failures(n: number): Promise<void> {
      if (failedCount() >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
  };
}

describe("final writes while the server is down", () => {
  test("a completion retried through a server restart (same port and data) is stored", T, async () => {
    const data = mkdtempSync(path.join(tmpdir(), "grpcboard-ts-restart-"));
    let server: TestServer | undefined = await startServer({ store: "embedded", data });
    const port = Number(new URL(server.target).port);
    const completions = recorder("CompleteTask");
    const client = new BoardClient(server.target, { defaultTimeoutMs: 5_000, interceptors: [completions.interceptor] });
    try {
      const id = uniqueId("wk-restart");
      await client.createWorkflow({ workflowId: id, goal: "survive a restart" });
      await client.postTasks({ workflowId: id, tasks: [{ id: "final" }] });

      const started = deferred();
      const finishWork = deferred();
      const worker = client.createWorker({ workflowId: id, workerId: "w-restart", leaseMs: 30_000, claimWaitMs: 5_000 });
      const once = worker.runOnce(async () => {
        started.resolve();
        await finishWork.promise;
        return TaskOutcome.text("finished while the server was restarting");
      });
      await withTimeout(started.promise, 10_000, "the handler to start");

      await server.stop();
      server = undefined;
      finishWork.resolve();
      // More failed attempts than the old give-up-after-a-second loop ever made (5), over more than a second.
      await withTimeout(completions.failures(6), 15_000, "six failed completion attempts");
      assert.ok(completions.calls.every((c) => c.code === "Unavailable"), JSON.stringify(completions.calls));

      server = await startServer({ store: "embedded", data, port });
      assert.equal(await withTimeout(once, 20_000, "runOnce to finish"), true);
      assert.equal(worker.completed, 1);
      assert.equal(worker.lostClaims, 0);
      assert.equal(completions.calls.at(-1)?.ok, true);

      const task = (await client.getTask({ workflowId: id, taskId: "final" })).task!;
      assert.equal(task.state, TaskState.COMPLETED);
      assert.equal(task.owner, "w-restart");
      assert.equal(fromUtf8(task.result), "finished while the server was restarting");
    } finally {
      client.close();
      await server?.stop();
      rmSync(data, { recursive: true, force: true });
    }
  });

  test("retries stop when the lease would have ended, never after it", T, async () => {
    const leaseMs = 3_000;
    const server = await startServer({ own: true });
    const completions = recorder("CompleteTask");
    // When each request that granted the lease (claim or renewal) was sent.
    let lastGrantSent = 0;
    const grants: Interceptor = (next) => async (req) => {
      const sent = performance.now();
      const res = await next(req);
      if (req.method.name === "ClaimTask" || req.method.name === "RenewLease") lastGrantSent = sent;
      return res;
    };
    const client = new BoardClient(server.target, { defaultTimeoutMs: 5_000, interceptors: [grants, completions.interceptor] });
    try {
      const id = uniqueId("wk-down");
      await client.createWorkflow({ workflowId: id, goal: "the server does not come back" });
      await client.postTasks({ workflowId: id, tasks: [{ id: "orphan" }] });
      const started = deferred();
      const finishWork = deferred();
      const worker = client.createWorker({ workflowId: id, workerId: "w-down", leaseMs, renewIntervalMs: 500, claimWaitMs: 5_000 });
      const once = worker.runOnce(async () => {
        started.resolve();
        await finishWork.promise;
        return TaskOutcome.text("nobody will store this");
      });
      await withTimeout(started.promise, 10_000, "the handler to start");
      await server.stop();
      finishWork.resolve();

      assert.equal(await withTimeout(once, 15_000, "runOnce to give up"), true);
      const gaveUp = performance.now();
      const leaseEnd = lastGrantSent + leaseMs;
      assert.equal(worker.completed, 0);
      assert.ok(completions.calls.length >= 3, `retried: ${completions.calls.length} attempts`);
      for (const call of completions.calls) {
        assert.ok(call.sent < leaseEnd, `an attempt ${Math.round(call.sent - leaseEnd)} ms after the lease ended`);
      }
      assert.ok(gaveUp < leaseEnd + 1_000, `gave up ${Math.round(gaveUp - leaseEnd)} ms after the lease ended`);
    } finally {
      client.close();
      await server.stop();
    }
  });

  test("a FAILED_PRECONDITION ends the retries at once", T, async () => {
    const server = await startServer();
    // The network loses the first three completion attempts (fault injection); the fourth reaches the server.
    let dropped = 0;
    const flaky: Interceptor = (next) => async (req) => {
      if (req.method.name === "CompleteTask" && dropped < 3) {
        dropped++;
        throw new ConnectError("connection refused (injected)", Code.Unavailable);
      }
      return next(req);
    };
    const completions = recorder("CompleteTask");
    const client = new BoardClient(server.target, { defaultTimeoutMs: 5_000, interceptors: [completions.interceptor, flaky] });
    try {
      const id = uniqueId("wk-refused");
      await client.createWorkflow({ workflowId: id, goal: "g" });
      await client.postTasks({ workflowId: id, tasks: [{ id: "doomed" }] });
      const worker = client.createWorker({ workflowId: id, workerId: "w-refused", leaseMs: 30_000, claimWaitMs: 5_000 });
      const once = worker.runOnce(async (ctx) => {
        // Someone cancels the task while it runs; the renewal loop (every 10 s) does not notice before the end.
        await client.cancelTask({ workflowId: id, taskId: ctx.task.id, reason: "not needed" });
        return TaskOutcome.text("too late");
      });
      const started = performance.now();
      assert.equal(await withTimeout(once, 15_000, "runOnce"), true);
      assert.ok(performance.now() - started < 5_000, "did not keep retrying until the lease's end");
      assert.deepEqual(
        completions.calls.map((c) => c.code ?? "OK"),
        ["Unavailable", "Unavailable", "Unavailable", "FailedPrecondition"],
        "retried UNAVAILABLE, stopped at the first FAILED_PRECONDITION",
      );
      assert.equal(worker.completed, 0);
      assert.equal(worker.lostClaims, 1);
      const task = (await client.getTask({ workflowId: id, taskId: "doomed" })).task!;
      assert.equal(task.state, TaskState.CANCELLED);
      assert.equal(task.result.length, 0);
    } finally {
      client.close();
      await server.stop();
    }
  });
});
