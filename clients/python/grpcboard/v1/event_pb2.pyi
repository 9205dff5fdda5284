from google.protobuf import timestamp_pb2 as _timestamp_pb2
from grpcboard.v1 import note_pb2 as _note_pb2
from grpcboard.v1 import task_pb2 as _task_pb2
from grpcboard.v1 import workflow_pb2 as _workflow_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
EVENT_KIND_NOTE_DELETED: EventKind
EVENT_KIND_NOTE_EXPIRED: EventKind
EVENT_KIND_NOTE_PUT: EventKind
EVENT_KIND_TASK_CANCELLED: EventKind
EVENT_KIND_TASK_CHECKPOINTED: EventKind
EVENT_KIND_TASK_CLAIMED: EventKind
EVENT_KIND_TASK_COMPLETED: EventKind
EVENT_KIND_TASK_FAILED: EventKind
EVENT_KIND_TASK_LEASE_EXPIRED: EventKind
EVENT_KIND_TASK_LEASE_RENEWED: EventKind
EVENT_KIND_TASK_POSTED: EventKind
EVENT_KIND_TASK_READY: EventKind
EVENT_KIND_TASK_RELEASED: EventKind
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_WORKFLOW_CREATED: EventKind
EVENT_KIND_WORKFLOW_DELETED: EventKind
EVENT_KIND_WORKFLOW_UPDATED: EventKind

class Event(_message.Message):
    __slots__ = ["actor", "kind", "note", "reason", "revision", "task", "time", "workflow", "workflow_id"]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    actor: str
    kind: EventKind
    note: _note_pb2.Note
    reason: str
    revision: int
    task: _task_pb2.Task
    time: _timestamp_pb2.Timestamp
    workflow: _workflow_pb2.Workflow
    workflow_id: str
    def __init__(self, revision: _Optional[int] = ..., kind: _Optional[_Union[EventKind, str]] = ..., time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., workflow_id: _Optional[str] = ..., task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., note: _Optional[_Union[_note_pb2.Note, _Mapping]] = ..., workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
