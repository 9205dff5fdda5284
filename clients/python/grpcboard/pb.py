"""Every grpcboard.v1 message and enum in one namespace: ``from grpcboard import pb``.

    pb.TaskSpec(id="research", depends_on=[...]); pb.TASK_STATE_READY; pb.EVENT_KIND_TASK_CLAIMED
"""

# flake8: noqa: F401,F403
from grpcboard.v1.board_service_pb2 import *
from grpcboard.v1.error_pb2 import *
from grpcboard.v1.event_pb2 import *
from grpcboard.v1.note_pb2 import *
from grpcboard.v1.task_pb2 import *
from grpcboard.v1.workflow_pb2 import *

# Each module's file descriptor is called DESCRIPTOR; the star imports would leave only the last one.
del DESCRIPTOR  # type: ignore[name-defined]
