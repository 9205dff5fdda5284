// Calls in flight when the server shuts down must end promptly with a retryable error, not hang until
// their deadline. (The server drops a waiting ClaimTask without answering it when it stops.)
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BoardClient, BoardError, duration } from "../src/index.js";
import { startServer } from "./helpers/server.js";
import { deferred, uniqueId, withTimeout } from "./helpers/util.js";

describe("server shutdown", () => {
  test("a waiting claim and a watch end promptly with a transient error when the server stops", { timeout: 60_000 }, async () => {
    const server = await startServer({ own: true });
    const client = new BoardClient(server.target, { defaultTimeoutMs: 30_000 });
    try {
      const id = uniqueId("shutdown");
      await client.createWorkflow({ workflowId: id, goal: "g" });
      const settle = (p: Promise<unknown>) =>
        p.then(
          (value) => ({ value, error: undefined as unknown }),
          (error: unknown) => ({ value: undefined, error }),
        );
      // Deadline of the claim: 20 s wait + 30 s default. It must not take that long.
      const claim = settle(client.claimTask({ workflowId: id, workerId: "w", wait: duration(20_000) }));
      const streaming = deferred();
      const watch = settle(
        (async () => {
          for await (const _ of client.watchStream({ workflowId: id, startRevision: 1n })) {
            streaming.resolve(); // the server has the watch: it sent its first message (WORKFLOW_CREATED)
          }
        })(),
      );
      // Both calls have reached the server: the watch has sent a message, and a request sent after the claim
      // on the same connection has been answered while the claim is still waiting.
      await withTimeout(streaming.promise, 10_000, "the watch's first message");
      await client.getWorkflow({ workflowId: id });
      const stopped = Date.now();
      await server.stop();

      const c = await withTimeout(claim, 15_000, "the waiting claim to end");
      assert.ok(Date.now() - stopped < 15_000);
      if (c.error !== undefined) {
        assert.ok(c.error instanceof BoardError && c.error.isTransient, `a transient error, got ${String(c.error)}`);
      } else {
        assert.equal((c.value as { task?: unknown }).task, undefined, "or an empty answer");
      }
      const w = await withTimeout(watch, 15_000, "the watch to end");
      assert.ok(w.error instanceof BoardError && w.error.isTransient, `the watch ends with a transient error, got ${String(w.error)}`);
    } finally {
      client.close();
      await server.stop();
    }
  });
});
