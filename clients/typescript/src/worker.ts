import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { BoardCallOptions, BoardClient } from "./client.js";
import type { CompleteTaskResponse, FailTaskResponse } from "./gen/grpcboard/v1/board_service_pb.js";
import type { Task } from "./gen/grpcboard/v1/task_pb.js";
import { BoardError, ClaimLostError, NonRetryableError } from "./errors.js";
import { duration, linkedController, monotonicMs, sleep, timestampToMs, utf8 } from "./util.js";

/** What a task handler returns: the result bytes and their media type. */
export interface TaskOutcome {
  /** The result stored with the task (up to 1 MiB by default). */
  result: Uint8Array;
  /** Media type of the result (default "application/octet-stream"). */
  contentType?: string;
}

/** Builders of common {@link TaskOutcome}s. */
export const TaskOutcome = {
  /** A UTF-8 text result ("text/plain; charset=utf-8" unless another type is given). */
  text(text: string, contentType = "text/plain; charset=utf-8"): TaskOutcome {
    return { result: utf8(text), contentType };
  },
  /** A JSON result: a value is serialized with JSON.stringify, a string is taken as the document. */
  json(value: unknown): TaskOutcome {
    return { result: utf8(typeof value === "string" ? value : JSON.stringify(value)), contentType: "application/json" };
  },
  /** Raw bytes. */
  bytes(result: Uint8Array, contentType = "application/octet-stream"): TaskOutcome {
    return { result, contentType };
  },
};

/** Something that logs; `console` fits. */
export interface WorkerLogger {
  info(message: string, ...args: unknown[]): void;
  warn(message: string, ...args: unknown[]): void;
}

/** What happened to a claim, reported through {@link BoardWorkerOptions.onEvent}. */
export type WorkerEvent =
  | { type: "claimed"; task: Task; fencingToken: bigint }
  | { type: "completed"; task: Task; fencingToken: bigint; response: CompleteTaskResponse }
  | { type: "failed"; task: Task; fencingToken: bigint; error: unknown; response: FailTaskResponse }
  | { type: "lost"; task: Task; fencingToken: bigint; reason: unknown }
  | { type: "released"; task: Task; fencingToken: bigint };

/** Settings of a {@link BoardWorker}. */
export interface BoardWorkerOptions {
  /** The workflow to take tasks from. */
  workflowId: string;
  /** Who this worker is; recorded as the owner of its claims. */
  workerId: string;
  /** What this worker can do; it is offered only tasks whose required skills are all here. */
  skills?: string[];
  /**
   * Lease length asked for on every claim and renewal, in ms (default 30 000; the server allows 1 s to 1 h). The
   * worker tracks the lease on the local monotonic clock, from when each claim or renewal request was sent, so
   * clock skew between this host and the server does not matter. Completions, failures and releases that meet
   * UNAVAILABLE are retried until the lease would have ended.
   */
  leaseMs?: number;
  /** How often the lease is renewed while a task runs, in ms (default a third of the lease). */
  renewIntervalMs?: number;
  /** How long one claim call waits on the server for a ready task, in ms (default 20 000); no busy polling. */
  claimWaitMs?: number;
  /** Tasks run at once by this worker (default 1). */
  maxConcurrency?: number;
  /**
   * Whether each completion also claims the next ready task (`claim_next`), so that a busy worker makes one
   * call per task instead of two (default true). If a completion's response is lost, the task it claimed
   * returns to the queue when its lease runs out.
   */
  claimNextOnComplete?: boolean;
  /** Logs claims, lost leases and failures. */
  logger?: WorkerLogger;
  /** Called for every claim, completion, failure, lost claim and release. Must not throw. */
  onEvent?: (event: WorkerEvent) => void;
}

/**
 * What a task handler gets: the task, its fencing token, a signal that fires when the lease is lost
 * (or the worker stops), and a way to save progress.
 */
export class TaskContext {
  /** @internal */
  constructor(
    private readonly client: BoardClient,
    /** The claimed task (payload, attempt, and the last checkpoint from any earlier owner). */
    readonly task: Task,
    /** The claim's fencing token; the worker passes it on every call about the task. */
    readonly fencingToken: bigint,
    private readonly lost: AbortController,
  ) {}

  /**
   * Aborted when the claim is lost (lease expired, task cancelled or taken over: the reason is a
   * BoardError or a ClaimLostError) or the worker stops (the reason is the stop signal's). Stop working
   * when it fires; whatever the handler returns afterwards is discarded unless the worker was stopping.
   */
  get signal(): AbortSignal {
    return this.lost.signal;
  }

  /** Progress saved by the previous owner; empty on a first attempt. */
  get lastCheckpoint(): Uint8Array {
    return this.task.checkpoint;
  }

  /**
   * Saves progress; a later owner of the task reads it in {@link lastCheckpoint}. Throws BoardError if
   * refused; when the claim is lost, {@link signal} fires too.
   */
  async checkpoint(checkpoint: Uint8Array | string): Promise<void> {
    try {
      await this.client.checkpoint(
        {
          workflowId: this.task.workflowId,
          taskId: this.task.id,
          fencingToken: this.fencingToken,
          checkpoint: typeof checkpoint === "string" ? utf8(checkpoint) : checkpoint,
        },
        { signal: this.lost.signal },
      );
    } catch (error) {
      const e = BoardError.from(error);
      if (e.isClaimLost) {
        this.lost.abort(e);
      }
      throw e;
    }
  }
}

/** The work: gets the task, returns its result; throwing fails the attempt (NonRetryableError: at once for good). */
export type TaskHandler = (context: TaskContext) => Promise<TaskOutcome>;

/**
 * A claim's lease as this process sees it, on the local monotonic clock: server timestamps come from another
 * clock, so only the granted length is taken from the server, counted from the moment the request that got
 * the grant was sent (the server cannot have granted it earlier, so the estimate never outlasts the real lease).
 */
class LeaseClock {
  constructor(
    /** When the lease ends, in {@link monotonicMs} time. */
    public end: number,
  ) {}

  /** Milliseconds left by the local estimate (zero or less: the lease has ended). */
  remaining(): number {
    return this.end - monotonicMs();
  }

  /** Records a grant of grantedMs made in answer to a request sent at sentAt (monotonic). */
  granted(sentAt: number, grantedMs: number): void {
    this.end = sentAt + grantedMs;
  }
}

/**
 * The lease length the server granted: its expiry minus the server's own time of the grant when the response
 * carries both (same clock, so skew cancels out), else the length that was asked for.
 */
function grantedLeaseMs(expireTime: Timestamp | undefined, serverTime: Timestamp | undefined, requestedMs: number): number {
  const end = timestampToMs(expireTime);
  const at = timestampToMs(serverTime);
  if (end !== undefined && at !== undefined && end > at) {
    return end - at;
  }
  return requestedMs;
}

/**
 * The deadline of a call made under a lease: the client's default (zero or less: none), but no later than the
 * lease's end while it has one; once the local estimate has run out, the default (only the server knows).
 */
function leaseBoundTimeout(leftMs: number, defaultTimeoutMs: number): number {
  if (leftMs < 1) {
    return defaultTimeoutMs;
  }
  return defaultTimeoutMs > 0 ? Math.min(leftMs, defaultTimeoutMs) : leftMs;
}

/** A task a worker holds, with the token of its claim and its lease. */
interface Claim {
  task: Task;
  fencingToken: bigint;
  lease: LeaseClock;
}

/**
 * A worker loop: claim the next ready task (waiting on the server, not polling), run the handler while
 * renewing the lease in the background, then complete or fail the task (by default claiming the next task
 * in the same call), every call carrying the fencing token. When the lease is lost the handler's signal
 * fires and nothing more is written for that claim; when the worker stops, running tasks are released for others.
 */
export class BoardWorker {
  private readonly options: Required<Omit<BoardWorkerOptions, "logger" | "onEvent" | "renewIntervalMs">> &
    Pick<BoardWorkerOptions, "logger" | "onEvent" | "renewIntervalMs">;
  private counts = { completed: 0, failed: 0, lost: 0 };

  /** Use {@link BoardClient.createWorker}. */
  constructor(
    private readonly client: BoardClient,
    options: BoardWorkerOptions,
  ) {
    const maxConcurrency = options.maxConcurrency ?? 1;
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1) {
      throw new RangeError("maxConcurrency must be an integer of at least 1");
    }
    this.options = {
      skills: [],
      leaseMs: 30_000,
      claimWaitMs: 20_000,
      claimNextOnComplete: true,
      ...options,
      maxConcurrency,
    };
  }

  /** Tasks this worker completed. */
  get completed(): number {
    return this.counts.completed;
  }

  /** Tasks this worker reported as failed. */
  get failed(): number {
    return this.counts.failed;
  }

  /** Claims this worker lost before finishing. */
  get lostClaims(): number {
    return this.counts.lost;
  }

  /**
   * Runs until `signal` is aborted, then releases running tasks and resolves. Transient failures
   * (server unavailable, deadline) are retried with backoff; any other failure of a claim call (for
   * example WORKFLOW_NOT_FOUND) stops every slot and rejects with that BoardError.
   */
  async run(handler: TaskHandler, signal?: AbortSignal): Promise<void> {
    const { controller, dispose } = linkedController(signal);
    const stopping = controller.signal;
    let fatal: unknown;
    const slot = async () => {
      let failures = 0;
      // The claim the last completion made (claim_next), run instead of calling ClaimTask.
      let next: Claim | undefined;
      try {
        while (!stopping.aborted) {
          try {
            const held = next;
            next = undefined;
            next = held !== undefined
              ? await this.runClaim(held, handler, stopping, this.options.claimNextOnComplete)
              : await this.claimAndRun(handler, stopping, this.options.claimNextOnComplete);
            failures = 0;
          } catch (error) {
            if (stopping.aborted) {
              return;
            }
            const e = BoardError.from(error);
            if (!(e.isTransient || e.codeName === "DEADLINE_EXCEEDED")) {
              fatal ??= e;
              controller.abort(e);
              return;
            }
            // Server or store unavailable: back off and try again rather than spin.
            failures++;
            this.options.logger?.warn(`Claim failed (${e.codeName}); retrying.`);
            try {
              await sleep(Math.min(10_000, 200 * 2 ** Math.min(failures, 6)), stopping);
            } catch {
              return;
            }
          }
        }
      } finally {
        if (next !== undefined) {
          // Stopped holding the claim the last completion made: give it back for another worker at once.
          const { task, fencingToken, lease } = next;
          if (await this.finish(task, lease, (o) => this.client.releaseTask({ workflowId: task.workflowId, taskId: task.id, fencingToken }, o))) {
            this.emit({ type: "released", task, fencingToken });
          }
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: this.options.maxConcurrency }, slot));
    } finally {
      dispose();
    }
    if (fatal !== undefined) {
      throw fatal;
    }
  }

  /**
   * Claims and runs at most one task.
   * @returns true if a task was claimed (whatever its outcome), false if none became ready within the claim wait.
   */
  async runOnce(handler: TaskHandler, signal?: AbortSignal): Promise<boolean> {
    let claimed = false;
    await this.claimAndRun(handler, signal ?? new AbortController().signal, false, () => (claimed = true));
    return claimed;
  }

  /** Claims a task and runs it; with `claimNext`, returns the claim its completion made. */
  private async claimAndRun(
    handler: TaskHandler,
    signal: AbortSignal,
    claimNext: boolean,
    onClaimed?: () => void,
  ): Promise<Claim | undefined> {
    const o = this.options;
    // The lease is counted from when the request is sent: the server grants it no earlier (see LeaseClock).
    const sentAt = monotonicMs();
    const claim = await this.client.claimTask(
      {
        workflowId: o.workflowId,
        workerId: o.workerId,
        skills: o.skills,
        leaseDuration: duration(o.leaseMs),
        wait: duration(o.claimWaitMs),
      },
      { signal },
    );
    if (claim.task === undefined) {
      return undefined;
    }
    onClaimed?.();
    const lease = new LeaseClock(sentAt + grantedLeaseMs(claim.leaseExpireTime, claim.task.updateTime, o.leaseMs));
    return this.runClaim({ task: claim.task, fencingToken: claim.fencingToken, lease }, handler, signal, claimNext);
  }

  private emit(event: WorkerEvent): void {
    try {
      this.options.onEvent?.(event);
    } catch {
      // A listener's failure must not break the claim's bookkeeping.
    }
  }

  /** Runs a claimed task to its end; returns the claim its completion made, if it asked for one. */
  private async runClaim(claim: Claim, handler: TaskHandler, stopping: AbortSignal, claimNext: boolean): Promise<Claim | undefined> {
    const { task, fencingToken: token, lease } = claim;
    const log = this.options.logger;
    const { controller: lost, dispose } = linkedController(stopping);
    const renewing = new AbortController();
    const context = new TaskContext(this.client, task, token, lost);
    log?.info(`Claimed ${task.id} (attempt ${task.attempt}, token ${token}).`);
    this.emit({ type: "claimed", task, fencingToken: token });
    const renewal = this.renewLoop(task, token, lease, lost, renewing.signal);
    let outcome: TaskOutcome | undefined;
    let failure: unknown;
    let threw = false;
    try {
      outcome = await handler(context);
    } catch (error) {
      threw = true;
      failure = error;
    } finally {
      renewing.abort();
      await renewal;
      dispose();
    }

    if (lost.signal.aborted && !stopping.aborted) {
      // The claim is gone: any write would be refused by its fencing token, and another worker may own the task.
      this.counts.lost++;
      log?.warn(`Lost the claim on ${task.id} (token ${token}); its result is discarded.`);
      this.emit({ type: "lost", task, fencingToken: token, reason: lost.signal.reason });
      return undefined;
    }

    const ids = { workflowId: task.workflowId, taskId: task.id, fencingToken: token };
    if (stopping.aborted && (threw || outcome === undefined)) {
      // Stopping: give the task back so another worker takes it at once, without counting the attempt.
      if (await this.finish(task, lease, (co) => this.client.releaseTask(ids, co))) {
        this.emit({ type: "released", task, fencingToken: token });
      }
      return undefined;
    }

    if (!threw && outcome !== undefined) {
      const result = outcome;
      const o = this.options;
      // Claiming the next task only while the worker goes on: one claimed on the way out would only be released.
      const claimNextRequest =
        claimNext && !stopping.aborted ? { skills: o.skills, leaseDuration: duration(o.leaseMs) } : undefined;
      // CompleteTask is idempotent for the same token and result, so a retry after a lost response is safe.
      let sentAt = 0;
      const response = await this.finish(task, lease, (co) => {
        sentAt = monotonicMs();
        return this.client.completeTask(
          {
            ...ids,
            result: result.result,
            resultContentType: result.contentType ?? "application/octet-stream",
            claimNext: claimNextRequest,
          },
          co,
        );
      });
      if (response === undefined) {
        return undefined;
      }
      this.counts.completed++;
      this.emit({ type: "completed", task, fencingToken: token, response });
      const nextTask = response.nextTask;
      if (nextTask === undefined) {
        return undefined;
      }
      // The next claim's lease counts from when the completion that made it was sent.
      const nextLease = new LeaseClock(sentAt + grantedLeaseMs(nextTask.leaseExpireTime, nextTask.updateTime, o.leaseMs));
      return { task: nextTask, fencingToken: response.nextFencingToken, lease: nextLease };
    }

    if (!threw) {
      failure = new Error("the task handler returned no outcome");
    }
    const message = failure instanceof Error ? failure.message : String(failure);
    log?.warn(`Task ${task.id} failed on attempt ${task.attempt}: ${message}`);
    const response = await this.finish(task, lease, (co) =>
      this.client.failTask(
        {
          ...ids,
          errorMessage: message.length > 4000 ? message.slice(0, 4000) : message,
          nonRetryable: failure instanceof NonRetryableError,
        },
        co,
      ),
    );
    if (response !== undefined) {
      this.counts.failed++;
      this.emit({ type: "failed", task, fencingToken: token, error: failure, response });
    }
    return undefined;
  }

  /**
   * Renews until told to stop; aborts `lost` when the claim is gone or the lease runs out unrenewed. The lease
   * end is tracked on the local monotonic clock: each renewal moves it to (when the renewal was sent + the
   * length granted), so a wall clock that differs from the server's, or jumps, changes nothing.
   */
  private async renewLoop(task: Task, token: bigint, lease: LeaseClock, lost: AbortController, stop: AbortSignal): Promise<void> {
    const o = this.options;
    const interval = Math.max(10, o.renewIntervalMs ?? o.leaseMs / 3);
    const lostLease = (cause?: unknown) =>
      new ClaimLostError(`the lease of ${task.id} ended before it could be renewed`, cause === undefined ? undefined : { cause });
    // A claim that waited on the server for a task counts its lease from when the claim was sent, so the
    // estimate can be short, even over, when the handler starts: then renew at once and let the server judge.
    let unverified = lease.remaining() < interval;
    while (!stop.aborted && !lost.signal.aborted) {
      try {
        // Renew every interval, but never sleep past the lease's end: a failed renewal is retried before it.
        await sleep(Math.min(interval, Math.max(0, lease.remaining() / 2)), stop);
        const sentAt = monotonicMs();
        const left = lease.end - sentAt;
        if (left < 1 && !unverified) {
          throw lostLease();
        }
        const renewed = await this.client.renewLease(
          {
            workflowId: task.workflowId,
            taskId: task.id,
            fencingToken: token,
            leaseDuration: duration(o.leaseMs),
          },
          { timeoutMs: leaseBoundTimeout(left, this.client.defaultTimeoutMs), signal: stop },
        );
        // RenewLeaseResponse carries the expiry but not the server's time: count the requested length.
        lease.granted(sentAt, grantedLeaseMs(renewed.leaseExpireTime, undefined, o.leaseMs));
        unverified = false;
      } catch (error) {
        if (stop.aborted) {
          return;
        }
        if (error instanceof ClaimLostError) {
          o.logger?.warn(`Could not renew ${task.id} before its lease ended; stopping its work.`);
          lost.abort(error);
          return;
        }
        unverified = false;
        const e = BoardError.from(error);
        if (e.isClaimLost) {
          o.logger?.warn(`Renewing ${task.id} was refused (${e.reason}); stopping its work.`);
          lost.abort(e);
          return;
        }
        // Transient: keep trying while the lease may still be alive; past its end it surely is not.
        if (lease.remaining() < 1) {
          o.logger?.warn(`Could not renew ${task.id} before its lease ended (${e.codeName}); stopping its work.`);
          lost.abort(lostLease(e));
          return;
        }
      }
    }
  }

  /**
   * Runs a final call for a claim (complete, fail, release). Transient failures (UNAVAILABLE: the server may be
   * restarting) are retried with backoff for as long as the lease may still be alive, never after its end;
   * any other failure, such as FAILED_PRECONDITION for a stale token or an expired lease, ends it at once.
   * Returns undefined if it did not succeed.
   */
  private async finish<T>(task: Task, lease: LeaseClock, call: (options: BoardCallOptions) => Promise<T>): Promise<T | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        // A call may not outlive the lease (the server would refuse it then anyway); the first one is always
        // made, since only the server knows whether a lease the local estimate gives up on is really over.
        return await call({ timeoutMs: leaseBoundTimeout(lease.remaining(), this.client.defaultTimeoutMs) });
      } catch (error) {
        const e = BoardError.from(error);
        if (e.isTransient) {
          const remaining = lease.remaining();
          if (remaining >= 20) {
            // 100 ms, doubling up to 2 s, and never sleeping through the rest of the lease.
            const backoff = Math.min(2_000, 100 * 2 ** Math.min(attempt - 1, 5), remaining / 2);
            this.options.logger?.warn(`Finishing ${task.id} failed (${e.codeName}); retrying.`);
            await sleep(backoff);
            continue;
          }
          this.options.logger?.warn(`Could not finish ${task.id} before its lease ended (${e.codeName}).`);
          return undefined;
        }
        if (e.isClaimLost) {
          this.counts.lost++;
        }
        this.options.logger?.warn(`Finishing ${task.id} was refused (${e.reason || e.codeName}).`);
        return undefined;
      }
    }
  }
}
