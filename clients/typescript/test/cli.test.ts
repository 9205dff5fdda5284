// The built CLI (dist/cli.js, as cross-language tests run it) against a real server.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { BoardClient, TaskState, fromUtf8 } from "../src/index.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { uniqueId, withTimeout } from "./helpers/util.js";

const CLI = path.join(path.dirname(path.dirname(fileURLToPath(import.meta.url))), "dist", "cli.js");
const T = { timeout: 60_000 };

let server: TestServer;
let client: BoardClient;
const children = new Set<ChildProcess>();

before(async () => {
  assert.ok(existsSync(CLI), `${CLI} is missing: run \`npm run build\` first (npm test does)`);
  server = await startServer();
  client = new BoardClient(server.target, { defaultTimeoutMs: 10_000 });
});

after(async () => {
  for (const child of children) child.kill("SIGKILL");
  client?.close();
  await server?.stop();
});

/** Runs the CLI to the end; resolves with its exit code and stdout JSON lines. */
async function run(args: string[], timeoutMs = 20_000): Promise<{ code: number | null; lines: any[]; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  try {
    const code = await withTimeout(
      // "close" comes after the process exited and its stdout/stderr were drained.
      new Promise<number | null>((resolve) => child.once("close", (c) => resolve(c))),
      timeoutMs,
      `cli ${args.join(" ")}`,
    );
    const lines = stdout
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l));
    return { code, lines, stderr };
  } finally {
    child.kill("SIGKILL");
    children.delete(child);
  }
}

/** Starts the CLI and returns a reader of its JSON lines (for commands that do not end by themselves). */
function start(args: string[]) {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  const queue: any[] = [];
  const waiters: ((l: any) => void)[] = [];
  createInterface({ input: child.stdout! }).on("line", (line) => {
    const value = JSON.parse(line);
    const w = waiters.shift();
    if (w) w(value);
    else queue.push(value);
  });
  return {
    child,
    next(timeoutMs = 15_000): Promise<any> {
      const ready = queue.shift();
      if (ready !== undefined) return Promise.resolve(ready);
      return withTimeout(new Promise((resolve) => waiters.push(resolve)), timeoutMs, `a line from cli ${args[0]}`);
    },
    kill() {
      child.kill("SIGKILL");
      children.delete(child);
    },
  };
}

describe("cli", () => {
  test("claim prints claimed / not claimed / error lines, exit code 0 in all three cases", T, async () => {
    const id = uniqueId("cli-claim");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }] });
    const base = ["claim", "--target", server.target, "--workflow", id];

    const ok = await run([...base, "--worker", "w1", "--task", "a", "--lease-ms", "5000"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.lines.length, 1);
    const task = (await client.getTask({ workflowId: id, taskId: "a" })).task!;
    assert.deepEqual(ok.lines[0], { claimed: true, task_id: "a", fencing_token: Number(task.fencingToken) });
    assert.equal(task.owner, "w1");

    const taken = await run([...base, "--worker", "w2", "--task", "a"]);
    assert.equal(taken.code, 0, taken.stderr);
    assert.equal(taken.lines[0].error.code, "FAILED_PRECONDITION");
    assert.equal(taken.lines[0].error.reason, "TASK_ALREADY_CLAIMED");
    assert.match(taken.lines[0].error.message, /already claimed/);

    const none = await run([...base, "--worker", "w2", "--wait-ms", "200"]);
    assert.equal(none.code, 0, none.stderr);
    assert.deepEqual(none.lines, [{ claimed: false }]);

    const missing = await run(["claim", "--target", server.target, "--workflow", uniqueId("nope"), "--worker", "w"]);
    assert.equal(missing.code, 0);
    assert.equal(missing.lines[0].error.code, "NOT_FOUND");
    assert.equal(missing.lines[0].error.reason, "WORKFLOW_NOT_FOUND");

    const usage = await run(["claim", "--target", server.target]);
    assert.equal(usage.code, 2, "missing --workflow is a usage error");
  });

  test("claim --announce prints a waiting line just before claiming", T, async () => {
    const id = uniqueId("cli-announce");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const claimer = start(["claim", "--target", server.target, "--workflow", id, "--worker", "w", "--wait-ms", "20000", "--announce"]);
    assert.deepEqual(await claimer.next(), { waiting: true });
    await client.postTasks({ workflowId: id, tasks: [{ id: "prize" }] });
    assert.equal((await claimer.next()).task_id, "prize");

    // A claim that answers at once: the announcement still comes first.
    const none = await run(["claim", "--target", server.target, "--workflow", id, "--worker", "w", "--announce"]);
    assert.equal(none.code, 0, none.stderr);
    assert.deepEqual(none.lines, [{ waiting: true }, { claimed: false }]);
  });

  test("watch prints one line per event and exits after --count", T, async () => {
    const id = uniqueId("cli-watch");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }] });
    await client.putNote({ workflowId: id, key: "plan", value: new Uint8Array([1]) });
    const out = await run(["watch", "--target", server.target, "--workflow", id, "--from", "1", "--count", "3"]);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(out.lines, [
      { revision: 1, kind: "WORKFLOW_CREATED", task_id: null, note_key: null },
      { revision: 2, kind: "TASK_POSTED", task_id: "a", note_key: null },
      { revision: 3, kind: "NOTE_PUT", task_id: null, note_key: "plan" },
    ]);

    // Live: waits for events that do not exist yet.
    const live = start(["watch", "--target", server.target, "--workflow", id, "--from", "4", "--count", "1"]);
    try {
      await client.claimTask({ workflowId: id, workerId: "w", taskId: "a" });
      assert.deepEqual(await live.next(), { revision: 4, kind: "TASK_CLAIMED", task_id: "a", note_key: null });
      const code = await withTimeout(new Promise((r) => live.child.once("exit", r)), 10_000, "watch to exit");
      assert.equal(code, 0);
    } finally {
      live.kill();
    }

    // Fewer events than --count before --timeout-s: an error line and exit code 1.
    const short = await run(["watch", "--target", server.target, "--workflow", id, "--from", "1", "--count", "99", "--timeout-s", "1"]);
    assert.equal(short.code, 1, short.stderr);
    assert.equal(short.lines.length, 5);
    assert.equal(short.lines.at(-1).error.code, "DEADLINE_EXCEEDED");
    assert.match(short.lines.at(-1).error.message, /after 4 of 99 events \(timed out\)/);
  });

  test("work completes tasks after a checkpoint and exits after --max-tasks", T, async () => {
    const id = uniqueId("cli-work");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "t1" }, { id: "t2" }, { id: "t3", dependsOn: ["t1", "t2"] }] });
    const out = await run(["work", "--target", server.target, "--workflow", id, "--worker", "cli-w", "--max-tasks", "3"], 30_000);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(
      out.lines.map((l) => l.completed),
      ["t1", "t2", "t3"],
    );
    for (const line of out.lines) {
      const task = (await client.getTask({ workflowId: id, taskId: line.completed })).task!;
      assert.equal(task.state, TaskState.COMPLETED);
      assert.equal(Number(task.fencingToken), line.fencing_token);
      assert.equal(fromUtf8(task.result), "done by cli-w");
      assert.equal(task.resultContentType, "text/plain");
      assert.equal(fromUtf8(task.checkpoint), "checkpoint by cli-w");
    }
  });

  test("work --hang-after-claim holds a claim without renewing; another worker takes over after expiry", T, async () => {
    const id = uniqueId("cli-hang");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "only", retryPolicy: { initialBackoff: { seconds: 0n } } }] });
    const hung = start(["work", "--target", server.target, "--workflow", id, "--worker", "crashy", "--lease-ms", "1000", "--hang-after-claim"]);
    try {
      const claimed = await hung.next();
      assert.equal(claimed.claimed, true);
      assert.equal(claimed.task_id, "only");
      const out = await run(["work", "--target", server.target, "--workflow", id, "--worker", "rescuer", "--max-tasks", "1"], 30_000);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.lines[0].completed, "only");
      assert.ok(out.lines[0].fencing_token > claimed.fencing_token, "the rescuer's token is higher");
      assert.equal(hung.child.exitCode, null, "the hung worker is still running (it never renewed)");
      const task = (await client.getTask({ workflowId: id, taskId: "only" })).task!;
      assert.equal(task.owner, "rescuer");
      assert.equal(task.lastError?.leaseExpired, true);
      assert.equal(task.lastError?.workerId, "crashy");
      // SIGTERM ends the hung worker with exit code 0.
      const exited = new Promise((r) => hung.child.once("exit", r));
      hung.child.kill("SIGTERM");
      assert.equal(await withTimeout(exited, 10_000, "the hung worker to exit"), 0);
    } finally {
      hung.kill();
    }
  });

  test("work exits 0 on SIGTERM while waiting for tasks, with --skills and --claim-wait-ms", T, async () => {
    const id = uniqueId("cli-sigterm");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "skilled", requiredSkills: ["write"] }] });
    const worker = start(["work", "--target", server.target, "--workflow", id, "--worker", "sk", "--skills", "read,write", "--claim-wait-ms", "5000"]);
    try {
      assert.deepEqual(await worker.next(), { completed: "skilled", fencing_token: Number((await client.getTask({ workflowId: id, taskId: "skilled" })).task!.fencingToken) });
      const exited = new Promise((r) => worker.child.once("exit", r));
      worker.child.kill("SIGTERM");
      assert.equal(await withTimeout(exited, 10_000, "the worker to exit"), 0);
    } finally {
      worker.kill();
    }
  });
});
