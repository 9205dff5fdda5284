// Creates a workflow and posts a small task graph: research -> two drafts -> review.
//
//   npx tsx examples/planner.ts --workflow demo
//
// The server is GRPCBOARD_TARGET (default http://127.0.0.1:50051). Running it again is harmless:
// CreateWorkflow and PostTasks are idempotent for the same definitions.
// (Applications import from "@grpcboard/client"; the examples import the sources so they run unbuilt.)
import { parseArgs } from "node:util";
import { BoardClient, BoardError, TaskState, utf8 } from "../src/index.js";

const { values } = parseArgs({
  options: {
    workflow: { type: "string", default: "demo" },
    goal: { type: "string", default: "Write a short article about fencing tokens" },
    target: { type: "string", default: process.env.GRPCBOARD_TARGET ?? "http://127.0.0.1:50051" },
  },
});
const workflowId = values.workflow!;
const client = new BoardClient(values.target!);

try {
  const { workflow, created } = await client.createWorkflow({ workflowId, goal: values.goal!, labels: { example: "planner" } });
  console.log(`${created ? "created" : "reusing"} workflow ${workflow?.id}: ${workflow?.goal}`);

  const json = (value: unknown) => ({ payload: utf8(JSON.stringify(value)), contentType: "application/json" });
  const { tasks, existingTaskIds } = await client.postTasks({
    workflowId,
    tasks: [
      { id: "research", priority: 10, ...json({ step: "research", topic: values.goal }) },
      { id: "draft-intro", dependsOn: ["research"], ...json({ step: "draft", section: "introduction" }) },
      { id: "draft-body", dependsOn: ["research"], ...json({ step: "draft", section: "body" }) },
      { id: "review", dependsOn: ["draft-intro", "draft-body"], ...json({ step: "review" }) },
    ],
  });
  for (const task of tasks) {
    const deps = task.dependsOn.length ? ` after ${task.dependsOn.join(", ")}` : "";
    const note = existingTaskIds.includes(task.id) ? " (already posted)" : "";
    console.log(`  ${task.id.padEnd(12)} ${TaskState[task.state]}${deps}${note}`);
  }
  const head = await client.getWorkflow({ workflowId });
  console.log(`workflow ${workflowId} is at revision ${head.workflow?.revision}; start workers with:`);
  console.log(`  npx tsx examples/worker.ts --workflow ${workflowId}`);
} catch (error) {
  const e = BoardError.from(error);
  console.error(`planner failed: ${e.codeName}${e.reason ? ` (${e.reason})` : ""}: ${e.rawMessage}`);
  process.exitCode = 1;
} finally {
  client.close();
}
