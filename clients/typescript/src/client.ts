import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import http2 from "node:http2";
import { Code, ConnectError, createClient, type CallOptions, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager, type Http2SessionOptions } from "@connectrpc/connect-node";
import {
  BoardService,
  type CancelTaskRequestSchema,
  type CancelTaskResponse,
  type CheckpointRequestSchema,
  type CheckpointResponse,
  type ClaimTaskRequestSchema,
  type ClaimTaskResponse,
  type CompleteTaskRequestSchema,
  type CompleteTaskResponse,
  type CreateWorkflowRequestSchema,
  type CreateWorkflowResponse,
  type DeleteNoteRequestSchema,
  type DeleteNoteResponse,
  type DeleteWorkflowRequestSchema,
  type DeleteWorkflowResponse,
  type ExportWorkflowRequestSchema,
  type ExportWorkflowResponse,
  type FailTaskRequestSchema,
  type FailTaskResponse,
  type GetNoteRequestSchema,
  type GetNoteResponse,
  type GetTaskRequestSchema,
  type GetTaskResponse,
  type GetWorkflowRequestSchema,
  type GetWorkflowResponse,
  type ListNotesRequestSchema,
  type ListNotesResponse,
  type ListTasksRequestSchema,
  type ListTasksResponse,
  type ListWorkflowsRequestSchema,
  type ListWorkflowsResponse,
  type PostTasksRequestSchema,
  type PostTasksResponse,
  type PutNoteRequestSchema,
  type PutNoteResponse,
  type ReleaseTaskRequestSchema,
  type ReleaseTaskResponse,
  type RenewLeaseRequestSchema,
  type RenewLeaseResponse,
  type UpdateWorkflowRequestSchema,
  type UpdateWorkflowResponse,
  type WatchRequestSchema,
  type WatchProgress,
  type WatchResponse,
} from "./gen/grpcboard/v1/board_service_pb.js";
import type { Event } from "./gen/grpcboard/v1/event_pb.js";
import { BoardError } from "./errors.js";
import { sleep, toMs } from "./util.js";
import { WatchResume } from "./watch.js";
import { BoardWorker, type BoardWorkerOptions } from "./worker.js";

/** The progress interval the server uses when a WatchRequest sets none. */
const DEFAULT_PROGRESS_INTERVAL_MS = 5_000;
/** A watch's default idle timeout is this many progress intervals (one late progress message is no reason to reconnect). */
const IDLE_TIMEOUT_FACTOR = 3;

type SessionManager = NonNullable<Parameters<typeof createGrpcTransport>[0]["sessionManager"]>;

/**
 * Fails a call whose HTTP/2 stream closes without an error code before any response arrived.
 *
 * That happens when a server shuts down with calls in flight and drops the connection without
 * answering them (GrpcBoard does so for a waiting ClaimTask). @connectrpc/connect-node 2.2 maps the
 * NO_ERROR close to no error at all, so the call would hang until its deadline (for a waiting claim:
 * wait + default timeout). Here it fails at once with UNAVAILABLE, which callers retry.
 */
class UnansweredStreamGuard implements SessionManager {
  /** The HTTP/2 sessions streams were opened on that are still open, so a stalled one can be checked. */
  private readonly sessions = new Set<http2.Http2Session>();

  constructor(private readonly inner: Http2SessionManager) {}

  /**
   * Sends a PING on every open session and destroys each one that does not answer within timeoutMs, so the
   * next call opens a new connection instead of queueing on a dead one (a half-open TCP connection never
   * fails by itself). Healthy sessions answer at once and are left alone.
   */
  async verifySessions(timeoutMs: number): Promise<void> {
    const checks = [...this.sessions].map(
      (session) =>
        new Promise<void>((resolve) => {
          if (session.closed || session.destroyed) {
            this.sessions.delete(session);
            resolve();
            return;
          }
          const fail = () => {
            this.sessions.delete(session);
            session.destroy(new ConnectError("the connection did not answer a PING", Code.Unavailable));
            resolve();
          };
          const timer = setTimeout(fail, timeoutMs);
          try {
            const sent = session.ping((error) => {
              clearTimeout(timer);
              if (error) {
                fail();
              } else {
                resolve();
              }
            });
            if (!sent) {
              clearTimeout(timer);
              fail();
            }
          } catch {
            clearTimeout(timer);
            fail();
          }
        }),
    );
    await Promise.all(checks);
  }

  get authority(): string {
    return this.inner.authority;
  }

  async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await this.inner.request(method, path, headers, options);
    const session = stream.session;
    if (session !== undefined && !this.sessions.has(session)) {
      this.sessions.add(session);
      session.once("close", () => this.sessions.delete(session));
    }
    let answered = false;
    stream.once("response", () => {
      answered = true;
    });
    stream.once("close", () => {
      if (!answered && stream.rstCode === http2.constants.NGHTTP2_NO_ERROR && stream.listenerCount("error") > 0) {
        stream.emit("error", new ConnectError("the connection closed before the server answered", Code.Unavailable));
      }
    });
    return stream;
  }

  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void {
    this.inner.notifyResponseByteRead(stream);
  }
}

/** Settings of a {@link BoardClient}. */
export interface BoardClientOptions {
  /** Deadline of every unary call that sets none, in milliseconds (default 30 000). Watch streams have no default deadline. */
  defaultTimeoutMs?: number;
  /** Interceptors run on every call (logging, auth headers, tests that simulate failures). */
  interceptors?: Interceptor[];
  /** HTTP/2 keep-alive and idle settings of the connection. */
  http2?: Http2SessionOptions;
  /** A transport to use instead of the h2c/TLS gRPC transport created from the target. */
  transport?: Transport;
}

/** Per-call settings. */
export interface BoardCallOptions {
  /** Deadline in milliseconds; overrides the client default. Zero or less means no deadline. */
  timeoutMs?: number;
  /** Cancels the call (it then fails with code CANCELLED). */
  signal?: AbortSignal;
  /** Extra request headers. */
  headers?: CallOptions["headers"];
}

/** Settings of {@link BoardClient.watch}. */
export interface WatchOptions {
  /** Ends the watch: the iterator then throws the signal's reason. */
  signal?: AbortSignal;
  /** Called before each reconnect, with the error that ended the stream and the revision it resumes from. */
  onReconnect?: (error: BoardError, nextStart: bigint) => void;
  /** Longest pause between reconnect attempts in milliseconds (default 5 000). */
  maxBackoffMs?: number;
  /** Called for each progress message: everything up to progress.revision has been delivered. */
  onProgress?: (progress: WatchProgress) => void;
  /**
   * Longest silence on a stream, in milliseconds, before the watch treats it as dead and reconnects (resuming
   * at the last seen revision + 1, so nothing is lost or repeated). An idle stream gets a progress message
   * every request.progressInterval (server default 5 s), so silence means a stalled connection, such as a
   * half-open TCP connection that would otherwise hang forever. Default: three progress intervals (15 s when
   * the request sets none). 0 disables the timeout.
   *
   * On a timeout the client also PINGs its HTTP/2 connections and drops any that does not answer, so the
   * new stream gets a new connection (not possible with a custom {@link BoardClientOptions.transport}: set
   * keep-alive pings on it instead). onReconnect then gets a DEADLINE_EXCEEDED {@link BoardError}.
   */
  idleTimeoutMs?: number;
}

/** The plain-object shape accepted for a request message (every field optional). */
type Init<S extends DescMessage> = MessageInitShape<S>;

/**
 * A typed client for grpcboard.v1.BoardService: one method per RPC, each with a default deadline and
 * failures thrown as {@link BoardError}, plus {@link watch} (a watch that resumes by itself) and
 * {@link createWorker} (a worker loop that renews its lease). Create one per server and share it; call
 * {@link close} when done so the process can exit.
 */
export class BoardClient {
  /** The default deadline of unary calls in milliseconds. */
  readonly defaultTimeoutMs: number;
  /** The generated Connect client, for callers who want the raw stubs (no default deadline, ConnectError). */
  readonly raw: Client<typeof BoardService>;
  private readonly sessions: Http2SessionManager | undefined;
  private readonly guard: UnansweredStreamGuard | undefined;

  /**
   * @param target the server's address, for example "http://127.0.0.1:50051" (h2c, prior knowledge) or
   *   "https://board.example:443" (TLS).
   * @param options client settings.
   */
  constructor(target: string, options: BoardClientOptions = {}) {
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 30_000;
    let transport = options.transport;
    if (transport === undefined) {
      this.sessions = new Http2SessionManager(target, options.http2);
      this.guard = new UnansweredStreamGuard(this.sessions);
      transport = createGrpcTransport({
        baseUrl: target,
        sessionManager: this.guard,
        interceptors: options.interceptors,
      });
    }
    this.raw = createClient(BoardService, transport);
  }

  /** Closes the HTTP/2 connection this client opened (calls still running fail). */
  close(): void {
    this.sessions?.abort();
  }

  /** Creates a workflow; the same id with the same goal returns the existing one (created = false). */
  createWorkflow(request: Init<typeof CreateWorkflowRequestSchema>, options?: BoardCallOptions): Promise<CreateWorkflowResponse> {
    return this.unary((o) => this.raw.createWorkflow(request, o), options);
  }

  /** Reads a workflow with its task counts and head revision. */
  getWorkflow(request: Init<typeof GetWorkflowRequestSchema>, options?: BoardCallOptions): Promise<GetWorkflowResponse> {
    return this.unary((o) => this.raw.getWorkflow(request, o), options);
  }

  /** Lists workflows ordered by id, one page at a time. */
  listWorkflows(request: Init<typeof ListWorkflowsRequestSchema> = {}, options?: BoardCallOptions): Promise<ListWorkflowsResponse> {
    return this.unary((o) => this.raw.listWorkflows(request, o), options);
  }

  /** Changes goal, labels or status, optionally only at an expected mod_revision. */
  updateWorkflow(request: Init<typeof UpdateWorkflowRequestSchema>, options?: BoardCallOptions): Promise<UpdateWorkflowResponse> {
    return this.unary((o) => this.raw.updateWorkflow(request, o), options);
  }

  /** Deletes a workflow with all its tasks, notes and history. */
  deleteWorkflow(request: Init<typeof DeleteWorkflowRequestSchema>, options?: BoardCallOptions): Promise<DeleteWorkflowResponse> {
    return this.unary((o) => this.raw.deleteWorkflow(request, o), options);
  }

  /** Posts a batch of tasks atomically; idempotent per task id. */
  postTasks(request: Init<typeof PostTasksRequestSchema>, options?: BoardCallOptions): Promise<PostTasksResponse> {
    return this.unary((o) => this.raw.postTasks(request, o), options);
  }

  /** Reads one task with its payload, checkpoint and result. */
  getTask(request: Init<typeof GetTaskRequestSchema>, options?: BoardCallOptions): Promise<GetTaskResponse> {
    return this.unary((o) => this.raw.getTask(request, o), options);
  }

  /** Lists tasks ordered by id, optionally in one state. */
  listTasks(request: Init<typeof ListTasksRequestSchema>, options?: BoardCallOptions): Promise<ListTasksResponse> {
    return this.unary((o) => this.raw.listTasks(request, o), options);
  }

  /** Cancels an unfinished task and its dependents; a worker holding it loses its claim. */
  cancelTask(request: Init<typeof CancelTaskRequestSchema>, options?: BoardCallOptions): Promise<CancelTaskResponse> {
    return this.unary((o) => this.raw.cancelTask(request, o), options);
  }

  /**
   * Claims a given task or the next ready one, optionally waiting on the server for one to become ready
   * (request.wait). Returns the lease and the fencing token; `task` is unset when none was ready. The
   * default deadline is the wait plus {@link defaultTimeoutMs}.
   */
  claimTask(request: Init<typeof ClaimTaskRequestSchema>, options?: BoardCallOptions): Promise<ClaimTaskResponse> {
    return this.unary((o) => this.raw.claimTask(request, o), options, toMs(request.wait));
  }

  /** Extends the lease of a claim. */
  renewLease(request: Init<typeof RenewLeaseRequestSchema>, options?: BoardCallOptions): Promise<RenewLeaseResponse> {
    return this.unary((o) => this.raw.renewLease(request, o), options);
  }

  /** Gives a claimed task back: it is READY at once and the attempt is not counted. */
  releaseTask(request: Init<typeof ReleaseTaskRequestSchema>, options?: BoardCallOptions): Promise<ReleaseTaskResponse> {
    return this.unary((o) => this.raw.releaseTask(request, o), options);
  }

  /** Saves progress bytes on a claimed task; the next owner reads them in Task.checkpoint. */
  checkpoint(request: Init<typeof CheckpointRequestSchema>, options?: BoardCallOptions): Promise<CheckpointResponse> {
    return this.unary((o) => this.raw.checkpoint(request, o), options);
  }

  /** Completes a claimed task with its result; repeating the same completion succeeds. */
  completeTask(request: Init<typeof CompleteTaskRequestSchema>, options?: BoardCallOptions): Promise<CompleteTaskResponse> {
    return this.unary((o) => this.raw.completeTask(request, o), options);
  }

  /** Reports a failed attempt: the task is retried after its backoff, or dead-lettered. */
  failTask(request: Init<typeof FailTaskRequestSchema>, options?: BoardCallOptions): Promise<FailTaskResponse> {
    return this.unary((o) => this.raw.failTask(request, o), options);
  }

  /** Writes a note, optionally with compare-and-set (expected_version) and a time to live. */
  putNote(request: Init<typeof PutNoteRequestSchema>, options?: BoardCallOptions): Promise<PutNoteResponse> {
    return this.unary((o) => this.raw.putNote(request, o), options);
  }

  /** Reads one note. */
  getNote(request: Init<typeof GetNoteRequestSchema>, options?: BoardCallOptions): Promise<GetNoteResponse> {
    return this.unary((o) => this.raw.getNote(request, o), options);
  }

  /** Lists notes ordered by key, optionally under a key prefix. */
  listNotes(request: Init<typeof ListNotesRequestSchema>, options?: BoardCallOptions): Promise<ListNotesResponse> {
    return this.unary((o) => this.raw.listNotes(request, o), options);
  }

  /** Deletes a note, optionally only at an expected version. */
  deleteNote(request: Init<typeof DeleteNoteRequestSchema>, options?: BoardCallOptions): Promise<DeleteNoteResponse> {
    return this.unary((o) => this.raw.deleteNote(request, o), options);
  }

  /** Exports a workflow as JSON (the ExportedWorkflow message) or Markdown. */
  exportWorkflow(request: Init<typeof ExportWorkflowRequestSchema>, options?: BoardCallOptions): Promise<ExportWorkflowResponse> {
    return this.unary((o) => this.raw.exportWorkflow(request, o), options);
  }

  /**
   * Opens one Watch stream and yields its messages (events and progress) as the server sends them,
   * without resuming; failures are thrown as {@link BoardError}. No deadline unless options.timeoutMs is
   * set. Most callers want {@link watch} instead.
   */
  async *watchStream(request: Init<typeof WatchRequestSchema>, options: BoardCallOptions = {}): AsyncGenerator<WatchResponse> {
    try {
      for await (const message of this.raw.watch(request, { ...options, timeoutMs: options.timeoutMs ?? 0 })) {
        yield message;
      }
    } catch (error) {
      throw BoardError.from(error);
    }
  }

  /**
   * Every event of a workflow from request.startRevision on (0 = from now), each exactly once and in
   * revision order, across disconnects and server restarts: after a transient failure the stream is
   * reopened at the last delivered revision + 1 (progress messages move that point forward too).
   * Ends when the server ends the stream (the workflow was deleted). Throws {@link BoardError} when
   * resuming is impossible, for example {@link HistoryCompactedError} (OUT_OF_RANGE, reason HISTORY_COMPACTED,
   * with the oldest revision still available) or NOT_FOUND/WORKFLOW_NOT_FOUND, and the signal's reason when
   * aborted. A stream on which nothing arrives for options.idleTimeoutMs (default three progress intervals) is
   * dropped and reopened the same way.
   */
  async *watch(request: Init<typeof WatchRequestSchema>, options: WatchOptions = {}): AsyncGenerator<Event> {
    const { signal } = options;
    const maxBackoffMs = options.maxBackoffMs ?? 5_000;
    const progressMs = toMs(request.progressInterval) > 0 ? Math.max(100, toMs(request.progressInterval)) : DEFAULT_PROGRESS_INTERVAL_MS;
    const idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_FACTOR * progressMs;
    const resume = new WatchResume(BigInt(request.startRevision ?? 0n));
    let failures = 0;
    for (;;) {
      signal?.throwIfAborted();
      const stream = new AbortController();
      const onAbort = () => stream.abort(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      let failure: BoardError | undefined;
      // The idle timer runs while waiting for the server, not while the caller holds a yielded event.
      let idle: BoardError | undefined;
      let timer: NodeJS.Timeout | undefined;
      const disarm = () => clearTimeout(timer);
      const arm = () => {
        disarm();
        if (idleTimeoutMs > 0) {
          timer = setTimeout(() => {
            idle = new BoardError(Code.DeadlineExceeded, `no message on the watch stream for ${idleTimeoutMs} ms`);
            stream.abort(idle);
          }, idleTimeoutMs);
        }
      };
      try {
        arm();
        for await (const message of this.raw.watch(
          { ...request, startRevision: resume.nextStart },
          { signal: stream.signal, timeoutMs: 0 },
        )) {
          disarm();
          failures = 0;
          const event = resume.accept(message);
          if (event !== undefined) {
            yield event;
          } else if (message.message.case === "progress") {
            options.onProgress?.(message.message.value);
          }
          arm();
        }
        // The server ended the stream with OK: the workflow was deleted.
        return;
      } catch (error) {
        if (signal?.aborted) {
          throw signal.reason;
        }
        failure = idle ?? BoardError.from(error);
        if (idle === undefined && !failure.isTransient) {
          throw failure;
        }
      } finally {
        disarm();
        signal?.removeEventListener("abort", onAbort);
        stream.abort();
      }
      if (idle !== undefined) {
        // A silent stream usually means a dead connection: make sure the next stream does not reuse it.
        await this.guard?.verifySessions(Math.min(Math.max(idleTimeoutMs, 1_000), 15_000));
      }
      // Back off a little more after each consecutive failure, then reopen from where we were.
      failures++;
      options.onReconnect?.(failure, resume.nextStart);
      await sleep(Math.min(maxBackoffMs, 100 * 2 ** Math.min(failures, 6)), signal);
    }
  }

  /** Creates a worker that claims tasks of one workflow and runs them with a renewed lease. */
  createWorker(options: BoardWorkerOptions): BoardWorker {
    return new BoardWorker(this, options);
  }

  private async unary<T>(call: (options: CallOptions) => Promise<T>, options: BoardCallOptions = {}, extraMs = 0): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs + extraMs;
    try {
      return await call({ ...options, timeoutMs });
    } catch (error) {
      throw BoardError.from(error);
    }
  }
}
