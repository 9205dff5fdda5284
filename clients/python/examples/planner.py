#!/usr/bin/env python3
"""Planner: creates a workflow and posts a small task graph.

    research ──┬──> draft-intro ──┬──> review
               └──> draft-body  ──┘

Run:  /usr/bin/python3 clients/python/examples/planner.py --workflow demo [--follow]
Server: GRPCBOARD_TARGET (default http://127.0.0.1:50051), or --target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

try:
    import grpcboard  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grpcboard import BoardClient, BoardError, pb


def spec(task_id: str, instruction: str, depends_on: Sequence[str] = (), priority: int = 0) -> pb.TaskSpec:
    return pb.TaskSpec(
        id=task_id,
        payload=json.dumps({"instruction": instruction}).encode(),
        content_type="application/json",
        depends_on=depends_on,
        priority=priority,
        max_attempts=3,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=os.environ.get("GRPCBOARD_TARGET", "http://127.0.0.1:50051"))
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--goal", default="Write a short report on gRPC for agent coordination")
    parser.add_argument("--follow", action="store_true", help="print every change until the review is done")
    args = parser.parse_args()

    with BoardClient(args.target) as board:
        try:
            created = board.create_workflow(workflow_id=args.workflow, goal=args.goal, labels={"example": "planner"})
        except BoardError as e:
            print(f"cannot create workflow {args.workflow}: {e}", file=sys.stderr)
            return 1
        print(f"workflow {args.workflow}: {'created' if created.created else 'already there'} "
              f"(goal: {created.workflow.goal})")

        posted = board.post_tasks(workflow_id=args.workflow, tasks=[
            spec("research", "Collect facts about the goal", priority=10),
            spec("draft-intro", "Write the introduction from the research", ["research"]),
            spec("draft-body", "Write the body from the research", ["research"]),
            spec("review", "Review both drafts and merge them", ["draft-intro", "draft-body"]),
        ])
        for task in posted.tasks:
            deps = f" after {', '.join(task.depends_on)}" if task.depends_on else ""
            print(f"  posted {task.id:<12} {pb.TaskState.Name(task.state)[len('TASK_STATE_'):]:<8}{deps}")
        if posted.existing_task_ids:
            print(f"  (already on the board: {', '.join(posted.existing_task_ids)})")
        print(f"head revision {posted.header.revision}; start workers with: "
              f"/usr/bin/python3 clients/python/examples/worker.py --workflow {args.workflow}")

        if args.follow:
            with board.watch(workflow_id=args.workflow, start_revision=1) as watch:
                for event in watch:
                    kind = pb.EventKind.Name(event.kind)[len("EVENT_KIND_"):]
                    what = event.task.id or event.note.key or event.workflow_id
                    print(f"  r{event.revision:<4} {kind:<20} {what} {event.actor}")
                    if event.kind == pb.EVENT_KIND_TASK_COMPLETED and event.task.id == "review":
                        print("review done:\n" + event.task.result.decode(errors="replace"))
                        break
    return 0


if __name__ == "__main__":
    sys.exit(main())
