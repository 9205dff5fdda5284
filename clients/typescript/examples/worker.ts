// Processes the tasks of a workflow until none remain, printing what it does.
//
//   npx tsx examples/worker.ts --workflow demo [--worker alice]
//
// The server is GRPCBOARD_TARGET (default http://127.0.0.1:50051). Start several to see them share the
// work; stop one with Ctrl-C and its running task is released for the others.
import { parseArgs } from "node:util";
import { BoardClient, BoardError, TaskOutcome, fromUtf8, sleep, type TaskContext } from "../src/index.js";

const { values } = parseArgs({
  options: {
    workflow: { type: "string", default: "demo" },
    worker: { type: "string", default: `worker-${process.pid}` },
    target: { type: "string", default: process.env.GRPCBOARD_TARGET ?? "http://127.0.0.1:50051" },
    "work-ms": { type: "string", default: "500" },
  },
});
const workflowId = values.workflow!;
const workerId = values.worker!;
const workMs = Number(values["work-ms"]);
const client = new BoardClient(values.target!);
const stop = new AbortController();
process.once("SIGINT", () => stop.abort(new Error("interrupted")));

/** The "agent": reads its input and its dependencies' results, works in steps, checkpoints each one. */
async function handle(ctx: TaskContext): Promise<TaskOutcome> {
  const input = ctx.task.payload.length ? JSON.parse(fromUtf8(ctx.task.payload)) : {};
  console.log(`[${workerId}] claimed ${ctx.task.id} (attempt ${ctx.task.attempt}, fencing token ${ctx.fencingToken})`);
  const inputs: string[] = [];
  for (const dep of ctx.task.dependsOn) {
    const { task } = await client.getTask({ workflowId, taskId: dep }, { signal: ctx.signal });
    inputs.push(`${dep}: ${fromUtf8(task!.result)}`);
  }
  const done = ctx.lastCheckpoint.length ? Number(fromUtf8(ctx.lastCheckpoint)) : 0;
  if (done > 0) console.log(`[${workerId}]   resuming ${ctx.task.id} from step ${done}`);
  for (let step = done + 1; step <= 3; step++) {
    await sleep(workMs / 3, ctx.signal); // stops at once if the lease is lost or the worker stops
    await ctx.checkpoint(String(step));
    console.log(`[${workerId}]   ${ctx.task.id}: step ${step}/3 saved`);
  }
  const summary = `${input.step ?? "task"} ${input.section ?? ""}`.trim();
  return TaskOutcome.text(`${summary} done by ${workerId}${inputs.length ? ` using [${inputs.join("; ")}]` : ""}`);
}

const worker = client.createWorker({
  workflowId,
  workerId,
  leaseMs: 10_000,
  claimWaitMs: 2_000,
  onEvent: (e) => {
    if (e.type === "completed") console.log(`[${workerId}] completed ${e.task.id}; now ready: ${e.response.readyDependents.join(", ") || "nothing new"}`);
    if (e.type === "failed") console.log(`[${workerId}] failed ${e.task.id}: ${String(e.error)} (retry: ${e.response.willRetry})`);
    if (e.type === "lost") console.log(`[${workerId}] lost the claim on ${e.task.id}: ${String(e.reason)}`);
    if (e.type === "released") console.log(`[${workerId}] released ${e.task.id}`);
  },
});

try {
  while (!stop.signal.aborted) {
    // Waits on the server up to claimWaitMs for a ready task; no polling in between.
    if (await worker.runOnce(handle, stop.signal)) continue;
    const counts = (await client.getWorkflow({ workflowId })).workflow?.taskCounts;
    const open = counts ? counts.pending + counts.ready + counts.claimed + counts.backoff : 0n;
    if (open === 0n) {
      console.log(`[${workerId}] no tasks remain (completed ${counts?.completed ?? 0n}); ${worker.completed} done by me`);
      break;
    }
    console.log(`[${workerId}] nothing ready yet; ${open} task(s) still open elsewhere`);
  }
} catch (error) {
  if (!stop.signal.aborted) {
    const e = BoardError.from(error);
    console.error(`[${workerId}] stopped: ${e.codeName}${e.reason ? ` (${e.reason})` : ""}: ${e.rawMessage}`);
    process.exitCode = 1;
  }
} finally {
  client.close();
}
