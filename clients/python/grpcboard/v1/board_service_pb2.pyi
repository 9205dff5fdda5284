from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from grpcboard.v1 import event_pb2 as _event_pb2
from grpcboard.v1 import note_pb2 as _note_pb2
from grpcboard.v1 import task_pb2 as _task_pb2
from grpcboard.v1 import workflow_pb2 as _workflow_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
EXPORT_FORMAT_JSON: ExportFormat
EXPORT_FORMAT_MARKDOWN: ExportFormat
EXPORT_FORMAT_UNSPECIFIED: ExportFormat

class CancelTaskRequest(_message.Message):
    __slots__ = ["reason", "task_id", "workflow_id"]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    reason: str
    task_id: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ["cancelled_dependents", "header", "task"]
    CANCELLED_DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    cancelled_dependents: _containers.RepeatedScalarFieldContainer[str]
    header: ResponseHeader
    task: _task_pb2.Task
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., cancelled_dependents: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ["checkpoint", "fencing_token", "task_id", "workflow_id"]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint: bytes
    fencing_token: int
    task_id: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., checkpoint: _Optional[bytes] = ...) -> None: ...

class CheckpointResponse(_message.Message):
    __slots__ = ["checkpoint_time", "header"]
    CHECKPOINT_TIME_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    checkpoint_time: _timestamp_pb2.Timestamp
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., checkpoint_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClaimNext(_message.Message):
    __slots__ = ["lease_duration", "skills"]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    SKILLS_FIELD_NUMBER: _ClassVar[int]
    lease_duration: _duration_pb2.Duration
    skills: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, skills: _Optional[_Iterable[str]] = ..., lease_duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ClaimTaskRequest(_message.Message):
    __slots__ = ["lease_duration", "skills", "task_id", "wait", "worker_id", "workflow_id"]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    SKILLS_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    lease_duration: _duration_pb2.Duration
    skills: _containers.RepeatedScalarFieldContainer[str]
    task_id: str
    wait: _duration_pb2.Duration
    worker_id: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., skills: _Optional[_Iterable[str]] = ..., lease_duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., wait: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ClaimTaskResponse(_message.Message):
    __slots__ = ["fencing_token", "header", "lease_expire_time", "task"]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    header: ResponseHeader
    lease_expire_time: _timestamp_pb2.Timestamp
    task: _task_pb2.Task
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., fencing_token: _Optional[int] = ..., lease_expire_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CompleteTaskRequest(_message.Message):
    __slots__ = ["claim_next", "fencing_token", "result", "result_content_type", "task_id", "workflow_id"]
    CLAIM_NEXT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    claim_next: ClaimNext
    fencing_token: int
    result: bytes
    result_content_type: str
    task_id: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., result: _Optional[bytes] = ..., result_content_type: _Optional[str] = ..., claim_next: _Optional[_Union[ClaimNext, _Mapping]] = ...) -> None: ...

class CompleteTaskResponse(_message.Message):
    __slots__ = ["already_completed", "header", "next_fencing_token", "next_task", "ready_dependents", "task"]
    ALREADY_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEXT_FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_FIELD_NUMBER: _ClassVar[int]
    READY_DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    already_completed: bool
    header: ResponseHeader
    next_fencing_token: int
    next_task: _task_pb2.Task
    ready_dependents: _containers.RepeatedScalarFieldContainer[str]
    task: _task_pb2.Task
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., already_completed: bool = ..., ready_dependents: _Optional[_Iterable[str]] = ..., next_task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., next_fencing_token: _Optional[int] = ...) -> None: ...

class CreateWorkflowRequest(_message.Message):
    __slots__ = ["goal", "labels", "workflow_id"]
    class LabelsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GOAL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    goal: str
    labels: _containers.ScalarMap[str, str]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., goal: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateWorkflowResponse(_message.Message):
    __slots__ = ["created", "header", "workflow"]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    created: bool
    header: ResponseHeader
    workflow: _workflow_pb2.Workflow
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ..., created: bool = ...) -> None: ...

class DeleteNoteRequest(_message.Message):
    __slots__ = ["expected_version", "key", "workflow_id", "writer"]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    expected_version: int
    key: str
    workflow_id: str
    writer: str
    def __init__(self, workflow_id: _Optional[str] = ..., key: _Optional[str] = ..., expected_version: _Optional[int] = ..., writer: _Optional[str] = ...) -> None: ...

class DeleteNoteResponse(_message.Message):
    __slots__ = ["header"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class DeleteWorkflowRequest(_message.Message):
    __slots__ = ["workflow_id"]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class DeleteWorkflowResponse(_message.Message):
    __slots__ = ["header"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class ExportWorkflowRequest(_message.Message):
    __slots__ = ["format", "history_limit", "workflow_id"]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    format: ExportFormat
    history_limit: int
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., history_limit: _Optional[int] = ...) -> None: ...

class ExportWorkflowResponse(_message.Message):
    __slots__ = ["content", "content_type", "header"]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    content: str
    content_type: str
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., content: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class ExportedWorkflow(_message.Message):
    __slots__ = ["events", "export_time", "notes", "oldest_revision", "tasks", "workflow"]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    EXPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    OLDEST_REVISION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    export_time: _timestamp_pb2.Timestamp
    notes: _containers.RepeatedCompositeFieldContainer[_note_pb2.Note]
    oldest_revision: int
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.Task]
    workflow: _workflow_pb2.Workflow
    def __init__(self, workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[_task_pb2.Task, _Mapping]]] = ..., notes: _Optional[_Iterable[_Union[_note_pb2.Note, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., oldest_revision: _Optional[int] = ..., export_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FailTaskRequest(_message.Message):
    __slots__ = ["error_details", "error_message", "fencing_token", "non_retryable", "task_id", "workflow_id"]
    ERROR_DETAILS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NON_RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    error_details: bytes
    error_message: str
    fencing_token: int
    non_retryable: bool
    task_id: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., error_message: _Optional[str] = ..., error_details: _Optional[bytes] = ..., non_retryable: bool = ...) -> None: ...

class FailTaskResponse(_message.Message):
    __slots__ = ["cancelled_dependents", "header", "task", "will_retry"]
    CANCELLED_DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    cancelled_dependents: _containers.RepeatedScalarFieldContainer[str]
    header: ResponseHeader
    task: _task_pb2.Task
    will_retry: bool
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., will_retry: bool = ..., cancelled_dependents: _Optional[_Iterable[str]] = ...) -> None: ...

class GetNoteRequest(_message.Message):
    __slots__ = ["key", "workflow_id"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    key: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetNoteResponse(_message.Message):
    __slots__ = ["header", "note"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    note: _note_pb2.Note
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., note: _Optional[_Union[_note_pb2.Note, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ["task_id", "workflow_id"]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ["header", "task"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    task: _task_pb2.Task
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ["workflow_id"]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class GetWorkflowResponse(_message.Message):
    __slots__ = ["header", "workflow"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    workflow: _workflow_pb2.Workflow
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ...) -> None: ...

class ListNotesRequest(_message.Message):
    __slots__ = ["key_prefix", "keys_only", "page_size", "page_token", "workflow_id"]
    KEYS_ONLY_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    key_prefix: str
    keys_only: bool
    page_size: int
    page_token: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., key_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., keys_only: bool = ...) -> None: ...

class ListNotesResponse(_message.Message):
    __slots__ = ["header", "next_page_token", "notes"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    next_page_token: str
    notes: _containers.RepeatedCompositeFieldContainer[_note_pb2.Note]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., notes: _Optional[_Iterable[_Union[_note_pb2.Note, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ["omit_bodies", "page_size", "page_token", "state", "workflow_id"]
    OMIT_BODIES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    omit_bodies: bool
    page_size: int
    page_token: str
    state: _task_pb2.TaskState
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., state: _Optional[_Union[_task_pb2.TaskState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., omit_bodies: bool = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ["header", "next_page_token", "tasks"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    next_page_token: str
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.Task]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[_task_pb2.Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ["page_size", "page_token", "status"]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: _workflow_pb2.WorkflowStatus
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[_workflow_pb2.WorkflowStatus, str]] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ["next_page_token", "workflows"]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    workflows: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.Workflow]
    def __init__(self, workflows: _Optional[_Iterable[_Union[_workflow_pb2.Workflow, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PostTasksRequest(_message.Message):
    __slots__ = ["tasks", "workflow_id"]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.TaskSpec]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_task_pb2.TaskSpec, _Mapping]]] = ...) -> None: ...

class PostTasksResponse(_message.Message):
    __slots__ = ["existing_task_ids", "header", "tasks"]
    EXISTING_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    existing_task_ids: _containers.RepeatedScalarFieldContainer[str]
    header: ResponseHeader
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.Task]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[_task_pb2.Task, _Mapping]]] = ..., existing_task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PutNoteRequest(_message.Message):
    __slots__ = ["content_type", "expected_version", "key", "ttl", "value", "workflow_id", "writer"]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    expected_version: int
    key: str
    ttl: _duration_pb2.Duration
    value: bytes
    workflow_id: str
    writer: str
    def __init__(self, workflow_id: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[bytes] = ..., content_type: _Optional[str] = ..., expected_version: _Optional[int] = ..., ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., writer: _Optional[str] = ...) -> None: ...

class PutNoteResponse(_message.Message):
    __slots__ = ["header", "note"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    note: _note_pb2.Note
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., note: _Optional[_Union[_note_pb2.Note, _Mapping]] = ...) -> None: ...

class ReleaseTaskRequest(_message.Message):
    __slots__ = ["fencing_token", "task_id", "workflow_id"]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    task_id: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class ReleaseTaskResponse(_message.Message):
    __slots__ = ["header", "task"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    task: _task_pb2.Task
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class RenewLeaseRequest(_message.Message):
    __slots__ = ["fencing_token", "lease_duration", "task_id", "workflow_id"]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    lease_duration: _duration_pb2.Duration
    task_id: str
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., task_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., lease_duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RenewLeaseResponse(_message.Message):
    __slots__ = ["header", "lease_expire_time"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    lease_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., lease_expire_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResponseHeader(_message.Message):
    __slots__ = ["revision"]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class UpdateWorkflowRequest(_message.Message):
    __slots__ = ["expected_mod_revision", "goal", "remove_labels", "set_labels", "status", "workflow_id"]
    class SetLabelsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPECTED_MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    REMOVE_LABELS_FIELD_NUMBER: _ClassVar[int]
    SET_LABELS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    expected_mod_revision: int
    goal: str
    remove_labels: _containers.RepeatedScalarFieldContainer[str]
    set_labels: _containers.ScalarMap[str, str]
    status: _workflow_pb2.WorkflowStatus
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., goal: _Optional[str] = ..., status: _Optional[_Union[_workflow_pb2.WorkflowStatus, str]] = ..., set_labels: _Optional[_Mapping[str, str]] = ..., remove_labels: _Optional[_Iterable[str]] = ..., expected_mod_revision: _Optional[int] = ...) -> None: ...

class UpdateWorkflowResponse(_message.Message):
    __slots__ = ["header", "workflow"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    workflow: _workflow_pb2.Workflow
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., workflow: _Optional[_Union[_workflow_pb2.Workflow, _Mapping]] = ...) -> None: ...

class WatchProgress(_message.Message):
    __slots__ = ["caught_up", "revision"]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    caught_up: bool
    revision: int
    def __init__(self, revision: _Optional[int] = ..., caught_up: bool = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ["kinds", "note_key_prefix", "progress_interval", "start_revision", "task_ids", "workflow_id"]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    NOTE_KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[_event_pb2.EventKind]
    note_key_prefix: str
    progress_interval: _duration_pb2.Duration
    start_revision: int
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., start_revision: _Optional[int] = ..., kinds: _Optional[_Iterable[_Union[_event_pb2.EventKind, str]]] = ..., task_ids: _Optional[_Iterable[str]] = ..., note_key_prefix: _Optional[str] = ..., progress_interval: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ["event", "progress"]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    progress: WatchProgress
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., progress: _Optional[_Union[WatchProgress, _Mapping]] = ...) -> None: ...

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
