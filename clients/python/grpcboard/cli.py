"""Command line for cross-language tests: ``python3 -m grpcboard.cli <command> ...``.

Every command prints JSON lines to stdout (logs go to stderr):

  claim  --target URL --workflow W --worker ID [--task T] [--lease-ms N] [--wait-ms N] [--announce]
         {"claimed": true, "task_id": "...", "fencing_token": N} | {"claimed": false}
         | {"error": {"code": "...", "reason": "...", "message": "...", "metadata": {...}}}   (exit 0 in all cases;
           reason is "" when the server sent none, e.g. UNAVAILABLE)
         With --announce, {"waiting": true} first, printed just before the claim is sent (so that a test can
         start several claimers, wait until all are about to claim, and only then post the task they race for).
  watch  --target URL --workflow W --from REV --count N [--timeout-s S]
         {"revision": R, "kind": "TASK_CLAIMED", "task_id": "..."|null, "note_key": "..."|null} per event,
         exits 0 after N events (1 with an {"error": ...} line if the watch fails or ends first)
  work   --target URL --workflow W --worker ID [--lease-ms N] [--max-tasks N] [--hang-after-claim]
         [--claim-wait-ms N] [--skills a,b]
         {"completed": "task_id", "fencing_token": N} per completed task (result "done by <worker>",
         text/plain, after a checkpoint); exits 0 after --max-tasks completions, or on SIGTERM/SIGINT
         (releasing a running task). With --hang-after-claim: claims one task, prints
         {"claimed": true, "task_id": ..., "fencing_token": ...}, never renews and sleeps until killed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence

from grpcboard.client import BoardClient
from grpcboard.errors import BoardError
from grpcboard.v1 import event_pb2
from grpcboard.worker import TaskContext, TaskResult, Worker


def _emit(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def _error(e: BoardError) -> Dict[str, Any]:
    return {"error": {"code": e.code.name, "reason": e.reason, "message": e.details, "metadata": e.metadata}}


def _event_line(event: event_pb2.Event) -> Dict[str, Any]:
    kind = event_pb2.EventKind.Name(event.kind) if event.kind in event_pb2.EventKind.values() else str(event.kind)
    return {
        "revision": event.revision,
        "kind": kind[len("EVENT_KIND_"):] if kind.startswith("EVENT_KIND_") else kind,
        "task_id": event.task.id if event.HasField("task") else None,
        "note_key": event.note.key if event.HasField("note") else None,
    }


def _cmd_claim(args: argparse.Namespace) -> int:
    with BoardClient(args.target) as client:
        if args.announce:
            _emit({"waiting": True})
        try:
            response = client.claim_task(
                workflow_id=args.workflow,
                task_id=args.task or "",
                worker_id=args.worker,
                lease_duration=args.lease_ms / 1000 if args.lease_ms else None,
                wait=args.wait_ms / 1000 if args.wait_ms else None,
            )
        except BoardError as e:
            _emit(_error(e))
            return 0
    if response.HasField("task"):
        _emit({"claimed": True, "task_id": response.task.id, "fencing_token": response.fencing_token})
    else:
        _emit({"claimed": False})
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    with BoardClient(args.target) as client:
        watch = client.watch(workflow_id=args.workflow, start_revision=args.from_revision)
        timer: Optional[threading.Timer] = None
        if args.timeout_s:
            timer = threading.Timer(args.timeout_s, watch.close)
            timer.daemon = True
            timer.start()
        seen = 0
        try:
            if args.count > 0:
                for event in watch:
                    _emit(_event_line(event))
                    seen += 1
                    if seen >= args.count:
                        break
        except BoardError as e:
            _emit(_error(e))
            return 1
        finally:
            watch.close()
            if timer is not None:
                timer.cancel()
    if seen < args.count:
        why = "timed out" if watch.closed else "workflow deleted"
        _emit({"error": {"code": "DEADLINE_EXCEEDED" if watch.closed else "OK", "reason": "",
                         "message": f"the stream ended after {seen} of {args.count} events ({why})", "metadata": {}}})
        return 1
    return 0


def _install_stop(stop: Any) -> None:
    def handler(signum: int, frame: Any) -> None:
        # Stop from another thread: the signal may have interrupted a thread holding the locks stop() needs.
        threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _cmd_work(args: argparse.Namespace) -> int:
    skills = [s for s in (args.skills or "").split(",") if s]
    lease = args.lease_ms / 1000 if args.lease_ms else 30.0
    with BoardClient(args.target) as client:
        if args.hang_after_claim:
            return _hang_after_claim(client, args, skills, lease)

        worker = Worker(client, args.workflow, args.worker, skills=skills, lease_duration=lease,
                        claim_wait=args.claim_wait_ms / 1000)
        worker.on_completed = lambda task, token, _resp: _emit({"completed": task.id, "fencing_token": token})
        _install_stop(worker.stop)

        def handler(ctx: TaskContext) -> TaskResult:
            ctx.checkpoint(f"checkpoint by {args.worker}".encode())
            ctx.raise_if_cancelled()
            return TaskResult(f"done by {args.worker}".encode(), "text/plain")

        try:
            worker.run(handler, max_tasks=args.max_tasks)
        except BoardError as e:
            _emit(_error(e))
            return 1
    return 0


def _hang_after_claim(client: BoardClient, args: argparse.Namespace, skills: List[str], lease: float) -> int:
    stop = threading.Event()
    _install_stop(stop.set)
    while not stop.is_set():
        try:
            response = client.claim_task(workflow_id=args.workflow, worker_id=args.worker, skills=skills,
                                         lease_duration=lease, wait=args.claim_wait_ms / 1000)
        except BoardError as e:
            if e.is_transient:
                stop.wait(0.5)
                continue
            _emit(_error(e))
            return 1
        if response.HasField("task"):
            _emit({"claimed": True, "task_id": response.task.id, "fencing_token": response.fencing_token})
            break
    # A crashed worker: never renews, never writes. Sleeps until killed (or SIGTERM/SIGINT).
    while not stop.wait(3600):
        pass
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m grpcboard.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    claim = sub.add_parser("claim", help="claim a task once")
    claim.add_argument("--target", required=True)
    claim.add_argument("--workflow", required=True)
    claim.add_argument("--worker", required=True)
    claim.add_argument("--task", default="")
    claim.add_argument("--lease-ms", type=int, default=0)
    claim.add_argument("--wait-ms", type=int, default=0)
    claim.add_argument("--announce", action="store_true", help='print {"waiting": true} just before the claim is sent')
    claim.set_defaults(func=_cmd_claim)

    watch = sub.add_parser("watch", help="print N events")
    watch.add_argument("--target", required=True)
    watch.add_argument("--workflow", required=True)
    watch.add_argument("--from", dest="from_revision", type=int, required=True)
    watch.add_argument("--count", type=int, required=True)
    watch.add_argument("--timeout-s", type=float, default=0.0, help="give up after this long (default: never)")
    watch.set_defaults(func=_cmd_watch)

    work = sub.add_parser("work", help="run the worker loop")
    work.add_argument("--target", required=True)
    work.add_argument("--workflow", required=True)
    work.add_argument("--worker", required=True)
    work.add_argument("--lease-ms", type=int, default=0)
    work.add_argument("--max-tasks", type=int, default=None)
    work.add_argument("--hang-after-claim", action="store_true")
    work.add_argument("--claim-wait-ms", type=int, default=20000)
    work.add_argument("--skills", default="")
    work.set_defaults(func=_cmd_work)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
