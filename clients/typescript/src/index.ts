/**
 * @grpcboard/client: the TypeScript client of GrpcBoard (grpcboard.v1.BoardService over gRPC/HTTP2).
 *
 * - {@link BoardClient}: one method per RPC with a default deadline, errors thrown as {@link BoardError}.
 * - {@link BoardClient.watch}: an async iterator of events that resumes after disconnects.
 * - {@link BoardWorker}: claim, renew, checkpoint, complete/fail, release on stop.
 */
export { BoardClient, type BoardClientOptions, type BoardCallOptions, type WatchOptions } from "./client.js";
export { BoardError, ClaimLostError, HistoryCompactedError, NonRetryableError, ERROR_DOMAIN, codeName } from "./errors.js";
export {
  BoardWorker,
  TaskContext,
  TaskOutcome,
  type BoardWorkerOptions,
  type TaskHandler,
  type WorkerEvent,
  type WorkerLogger,
} from "./worker.js";
export { WatchResume } from "./watch.js";
export { duration, fromUtf8, sleep, timestampToMs, toMs, utf8 } from "./util.js";
export { Code } from "@connectrpc/connect";

// Generated messages, enums and the service descriptor of grpcboard.v1.
export * from "./gen/grpcboard/v1/board_service_pb.js";
export * from "./gen/grpcboard/v1/error_pb.js";
export * from "./gen/grpcboard/v1/event_pb.js";
export * from "./gen/grpcboard/v1/note_pb.js";
export * from "./gen/grpcboard/v1/task_pb.js";
export * from "./gen/grpcboard/v1/workflow_pb.js";
