// The examples run as README.md shows (`npx tsx examples/planner.ts --workflow X`, then the worker) against the
// test server, and every task the planner posted ends COMPLETED on the server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { BoardClient, TaskState, fromUtf8, type Task } from "../src/index.js";
import { useServerAndClient, type TestServer } from "./helpers/server.js";
import { uniqueId } from "./helpers/util.js";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

let server: TestServer;
let client: BoardClient;
useServerAndClient((s, c) => {
  server = s;
  client = c;
});

/** Runs `npx tsx examples/<script> args...` in the package directory with GRPCBOARD_TARGET set; resolves with stdout. */
function runExample(script: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "npx",
      ["tsx", `examples/${script}`, ...args],
      { cwd: root, env: { ...process.env, GRPCBOARD_TARGET: server.target }, timeout: 60_000 },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`${script} failed (${error.message})\nstdout:\n${stdout}\nstderr:\n${stderr}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

async function allTasks(workflowId: string): Promise<Map<string, Task>> {
  const tasks = new Map<string, Task>();
  let pageToken = "";
  do {
    const page = await client.listTasks({ workflowId, pageToken });
    for (const t of page.tasks) tasks.set(t.id, t);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return tasks;
}

describe("examples", () => {
  test("planner.ts posts the task graph, then worker.ts completes every task", { timeout: 120_000 }, async () => {
    const id = uniqueId("demo");
    const planned = await runExample("planner.ts", "--workflow", id);
    assert.match(planned, new RegExp(`created workflow ${id}:`));

    const posted = await allTasks(id);
    assert.deepEqual([...posted.keys()].sort(), ["draft-body", "draft-intro", "research", "review"]);
    assert.deepEqual(posted.get("review")!.dependsOn, ["draft-intro", "draft-body"]);
    assert.equal(posted.get("research")!.state, TaskState.READY);
    assert.equal(posted.get("review")!.state, TaskState.PENDING);

    const worked = await runExample("worker.ts", "--workflow", id, "--worker", "ex", "--work-ms", "0");
    assert.match(worked, /\[ex\] claimed research/);
    assert.match(worked, /\[ex\] no tasks remain \(completed 4\); 4 done by me/);

    // Checked on the server: every task the planner posted ended COMPLETED, by the example worker.
    const finished = await allTasks(id);
    assert.deepEqual([...finished.keys()].sort(), [...posted.keys()].sort());
    for (const task of finished.values()) {
      assert.equal(task.state, TaskState.COMPLETED, `${task.id} is ${TaskState[task.state]}`);
      assert.equal(task.owner, "ex");
      assert.equal(fromUtf8(task.checkpoint), "3", `${task.id} checkpointed its three steps`);
    }
    assert.match(fromUtf8(finished.get("review")!.result), /^review done by ex using \[draft-intro: draft introduction done by ex/);
  });
});
