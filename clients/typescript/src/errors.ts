import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/** The ErrorInfo domain of every error the board sends. */
export const ERROR_DOMAIN = "grpcboard.dev";

const CODE_NAMES: Readonly<Record<number, string>> = {
  0: "OK",
  1: "CANCELLED",
  2: "UNKNOWN",
  3: "INVALID_ARGUMENT",
  4: "DEADLINE_EXCEEDED",
  5: "NOT_FOUND",
  6: "ALREADY_EXISTS",
  7: "PERMISSION_DENIED",
  8: "RESOURCE_EXHAUSTED",
  9: "FAILED_PRECONDITION",
  10: "ABORTED",
  11: "OUT_OF_RANGE",
  12: "UNIMPLEMENTED",
  13: "INTERNAL",
  14: "UNAVAILABLE",
  15: "DATA_LOSS",
  16: "UNAUTHENTICATED",
};

/** The gRPC name of a status code in UPPER_SNAKE_CASE, for example "FAILED_PRECONDITION". */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/** Reasons after which the claim a call was made under is gone for good: stop working on the task. */
const CLAIM_LOST_REASONS: ReadonlySet<string> = new Set([
  "FENCING_TOKEN_STALE",
  "FENCING_TOKEN_INVALID",
  "LEASE_EXPIRED",
  "CLAIM_NOT_HELD",
  "TASK_FINISHED",
  "TASK_NOT_FOUND",
  "WORKFLOW_NOT_FOUND",
]);

/**
 * A call the board refused or could not complete: the gRPC status code and, when the server sent one,
 * the google.rpc.ErrorInfo reason (an ErrorReason name without its ERROR_REASON_ prefix; error.proto
 * documents what to do for each) with its metadata.
 */
export class BoardError extends Error {
  /** The gRPC status code (the values of @connectrpc/connect's Code are the gRPC codes). */
  readonly code: Code;
  /** The ErrorInfo reason, for example "FENCING_TOKEN_STALE"; "" for transport failures and deadlines. */
  readonly reason: string;
  /** The ErrorInfo domain ("grpcboard.dev"), or "" when the status carried no ErrorInfo. */
  readonly domain: string;
  /** Facts that come with the reason, such as "fencing_token" or "oldest_revision". */
  readonly metadata: Readonly<Record<string, string>>;
  /** The status message as the server (or the transport) wrote it. */
  readonly rawMessage: string;

  constructor(
    code: Code,
    rawMessage: string,
    init: { reason?: string; domain?: string; metadata?: Record<string, string>; cause?: unknown } = {},
  ) {
    const reason = init.reason ?? "";
    super(`${codeName(code)}${reason ? ` (${reason})` : ""}: ${rawMessage}`, { cause: init.cause });
    this.name = "BoardError";
    this.code = code;
    this.reason = reason;
    this.domain = init.domain ?? "";
    this.metadata = Object.freeze({ ...(init.metadata ?? {}) });
    this.rawMessage = rawMessage;
  }

  /** Converts anything a call can throw (ConnectError, AbortError, ...) into a BoardError. */
  static from(error: unknown): BoardError {
    if (error instanceof BoardError) {
      return error;
    }
    const ce = ConnectError.from(error);
    let info: { reason: string; domain: string; metadata: Record<string, string> } | undefined;
    try {
      info = ce.findDetails(ErrorInfoSchema)[0];
    } catch {
      info = undefined;
    }
    // OUT_OF_RANGE is only ever a watch asking for compacted history: give it its own class.
    const kind = ce.code === Code.OutOfRange ? HistoryCompactedError : BoardError;
    return new kind(ce.code, ce.rawMessage, {
      reason: info?.reason,
      domain: info?.domain,
      metadata: info?.metadata,
      cause: error,
    });
  }

  /** The status code's gRPC name, for example "FAILED_PRECONDITION". */
  get codeName(): string {
    return codeName(this.code);
  }

  /**
   * True when the claim this call was made under is gone for good (stale or invalid token, expired lease,
   * ended claim, finished or deleted task): the worker must stop working on the task.
   */
  get isClaimLost(): boolean {
    return CLAIM_LOST_REASONS.has(this.reason);
  }

  /**
   * True when retrying the same call later may succeed: the server or store is unavailable, a race was
   * lost, or the connection failed without the server giving a reason.
   */
  get isTransient(): boolean {
    if (this.code === Code.Unavailable || this.code === Code.Aborted) {
      return true;
    }
    return (
      (this.code === Code.Internal || this.code === Code.Unknown || this.code === Code.Canceled) &&
      this.reason === ""
    );
  }
}

/**
 * OUT_OF_RANGE (reason HISTORY_COMPACTED): a watch asked for a revision older than the history the server
 * still keeps, so it cannot go on without a gap. {@link BoardError.from} returns this subclass for every
 * OUT_OF_RANGE status, so `instanceof BoardError` checks keep working.
 *
 * To recover, re-read the state you need (getTask, listTasks, exportWorkflow), then watch again from
 * {@link oldestRevision} or from the head (start revision 0).
 */
export class HistoryCompactedError extends BoardError {
  /** The oldest revision that can still be watched from (metadata "oldest_revision"); undefined if the server sent none. */
  readonly oldestRevision: bigint | undefined;
  /** The workflow's head revision when the error was sent (metadata "revision"); undefined if the server sent none. */
  readonly headRevision: bigint | undefined;

  constructor(
    code: Code,
    rawMessage: string,
    init: { reason?: string; domain?: string; metadata?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(code, rawMessage, init);
    this.name = "HistoryCompactedError";
    this.oldestRevision = toBigInt(this.metadata.oldest_revision);
    this.headRevision = toBigInt(this.metadata.revision);
  }
}

function toBigInt(value: string | undefined): bigint | undefined {
  if (value === undefined || !/^-?\d+$/.test(value.trim())) {
    return undefined;
  }
  return BigInt(value.trim());
}

/** Throw this from a task handler to dead-letter the task at once (FailTask with non_retryable) instead of retrying it. */
export class NonRetryableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NonRetryableError";
  }
}

/** The reason a task handler's AbortSignal fires when the lease ran out before it could be renewed. */
export class ClaimLostError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ClaimLostError";
  }
}
