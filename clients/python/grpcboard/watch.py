"""Watch helpers: the resume rule, and a watch iterator that survives disconnects."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Iterator, Optional

import grpc

from grpcboard.cancel import CancelEvent
from grpcboard.errors import BoardError
from grpcboard.v1 import board_service_pb2 as pb
from grpcboard.v1 import event_pb2

if TYPE_CHECKING:
    from grpcboard.client import BoardClient, MetadataType

__all__ = ["WatchResume", "WatchStream"]

_log = logging.getLogger("grpcboard")


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
    ) -> None:
        self._client = client
        self._request = request
        self._stream_timeout = stream_timeout
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
            try:
                for message in call:
                    failures = 0
                    event = self._resume.accept(message)
                    if event is not None:
                        yield event
                return  # ended with OK: the workflow was deleted
            except grpc.RpcError as e:
                if self._closed.is_set():
                    return
                with self._lock:
                    dropped = self._drop
                if dropped:
                    self._reconnects += 1
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
                with self._lock:
                    self._call = None
                call.cancel()
