"""Python client of GrpcBoard, a coordination board for AI agents (grpcboard.v1.BoardService).

    from grpcboard import BoardClient, pb

    with BoardClient("http://127.0.0.1:50051") as board:
        board.create_workflow(workflow_id="demo", goal="Write a report")
        board.post_tasks(workflow_id="demo", tasks=[pb.TaskSpec(id="research")])
        for event in board.watch(workflow_id="demo", start_revision=1):
            ...

Generated messages live in ``grpcboard.v1`` (``grpcboard.v1.task_pb2`` ...) and are re-exported
together by ``grpcboard.pb``.
"""

from grpcboard import pb
from grpcboard.cancel import CancelEvent
from grpcboard.client import DEFAULT, BoardClient, parse_target, to_duration
from grpcboard.errors import DOMAIN, BoardError, HistoryCompactedError
from grpcboard.watch import WatchResume, WatchStream
from grpcboard.worker import (
    NonRetryableError,
    TaskCancelledError,
    TaskContext,
    TaskResult,
    Worker,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT",
    "DOMAIN",
    "BoardClient",
    "BoardError",
    "CancelEvent",
    "HistoryCompactedError",
    "NonRetryableError",
    "TaskCancelledError",
    "TaskContext",
    "TaskResult",
    "WatchResume",
    "WatchStream",
    "Worker",
    "parse_target",
    "pb",
    "to_duration",
]
