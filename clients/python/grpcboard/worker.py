"""A worker loop: claim, run with a renewed lease, checkpoint, complete or fail, release on stop."""

from __future__ import annotations

import asyncio
import inspect
import json as _json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, Optional, Sequence, Union

import grpc

from grpcboard.cancel import CancelEvent
from grpcboard.client import to_duration
from grpcboard.errors import BoardError
from grpcboard.v1 import board_service_pb2, task_pb2

if TYPE_CHECKING:
    from grpcboard.client import BoardClient

__all__ = [
    "Handler",
    "NonRetryableError",
    "TaskCancelledError",
    "TaskContext",
    "TaskResult",
    "Worker",
]

_log = logging.getLogger("grpcboard.worker")

# Backoff between attempts of a final write (complete, fail, release): 100 ms doubling, at most this.
_FINISH_MAX_BACKOFF = 1.0


@dataclass(frozen=True)
class TaskResult:
    """What a handler returns: the result bytes and their media type."""

    result: bytes = b""
    content_type: str = "application/octet-stream"

    @staticmethod
    def text(text: str, content_type: str = "text/plain; charset=utf-8") -> "TaskResult":
        """A UTF-8 text result."""
        return TaskResult(text.encode("utf-8"), content_type)

    @staticmethod
    def json(value: Any) -> "TaskResult":
        """A JSON result (``value`` is serialized with json.dumps)."""
        return TaskResult(_json.dumps(value).encode("utf-8"), "application/json")


class NonRetryableError(Exception):
    """Raised by a handler to dead-letter the task at once (FailTask with non_retryable=True)."""

    def __init__(self, message: str, details: bytes = b"") -> None:
        super().__init__(message)
        self.details = details


class TaskCancelledError(Exception):
    """Raised by :meth:`TaskContext.raise_if_cancelled` once the claim is lost or the worker stops."""


#: A handler's return value: a TaskResult, bytes (application/octet-stream), str (text/plain; charset=utf-8)
#: or None (an empty result).
HandlerResult = Union[TaskResult, bytes, str, None]
#: The work: a plain function, run in a worker thread, or an ``async def`` coroutine function, run in
#: its own event loop in that thread.
Handler = Callable[["TaskContext"], Union[HandlerResult, Awaitable[HandlerResult]]]


class TaskContext:
    """What a handler gets: the claimed task, its fencing token, a cancellation event that is set when
    the claim is lost (lease expired, task cancelled or taken over) or the worker stops, and a way to
    save progress.

    Sync handlers must watch ``cancelled`` themselves (``ctx.cancelled.wait(t)``, ``ctx.sleep(t)``,
    ``ctx.raise_if_cancelled()``); async handlers are also cancelled the asyncio way (their task gets
    ``CancelledError``).
    """

    def __init__(self, client: "BoardClient", worker_id: str, task: task_pb2.Task, fencing_token: int,
                 cancelled: CancelEvent) -> None:
        self._client = client
        self.worker_id: str = worker_id
        #: The claimed task (payload, attempt, and the last checkpoint of any earlier owner).
        self.task: task_pb2.Task = task
        #: The claim's fencing token; the worker passes it on every call about the task.
        self.fencing_token: int = fencing_token
        #: Set when the claim is lost or the worker stops.
        self.cancelled: CancelEvent = cancelled
        #: Why the claim was lost (the refusal, or the last renewal failure), if it was.
        self.lost_error: Optional[BoardError] = None
        self._lost_flag = False
        # When the lease ends unless renewed, on the local monotonic clock (set and moved by the worker).
        self._lease_end = float("inf")

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def workflow_id(self) -> str:
        return self.task.workflow_id

    @property
    def payload(self) -> bytes:
        return self.task.payload

    @property
    def last_checkpoint(self) -> bytes:
        """Progress saved by a previous owner, b"" on a first attempt."""
        return self.task.checkpoint

    @property
    def lost(self) -> bool:
        """True once the claim is known to be lost (not merely the worker stopping)."""
        return self._lost_flag

    def raise_if_cancelled(self) -> None:
        """Raises TaskCancelledError if the claim is lost or the worker is stopping."""
        if self.cancelled.is_set():
            raise TaskCancelledError(f"task {self.task.id}: " + ("claim lost" if self._lost_flag else "worker stopping"))

    def sleep(self, seconds: float) -> None:
        """Sleeps, but raises TaskCancelledError as soon as the task is cancelled."""
        self.cancelled.wait(seconds)
        self.raise_if_cancelled()

    def checkpoint(self, data: bytes) -> None:
        """Saves progress; a later owner of the task reads it in ``last_checkpoint``.

        Raises BoardError if refused; if the claim is lost, ``cancelled`` is set too.
        """
        try:
            self._client.checkpoint(workflow_id=self.task.workflow_id, task_id=self.task.id,
                                    fencing_token=self.fencing_token, checkpoint=data, cancel=self.cancelled)
        except BoardError as e:
            if e.is_claim_lost:
                self._lose(e)
            raise

    async def acheckpoint(self, data: bytes) -> None:
        """``checkpoint`` for async handlers (runs the call in a thread)."""
        await asyncio.get_running_loop().run_in_executor(None, self.checkpoint, data)

    def _lose(self, error: Optional[BoardError]) -> None:
        if not self._lost_flag:
            self.lost_error = error
            self._lost_flag = True
        self.cancelled.set()


class Worker:
    """Claims tasks of one workflow (waiting on the server, not polling), runs a handler while renewing
    the lease in the background, then completes or fails the task, every write carrying the fencing
    token. When the lease is lost the handler's ``ctx.cancelled`` is set and nothing more is written
    for that claim; when the worker stops, running tasks are released for others.

    Handlers may be sync (run in a worker thread) or ``async def`` (run in an event loop of their own
    in that thread, cancelled with asyncio cancellation when the claim is lost). Return a
    :class:`TaskResult`, bytes, str or None to complete; raise to fail the attempt (retried per the
    task's policy); raise :class:`NonRetryableError` to dead-letter it at once.
    """

    def __init__(
        self,
        client: "BoardClient",
        workflow_id: str,
        worker_id: str,
        *,
        skills: Sequence[str] = (),
        lease_duration: float = 30.0,
        renew_interval: Optional[float] = None,
        claim_wait: float = 20.0,
        max_concurrency: int = 1,
        claim_next_on_complete: bool = True,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        """
        Args:
            client: The client to call through.
            workflow_id: The workflow to take tasks from.
            worker_id: Who this worker is; recorded as the owner of its claims.
            skills: What this worker can do; it is offered only tasks whose required skills are all here.
            lease_duration: Lease asked for on every claim and renewal, seconds (1 to 3600; default 30).
            renew_interval: How often the lease is renewed while a task runs (default a third of the lease).
            claim_wait: How long one claim call waits on the server for a ready task (default 20 s).
            max_concurrency: Tasks run at once (default 1), each in its own thread.
            claim_next_on_complete: Each completion also claims the next ready task (claim_next), so a busy
                worker makes one call per task instead of two (default True). If a completion's response is
                lost, the task it claimed returns to the queue when its lease runs out.
            logger: Logs claims, lost leases and failures (default logger "grpcboard.worker").
        """
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if lease_duration <= 0:
            raise ValueError("lease_duration must be positive")
        self.client = client
        self.workflow_id = workflow_id
        self.worker_id = worker_id
        self.skills = list(skills)
        self.lease_duration = float(lease_duration)
        self.renew_interval = float(renew_interval) if renew_interval is not None else self.lease_duration / 3
        self.claim_wait = float(claim_wait)
        self.max_concurrency = max_concurrency
        self.claim_next_on_complete = claim_next_on_complete
        self._log = logger or _log
        #: Set to stop the worker (see :meth:`stop`); running tasks are then released.
        self.stopping = CancelEvent()
        self._lock = threading.Lock()
        self._completed = 0
        self._failed = 0
        self._lost = 0
        self._released = 0
        self._max_tasks: Optional[int] = None
        self._until_done = False
        #: Called with (task, fencing token, CompleteTaskResponse) after each completion, in the worker thread.
        self.on_completed: Optional[Callable[[task_pb2.Task, int, Any], None]] = None
        #: Called with (task, fencing token) right after each claim, in the worker thread.
        self.on_claimed: Optional[Callable[[task_pb2.Task, int], None]] = None

    # -- counters ---------------------------------------------------------------------------

    @property
    def completed(self) -> int:
        """Tasks this worker completed."""
        return self._completed

    @property
    def failed(self) -> int:
        """Tasks this worker reported as failed."""
        return self._failed

    @property
    def lost_claims(self) -> int:
        """Claims this worker lost before finishing."""
        return self._lost

    @property
    def released(self) -> int:
        """Tasks given back because the worker stopped."""
        return self._released

    # -- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the worker (thread-safe): waiting claims are cancelled, running handlers see
        ``ctx.cancelled``, and tasks they did not finish are released."""
        self.stopping.set()

    def run(self, handler: Handler, *, max_tasks: Optional[int] = None, until_done: bool = False) -> None:
        """Runs until :meth:`stop` (or, if given, until ``max_tasks`` completions, or with
        ``until_done`` until the workflow has no unfinished task left).

        Transient claim failures are retried with backoff; any other claim error (e.g. NOT_FOUND)
        stops the worker and is raised here, as is an exception from ``on_claimed``/``on_completed``.
        A worker runs once: after it stopped, create a new one.
        """
        self._max_tasks = max_tasks
        self._until_done = until_done
        errors: List[BaseException] = []
        threads: List[threading.Thread] = []
        try:
            if self.max_concurrency == 1:
                self._slot(handler, errors)
            else:
                threads = [
                    threading.Thread(target=self._slot, args=(handler, errors), name=f"grpcboard-worker-{i}",
                                     daemon=True)
                    for i in range(self.max_concurrency)
                ]
                for t in threads:
                    t.start()
                _join_all(threads)
        except BaseException:  # KeyboardInterrupt in the calling thread: stop, let the slots release their tasks
            self.stop()
            _join_all(threads)
            raise
        if errors:
            raise errors[0]

    def run_once(self, handler: Handler) -> bool:
        """Claims and runs at most one task. True if a task was claimed (whatever its outcome), False if
        none became ready within ``claim_wait``."""
        claim = self.client.claim_task(
            workflow_id=self.workflow_id,
            worker_id=self.worker_id,
            skills=self.skills,
            lease_duration=self.lease_duration,
            wait=self.claim_wait,
            cancel=self.stopping,
        )
        if not claim.HasField("task"):
            return False
        self._run_claim(claim.task, claim.fencing_token, handler, claimed_at=time.monotonic(), claim_next=False)
        return True

    # -- internals --------------------------------------------------------------------------

    def _slot(self, handler: Handler, errors: List[BaseException]) -> None:
        failures = 0
        carried: Optional[_Claim] = None  # the claim the last completion made (claim_next)
        try:
            while not self.stopping.is_set():
                if carried is not None:
                    held, carried = carried, None
                    carried = self._run_claim(held.task, held.token, handler, claimed_at=held.claimed_at,
                                              claim_next=self._wants_next())
                    if self._max_tasks is not None and self._completed >= self._max_tasks:
                        self.stop()
                        break
                    continue
                try:
                    claim = self.client.claim_task(
                        workflow_id=self.workflow_id,
                        worker_id=self.worker_id,
                        skills=self.skills,
                        lease_duration=self.lease_duration,
                        wait=self.claim_wait,
                        cancel=self.stopping,
                    )
                    failures = 0
                except BoardError as e:
                    if self.stopping.is_set():
                        return
                    if not (e.is_transient or e.code == grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    failures += 1
                    delay = min(10.0, 0.2 * (1 << min(failures, 6)))
                    self._log.warning("claim failed (%s); retrying in %.1fs", e, delay)
                    self.stopping.wait(delay)
                    continue
                if claim.HasField("task"):
                    # The lease started when the server granted the task, after a wait of unknown length:
                    # count it from now, as the C# client does (the server enforces the real end anyway).
                    carried = self._run_claim(claim.task, claim.fencing_token, handler, claimed_at=time.monotonic(),
                                              claim_next=self._wants_next())
                    if self._max_tasks is not None and self._completed >= self._max_tasks:
                        self.stop()
                        break
                if carried is None and self._until_done and not self.stopping.is_set() and self._workflow_done():
                    self.stop()
                    return
        except BaseException as e:  # noqa: B902 - hand it to run(), stop the other slots
            errors.append(e)
            self.stop()
        finally:
            if carried is not None:
                # Stopped while holding the claim the last completion made: give it back at once.
                task = carried.task
                if self._finish(lambda: self.client.release_task(
                        workflow_id=task.workflow_id, task_id=task.id, fencing_token=carried.token),
                        task, lease_end=carried.claimed_at + self.lease_duration):
                    with self._lock:
                        self._released += 1

    def _wants_next(self) -> bool:
        """Whether the next completion should claim another task: not when it is the last one wanted."""
        return self.claim_next_on_complete and (self._max_tasks is None or self._completed + 1 < self._max_tasks)

    def _workflow_done(self) -> bool:
        try:
            counts = self.client.get_workflow(workflow_id=self.workflow_id).workflow.task_counts
        except BoardError as e:
            if e.is_transient or e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return False
            raise
        return counts.pending + counts.ready + counts.claimed + counts.backoff == 0

    def _run_claim(self, task: task_pb2.Task, token: int, handler: Handler, claimed_at: float,
                   claim_next: bool) -> Optional["_Claim"]:
        """Runs a claimed task to its end; returns the claim its completion made (claim_next), if any."""
        lost = CancelEvent()
        unlink = lost.link(self.stopping)
        stop_renewing = CancelEvent()
        ctx = TaskContext(self.client, self.worker_id, task, token, lost)
        ctx._lease_end = claimed_at + self.lease_duration
        self._log.info("claimed %s (attempt %d, token %d)", task.id, task.attempt, token)
        if self.on_claimed is not None:
            self.on_claimed(task, token)
        renewer = threading.Thread(
            target=self._renew_loop, args=(ctx, stop_renewing), name=f"grpcboard-renew-{task.id}", daemon=True
        )
        renewer.start()
        outcome: Optional[TaskResult] = None
        failure: Optional[BaseException] = None
        interrupted: Optional[BaseException] = None
        try:
            outcome = _to_result(self._invoke(handler, ctx))
        except Exception as e:  # the handler's failure is the attempt's failure
            failure = e
        except BaseException as e:  # KeyboardInterrupt, SystemExit: stop the worker, release the task, re-raise
            interrupted = e
            self.stop()
        finally:
            stop_renewing.set()
            renewer.join()
            unlink()

        stopping = self.stopping.is_set()
        if lost.is_set() and not stopping:
            # The claim is gone: any write would be refused by its fencing token, and another worker may own the task.
            with self._lock:
                self._lost += 1
            self._log.warning("lost the claim on %s (token %d): %s; its result is discarded", task.id, token,
                              ctx.lost_error)
            return None

        if stopping and outcome is None:
            # Give the task back so another worker takes it at once, without counting the attempt.
            if self._finish(lambda: self.client.release_task(
                    workflow_id=task.workflow_id, task_id=task.id, fencing_token=token),
                    task, lease_end=ctx._lease_end):
                with self._lock:
                    self._released += 1
            if interrupted is not None:
                raise interrupted
            return None

        if outcome is not None:
            result_holder: List[Any] = []
            # Claiming the next task only while the worker goes on: one claimed on the way out would only be released.
            next_claim = (board_service_pb2.ClaimNext(skills=self.skills, lease_duration=to_duration(self.lease_duration))
                          if claim_next and not stopping else None)

            def complete() -> Any:
                response = self.client.complete_task(
                    workflow_id=task.workflow_id, task_id=task.id, fencing_token=token,
                    result=outcome.result, result_content_type=outcome.content_type,  # type: ignore[union-attr]
                    claim_next=next_claim)
                result_holder.append(response)
                return response

            # CompleteTask is idempotent for the same token and result, so a retry after a lost response is safe.
            if self._finish(complete, task, lease_end=ctx._lease_end):
                with self._lock:
                    self._completed += 1
                self._log.info("completed %s (token %d)", task.id, token)
                if self.on_completed is not None:
                    self.on_completed(task, token, result_holder[-1])
                response = result_holder[-1]
                if response.HasField("next_task"):
                    return _Claim(response.next_task, response.next_fencing_token, time.monotonic())
            return None

        assert failure is not None
        non_retryable = isinstance(failure, NonRetryableError)
        message = str(failure) or type(failure).__name__
        self._log.warning("task %s failed on attempt %d: %s", task.id, task.attempt, message)
        if self._finish(lambda: self.client.fail_task(
                workflow_id=task.workflow_id, task_id=task.id, fencing_token=token,
                error_message=message[:4000], non_retryable=non_retryable,
                error_details=failure.details if isinstance(failure, NonRetryableError) else b""),
                task, lease_end=ctx._lease_end):
            with self._lock:
                self._failed += 1
        return None

    def _invoke(self, handler: Handler, ctx: TaskContext) -> HandlerResult:
        if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None)):
            return asyncio.run(_run_async(handler, ctx))
        result = handler(ctx)
        if inspect.isawaitable(result):
            return asyncio.run(_await_cancellable(result, ctx))
        return result  # type: ignore[return-value]

    def _renew_loop(self, ctx: TaskContext, stop: CancelEvent) -> None:
        """Renews until told to stop; sets ``ctx.cancelled`` when the claim is gone or the lease ran out
        unrenewed. The lease end is tracked on the local monotonic clock (server timestamps may come
        from another clock); after a renewal it counts from when the request was sent."""
        task = ctx.task
        while not stop.is_set() and not ctx.cancelled.is_set():
            if stop.wait(self.renew_interval) or ctx.cancelled.is_set():
                return
            sent = time.monotonic()
            remaining = ctx._lease_end - sent
            if remaining <= 0:
                self._log.warning("could not renew %s before its lease ended; stopping its work", task.id)
                ctx._lose(BoardError(grpc.StatusCode.DEADLINE_EXCEEDED, "lease ended before it could be renewed"))
                return
            default = self.client.default_timeout
            timeout = remaining if default is None else min(remaining, default)
            try:
                self.client.renew_lease(workflow_id=task.workflow_id, task_id=task.id, fencing_token=ctx.fencing_token,
                                        lease_duration=self.lease_duration, timeout=timeout, cancel=stop)
                ctx._lease_end = sent + self.lease_duration
            except BoardError as e:
                if stop.is_set():
                    return
                if e.is_claim_lost:
                    self._log.warning("renewing %s was refused (%s); stopping its work", task.id, e.reason)
                    ctx._lose(e)
                    return
                # Transient: keep trying while the lease may still be alive; past its end it surely is not.
                if time.monotonic() >= ctx._lease_end:
                    self._log.warning("could not renew %s before its lease ended (%s); stopping its work", task.id, e)
                    ctx._lose(e)
                    return

    def _finish(self, call: Callable[[], Any], task: task_pb2.Task, lease_end: float) -> bool:
        """Runs a final write for a claim (complete, fail or release).

        A transient failure (UNAVAILABLE, e.g. while the server restarts; or a deadline) is retried with
        backoff for as long as the lease may still be alive, i.e. until ``lease_end`` on the local
        monotonic clock, never after: past it the server refuses the token anyway and another worker may
        own the task. Any other error (FAILED_PRECONDITION: stale token, expired lease, ...) ends the
        attempts at once. Returns whether the write was accepted.
        """
        failures = 0
        while True:
            try:
                call()
                return True
            except BoardError as e:
                if not (e.is_transient or e.code == grpc.StatusCode.DEADLINE_EXCEEDED):
                    if e.is_claim_lost:
                        with self._lock:
                            self._lost += 1
                    self._log.warning("finishing %s was refused: %s", task.id, e)
                    return False
                failures += 1
                remaining = lease_end - time.monotonic()
                if remaining <= 0:
                    with self._lock:
                        self._lost += 1
                    self._log.warning("could not finish %s before its lease ended (%s); giving up", task.id, e)
                    return False
                delay = min(_FINISH_MAX_BACKOFF, 0.1 * (1 << min(failures - 1, 4)), remaining)
                self._log.info("finishing %s failed (%s); retrying in %.1fs", task.id, e, delay)
            time.sleep(delay)
            if time.monotonic() >= lease_end:  # woke at the end of the lease: no retry after it
                with self._lock:
                    self._lost += 1
                self._log.warning("could not finish %s before its lease ended; giving up", task.id)
                return False


@dataclass(frozen=True)
class _Claim:
    """A task this worker holds: the task, its claim's fencing token, and when the claim was granted (monotonic)."""

    task: task_pb2.Task
    token: int
    claimed_at: float


def _join_all(threads: List[threading.Thread]) -> None:
    for t in threads:
        while t.is_alive():
            t.join(0.5)  # a timed join keeps the calling thread responsive to signals


def _to_result(value: HandlerResult) -> TaskResult:
    if isinstance(value, TaskResult):
        return value
    if value is None:
        return TaskResult()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return TaskResult(bytes(value))
    if isinstance(value, str):
        return TaskResult.text(value)
    raise TypeError(f"a handler must return TaskResult, bytes, str or None, not {type(value).__name__}")


async def _run_async(handler: Handler, ctx: TaskContext) -> HandlerResult:
    return await _await_cancellable(handler(ctx), ctx)  # type: ignore[arg-type]


async def _await_cancellable(awaitable: Awaitable[HandlerResult], ctx: TaskContext) -> HandlerResult:
    """Awaits the handler in a task that is cancelled (asyncio-style) when ``ctx.cancelled`` is set."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(awaitable)

    def cancel_task() -> None:
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # the loop has already finished
            pass

    remove = ctx.cancelled.add_callback(cancel_task)
    try:
        return await task
    except asyncio.CancelledError:
        if ctx.cancelled.is_set():
            raise TaskCancelledError(f"task {ctx.task.id} cancelled") from None
        raise
    finally:
        remove()
