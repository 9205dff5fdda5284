// Errors: code AND reason from the real server, deadlines, and the BoardError classification.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ConnectError } from "@connectrpc/connect";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { BoardClient, BoardError, Code, HistoryCompactedError, duration, utf8 } from "../src/index.js";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.js";
import { useServerAndClient, type TestServer } from "./helpers/server.js";
import { startProxy, type TcpProxy } from "./helpers/proxy.js";
import { expectBoardError, uniqueId, withTimeout } from "./helpers/util.js";

let server: TestServer;
let client: BoardClient;
useServerAndClient((s, c) => {
  server = s;
  client = c;
});

const T = { timeout: 30_000 };

describe("errors from the server", () => {
  test("unknown workflow: NOT_FOUND / WORKFLOW_NOT_FOUND with metadata", T, async () => {
    const id = uniqueId("missing");
    const e = await expectBoardError(client.getWorkflow({ workflowId: id }), "NOT_FOUND", "WORKFLOW_NOT_FOUND");
    assert.equal(e.code, Code.NotFound);
    assert.equal(e.domain, "grpcboard.dev");
    assert.deepEqual(e.metadata, { workflow_id: id });
    assert.ok(e instanceof Error);
    assert.match(e.message, /NOT_FOUND \(WORKFLOW_NOT_FOUND\)/);
    assert.equal(e.isClaimLost, true, "a deleted workflow ends any claim in it");
    assert.equal(e.isTransient, false);
    await expectBoardError(client.postTasks({ workflowId: id, tasks: [{ id: "a" }] }), "NOT_FOUND", "WORKFLOW_NOT_FOUND");
  });

  test("stale fencing token: FAILED_PRECONDITION / FENCING_TOKEN_STALE", T, async () => {
    const id = uniqueId("stale");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }] });
    const first = await client.claimTask({ workflowId: id, workerId: "w1" });
    await client.releaseTask({ workflowId: id, taskId: "a", fencingToken: first.fencingToken });
    const second = await client.claimTask({ workflowId: id, workerId: "w2" });
    assert.ok(second.fencingToken > first.fencingToken);

    const stale = { workflowId: id, taskId: "a", fencingToken: first.fencingToken };
    for (const call of [
      () => client.checkpoint({ ...stale, checkpoint: utf8("x") }),
      () => client.completeTask({ ...stale, result: utf8("x") }),
      () => client.renewLease(stale),
      () => client.failTask({ ...stale, errorMessage: "x" }),
      () => client.releaseTask(stale),
    ]) {
      const e = await expectBoardError(call(), "FAILED_PRECONDITION", "FENCING_TOKEN_STALE");
      assert.equal(e.metadata.fencing_token, String(second.fencingToken));
      assert.equal(e.isClaimLost, true);
      assert.equal(e.isTransient, false);
    }
    // The new owner is unaffected.
    await client.completeTask({ workflowId: id, taskId: "a", fencingToken: second.fencingToken, result: utf8("ok") });
  });

  test("token never issued: FAILED_PRECONDITION / FENCING_TOKEN_INVALID", T, async () => {
    const id = uniqueId("invalid");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    await client.postTasks({ workflowId: id, tasks: [{ id: "a" }] });
    const c = await client.claimTask({ workflowId: id, workerId: "w1" });
    const e = await expectBoardError(
      client.renewLease({ workflowId: id, taskId: "a", fencingToken: c.fencingToken + 1000n }),
      "FAILED_PRECONDITION",
      "FENCING_TOKEN_INVALID",
    );
    assert.equal(e.isClaimLost, true);
  });

  test("bad request: INVALID_ARGUMENT / INVALID_ARGUMENT names the field", T, async () => {
    const e = await expectBoardError(client.createWorkflow({ workflowId: "", goal: "g" }), "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert.ok(e.metadata.field, "metadata names the field");
    assert.equal(e.isTransient, false);
  });
});

describe("deadlines", () => {
  let proxy: TcpProxy;
  before(async () => {
    proxy = await startProxy(server.target);
    proxy.setBlackhole(true);
  });
  after(async () => {
    await proxy?.close();
  });

  test("an explicit timeoutMs ends the call with DEADLINE_EXCEEDED", T, async () => {
    const silent = new BoardClient(proxy.target);
    try {
      const start = Date.now();
      const e = await withTimeout(expectBoardError(silent.getWorkflow({ workflowId: "x" }, { timeoutMs: 300 }), "DEADLINE_EXCEEDED", ""), 10_000, "the deadline");
      assert.ok(Date.now() - start >= 250, "not before the deadline");
      assert.equal(e.code, Code.DeadlineExceeded);
      assert.equal(e.isTransient, false);
    } finally {
      silent.close();
    }
  });

  test("every unary call gets the client's default deadline", T, async () => {
    const silent = new BoardClient(proxy.target, { defaultTimeoutMs: 400 });
    try {
      const start = Date.now();
      await withTimeout(expectBoardError(silent.listWorkflows({}), "DEADLINE_EXCEEDED", ""), 10_000, "the default deadline");
      const took = Date.now() - start;
      assert.ok(took >= 350 && took < 5_000, `took ${took} ms`);
    } finally {
      silent.close();
    }
  });

  test("claimTask's default deadline is its wait plus the default", T, async () => {
    const id = uniqueId("claim-deadline");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const short = new BoardClient(server.target, { defaultTimeoutMs: 500 });
    try {
      const start = Date.now();
      // Waits 1.5 s on the server: longer than the default deadline alone, so it must be extended.
      const none = await withTimeout(short.claimTask({ workflowId: id, workerId: "w", wait: duration(1_500) }), 10_000, "the waiting claim");
      assert.equal(none.task, undefined);
      assert.ok(Date.now() - start >= 1_400, "the server waited the whole wait");
    } finally {
      short.close();
    }
  });

  test("a call cancelled through its signal fails with CANCELLED", T, async () => {
    const id = uniqueId("cancelled");
    await client.createWorkflow({ workflowId: id, goal: "g" });
    const ac = new AbortController();
    const claim = client.claimTask({ workflowId: id, workerId: "w", wait: duration(10_000) }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    await withTimeout(expectBoardError(claim, "CANCELLED", ""), 5_000, "the cancelled claim");
  });
});

describe("BoardError", () => {
  function withInfo(code: Code, reason: string, metadata: Record<string, string> = {}): BoardError {
    const info = create(ErrorInfoSchema, { reason, domain: "grpcboard.dev", metadata });
    const ce = new ConnectError("msg", code, undefined, [{ desc: ErrorInfoSchema, value: info }]);
    return BoardError.from(ce);
  }

  test("decodes ErrorInfo from ConnectError details", () => {
    const e = withInfo(Code.OutOfRange, "HISTORY_COMPACTED", { oldest_revision: "7" });
    assert.equal(e.codeName, "OUT_OF_RANGE");
    assert.equal(e.reason, "HISTORY_COMPACTED");
    assert.equal(e.metadata.oldest_revision, "7");
    assert.equal(e.rawMessage, "msg");
    assert.equal(BoardError.from(e), e, "from() of a BoardError is itself");
  });

  test("OUT_OF_RANGE becomes a HistoryCompactedError carrying the oldest available revision", () => {
    const e = withInfo(Code.OutOfRange, "HISTORY_COMPACTED", { oldest_revision: "31", revision: "46" });
    assert.ok(e instanceof HistoryCompactedError && e instanceof BoardError);
    assert.equal(e.oldestRevision, 31n);
    assert.equal(e.headRevision, 46n);
    assert.match(e.message, /^OUT_OF_RANGE \(HISTORY_COMPACTED\): msg$/);
    const bare = BoardError.from(new ConnectError("no details", Code.OutOfRange));
    assert.ok(bare instanceof HistoryCompactedError);
    assert.equal(bare.oldestRevision, undefined, "no metadata: no revision");
    assert.ok(!(withInfo(Code.FailedPrecondition, "LEASE_EXPIRED") instanceof HistoryCompactedError));
  });

  test("the rich status is wire-compatible with google.rpc.Status", () => {
    // What the server puts in grpc-status-details-bin decodes with the generated Status/ErrorInfo.
    const status = create(StatusSchema, {
      code: Code.FailedPrecondition,
      message: "m",
      details: [anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "LEASE_EXPIRED", domain: "grpcboard.dev" }))],
    });
    assert.ok(toBinary(StatusSchema, status).length > 0);
    assert.equal(status.details[0]!.typeUrl, "type.googleapis.com/google.rpc.ErrorInfo");
  });

  test("isClaimLost covers the reasons that end a claim, and only those", () => {
    for (const reason of ["FENCING_TOKEN_STALE", "FENCING_TOKEN_INVALID", "LEASE_EXPIRED", "CLAIM_NOT_HELD", "TASK_FINISHED"]) {
      assert.equal(withInfo(Code.FailedPrecondition, reason).isClaimLost, true, reason);
    }
    assert.equal(withInfo(Code.NotFound, "TASK_NOT_FOUND").isClaimLost, true);
    assert.equal(withInfo(Code.NotFound, "WORKFLOW_NOT_FOUND").isClaimLost, true);
    for (const reason of ["TASK_ALREADY_CLAIMED", "RESULT_CONFLICT", "NOTE_VERSION_MISMATCH", "INVALID_ARGUMENT", ""]) {
      assert.equal(withInfo(Code.FailedPrecondition, reason).isClaimLost, false, reason);
    }
  });

  test("isTransient: unavailable, aborted, and reason-less transport failures", () => {
    assert.equal(withInfo(Code.Unavailable, "STORE_UNAVAILABLE").isTransient, true);
    assert.equal(withInfo(Code.Aborted, "CONFLICT").isTransient, true);
    assert.equal(BoardError.from(new ConnectError("reset", Code.Internal)).isTransient, true);
    assert.equal(BoardError.from(new ConnectError("?", Code.Unknown)).isTransient, true);
    assert.equal(BoardError.from(new ConnectError("stream reset", Code.Canceled)).isTransient, true);
    assert.equal(withInfo(Code.Internal, "STORE_DATA_LOSS").isTransient, false);
    assert.equal(withInfo(Code.DataLoss, "STORE_DATA_LOSS").isTransient, false);
    assert.equal(withInfo(Code.ResourceExhausted, "LIMIT_EXCEEDED").isTransient, false);
    assert.equal(BoardError.from(new ConnectError("late", Code.DeadlineExceeded)).isTransient, false);
  });
});
