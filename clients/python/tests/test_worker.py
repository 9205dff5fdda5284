"""The worker loop: complete, fail, dead-letter, checkpoint, lease loss, release on stop, concurrency."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from grpcboard import (BoardClient, BoardError, NonRetryableError, TaskCancelledError, TaskContext, TaskResult,
                       Worker, pb)
from conftest import new_id
from helpers import TcpProxy, host_port, join, run_in_thread, start_server, wait_for_event

NO_BACKOFF = pb.RetryPolicy(initial_backoff=Duration())
WAIT = 15.0  # upper bound of every wait on an event in these tests
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                  ("grpc.max_reconnect_backoff_ms", 500)]


class CallRecorder(grpc.UnaryUnaryClientInterceptor):
    """Records when each call of ``method`` starts; ``reached(n)`` is set once n calls have started."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.starts: List[float] = []
        self._lock = threading.Lock()
        self._events: Dict[int, threading.Event] = {}

    def reached(self, n: int) -> threading.Event:
        with self._lock:
            event = self._events.setdefault(n, threading.Event())
            if len(self.starts) >= n:
                event.set()
        return event

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method.endswith("/" + self.method):
            with self._lock:
                self.starts.append(time.monotonic())
                for n, event in self._events.items():
                    if len(self.starts) >= n:
                        event.set()
        return continuation(details, request)


@pytest.fixture
def proxy(target: str) -> Iterator[TcpProxy]:
    p = TcpProxy(host_port(target))
    yield p
    p.close()


def start_worker(worker: Worker, handler: Any, **run_args: Any) -> threading.Thread:
    thread, errors = run_in_thread(lambda: worker.run(handler, **run_args), f"worker-{worker.worker_id}")
    thread.errors = errors  # type: ignore[attr-defined]
    return thread


def stop_and_join(worker: Worker, thread: threading.Thread) -> None:
    worker.stop()
    join(thread, WAIT)
    assert not thread.errors, thread.errors  # type: ignore[attr-defined]


def test_worker_completes_tasks_in_dependency_order(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[
        pb.TaskSpec(id="research", payload=b"topic"),
        pb.TaskSpec(id="draft", depends_on=["research"]),
        pb.TaskSpec(id="review", depends_on=["draft"]),
    ])
    seen: List[str] = []

    def handler(ctx: TaskContext) -> TaskResult:
        seen.append(ctx.task.id)
        assert ctx.fencing_token == ctx.task.fencing_token > 0
        assert ctx.worker_id == "w1" and ctx.last_checkpoint == b""
        ctx.checkpoint(b"half of " + ctx.task.id.encode())
        return TaskResult.text(f"{ctx.task.id} done")

    worker = client.worker(workflow, "w1", claim_wait=2)
    thread = start_worker(worker, handler, until_done=True)
    join(thread, WAIT)
    assert not thread.errors  # type: ignore[attr-defined]
    assert seen == ["research", "draft", "review"]
    assert (worker.completed, worker.failed, worker.lost_claims) == (3, 0, 0)
    for task in client.iter_tasks(workflow):
        assert task.state == pb.TASK_STATE_COMPLETED and task.owner == "w1"
        assert task.result == f"{task.id} done".encode() and task.result_content_type == "text/plain; charset=utf-8"
        assert task.checkpoint == b"half of " + task.id.encode()


def test_worker_waits_on_the_server_instead_of_polling(target: str, workflow: str, proxy: TcpProxy) -> None:
    claims: List[float] = []
    claiming = threading.Event()

    class Recorder(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            if details.method.endswith("/ClaimTask"):
                claims.append(time.monotonic())
                claiming.set()
            return continuation(details, request)

    done = threading.Event()
    claims_when_handed_over: List[int] = []
    worker_id = "waiting-worker"
    claim_at_server = proxy.expect_upstream(worker_id.encode())  # only the ClaimTask request carries the worker id
    with BoardClient(proxy.target, interceptors=[Recorder()]) as c:
        worker = c.worker(workflow, worker_id, claim_wait=10)
        worker.on_completed = lambda *_: (claims_when_handed_over.append(len(claims)), done.set())
        thread = start_worker(worker, lambda ctx: b"ok")
        assert claiming.wait(WAIT)
        # The claim has reached the server, which holds it (no task is ready): it must not return or repeat meanwhile.
        assert claim_at_server.wait(WAIT)
        posted_at = time.monotonic()
        c.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
        assert done.wait(WAIT)
        latency = time.monotonic() - posted_at
        stop_and_join(worker, thread)
    assert len([t for t in claims if t < posted_at]) == 1, "one waiting claim, no polling"
    assert claims_when_handed_over == [1], "the task went to the claim that was waiting when it was posted"
    assert latency < 2.0  # handed over by the waiting claim, not by a later poll


def test_handler_exception_fails_the_attempt_and_the_retry_sees_the_checkpoint(client: BoardClient,
                                                                              workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a", max_attempts=3, retry_policy=NO_BACKOFF)])
    attempts: List[Dict[str, Any]] = []

    def handler(ctx: TaskContext) -> bytes:
        attempts.append({"attempt": ctx.task.attempt, "checkpoint": ctx.last_checkpoint})
        if ctx.task.attempt == 1:
            ctx.checkpoint(b"step 1 done")
            raise ValueError("flaky tool")
        return b"result"

    worker = client.worker(workflow, "w", claim_wait=2)
    thread = start_worker(worker, handler, max_tasks=1)
    join(thread, WAIT)
    assert attempts == [{"attempt": 1, "checkpoint": b""}, {"attempt": 2, "checkpoint": b"step 1 done"}]
    assert (worker.completed, worker.failed) == (1, 1)
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert task.state == pb.TASK_STATE_COMPLETED and task.result == b"result"
    assert task.result_content_type == "application/octet-stream"
    assert task.last_error.message == "flaky tool" and task.last_error.attempt == 1
    assert not task.last_error.non_retryable


def test_non_retryable_error_dead_letters_at_once(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a", max_attempts=5, retry_policy=NO_BACKOFF),
                                                   pb.TaskSpec(id="b", depends_on=["a"])])

    def handler(ctx: TaskContext) -> None:
        raise NonRetryableError("the input is not valid JSON", details=b'{"line": 3}')

    worker = client.worker(workflow, "w", claim_wait=2)
    thread = start_worker(worker, handler, until_done=True)
    join(thread, WAIT)
    assert not thread.errors  # type: ignore[attr-defined]
    assert (worker.completed, worker.failed) == (0, 1)
    a = client.get_task(workflow_id=workflow, task_id="a").task
    assert a.state == pb.TASK_STATE_DEAD_LETTERED and a.attempt == 1
    assert a.last_error.non_retryable and a.last_error.details == b'{"line": 3}'
    assert a.last_error.message == "the input is not valid JSON"
    assert client.get_task(workflow_id=workflow, task_id="b").task.state == pb.TASK_STATE_CANCELLED


def test_lease_loss_cancels_the_handler_and_another_worker_takes_over(target: str, client: BoardClient,
                                                                      workflow: str, proxy: TcpProxy) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a", retry_policy=NO_BACKOFF)])
    started = threading.Event()
    cancelled = threading.Event()
    first: Dict[str, Any] = {}

    def slow_handler(ctx: TaskContext) -> bytes:
        first["token"] = ctx.fencing_token
        first["ctx"] = ctx
        started.set()
        if ctx.cancelled.wait(WAIT):  # the work, stopping as soon as the claim is lost
            cancelled.set()
        return b"stale result from w1"

    with BoardClient(proxy.target, default_timeout=5) as partitioned:
        w1 = partitioned.worker(workflow, "w1", lease_duration=1.0, claim_wait=2)
        t1 = start_worker(w1, slow_handler)
        assert started.wait(WAIT)
        proxy.pause()  # w1's renewals no longer reach the server

        assert cancelled.wait(WAIT), "the handler's cancellation must fire when the lease cannot be renewed"
        ctx: TaskContext = first["ctx"]
        assert ctx.lost and ctx.lost_error is not None
        assert ctx.lost_error.code == grpc.StatusCode.DEADLINE_EXCEEDED

        # A second worker gets the task once the server expires the lease, with a higher token.
        second: Dict[str, Any] = {}

        def handler2(c2: TaskContext) -> TaskResult:
            second["token"] = c2.fencing_token
            second["attempt"] = c2.task.attempt
            return TaskResult(b"done by w2", "text/plain")

        w2 = client.worker(workflow, "w2", lease_duration=5, claim_wait=WAIT)
        t2 = start_worker(w2, handler2, max_tasks=1)
        join(t2, WAIT + 5)
        assert not t2.errors  # type: ignore[attr-defined]
        assert second["token"] > first["token"]
        assert second["attempt"] == 2

        w1.stop()
        proxy.resume()
        join(t1, WAIT)
        assert not t1.errors  # type: ignore[attr-defined]

    assert (w1.completed, w1.lost_claims) == (0, 1)
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert task.state == pb.TASK_STATE_COMPLETED
    assert (task.owner, task.result, task.fencing_token) == ("w2", b"done by w2", second["token"])
    expired = wait_for_event(client, workflow, pb.EVENT_KIND_TASK_LEASE_EXPIRED, task_id="a")
    assert expired.task.last_error.worker_id == "w1"


def test_cancelled_task_stops_an_async_handler(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    started = threading.Event()
    cancelled = threading.Event()
    contexts: List[TaskContext] = []

    async def handler(ctx: TaskContext) -> bytes:
        contexts.append(ctx)
        await ctx.acheckpoint(b"async progress")
        started.set()
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b"never"

    worker = client.worker(workflow, "w", lease_duration=5, renew_interval=0.1, claim_wait=2)
    thread = start_worker(worker, handler)
    assert started.wait(WAIT)
    client.cancel_task(workflow_id=workflow, task_id="a", reason="plan changed")
    assert cancelled.wait(WAIT), "asyncio cancellation when the claim ends"
    ctx = contexts[0]
    assert ctx.lost_error is not None and ctx.lost_error.reason == "CLAIM_NOT_HELD" and ctx.lost_error.is_claim_lost
    stop_and_join(worker, thread)
    assert (worker.completed, worker.failed, worker.lost_claims) == (0, 0, 1)
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert task.state == pb.TASK_STATE_CANCELLED and task.checkpoint == b"async progress"
    assert not task.HasField("last_error"), "nothing is written for a lost claim"


def test_refused_checkpoint_marks_the_claim_lost(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    go = threading.Event()
    finished = threading.Event()
    outcome: Dict[str, Any] = {}

    def handler(ctx: TaskContext) -> bytes:
        outcome["token"] = ctx.fencing_token
        go.wait(WAIT)
        try:
            ctx.checkpoint(b"too late")
        except BoardError as e:
            outcome["error"] = e
        outcome["cancelled"] = ctx.cancelled.is_set()
        try:
            ctx.raise_if_cancelled()
        except TaskCancelledError as e:
            outcome["raised"] = e
        finished.set()
        return b"x"

    worker = client.worker(workflow, "w1", lease_duration=30, renew_interval=60, claim_wait=2)  # no renewal meanwhile
    worker.on_claimed = lambda task, token: client.release_task(workflow_id=workflow, task_id=task.id,
                                                                fencing_token=token)
    thread = start_worker(worker, handler)
    claimed_again = wait_for_event(client, workflow, pb.EVENT_KIND_TASK_RELEASED, task_id="a")
    other = client.claim_task(workflow_id=workflow, worker_id="w2", task_id="a")
    assert claimed_again.task.state == pb.TASK_STATE_READY
    go.set()
    assert finished.wait(WAIT)
    stop_and_join(worker, thread)
    assert outcome["error"].reason == "FENCING_TOKEN_STALE" and outcome["cancelled"]
    assert "claim lost" in str(outcome["raised"])
    assert worker.lost_claims == 1 and worker.completed == 0
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert (task.owner, task.fencing_token, task.checkpoint) == ("w2", other.fencing_token, b"")


def test_stopping_the_worker_releases_its_task(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    started = threading.Event()
    saw_cancel = threading.Event()

    def handler(ctx: TaskContext) -> bytes:
        started.set()
        ctx.sleep(WAIT)  # raises TaskCancelledError when the worker stops
        return b"never"

    def wrapped(ctx: TaskContext) -> bytes:
        try:
            return handler(ctx)
        except TaskCancelledError:
            saw_cancel.set()
            raise

    worker = client.worker(workflow, "w", claim_wait=2)
    thread = start_worker(worker, wrapped)
    assert started.wait(WAIT)
    stop_and_join(worker, thread)
    assert saw_cancel.is_set()
    assert (worker.released, worker.failed, worker.completed) == (1, 0, 0)
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert task.state == pb.TASK_STATE_READY and task.attempt == 0  # the attempt is not counted
    released = wait_for_event(client, workflow, pb.EVENT_KIND_TASK_RELEASED, task_id="a")
    assert released.actor == "w"


def test_stop_interrupts_a_waiting_claim(client: BoardClient, workflow: str) -> None:
    worker = client.worker(workflow, "w", claim_wait=60)
    thread = start_worker(worker, lambda ctx: b"")
    wait_for_event(client, workflow, pb.EVENT_KIND_WORKFLOW_CREATED)
    start = time.monotonic()
    stop_and_join(worker, thread)
    assert time.monotonic() - start < 5


def test_concurrent_slots(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id=f"t{i}") for i in range(6)])
    barrier = threading.Barrier(3, timeout=WAIT)
    owners: Dict[str, str] = {}

    def handler(ctx: TaskContext) -> str:
        if int(ctx.task.id[1:]) < 3:
            barrier.wait()  # only passes if three tasks run at the same time
        owners[ctx.task.id] = threading.current_thread().name
        return "ok"

    worker = client.worker(workflow, "w", max_concurrency=3, claim_wait=1)
    thread = start_worker(worker, handler, until_done=True)
    join(thread, WAIT * 2)
    assert not thread.errors  # type: ignore[attr-defined]
    assert worker.completed == 6 and sorted(owners) == [f"t{i}" for i in range(6)]
    assert len({owners[f"t{i}"] for i in range(3)}) == 3


def test_worker_raises_non_transient_claim_errors(client: BoardClient) -> None:
    worker = client.worker("no-such-workflow-" + str(time.time_ns()), "w", claim_wait=1)
    thread = start_worker(worker, lambda ctx: b"")
    join(thread, WAIT)
    errors = thread.errors  # type: ignore[attr-defined]
    assert len(errors) == 1 and isinstance(errors[0], BoardError)
    assert (errors[0].code, errors[0].reason) == (grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND")


def test_handler_results() -> None:
    from grpcboard.worker import _to_result

    assert _to_result(None) == TaskResult(b"", "application/octet-stream")
    assert _to_result(b"x") == TaskResult(b"x", "application/octet-stream")
    assert _to_result("é") == TaskResult("é".encode(), "text/plain; charset=utf-8")
    assert _to_result(TaskResult.json({"a": 1})) == TaskResult(b'{"a": 1}', "application/json")
    with pytest.raises(TypeError):
        _to_result(42)  # type: ignore[arg-type]


def test_lease_is_counted_from_the_grant_not_from_the_start_of_the_wait(target: str, workflow: str) -> None:
    claiming = threading.Event()

    class Recorder(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            if details.method.endswith("/ClaimTask"):
                claiming.set()
            return continuation(details, request)

    outcome: Dict[str, Any] = {}
    with BoardClient(target, interceptors=[Recorder()]) as c:
        worker = c.worker(workflow, "w", lease_duration=1.0, claim_wait=10)
        thread = start_worker(worker, lambda ctx: outcome.update(lost=ctx.cancelled.wait(2.0)) or b"ok", max_tasks=1)
        assert claiming.wait(WAIT)
        # The claim waits on the server longer than the lease lasts: until a longer lease, granted after the
        # claim started, has run out on the server (its task needs a skill the worker lacks, so it is not offered).
        c.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="clock", required_skills=["timekeeping"])])
        c.claim_task(workflow_id=workflow, worker_id="clock", task_id="clock", skills=["timekeeping"],
                     lease_duration=1.5)
        wait_for_event(c, workflow, pb.EVENT_KIND_TASK_LEASE_EXPIRED, task_id="clock")
        c.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
        join(thread, WAIT)
    assert not thread.errors  # type: ignore[attr-defined]
    assert outcome == {"lost": False}, "renewals kept the claim for the whole 2 s handler"
    assert (worker.completed, worker.lost_claims) == (1, 0)


def test_each_completion_claims_the_next_task_in_the_same_transaction(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id=f"t{i}", priority=10 - i) for i in range(5)])
    seen: List[str] = []
    worker = client.worker(workflow, "chain", claim_wait=1)
    thread = start_worker(worker, lambda ctx: seen.append(ctx.task.id) or "ok", until_done=True)
    join(thread, WAIT)
    assert not thread.errors  # type: ignore[attr-defined]
    assert seen == [f"t{i}" for i in range(5)] and worker.completed == 5

    with client.watch(workflow_id=workflow, start_revision=1) as stream:
        events = [next(stream) for _ in range(1 + 5 + 5 + 5)]
    kinds = (pb.EVENT_KIND_TASK_COMPLETED, pb.EVENT_KIND_TASK_CLAIMED)
    changes = [e for e in events if e.kind in kinds]
    for done, claimed in zip(changes[1::2], changes[2::2]):
        # One transaction: the claim directly follows the completion, with the same timestamp.
        assert (done.kind, claimed.kind) == kinds
        assert claimed.revision == done.revision + 1 and claimed.time == done.time


def test_a_worker_with_max_tasks_claims_no_task_it_would_not_run(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id=f"t{i}") for i in range(3)])
    worker = client.worker(workflow, "one", claim_wait=1)
    thread = start_worker(worker, lambda ctx: "ok", max_tasks=1)
    join(thread, WAIT)
    assert not thread.errors  # type: ignore[attr-defined]
    assert (worker.completed, worker.released) == (1, 0)
    states = sorted(t.state for t in client.iter_tasks(workflow))
    assert states == sorted([pb.TASK_STATE_COMPLETED, pb.TASK_STATE_READY, pb.TASK_STATE_READY])


# -- final writes (complete, fail, release) across outages ------------------------------------------


def test_a_completion_survives_a_server_restart(tmp_path: Path) -> None:
    # The handler finishes while the server is down; the worker keeps retrying the completion
    # (UNAVAILABLE) for as long as its lease may be alive, so the result lands once the server is back
    # with its data (embedded store) on the same port.
    if os.environ.get("GRPCBOARD_TARGET"):
        pytest.skip("stops and restarts a server of its own (GRPCBOARD_TARGET is set)")
    data = str(tmp_path / "board")
    wf = new_id()
    completions = CallRecorder("CompleteTask")
    started = threading.Event()
    finish = threading.Event()

    def handler(ctx: TaskContext) -> TaskResult:
        started.set()
        assert finish.wait(WAIT)
        return TaskResult.text("finished while the server was down")

    with start_server("--data", data, store="embedded") as first:
        port = host_port(first.target)[1]
        with BoardClient(first.target) as c:
            c.create_workflow(workflow_id=wf, goal="restart")
            c.post_tasks(workflow_id=wf, tasks=[pb.TaskSpec(id="a")])
        worker_client = BoardClient(first.target, interceptors=[completions])  # the default channel options
        worker = worker_client.worker(wf, "w1", lease_duration=60, claim_next_on_complete=False)
        thread, errors = run_in_thread(lambda: worker.run_once(handler), "worker-w1")
        try:
            assert started.wait(WAIT)
            first.stop()
            finish.set()
            # More attempts than the 5 (within ~1 s) after which the worker used to drop the result.
            assert completions.reached(7).wait(WAIT), f"completion not retried: {len(completions.starts)} attempts"
            with start_server("--data", data, store="embedded", port=port) as second:
                join(thread, WAIT)
                assert not errors, errors
                assert (worker.completed, worker.lost_claims) == (1, 0)
                with BoardClient(second.target) as c:
                    task = c.get_task(workflow_id=wf, task_id="a").task
        finally:
            finish.set()
            worker.stop()
            worker_client.close()
    assert task.state == pb.TASK_STATE_COMPLETED and task.owner == "w1"
    assert (task.result, task.result_content_type) == (b"finished while the server was down", "text/plain; charset=utf-8")


def test_final_writes_are_not_retried_past_the_lease(target: str, client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    lease = 2.0
    proxy = TcpProxy(host_port(target))
    completions = CallRecorder("CompleteTask")
    claimed: Dict[str, float] = {}
    try:
        with BoardClient(proxy.target, interceptors=[completions], options=FAST_RECONNECT) as through_proxy:
            worker = through_proxy.worker(workflow, "w1", lease_duration=lease, renew_interval=60,
                                          claim_next_on_complete=False)
            worker.on_claimed = lambda task, token: claimed.update(at=time.monotonic())
            cut = threading.Event()

            def handler(ctx: TaskContext) -> bytes:
                proxy.close()  # the server is unreachable from now on (connection refused: UNAVAILABLE)
                cut.set()
                return b"unsaved"

            thread, errors = run_in_thread(lambda: worker.run_once(handler), "worker-w1")
            assert cut.wait(WAIT)
            join(thread, WAIT)
            ended = time.monotonic()
    finally:
        proxy.close()
    assert not errors, errors
    lease_end = claimed["at"] + lease  # the worker's own lease end is at or before this
    assert len(completions.starts) >= 3, "UNAVAILABLE is retried"
    assert all(t < lease_end for t in completions.starts), "no attempt after the lease ended"
    assert ended < lease_end + 1.0, "gave up when the lease ended"
    assert (worker.completed, worker.lost_claims) == (0, 1)
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert task.state != pb.TASK_STATE_COMPLETED


def test_a_refused_completion_is_not_retried(target: str, client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    completions = CallRecorder("CompleteTask")
    taken_over = threading.Event()
    with BoardClient(target, interceptors=[completions]) as c:
        worker = c.worker(workflow, "w1", lease_duration=30, renew_interval=60, claim_next_on_complete=False)

        def handler(ctx: TaskContext) -> bytes:
            # Meanwhile the task is given back and claimed by another worker: this token is stale.
            client.release_task(workflow_id=workflow, task_id="a", fencing_token=ctx.fencing_token)
            client.claim_task(workflow_id=workflow, worker_id="w2", task_id="a")
            taken_over.set()
            return b"stale"

        assert worker.run_once(handler)
    assert taken_over.is_set()
    assert len(completions.starts) == 1, "FAILED_PRECONDITION ends the attempts at once"
    assert (worker.completed, worker.lost_claims) == (0, 1)
    assert client.get_task(workflow_id=workflow, task_id="a").task.owner == "w2"
