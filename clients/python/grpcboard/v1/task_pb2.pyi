from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
TASK_STATE_BACKOFF: TaskState
TASK_STATE_CANCELLED: TaskState
TASK_STATE_CLAIMED: TaskState
TASK_STATE_COMPLETED: TaskState
TASK_STATE_DEAD_LETTERED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_READY: TaskState
TASK_STATE_UNSPECIFIED: TaskState

class RetryPolicy(_message.Message):
    __slots__ = ["backoff_coefficient", "initial_backoff", "maximum_backoff"]
    BACKOFF_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    backoff_coefficient: float
    initial_backoff: _duration_pb2.Duration
    maximum_backoff: _duration_pb2.Duration
    def __init__(self, initial_backoff: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., maximum_backoff: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., backoff_coefficient: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ["attempt", "checkpoint", "checkpoint_time", "content_type", "create_time", "depends_on", "end_reason", "fencing_token", "id", "labels", "last_error", "lease_duration", "lease_expire_time", "max_attempts", "mod_revision", "owner", "payload", "priority", "ready_time", "required_skills", "result", "result_content_type", "retry_policy", "state", "update_time", "workflow_id"]
    class LabelsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    READY_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_SKILLS_FIELD_NUMBER: _ClassVar[int]
    RESULT_CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    checkpoint: bytes
    checkpoint_time: _timestamp_pb2.Timestamp
    content_type: str
    create_time: _timestamp_pb2.Timestamp
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    end_reason: str
    fencing_token: int
    id: str
    labels: _containers.ScalarMap[str, str]
    last_error: TaskError
    lease_duration: _duration_pb2.Duration
    lease_expire_time: _timestamp_pb2.Timestamp
    max_attempts: int
    mod_revision: int
    owner: str
    payload: bytes
    priority: int
    ready_time: _timestamp_pb2.Timestamp
    required_skills: _containers.RepeatedScalarFieldContainer[str]
    result: bytes
    result_content_type: str
    retry_policy: RetryPolicy
    state: TaskState
    update_time: _timestamp_pb2.Timestamp
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., id: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., priority: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., required_skills: _Optional[_Iterable[str]] = ..., depends_on: _Optional[_Iterable[str]] = ..., max_attempts: _Optional[int] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., state: _Optional[_Union[TaskState, str]] = ..., attempt: _Optional[int] = ..., owner: _Optional[str] = ..., fencing_token: _Optional[int] = ..., lease_expire_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., lease_duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., checkpoint: _Optional[bytes] = ..., checkpoint_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., result: _Optional[bytes] = ..., result_content_type: _Optional[str] = ..., last_error: _Optional[_Union[TaskError, _Mapping]] = ..., ready_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., mod_revision: _Optional[int] = ..., end_reason: _Optional[str] = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ["attempt", "details", "lease_expired", "message", "non_retryable", "time", "worker_id"]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NON_RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    details: bytes
    lease_expired: bool
    message: str
    non_retryable: bool
    time: _timestamp_pb2.Timestamp
    worker_id: str
    def __init__(self, message: _Optional[str] = ..., details: _Optional[bytes] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ..., non_retryable: bool = ..., lease_expired: bool = ..., time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ["content_type", "depends_on", "id", "labels", "max_attempts", "payload", "priority", "required_skills", "retry_policy"]
    class LabelsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_SKILLS_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    id: str
    labels: _containers.ScalarMap[str, str]
    max_attempts: int
    payload: bytes
    priority: int
    required_skills: _containers.RepeatedScalarFieldContainer[str]
    retry_policy: RetryPolicy
    def __init__(self, id: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., priority: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., required_skills: _Optional[_Iterable[str]] = ..., depends_on: _Optional[_Iterable[str]] = ..., max_attempts: _Optional[int] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
