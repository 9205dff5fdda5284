"""BoardClient: a typed client for grpcboard.v1.BoardService."""

from __future__ import annotations

import datetime as _dt
import enum
from typing import (
    TYPE_CHECKING,
    Any,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from grpcboard.cancel import CancelEvent
from grpcboard.errors import BoardError
from grpcboard.v1 import board_service_pb2 as pb
from grpcboard.v1 import board_service_pb2_grpc as pb_grpc
from grpcboard.v1 import note_pb2, task_pb2, workflow_pb2

if TYPE_CHECKING:
    from grpcboard.watch import WatchStream
    from grpcboard.worker import Worker

__all__ = ["BoardClient", "DEFAULT", "Seconds", "parse_target", "to_duration"]

M = TypeVar("M", bound=Message)

#: A length of time: seconds as a number, or a timedelta.
Seconds = Union[float, int, _dt.timedelta]
#: Call metadata (headers): (key, value) pairs.
MetadataType = Sequence[Tuple[str, Union[str, bytes]]]


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: Sentinel for "use the client's default deadline" (the default of every ``timeout`` parameter).
DEFAULT = _Default.DEFAULT
Timeout = Union[float, int, _dt.timedelta, None, _Default]


_DEFAULT_CHANNEL_OPTIONS = {
    # Results, payloads and list pages can be large (1 MiB per task by default).
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    # After a server restart, reconnect within seconds rather than gRPC's default of up to 2 minutes.
    "grpc.max_reconnect_backoff_ms": 5000,
    # ... and do not hold the re-resolution that follows a lost connection for up to 30 s (the default
    # rate limit), which alone kept the channel failing for ~12 s after a restart.
    "grpc.dns_min_time_between_resolutions_ms": 1000,
    # While calls are open, PING a silent connection every 15 s and drop it when no answer comes within
    # 10 s: a half-open connection (the server's host gone) otherwise holds a reopened watch forever. The
    # same figures as the C# client's; 0 pings without data lifts grpc's limit of 2 (the server does not
    # police pings).
    "grpc.keepalive_time_ms": 15000,
    "grpc.keepalive_timeout_ms": 10000,
    "grpc.http2.max_pings_without_data": 0,
}


def _seconds(value: Seconds) -> float:
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


def to_duration(value: Union[Seconds, duration_pb2.Duration]) -> duration_pb2.Duration:
    """A google.protobuf.Duration from seconds (int or float), a timedelta, or a Duration."""
    if isinstance(value, duration_pb2.Duration):
        return value
    seconds = _seconds(value)
    d = duration_pb2.Duration()
    whole = int(seconds)
    d.seconds = whole
    d.nanos = int(round((seconds - whole) * 1e9))
    if d.nanos >= 1_000_000_000:
        d.seconds += 1
        d.nanos -= 1_000_000_000
    return d


def _duration_seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def parse_target(target: str) -> Tuple[str, bool]:
    """Splits "http://host:port/", "https://host:port" or "host:port" into (grpc target, use TLS)."""
    secure = False
    rest = target.strip()
    lower = rest.lower()
    if lower.startswith("http://"):
        rest = rest[len("http://"):]
    elif lower.startswith("https://"):
        rest = rest[len("https://"):]
        secure = True
    rest = rest.split("/", 1)[0]
    if not rest:
        raise ValueError(f"no host in target {target!r}")
    return rest, secure


def _build(cls: Type[M], request: Optional[M], fields: Mapping[str, Any]) -> M:
    """The request message: the one given, or one built from keyword fields.

    Keyword fields of type google.protobuf.Duration also accept seconds or a timedelta.
    """
    if request is not None:
        if fields:
            raise TypeError(f"pass either a {cls.__name__} or keyword fields, not both")
        if not isinstance(request, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(request).__name__}")
        return request
    converted = {}
    by_name = cls.DESCRIPTOR.fields_by_name
    for name, value in fields.items():
        fd = by_name.get(name)
        if fd is None:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        if value is None:
            continue  # None means unset
        if (
            fd.message_type is not None
            and fd.message_type.full_name == "google.protobuf.Duration"
            and isinstance(value, (int, float, _dt.timedelta))
        ):
            value = to_duration(value)
        converted[name] = value
    return cls(**converted)


class BoardClient:
    """A typed client for grpcboard.v1.BoardService: one method per RPC, plus :meth:`watch` (a watch
    that resumes by itself after disconnects) and :meth:`worker` (a worker loop that renews its lease).

    Every method takes either a request message or its fields as keyword arguments::

        client.create_workflow(workflow_id="demo", goal="Write a report")
        client.claim_task(pb.ClaimTaskRequest(workflow_id="demo", worker_id="w1"))

    Duration fields accept seconds or a timedelta (``wait=5``, ``lease_duration=30``).

    Every unary call has a deadline: ``timeout`` seconds if given, ``None`` for none, and by default
    ``default_timeout`` (for ClaimTask: ``default_timeout`` plus the request's ``wait``). Watch streams
    have no deadline by default. Failures raise :class:`~grpcboard.errors.BoardError`.

    ``cancel`` (a :class:`~grpcboard.cancel.CancelEvent`) cancels the call when set; the call then
    raises BoardError with code CANCELLED.

    Thread-safe; create one per server and share it. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        *,
        default_timeout: Optional[float] = 30.0,
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Optional[Sequence[Tuple[str, Any]]] = None,
        interceptors: Sequence[Any] = (),
        metadata: Optional[MetadataType] = None,
        channel: Optional[grpc.Channel] = None,
    ) -> None:
        """Connects to a server.

        Args:
            target: "http://host:port" (plaintext h2c), "https://host:port" (TLS) or "host:port".
            default_timeout: Deadline in seconds of a unary call that sets none; None for no deadline.
            credentials: TLS credentials for an https target (default: system roots).
            options: Extra grpc channel options, e.g. ("grpc.max_receive_message_length", n).
            interceptors: grpc client interceptors to wrap the channel with.
            metadata: Headers sent with every call (e.g. authorization).
            channel: An existing channel to use instead (not closed by :meth:`close`); target is then
                only informative.
        """
        self.target = target
        self.default_timeout = default_timeout
        self._metadata: List[Tuple[str, Union[str, bytes]]] = list(metadata or [])
        self._owns_channel = channel is None
        if channel is None:
            address, secure = parse_target(target)
            merged = dict(_DEFAULT_CHANNEL_OPTIONS)
            merged.update(dict(options or []))
            opts = list(merged.items())
            if secure or credentials is not None:
                channel = grpc.secure_channel(address, credentials or grpc.ssl_channel_credentials(), options=opts)
            else:
                channel = grpc.insecure_channel(address, options=opts)
        self._base_channel: grpc.Channel = channel
        self.channel: grpc.Channel = grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        self.stub = pb_grpc.BoardServiceStub(self.channel)

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel if this client created it."""
        if self._owns_channel:
            self._base_channel.close()

    def __enter__(self) -> "BoardClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout(self, timeout: Timeout, extra: float = 0.0) -> Optional[float]:
        if timeout is DEFAULT:
            return None if self.default_timeout is None else self.default_timeout + extra
        if timeout is None:
            return None
        return _seconds(timeout)  # type: ignore[arg-type]

    def _md(self, metadata: Optional[MetadataType]) -> Optional[List[Tuple[str, Union[str, bytes]]]]:
        md = self._metadata + list(metadata or [])
        return md or None

    def _unary(
        self,
        name: str,
        request: Message,
        timeout: Timeout,
        metadata: Optional[MetadataType],
        cancel: Optional[CancelEvent],
        extra: float = 0.0,
    ) -> Any:
        if cancel is not None and cancel.is_set():
            raise BoardError(grpc.StatusCode.CANCELLED, "cancelled before the call started")
        multicallable = getattr(self.stub, name)
        future = multicallable.future(request, timeout=self._timeout(timeout, extra), metadata=self._md(metadata))
        remove = cancel.add_callback(future.cancel) if cancel is not None else None
        try:
            return future.result()
        except grpc.FutureCancelledError:
            raise BoardError(grpc.StatusCode.CANCELLED, "cancelled by the caller") from None
        except grpc.RpcError as e:
            raise BoardError.from_rpc_error(e) from e
        except BaseException:  # e.g. KeyboardInterrupt while waiting: do not leave the call running
            future.cancel()
            raise
        finally:
            if remove is not None:
                remove()

    # -- workflows --------------------------------------------------------------------------

    def create_workflow(self, request: Optional[pb.CreateWorkflowRequest] = None, *, timeout: Timeout = DEFAULT,
                        metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                        **fields: Any) -> pb.CreateWorkflowResponse:
        """Creates a workflow; the same id with the same goal returns the existing one (created=False)."""
        return self._unary("CreateWorkflow", _build(pb.CreateWorkflowRequest, request, fields), timeout, metadata, cancel)

    def get_workflow(self, request: Optional[pb.GetWorkflowRequest] = None, *, timeout: Timeout = DEFAULT,
                     metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                     **fields: Any) -> pb.GetWorkflowResponse:
        """Reads a workflow with its task counts and head revision."""
        return self._unary("GetWorkflow", _build(pb.GetWorkflowRequest, request, fields), timeout, metadata, cancel)

    def list_workflows(self, request: Optional[pb.ListWorkflowsRequest] = None, *, timeout: Timeout = DEFAULT,
                       metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                       **fields: Any) -> pb.ListWorkflowsResponse:
        """Lists workflows ordered by id, one page at a time (see :meth:`iter_workflows`)."""
        return self._unary("ListWorkflows", _build(pb.ListWorkflowsRequest, request, fields), timeout, metadata, cancel)

    def update_workflow(self, request: Optional[pb.UpdateWorkflowRequest] = None, *, timeout: Timeout = DEFAULT,
                        metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                        **fields: Any) -> pb.UpdateWorkflowResponse:
        """Changes goal, labels or status, optionally only at an expected mod_revision."""
        return self._unary("UpdateWorkflow", _build(pb.UpdateWorkflowRequest, request, fields), timeout, metadata, cancel)

    def delete_workflow(self, request: Optional[pb.DeleteWorkflowRequest] = None, *, timeout: Timeout = DEFAULT,
                        metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                        **fields: Any) -> pb.DeleteWorkflowResponse:
        """Deletes a workflow with all its tasks, notes and history."""
        return self._unary("DeleteWorkflow", _build(pb.DeleteWorkflowRequest, request, fields), timeout, metadata, cancel)

    # -- tasks ------------------------------------------------------------------------------

    def post_tasks(self, request: Optional[pb.PostTasksRequest] = None, *, timeout: Timeout = DEFAULT,
                   metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                   **fields: Any) -> pb.PostTasksResponse:
        """Posts a batch of tasks atomically; idempotent per task id."""
        return self._unary("PostTasks", _build(pb.PostTasksRequest, request, fields), timeout, metadata, cancel)

    def get_task(self, request: Optional[pb.GetTaskRequest] = None, *, timeout: Timeout = DEFAULT,
                 metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                 **fields: Any) -> pb.GetTaskResponse:
        """Reads one task with its payload, checkpoint and result."""
        return self._unary("GetTask", _build(pb.GetTaskRequest, request, fields), timeout, metadata, cancel)

    def list_tasks(self, request: Optional[pb.ListTasksRequest] = None, *, timeout: Timeout = DEFAULT,
                   metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                   **fields: Any) -> pb.ListTasksResponse:
        """Lists tasks ordered by id, optionally in one state, one page at a time (see :meth:`iter_tasks`)."""
        return self._unary("ListTasks", _build(pb.ListTasksRequest, request, fields), timeout, metadata, cancel)

    def cancel_task(self, request: Optional[pb.CancelTaskRequest] = None, *, timeout: Timeout = DEFAULT,
                    metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                    **fields: Any) -> pb.CancelTaskResponse:
        """Cancels an unfinished task and its dependents; a worker holding it loses its claim."""
        return self._unary("CancelTask", _build(pb.CancelTaskRequest, request, fields), timeout, metadata, cancel)

    # -- claims -----------------------------------------------------------------------------

    def claim_task(self, request: Optional[pb.ClaimTaskRequest] = None, *, timeout: Timeout = DEFAULT,
                   metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                   **fields: Any) -> pb.ClaimTaskResponse:
        """Claims a given task or the next ready one, optionally waiting on the server (``wait``).

        The response has no ``task`` (``HasField("task")`` is False) when none became ready. The
        default deadline is ``default_timeout`` plus the wait.
        """
        req = _build(pb.ClaimTaskRequest, request, fields)
        extra = _duration_seconds(req.wait) if req.HasField("wait") else 0.0
        return self._unary("ClaimTask", req, timeout, metadata, cancel, extra)

    def renew_lease(self, request: Optional[pb.RenewLeaseRequest] = None, *, timeout: Timeout = DEFAULT,
                    metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                    **fields: Any) -> pb.RenewLeaseResponse:
        """Extends the lease of a claim."""
        return self._unary("RenewLease", _build(pb.RenewLeaseRequest, request, fields), timeout, metadata, cancel)

    def release_task(self, request: Optional[pb.ReleaseTaskRequest] = None, *, timeout: Timeout = DEFAULT,
                     metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                     **fields: Any) -> pb.ReleaseTaskResponse:
        """Gives a claimed task back (READY at once, the attempt not counted)."""
        return self._unary("ReleaseTask", _build(pb.ReleaseTaskRequest, request, fields), timeout, metadata, cancel)

    def checkpoint(self, request: Optional[pb.CheckpointRequest] = None, *, timeout: Timeout = DEFAULT,
                   metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                   **fields: Any) -> pb.CheckpointResponse:
        """Saves progress bytes on a claimed task."""
        return self._unary("Checkpoint", _build(pb.CheckpointRequest, request, fields), timeout, metadata, cancel)

    def complete_task(self, request: Optional[pb.CompleteTaskRequest] = None, *, timeout: Timeout = DEFAULT,
                      metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                      **fields: Any) -> pb.CompleteTaskResponse:
        """Completes a claimed task with its result; repeating the same completion succeeds."""
        return self._unary("CompleteTask", _build(pb.CompleteTaskRequest, request, fields), timeout, metadata, cancel)

    def fail_task(self, request: Optional[pb.FailTaskRequest] = None, *, timeout: Timeout = DEFAULT,
                  metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                  **fields: Any) -> pb.FailTaskResponse:
        """Reports a failed attempt; the task is retried after its backoff or dead-lettered."""
        return self._unary("FailTask", _build(pb.FailTaskRequest, request, fields), timeout, metadata, cancel)

    # -- notes ------------------------------------------------------------------------------

    def put_note(self, request: Optional[pb.PutNoteRequest] = None, *, timeout: Timeout = DEFAULT,
                 metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                 **fields: Any) -> pb.PutNoteResponse:
        """Writes a note, optionally with compare-and-set (expected_version) and a time to live (ttl)."""
        return self._unary("PutNote", _build(pb.PutNoteRequest, request, fields), timeout, metadata, cancel)

    def get_note(self, request: Optional[pb.GetNoteRequest] = None, *, timeout: Timeout = DEFAULT,
                 metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                 **fields: Any) -> pb.GetNoteResponse:
        """Reads one note."""
        return self._unary("GetNote", _build(pb.GetNoteRequest, request, fields), timeout, metadata, cancel)

    def list_notes(self, request: Optional[pb.ListNotesRequest] = None, *, timeout: Timeout = DEFAULT,
                   metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                   **fields: Any) -> pb.ListNotesResponse:
        """Lists notes ordered by key, optionally under a prefix (see :meth:`iter_notes`)."""
        return self._unary("ListNotes", _build(pb.ListNotesRequest, request, fields), timeout, metadata, cancel)

    def delete_note(self, request: Optional[pb.DeleteNoteRequest] = None, *, timeout: Timeout = DEFAULT,
                    metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                    **fields: Any) -> pb.DeleteNoteResponse:
        """Deletes a note, optionally only at an expected version."""
        return self._unary("DeleteNote", _build(pb.DeleteNoteRequest, request, fields), timeout, metadata, cancel)

    # -- export -----------------------------------------------------------------------------

    def export_workflow(self, request: Optional[pb.ExportWorkflowRequest] = None, *, timeout: Timeout = DEFAULT,
                        metadata: Optional[MetadataType] = None, cancel: Optional[CancelEvent] = None,
                        **fields: Any) -> pb.ExportWorkflowResponse:
        """Exports a workflow as JSON (format=EXPORT_FORMAT_JSON) or Markdown."""
        return self._unary("ExportWorkflow", _build(pb.ExportWorkflowRequest, request, fields), timeout, metadata, cancel)

    # -- watch ------------------------------------------------------------------------------

    def watch_stream(self, request: Optional[pb.WatchRequest] = None, *, timeout: Timeout = None,
                     metadata: Optional[MetadataType] = None, **fields: Any) -> Any:
        """Opens ONE Watch stream, as the server sends it (events and progress), without resuming.

        Returns the grpc call: iterate it for WatchResponse messages, ``cancel()`` it to end it.
        Errors surface as grpc.RpcError (wrap with BoardError.from_rpc_error). Most callers want
        :meth:`watch`. No deadline by default.
        """
        req = _build(pb.WatchRequest, request, fields)
        t = None if timeout is DEFAULT else self._timeout(timeout)
        return self.stub.Watch(req, timeout=t, metadata=self._md(metadata))

    def watch(
        self,
        request: Optional[pb.WatchRequest] = None,
        *,
        stream_timeout: Optional[float] = None,
        metadata: Optional[MetadataType] = None,
        cancel: Optional[CancelEvent] = None,
        max_backoff: float = 5.0,
        idle_timeout: Timeout = DEFAULT,
        **fields: Any,
    ) -> "WatchStream":
        """Every event of a workflow from ``start_revision`` on, each exactly once and in order, across
        disconnects: a dropped stream is reopened at (last delivered revision + 1).

        Returns a :class:`~grpcboard.watch.WatchStream`, an iterator of ``event_pb2.Event``; it ends
        when the workflow is deleted or when closed (``close()``, ``cancel`` set, or ``with`` exit).
        Raises :class:`~grpcboard.errors.HistoryCompactedError` (a BoardError, OUT_OF_RANGE /
        HISTORY_COMPACTED) when the start is older than the retained history, and BoardError for any
        other error that is not transient (e.g. NOT_FOUND / WORKFLOW_NOT_FOUND).

        Args:
            stream_timeout: Optional deadline of each underlying stream (seconds); when it passes the
                stream is reopened where it was, which also bounds how long a silently dead
                connection can go unnoticed.
            max_backoff: Upper bound of the wait between reconnection attempts (seconds).
            idle_timeout: Liveness check (seconds, or a timedelta): when no message at all (event or
                progress) arrives for this long while the iterator waits for one, the stream is
                considered dead (e.g. a half-open connection) and reopened where it was. The server
                sends progress on every idle ``progress_interval``, so the default is 3 x the
                requested progress_interval (15 s for the server's default of 5 s). None or 0
                disables it.
            **fields: WatchRequest fields: workflow_id, start_revision (0 = from now), kinds,
                task_ids, note_key_prefix, progress_interval (seconds).
        """
        from grpcboard.watch import WatchStream

        req = _build(pb.WatchRequest, request, fields)
        return WatchStream(self, req, stream_timeout=stream_timeout, metadata=metadata, cancel=cancel,
                           max_backoff=max_backoff, idle_timeout=idle_timeout)

    # -- paging -----------------------------------------------------------------------------

    def iter_workflows(self, *, status: int = 0, page_size: int = 0, timeout: Timeout = DEFAULT) -> Iterator[workflow_pb2.Workflow]:
        """Every workflow (optionally in one status), following page tokens."""
        token = ""
        while True:
            page = self.list_workflows(status=status, page_size=page_size, page_token=token, timeout=timeout)
            yield from page.workflows
            token = page.next_page_token
            if not token:
                return

    def iter_tasks(self, workflow_id: str, *, state: int = 0, omit_bodies: bool = False, page_size: int = 0,
                   timeout: Timeout = DEFAULT) -> Iterator[task_pb2.Task]:
        """Every task of a workflow (optionally in one state), following page tokens."""
        token = ""
        while True:
            page = self.list_tasks(workflow_id=workflow_id, state=state, omit_bodies=omit_bodies,
                                   page_size=page_size, page_token=token, timeout=timeout)
            yield from page.tasks
            token = page.next_page_token
            if not token:
                return

    def iter_notes(self, workflow_id: str, *, key_prefix: str = "", keys_only: bool = False, page_size: int = 0,
                   timeout: Timeout = DEFAULT) -> Iterator[note_pb2.Note]:
        """Every note of a workflow (optionally under a key prefix), following page tokens."""
        token = ""
        while True:
            page = self.list_notes(workflow_id=workflow_id, key_prefix=key_prefix, keys_only=keys_only,
                                   page_size=page_size, page_token=token, timeout=timeout)
            yield from page.notes
            token = page.next_page_token
            if not token:
                return

    # -- worker -----------------------------------------------------------------------------

    def worker(self, workflow_id: str, worker_id: str, **options: Any) -> "Worker":
        """Creates a :class:`~grpcboard.worker.Worker` for one workflow; see its options."""
        from grpcboard.worker import Worker

        return Worker(self, workflow_id, worker_id, **options)
