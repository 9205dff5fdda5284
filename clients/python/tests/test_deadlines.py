"""Deadlines on every call by default, explicit timeouts, DEADLINE_EXCEEDED and cancellation."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator, List, Optional, Tuple

import grpc
import pytest

from grpcboard import BoardClient, BoardError, CancelEvent, pb
from helpers import TcpProxy, host_port


class RecordingInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self) -> None:
        self.calls: List[Tuple[str, Optional[float]]] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls.append((details.method.rsplit("/", 1)[-1], details.timeout))
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls.append((details.method.rsplit("/", 1)[-1], details.timeout))
        return continuation(details, request)


@pytest.fixture
def proxy(target: str) -> Iterator[TcpProxy]:
    p = TcpProxy(host_port(target))
    yield p
    p.close()


def test_every_call_gets_the_default_deadline(target: str, workflow: str) -> None:
    recorder = RecordingInterceptor()
    with BoardClient(target, default_timeout=7.0, interceptors=[recorder]) as c:
        c.get_workflow(workflow_id=workflow)
        c.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
        c.claim_task(workflow_id=workflow, worker_id="w", wait=2.5)
        c.list_tasks(workflow_id=workflow, timeout=3)
        c.get_task(workflow_id=workflow, task_id="a", timeout=None)
        stream = c.watch_stream(workflow_id=workflow, start_revision=1)
        next(iter(stream))
        stream.cancel()
    assert recorder.calls == [
        ("GetWorkflow", 7.0),
        ("PostTasks", 7.0),
        ("ClaimTask", 9.5),  # the wait on top of the default
        ("ListTasks", 3.0),
        ("GetTask", None),
        ("Watch", None),  # streams have no default deadline
    ]


def test_claim_deadline_covers_the_wait(target: str, workflow: str) -> None:
    # The server never waits past the call's deadline, so without the wait added to the default
    # deadline this claim would come back empty after ~0.5 s instead of ~1.5 s.
    with BoardClient(target, default_timeout=0.5) as c:
        start = time.monotonic()
        response = c.claim_task(workflow_id=workflow, worker_id="w", wait=1.5)
        elapsed = time.monotonic() - start
    assert not response.HasField("task")
    assert 1.3 <= elapsed < 5, elapsed


def test_default_deadline_expires(target: str, workflow: str, proxy: TcpProxy) -> None:
    with BoardClient(proxy.target, default_timeout=0.5) as c:
        c.get_workflow(workflow_id=workflow)  # connected
        proxy.pause()  # the server never answers
        start = time.monotonic()
        with pytest.raises(BoardError) as info:
            c.get_workflow(workflow_id=workflow)
        elapsed = time.monotonic() - start
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "")
        assert not info.value.is_transient and not info.value.is_claim_lost
        assert 0.4 <= elapsed < 5, elapsed
        with pytest.raises(BoardError) as info:
            c.get_workflow(workflow_id=workflow, timeout=0.2)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        proxy.resume()


def test_watch_stream_deadline(client: BoardClient, workflow: str) -> None:
    stream = client.watch_stream(workflow_id=workflow, start_revision=0, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        for _ in stream:
            pass
    error = BoardError.from_rpc_error(info.value)
    assert (error.code, error.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "")
    assert time.monotonic() - start < 5


def test_cancel_event_cancels_a_waiting_claim(client: BoardClient, workflow: str) -> None:
    cancel = CancelEvent()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(BoardError) as info:
            client.claim_task(workflow_id=workflow, worker_id="w", wait=20, cancel=cancel)
    finally:
        timer.cancel()
    assert info.value.code == grpc.StatusCode.CANCELLED
    assert time.monotonic() - start < 5
    with pytest.raises(BoardError) as info:  # already cancelled: the call is not even started
        client.get_workflow(workflow_id=workflow, cancel=cancel)
    assert info.value.code == grpc.StatusCode.CANCELLED


def test_unreachable_server_is_unavailable_and_transient() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with BoardClient(f"http://127.0.0.1:{port}/", default_timeout=5) as c:
        with pytest.raises(BoardError) as info:
            c.get_workflow(workflow_id="x")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.is_transient
