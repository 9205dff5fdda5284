#!/usr/bin/env node
/**
 * A small command-line client for cross-language tests. Every command prints JSON lines to stdout.
 *
 *   claim --target URL --workflow W --worker ID [--task T] [--lease-ms N] [--wait-ms N] [--announce]
 *   watch --target URL --workflow W --from REV --count N [--timeout-s S]
 *   work  --target URL --workflow W --worker ID [--lease-ms N] [--max-tasks N] [--hang-after-claim]
 *         [--claim-wait-ms N] [--skills a,b] [-v]
 *
 * --target defaults to $GRPCBOARD_TARGET, then http://127.0.0.1:50051.
 */
import { parseArgs } from "node:util";
import { BoardClient } from "./client.js";
import { BoardError } from "./errors.js";
import { EventKind, type Event } from "./gen/grpcboard/v1/event_pb.js";
import { duration, sleep, utf8 } from "./util.js";

const USAGE = `Usage: grpcboard-ts <command> [options]

Commands:
  claim --workflow W --worker ID [--task T] [--lease-ms N] [--wait-ms N] [--announce]
        Claims one task. Prints {"claimed": true, "task_id", "fencing_token"}, {"claimed": false}
        or {"error": {"code", "reason", "message", "metadata"}}; exits 0 in all three cases.
        --announce first prints {"waiting": true}, just before the claim is sent (so that a test can
        start several claimers, wait until all are about to claim, then post the task they race for).
  watch --workflow W --from REV --count N [--timeout-s S]
        Prints {"revision", "kind", "task_id", "note_key"} per event (resuming after disconnects)
        and exits 0 after N events; 1 with an {"error": ...} line if the watch fails, the workflow
        is deleted, or --timeout-s passes first.
  work  --workflow W --worker ID [--lease-ms N] [--max-tasks N] [--hang-after-claim]
        [--claim-wait-ms N] [--skills a,b] [-v]
        Runs the worker loop: each task gets a checkpoint, then completes with "done by <worker>"
        (text/plain); prints {"completed": "task_id", "fencing_token"} per task and exits 0 after
        --max-tasks completions, or on SIGTERM/SIGINT (releasing a running task).
        --hang-after-claim claims one task, prints {"claimed": true, "task_id", "fencing_token"} and
        then sleeps without renewing (a crashed worker) until killed.

Common options:
  --target URL       server address (default $GRPCBOARD_TARGET or http://127.0.0.1:50051)
  --timeout-ms N     deadline of unary calls (default 30000)
  -v, --verbose      log the worker's claims and failures to stderr
  --help

Exit codes: 0 success (and every claim outcome), 1 an error (printed as {"error": ...}), 2 bad usage.
`;

/** JSON.stringify that writes bigints (fencing tokens, revisions) as JSON numbers. */
function line(value: unknown): void {
  process.stdout.write(
    JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? (Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()) : v)) +
      "\n",
  );
}

function errorLine(error: unknown): void {
  const e = BoardError.from(error);
  line({ error: { code: e.codeName, reason: e.reason, message: e.rawMessage, metadata: e.metadata } });
}

class UsageError extends Error {}

function intOption(values: Record<string, unknown>, name: string, fallback?: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) {
    return fallback;
  }
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    throw new UsageError(`--${name} must be a non-negative integer, got ${String(raw)}`);
  }
  return n;
}

function required(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== "string" || v === "") {
    throw new UsageError(`--${name} is required`);
  }
  return v;
}

function eventLine(e: Event): Record<string, unknown> {
  return {
    revision: e.revision,
    kind: EventKind[e.kind] ?? `UNKNOWN_${e.kind}`,
    task_id: e.task?.id ?? null,
    note_key: e.note?.key ?? null,
  };
}

async function claim(client: BoardClient, v: Record<string, unknown>): Promise<number> {
  const waitMs = intOption(v, "wait-ms", 0)!;
  const leaseMs = intOption(v, "lease-ms");
  const workflowId = required(v, "workflow");
  const workerId = required(v, "worker");
  if (v.announce) {
    line({ waiting: true });
  }
  try {
    const response = await client.claimTask({
      workflowId,
      workerId,
      taskId: (v.task as string | undefined) ?? "",
      leaseDuration: leaseMs ? duration(leaseMs) : undefined,
      wait: waitMs > 0 ? duration(waitMs) : undefined,
    });
    if (response.task === undefined) {
      line({ claimed: false });
    } else {
      line({ claimed: true, task_id: response.task.id, fencing_token: response.fencingToken });
    }
  } catch (error) {
    if (error instanceof UsageError) throw error;
    errorLine(error);
  }
  return 0;
}

async function watch(client: BoardClient, v: Record<string, unknown>): Promise<number> {
  const workflowId = required(v, "workflow");
  const from = intOption(v, "from", 0)!;
  const count = intOption(v, "count");
  if (count === undefined) {
    throw new UsageError("--count is required");
  }
  if (count === 0) {
    return 0;
  }
  const timeoutS = Number(v["timeout-s"] ?? 0);
  if (!Number.isFinite(timeoutS) || timeoutS < 0) {
    throw new UsageError(`--timeout-s must be a non-negative number, got ${String(v["timeout-s"])}`);
  }
  let seen = 0;
  let timedOut = false;
  const stop = new AbortController();
  const timer = timeoutS > 0 ? setTimeout(() => ((timedOut = true), stop.abort(new Error("timed out"))), timeoutS * 1000) : undefined;
  try {
    for await (const event of client.watch({ workflowId, startRevision: BigInt(from) }, { signal: stop.signal })) {
      line(eventLine(event));
      if (++seen >= count) {
        return 0;
      }
    }
  } catch (error) {
    if (!timedOut) {
      errorLine(error);
      return 1;
    }
  } finally {
    clearTimeout(timer);
    stop.abort();
  }
  const why = timedOut ? "timed out" : "workflow deleted";
  line({
    error: { code: timedOut ? "DEADLINE_EXCEEDED" : "OK", reason: "", message: `the stream ended after ${seen} of ${count} events (${why})`, metadata: {} },
  });
  return 1;
}

async function work(client: BoardClient, v: Record<string, unknown>): Promise<number> {
  const workflowId = required(v, "workflow");
  const workerId = required(v, "worker");
  const leaseMs = intOption(v, "lease-ms", 30_000) || 30_000;
  const maxTasks = intOption(v, "max-tasks");
  const claimWaitMs = intOption(v, "claim-wait-ms", 20_000)!;
  const skills = String(v.skills ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  const stop = new AbortController();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => stop.abort(new Error(`stopped by ${sig}`)));
  }

  if (v["hang-after-claim"]) {
    // Claim one task, then neither renew nor finish it (a crashed worker): the server must expire the lease.
    while (!stop.signal.aborted) {
      let response;
      try {
        response = await client.claimTask(
          { workflowId, workerId, skills, leaseDuration: duration(leaseMs), wait: duration(claimWaitMs) },
          { signal: stop.signal },
        );
      } catch (error) {
        if (stop.signal.aborted) return 0;
        const e = BoardError.from(error);
        if (!e.isTransient) throw e;
        await sleep(500, stop.signal).catch(() => {});
        continue;
      }
      if (response.task !== undefined) {
        line({ claimed: true, task_id: response.task.id, fencing_token: response.fencingToken });
        client.close();
        // Sleep until killed (SIGTERM/SIGINT end it with exit code 0).
        const keepAlive = setInterval(() => {}, 1 << 30);
        await new Promise((resolve) => stop.signal.addEventListener("abort", resolve, { once: true }));
        clearInterval(keepAlive);
        return 0;
      }
    }
    return 0;
  }

  if (maxTasks === 0) {
    return 0;
  }
  let completed = 0;
  const log = v.verbose ? { info: (m: string) => console.error(m), warn: (m: string) => console.error(m) } : undefined;
  const worker = client.createWorker({
    workflowId,
    workerId,
    skills,
    leaseMs,
    claimWaitMs,
    logger: log,
    onEvent: (event) => {
      if (event.type === "completed") {
        line({ completed: event.task.id, fencing_token: event.fencingToken });
        if (maxTasks !== undefined && ++completed >= maxTasks) {
          stop.abort(new Error("max tasks reached"));
        }
      }
    },
  });
  await worker.run(async (ctx) => {
    await ctx.checkpoint(`checkpoint by ${workerId}`);
    ctx.signal.throwIfAborted();
    return { result: utf8(`done by ${workerId}`), contentType: "text/plain" };
  }, stop.signal);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  const { values } = parseArgs({
    args: rest,
    strict: true,
    options: {
      target: { type: "string" },
      workflow: { type: "string" },
      worker: { type: "string" },
      task: { type: "string" },
      "lease-ms": { type: "string" },
      "wait-ms": { type: "string" },
      announce: { type: "boolean" },
      from: { type: "string" },
      count: { type: "string" },
      "max-tasks": { type: "string" },
      "hang-after-claim": { type: "boolean" },
      "claim-wait-ms": { type: "string" },
      skills: { type: "string" },
      "timeout-s": { type: "string" },
      verbose: { type: "boolean", short: "v" },
      "timeout-ms": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const target = values.target ?? process.env.GRPCBOARD_TARGET ?? "http://127.0.0.1:50051";
  const client = new BoardClient(target, { defaultTimeoutMs: intOption(values, "timeout-ms", 30_000) });
  try {
    switch (command) {
      case "claim":
        return await claim(client, values);
      case "watch":
        return await watch(client, values);
      case "work":
        return await work(client, values);
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError || (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS"))) {
      process.stderr.write(`${error.message}\n\n${USAGE}`);
      process.exitCode = 2;
      return;
    }
    errorLine(error);
    process.exitCode = 1;
  },
);
