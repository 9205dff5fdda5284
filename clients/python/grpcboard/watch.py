"""Watch helpers: the resume rule, and a watch iterator that survives disconnects."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional

import grpc

from grpcboard.cancel import CancelEvent
from grpcboard.client import DEFAULT, Timeout, _seconds
from grpcboard.errors import BoardError
from grpcboard.v1 import board_service_pb2 as pb
from grpcboard.v1 import event_pb2

if TYPE_CHECKING:
    from grpcboard.client import BoardClient, MetadataType

__all__ = ["WatchResume", "WatchStream", "default_idle_timeout"]

_log = logging.getLogger("grpcboard")

#: The server's progress interval when a WatchRequest sets none (seconds).
DEFAULT_PROGRESS_INTERVAL = 5.0
#: The default idle timeout of a watch is this many progress intervals.
IDLE_TIMEOUT_FACTOR = 3.0
_MIN_PROGRESS_INTERVAL = 0.1  # the server accepts 100 ms to 1 h


def default_idle_timeout(request: pb.WatchRequest) -> float:
    """The idle timeout a watch gets by default: 3 x the progress interval it asks for (5 s when unset,
    the server's default), so one lost or late progress message never causes a reconnection."""
    interval = DEFAULT_PROGRESS_INTERVAL
    if request.HasField("progress_interval"):
        asked = request.progress_interval.seconds + request.progress_interval.nanos / 1e9
        if asked > 0:
            interval = max(asked, _MIN_PROGRESS_INTERVAL)
    return IDLE_TIMEOUT_FACTOR * interval


class _StreamState:
    """What one stream shares with its idle watchdog (not the WatchStream itself, so an abandoned
    WatchStream can still be garbage-collected)."""

    __slots__ = ("waiting_since", "idle", "done")

    def __init__(self) -> None:
        #: Monotonic time since which the reader has been waiting for the next message; None while
        #: the consumer handles the last one (a slow consumer is not a silent server).
        self.waiting_since: Optional[float] = time.monotonic()
        #: Set by the watchdog before it cancels the call.
        self.idle = False
        #: Set when the stream is over; ends the watchdog.
        self.done = threading.Event()


def _idle_watchdog(call: Any, state: _StreamState, idle_timeout: float, workflow_id: str) -> None:
    """Cancels ``call`` once the reader has waited ``idle_timeout`` seconds without a message."""
    while True:
        since = state.waiting_since
        now = time.monotonic()
        if since is not None and now - since >= idle_timeout:
            state.idle = True
            _log.info("watch of %s: no message for %.1fs; reopening the stream", workflow_id, now - since)
            call.cancel()
            return
        # While the consumer is busy, look again a third of the timeout later (at most 1/3 late).
        wait = idle_timeout / 3 if since is None else since + idle_timeout - now
        if state.done.wait(wait):
            return


class WatchResume:
    """The resume rule of a watch, in one place: the next stream starts at (last delivered revision + 1).

    A stream delivers revision 41, then the connection drops while 42 and 43 commit: reopening at 42
    gets 42 and 43 from history, then live events; nothing is skipped. If the drop happened after 43
    was sent but before it was read, the new stream sends 43 again and it is delivered once, because
    only revisions at or above the next start are accepted. Progress messages move the start forward
    too ("everything up to 57 was sent": a resume starts at 58). A watch started "from now" (0) learns
    its position from its first message.
    """

    def __init__(self, start_revision: int) -> None:
        self._next = start_revision

    @property
    def next_start(self) -> int:
        """The start_revision for the next stream (0 only before the first message of a "from now" watch)."""
        return self._next

    def accept(self, message: pb.WatchResponse) -> Optional[event_pb2.Event]:
        """Takes one stream message; returns the event to deliver, or None (progress, or a duplicate)."""
        which = message.WhichOneof("message")
        if which == "event":
            if message.event.revision >= self._next:
                self._next = message.event.revision + 1
                return message.event
            return None
        if which == "progress":
            self._next = max(self._next, message.progress.revision + 1)
        return None


class WatchStream(Iterator[event_pb2.Event]):
    """An iterator of a workflow's events that reopens the stream after transient failures
    (UNAVAILABLE, a dropped connection, ...) at the last delivered revision + 1: no duplicates, no gaps.

    Created by :meth:`BoardClient.watch`. Iteration ends when the server ends the stream (the
    workflow was deleted) or when :meth:`close` is called (from any thread), and raises BoardError
    when the watch cannot go on (HistoryCompactedError for OUT_OF_RANGE / HISTORY_COMPACTED).

    Liveness: the server sends a progress message whenever a stream has been idle for its progress
    interval, so silence means the stream or its connection is dead (e.g. half-open after the peer
    vanished). When no message arrives within ``idle_timeout`` while the iterator waits for one, the
    stream is cancelled and reopened where it was, like after any other disconnect.
    """

    def __init__(
        self,
        client: "BoardClient",
        request: pb.WatchRequest,
        *,
        stream_timeout: Optional[float] = None,
        metadata: Optional["MetadataType"] = None,
        cancel: Optional[CancelEvent] = None,
        max_backoff: float = 5.0,
        idle_timeout: Timeout = DEFAULT,
    ) -> None:
        """
        Args:
            client: The client to open streams with.
            request: The WatchRequest of the first stream; later ones start at :attr:`next_start`.
            stream_timeout: Optional deadline of each stream (seconds); it is then reopened in place.
            metadata: Headers sent with every stream.
            cancel: Closes the watch when set.
            max_backoff: Upper bound of the wait between reconnection attempts (seconds).
            idle_timeout: Reopen the stream when no message (event or progress) arrived for this many
                seconds while waiting for one. Default: 3 x the request's progress_interval (15 s
                with the server's default of 5 s). None or 0 disables it.
        """
        self._client = client
        self._request = request
        self._stream_timeout = stream_timeout
        if idle_timeout is DEFAULT:
            self._idle_timeout: Optional[float] = default_idle_timeout(request)
        else:
            seconds = _seconds(idle_timeout) if idle_timeout is not None else 0.0
            self._idle_timeout = seconds if seconds > 0 else None
        self._metadata = metadata
        self._max_backoff = max_backoff
        self._resume = WatchResume(request.start_revision)
        self._lock = threading.Lock()
        self._closed = CancelEvent()
        self._call: Any = None
        self._drop = False
        self._reconnects = 0
        self._unlink = self._closed.link(cancel)
        self._gen = self._run()

    @property
    def next_start(self) -> int:
        """Where the next stream would start: the last delivered (or reported) revision + 1."""
        return self._resume.next_start

    @property
    def reconnects(self) -> int:
        """How many times a stream was reopened."""
        return self._reconnects

    @property
    def idle_timeout(self) -> Optional[float]:
        """Seconds without any message after which the stream is reopened (None: never)."""
        return self._idle_timeout

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __iter__(self) -> "WatchStream":
        return self

    def __next__(self) -> event_pb2.Event:
        return next(self._gen)

    def __enter__(self) -> "WatchStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the watch: the current stream is cancelled and iteration stops. Thread-safe."""
        self._closed.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        self._unlink()

    def reconnect(self) -> None:
        """Drops the current stream; the next one starts where this one was. Thread-safe."""
        with self._lock:
            call = self._call
            if call is None:
                return
            self._drop = True
        call.cancel()

    def _run(self) -> Iterator[event_pb2.Event]:
        failures = 0
        while not self._closed.is_set():
            request = pb.WatchRequest()
            request.CopyFrom(self._request)
            request.start_revision = self._resume.next_start
            call = self._client.watch_stream(request, timeout=self._stream_timeout, metadata=self._metadata)
            with self._lock:
                self._call = call
                self._drop = False
            if self._closed.is_set():
                call.cancel()
            state = _StreamState()
            if self._idle_timeout:
                threading.Thread(target=_idle_watchdog, args=(call, state, self._idle_timeout, request.workflow_id),
                                 name="grpcboard-watch-idle", daemon=True).start()
            try:
                messages = iter(call)
                while True:
                    state.waiting_since = time.monotonic()
                    try:
                        message = next(messages)
                    except StopIteration:
                        return  # ended with OK: the workflow was deleted
                    state.waiting_since = None
                    failures = 0
                    event = self._resume.accept(message)
                    if event is not None:
                        yield event
            except grpc.RpcError as e:
                if self._closed.is_set():
                    return
                with self._lock:
                    dropped = self._drop
                if dropped:
                    self._reconnects += 1
                    continue
                if state.idle:
                    self._reconnects += 1  # silent for idle_timeout: reopen at once (a new stream, maybe a new connection)
                    continue
                error = BoardError.from_rpc_error(e)
                if self._stream_timeout is not None and error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._reconnects += 1  # our own per-stream deadline: reopen at once
                    continue
                if not error.is_transient:
                    raise error from e
                failures += 1
                self._reconnects += 1
                delay = min(self._max_backoff, 0.1 * (1 << min(failures, 6)))
                _log.info("watch of %s dropped (%s); reopening at %d in %.1fs", request.workflow_id,
                          error.code.name, self._resume.next_start, delay)
                if self._closed.wait(delay):
                    return
            finally:
                state.done.set()
                with self._lock:
                    self._call = None
                call.cancel()
