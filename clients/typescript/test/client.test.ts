// Every RPC of BoardService through BoardClient, against a real server, asserting real effects.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fromJsonString } from "@bufbuild/protobuf";
import {
  BoardClient,
  EventKind,
  ExportFormat,
  ExportedWorkflowSchema,
  TaskState,
  WorkflowStatus,
  duration,
  fromUtf8,
  timestampToMs,
  utf8,
  type Event,
} from "../src/index.js";
import { useServerAndClient } from "./helpers/server.js";
import { expectBoardError, uniqueId, withTimeout } from "./helpers/util.js";

let client: BoardClient;
useServerAndClient((_server, c) => {
  client = c;
});

const T = { timeout: 30_000 };

describe("workflows", () => {
  test("createWorkflow creates, is idempotent for the same goal, refuses another goal", T, async () => {
    const id = uniqueId("wf-create");
    const first = await client.createWorkflow({ workflowId: id, goal: "ship it", labels: { team: "a" } });
    assert.equal(first.created, true);
    assert.equal(first.workflow?.id, id);
    assert.equal(first.workflow?.goal, "ship it");
    assert.equal(first.workflow?.status, WorkflowStatus.ACTIVE);
    assert.deepEqual(first.workflow?.labels, { team: "a" });
    assert.ok(first.header!.revision >= 1n);

    const again = await client.createWorkflow({ workflowId: id, goal: "ship it" });
    assert.equal(again.created, false);
    assert.equal(again.workflow?.revision, first.workflow?.revision);

    await expectBoardError(client.createWorkflow({ workflowId: id, goal: "another goal" }), "ALREADY_EXISTS", "WORKFLOW_ALREADY_EXISTS");
  });

  test("getWorkflow returns status, task counts and head revision", T, async () => {
    const id = uniqueId("wf-get");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }, { id: "b", dependsOn: ["a"] }] });
    const got = await client.getWorkflow({ workflowId: id });
    assert.equal(got.workflow?.id, id);
    assert.equal(got.workflow?.taskCounts?.ready, 1n);
    assert.equal(got.workflow?.taskCounts?.pending, 1n);
    assert.equal(got.workflow?.revision, 3n); // created, posted a, posted b
    assert.equal(got.header?.revision, 3n);
  });

  test("listWorkflows pages through workflows ordered by id", T, async () => {
    const prefix = uniqueId("wf-list");
    const ids = [`${prefix}-1`, `${prefix}-2`, `${prefix}-3`];
    for (const id of ids) {
      await client.createWorkflow({ workflowId: id, goal: "g" });
    }
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await client.listWorkflows({ pageSize: 2, pageToken });
      assert.ok(page.workflows.length <= 2);
      seen.push(...page.workflows.map((w) => w.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 1000);
    assert.deepEqual(
      seen.filter((id) => id.startsWith(prefix)),
      ids,
    );
    assert.deepEqual([...seen].sort(), seen, "ordered by id");
    await expectBoardError(client.listWorkflows({ pageToken: "not-a-token" }), "INVALID_ARGUMENT", "INVALID_PAGE_TOKEN");
  });

  test("updateWorkflow changes goal, labels and status, with compare-and-set", T, async () => {
    const id = uniqueId("wf-update");
    const created = await client.createWorkflow({ workflowId: id, goal: "old", labels: { keep: "1", drop: "2" } });
    const updated = await client.updateWorkflow({
      workflowId: id,
      goal: "new",
      status: WorkflowStatus.PAUSED,
      setLabels: { added: "3" },
      removeLabels: ["drop"],
      expectedModRevision: created.workflow!.modRevision,
    });
    assert.equal(updated.workflow?.goal, "new");
    assert.equal(updated.workflow?.status, WorkflowStatus.PAUSED);
    assert.deepEqual(updated.workflow?.labels, { keep: "1", added: "3" });
    assert.ok(updated.workflow!.modRevision > created.workflow!.modRevision);

    const stale = await expectBoardError(
      client.updateWorkflow({ workflowId: id, goal: "newer", expectedModRevision: created.workflow!.modRevision }),
      "FAILED_PRECONDITION",
      "WORKFLOW_REVISION_MISMATCH",
    );
    assert.equal(stale.metadata.mod_revision, String(updated.workflow!.modRevision));
    assert.equal((await client.getWorkflow({ workflowId: id })).workflow?.goal, "new");
  });

  test("deleteWorkflow removes the workflow and everything in it", T, async () => {
    const id = uniqueId("wf-delete");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }] });
    const deleted = await client.deleteWorkflow({ workflowId: id });
    assert.equal(deleted.header?.revision, 3n);
    const e = await expectBoardError(client.getWorkflow({ workflowId: id }), "NOT_FOUND", "WORKFLOW_NOT_FOUND");
    assert.equal(e.metadata.workflow_id, id);
    // Re-created under the same id, its revisions continue after the deletion.
    const again = await client.createWorkflow({ workflowId: id, goal: "g" });
    assert.equal(again.created, true);
    assert.ok(again.workflow!.revision > 3n);
  });

  test("exportWorkflow exports JSON (ExportedWorkflow) and Markdown", T, async () => {
    const id = uniqueId("wf-export");
    await client.createWorkflow({ workflowId: id, goal: "export me" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a", payload: utf8("p") }] });
    await client.putNote({ workflowId: id, key: "plan/1", value: utf8("v") });

    const json = await client.exportWorkflow({ workflowId: id, format: ExportFormat.JSON });
    assert.equal(json.contentType, "application/json");
    const doc = fromJsonString(ExportedWorkflowSchema, json.content, { ignoreUnknownFields: true });
    assert.equal(doc.workflow?.goal, "export me");
    assert.deepEqual(
      doc.tasks.map((t) => t.id),
      ["a"],
    );
    assert.deepEqual(
      doc.notes.map((n) => n.key),
      ["plan/1"],
    );
    assert.deepEqual(
      doc.events.map((e) => e.revision),
      [1n, 2n, 3n],
    );

    const md = await client.exportWorkflow({ workflowId: id, format: ExportFormat.MARKDOWN });
    assert.equal(md.contentType, "text/markdown");
    assert.match(md.content, /export me/);
  });
});

describe("tasks", () => {
  test("postTasks adds a batch atomically and is idempotent per task id", T, async () => {
    const id = uniqueId("wf-post");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const posted = await client.postTasks({
      workflowId: id,
      tasks: [
        { id: "research", payload: utf8("topic"), contentType: "text/plain", priority: 5, labels: { k: "v" } },
        { id: "draft", dependsOn: ["research"], requiredSkills: ["writing"], maxAttempts: 2 },
      ],
    });
    assert.deepEqual(
      posted.tasks.map((t) => [t.id, t.state]),
      [
        ["research", TaskState.READY],
        ["draft", TaskState.PENDING],
      ],
    );
    assert.deepEqual(posted.existingTaskIds, []);
    assert.equal(posted.tasks[1]!.maxAttempts, 2);

    const again = await client.postTasks({ workflowId: id, tasks: [{ id: "research", payload: utf8("topic"), contentType: "text/plain", priority: 5, labels: { k: "v" } }] });
    assert.deepEqual(again.existingTaskIds, ["research"]);

    await expectBoardError(client.postTasks({ workflowId: id, tasks: [{ id: "research", payload: utf8("other") }] }), "ALREADY_EXISTS", "TASK_ALREADY_EXISTS");
    // All or nothing: a bad dependency refuses the whole batch.
    await expectBoardError(
      client.postTasks({ workflowId: id, tasks: [{ id: "ok" }, { id: "bad", dependsOn: ["missing"] }] }),
      "FAILED_PRECONDITION",
      "INVALID_DEPENDENCY",
    );
    await expectBoardError(client.getTask({ workflowId: id, taskId: "ok" }), "NOT_FOUND", "TASK_NOT_FOUND");
  });

  test("getTask and listTasks read tasks, with a state filter and paging", T, async () => {
    const id = uniqueId("wf-read");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "t1", payload: utf8("one") }, { id: "t2" }, { id: "t3", dependsOn: ["t1"] }] });
    const got = await client.getTask({ workflowId: id, taskId: "t1" });
    assert.equal(fromUtf8(got.task!.payload), "one");

    const ready = await client.listTasks({ workflowId: id, state: TaskState.READY });
    assert.deepEqual(
      ready.tasks.map((t) => t.id),
      ["t1", "t2"],
    );
    const page1 = await client.listTasks({ workflowId: id, pageSize: 2, omitBodies: true });
    assert.deepEqual(
      page1.tasks.map((t) => t.id),
      ["t1", "t2"],
    );
    assert.equal(page1.tasks[0]!.payload.length, 0, "omit_bodies leaves payloads out");
    const page2 = await client.listTasks({ workflowId: id, pageSize: 2, pageToken: page1.nextPageToken });
    assert.deepEqual(
      page2.tasks.map((t) => t.id),
      ["t3"],
    );
    assert.equal(page2.nextPageToken, "");
  });

  test("cancelTask cancels a task and its dependents", T, async () => {
    const id = uniqueId("wf-cancel");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }, { id: "b", dependsOn: ["a"] }] });
    const cancelled = await client.cancelTask({ workflowId: id, taskId: "a", reason: "not needed" });
    assert.equal(cancelled.task?.state, TaskState.CANCELLED);
    assert.equal(cancelled.task?.endReason, "not needed");
    assert.deepEqual(cancelled.cancelledDependents, ["b"]);
    assert.equal((await client.getTask({ workflowId: id, taskId: "b" })).task?.state, TaskState.CANCELLED);
    await expectBoardError(client.cancelTask({ workflowId: id, taskId: "a" }), "FAILED_PRECONDITION", "TASK_FINISHED");
  });
});

describe("claims", () => {
  test("claimTask by id and next-ready, renewLease, checkpoint, completeTask", T, async () => {
    const id = uniqueId("wf-claim");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "low", priority: 1 }, { id: "high", priority: 9 }, { id: "after", dependsOn: ["high"] }] });

    const next = await client.claimTask({ workflowId: id, workerId: "w1", leaseDuration: duration(5_000) });
    assert.equal(next.task?.id, "high", "highest priority first");
    assert.equal(next.task?.state, TaskState.CLAIMED);
    assert.equal(next.task?.owner, "w1");
    assert.ok(next.fencingToken > 0n);
    assert.equal(next.task?.fencingToken, next.fencingToken);
    const firstExpiry = timestampToMs(next.leaseExpireTime)!;

    const byId = await client.claimTask({ workflowId: id, workerId: "w2", taskId: "low" });
    assert.equal(byId.task?.id, "low");
    const taken = await expectBoardError(client.claimTask({ workflowId: id, workerId: "w3", taskId: "low" }), "FAILED_PRECONDITION", "TASK_ALREADY_CLAIMED");
    assert.equal(taken.metadata.owner, "w2");
    await expectBoardError(client.claimTask({ workflowId: id, workerId: "w3", taskId: "after" }), "FAILED_PRECONDITION", "TASK_NOT_READY");

    const ids = { workflowId: id, taskId: "high", fencingToken: next.fencingToken };
    const renewed = await client.renewLease({ ...ids, leaseDuration: duration(60_000) });
    assert.ok(timestampToMs(renewed.leaseExpireTime)! > firstExpiry + 30_000, "the lease was extended to about 60 s");

    const cp = await client.checkpoint({ ...ids, checkpoint: utf8("half way") });
    assert.ok(cp.checkpointTime !== undefined);
    assert.equal(fromUtf8((await client.getTask({ workflowId: id, taskId: "high" })).task!.checkpoint), "half way");

    const done = await client.completeTask({ ...ids, result: utf8("42"), resultContentType: "text/plain" });
    assert.equal(done.task?.state, TaskState.COMPLETED);
    assert.equal(done.alreadyCompleted, false);
    assert.deepEqual(done.readyDependents, ["after"]);
    const repeat = await client.completeTask({ ...ids, result: utf8("42"), resultContentType: "text/plain" });
    assert.equal(repeat.alreadyCompleted, true);
    await expectBoardError(client.completeTask({ ...ids, result: utf8("43") }), "FAILED_PRECONDITION", "RESULT_CONFLICT");

    const stored = (await client.getTask({ workflowId: id, taskId: "high" })).task!;
    assert.equal(fromUtf8(stored.result), "42");
    assert.equal(stored.resultContentType, "text/plain");
  });

  test("claimTask with wait blocks on the server until a task is posted", T, async () => {
    const id = uniqueId("wf-wait");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const start = Date.now();
    const claim = client.claimTask({ workflowId: id, workerId: "w", wait: duration(10_000) });
    // Nothing is ready yet: the call must still be waiting on the server. A request sent after it on the same
    // connection has been answered, so the server has the claim: an immediate "no task" would be back by now.
    const later = client.getWorkflow({ workflowId: id });
    const early = await Promise.race([claim.then(() => "answered"), later.then(() => "waiting")]);
    assert.equal(early, "waiting");
    assert.equal((await later).workflow?.taskCounts?.ready, 0n, "and nothing was ready to claim");
    await client.postTasks({ workflowId: id, tasks: [{ id: "late" }] });
    const got = await withTimeout(claim, 5_000, "the waiting claim");
    assert.equal(got.task?.id, "late");
    assert.ok(Date.now() - start < 5_000);

    const none = await client.claimTask({ workflowId: id, workerId: "w", wait: duration(200) });
    assert.equal(none.task, undefined, "no task when none became ready within the wait");
    assert.equal(none.fencingToken, 0n);
  });

  test("releaseTask gives the task back without counting the attempt", T, async () => {
    const id = uniqueId("wf-release");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }] });
    const c = await client.claimTask({ workflowId: id, workerId: "w1" });
    assert.equal(c.task?.attempt, 1);
    const released = await client.releaseTask({ workflowId: id, taskId: "a", fencingToken: c.fencingToken });
    assert.equal(released.task?.state, TaskState.READY);
    assert.equal(released.task?.attempt, 0);
    await expectBoardError(
      client.checkpoint({ workflowId: id, taskId: "a", fencingToken: c.fencingToken, checkpoint: utf8("x") }),
      "FAILED_PRECONDITION",
      "CLAIM_NOT_HELD",
    );
    const again = await client.claimTask({ workflowId: id, workerId: "w2" });
    assert.ok(again.fencingToken > c.fencingToken);
    assert.equal(again.task?.attempt, 1);
  });

  test("failTask retries while attempts remain, then dead-letters", T, async () => {
    const id = uniqueId("wf-fail");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({
      workflowId: id,
      tasks: [{ id: "a", maxAttempts: 2, retryPolicy: { initialBackoff: duration(0) } }, { id: "b", dependsOn: ["a"] }],
    });
    const c1 = await client.claimTask({ workflowId: id, workerId: "w" });
    const f1 = await client.failTask({ workflowId: id, taskId: "a", fencingToken: c1.fencingToken, errorMessage: "first", errorDetails: utf8("{}") });
    assert.equal(f1.willRetry, true);
    assert.equal(f1.task?.lastError?.message, "first");
    const c2 = await client.claimTask({ workflowId: id, workerId: "w", wait: duration(5_000) });
    assert.equal(c2.task?.id, "a");
    assert.equal(c2.task?.attempt, 2);
    const f2 = await client.failTask({ workflowId: id, taskId: "a", fencingToken: c2.fencingToken, errorMessage: "second" });
    assert.equal(f2.willRetry, false);
    assert.equal(f2.task?.state, TaskState.DEAD_LETTERED);
    assert.deepEqual(f2.cancelledDependents, ["b"]);
  });
});

describe("notes", () => {
  test("putNote, getNote, listNotes and deleteNote with compare-and-set", T, async () => {
    const id = uniqueId("wf-notes");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const created = await client.putNote({ workflowId: id, key: "plan/a", value: utf8("1"), contentType: "text/plain", expectedVersion: 0n, writer: "planner" });
    assert.equal(created.note?.version, 1n);
    assert.equal(created.note?.writer, "planner");
    await expectBoardError(client.putNote({ workflowId: id, key: "plan/a", value: utf8("x"), expectedVersion: 0n }), "FAILED_PRECONDITION", "NOTE_VERSION_MISMATCH");
    const updated = await client.putNote({ workflowId: id, key: "plan/a", value: utf8("2"), expectedVersion: 1n });
    assert.equal(updated.note?.version, 2n);
    await client.putNote({ workflowId: id, key: "plan/b", value: utf8("b") });
    await client.putNote({ workflowId: id, key: "other", value: utf8("o"), ttl: duration(60_000) });

    const got = await client.getNote({ workflowId: id, key: "plan/a" });
    assert.equal(fromUtf8(got.note!.value), "2");
    assert.equal(got.note?.contentType, "");

    const listed = await client.listNotes({ workflowId: id, keyPrefix: "plan/" });
    assert.deepEqual(
      listed.notes.map((n) => n.key),
      ["plan/a", "plan/b"],
    );
    const keysOnly = await client.listNotes({ workflowId: id, keysOnly: true });
    assert.deepEqual(
      keysOnly.notes.map((n) => [n.key, n.value.length]),
      [
        ["other", 0],
        ["plan/a", 0],
        ["plan/b", 0],
      ],
    );
    const withTtl = keysOnly.notes.find((n) => n.key === "other")!;
    assert.ok(withTtl.expireTime !== undefined);

    await expectBoardError(client.deleteNote({ workflowId: id, key: "plan/a", expectedVersion: 1n }), "FAILED_PRECONDITION", "NOTE_VERSION_MISMATCH");
    await client.deleteNote({ workflowId: id, key: "plan/a", expectedVersion: 2n, writer: "planner" });
    const e = await expectBoardError(client.getNote({ workflowId: id, key: "plan/a" }), "NOT_FOUND", "NOTE_NOT_FOUND");
    assert.equal(e.metadata.key, "plan/a");
  });
});

describe("watch", () => {
  test("watch replays history then delivers live changes in revision order", T, async () => {
    const id = uniqueId("wf-watch");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }] });
    const stop = new AbortController();
    const events: Event[] = [];
    const consumed = (async () => {
      for await (const e of client.watch({ workflowId: id, startRevision: 1n }, { signal: stop.signal })) {
        events.push(e);
        if (e.revision === 2n) {
          // History replayed; now make a live change.
          await client.putNote({ workflowId: id, key: "k", value: utf8("v"), writer: "me" });
        }
        if (events.length === 3) {
          return;
        }
      }
    })();
    await withTimeout(consumed, 10_000, "three watch events");
    stop.abort();
    assert.deepEqual(
      events.map((e) => [e.revision, e.kind]),
      [
        [1n, EventKind.WORKFLOW_CREATED],
        [2n, EventKind.TASK_POSTED],
        [3n, EventKind.NOTE_PUT],
      ],
    );
    assert.equal(events[1]!.task?.id, "a");
    assert.equal(events[2]!.note?.key, "k");
    assert.equal(events[2]!.actor, "me");
  });

  test("watchStream yields raw events and progress messages", T, async () => {
    const id = uniqueId("wf-raw");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const stop = new AbortController();
    const cases: string[] = [];
    let caughtUp = false;
    await withTimeout(
      (async () => {
        for await (const m of client.watchStream({ workflowId: id, startRevision: 1n, progressInterval: duration(100) }, { signal: stop.signal })) {
          cases.push(m.message.case ?? "none");
          if (m.message.case === "progress") {
            assert.equal(m.message.value.revision, 1n);
            caughtUp ||= m.message.value.caughtUp;
            break;
          }
        }
      })(),
      10_000,
      "a progress message",
    );
    stop.abort();
    assert.equal(cases[0], "event");
    assert.equal(cases.at(-1), "progress");
    assert.equal(caughtUp, true);
  });
});
