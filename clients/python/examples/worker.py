#!/usr/bin/env python3
"""Worker: processes the tasks of a workflow until none remain, printing what it does.

Run:  /usr/bin/python3 clients/python/examples/worker.py --workflow demo [--worker alice]
Server: GRPCBOARD_TARGET (default http://127.0.0.1:50051), or --target.
Run several at once to see them share the work; stop one with Ctrl-C and its task is released.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

try:
    import grpcboard  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grpcboard import BoardClient, BoardError, TaskContext, TaskResult, Worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=os.environ.get("GRPCBOARD_TARGET", "http://127.0.0.1:50051"))
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--worker", default=f"worker-{os.getpid()}")
    parser.add_argument("--work-seconds", type=float, default=0.5, help="simulated time per step")
    args = parser.parse_args()

    with BoardClient(args.target) as board:
        def handle(ctx: TaskContext) -> TaskResult:
            instruction = json.loads(ctx.payload or b"{}").get("instruction", "")
            print(f"[{args.worker}] claimed {ctx.task_id} (attempt {ctx.task.attempt}, token {ctx.fencing_token}): "
                  f"{instruction}", flush=True)
            if ctx.last_checkpoint:
                print(f"[{args.worker}]   resuming from checkpoint {ctx.last_checkpoint.decode()!r}", flush=True)

            # Inputs: the results of the tasks this one depends on.
            inputs = []
            for dep in ctx.task.depends_on:
                dep_task = board.get_task(workflow_id=ctx.workflow_id, task_id=dep).task
                inputs.append(f"{dep}: {dep_task.result.decode(errors='replace')}")
                print(f"[{args.worker}]   read {dep}'s result", flush=True)

            ctx.sleep(args.work_seconds)  # "thinking"; raises if the lease is lost or the worker stops
            ctx.checkpoint(b"halfway")
            print(f"[{args.worker}]   checkpoint saved", flush=True)
            ctx.sleep(args.work_seconds)

            result = f"{ctx.task_id} by {args.worker}" + (f" using [{'; '.join(inputs)}]" if inputs else "")
            print(f"[{args.worker}] completing {ctx.task_id}", flush=True)
            return TaskResult.text(result)

        worker = Worker(board, args.workflow, args.worker, lease_duration=10, claim_wait=5)
        status = "no tasks remain"
        try:
            worker.run(handle, until_done=True)
        except KeyboardInterrupt:  # the running task has been released for other workers
            status = f"interrupted (released {worker.released})"
        except BoardError as e:
            print(f"[{args.worker}] stopped: {e}", file=sys.stderr)
            return 1
        print(f"[{args.worker}] {status}: completed {worker.completed}, failed {worker.failed}, "
              f"lost {worker.lost_claims}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
