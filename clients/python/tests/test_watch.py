"""Watch: resume after disconnects with no duplicates and no gaps; OUT_OF_RANGE / HISTORY_COMPACTED."""

from __future__ import annotations

import os
import threading
import time
from typing import Iterator, List

import grpc
import pytest

from conftest import new_id
from grpcboard import BoardClient, BoardError, HistoryCompactedError, WatchResume, WatchStream, pb
from helpers import TcpProxy, host_port, join, run_in_thread, start_server

FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                  ("grpc.max_reconnect_backoff_ms", 500)]


@pytest.fixture
def proxy(target: str) -> Iterator[TcpProxy]:
    p = TcpProxy(host_port(target))
    yield p
    p.close()


def watchdog(watch: WatchStream, seconds: float = 30.0) -> threading.Timer:
    """Closes the watch after ``seconds``: a loop over it then ends, and its assertions fail."""
    timer = threading.Timer(seconds, watch.close)
    timer.daemon = True
    timer.start()
    return timer


def put_notes(client: BoardClient, workflow: str, n: int, prefix: str = "n") -> int:
    revision = 0
    for i in range(n):
        revision = client.put_note(workflow_id=workflow, key=f"{prefix}/{i}", value=str(i).encode()).header.revision
    return revision


# -- the resume rule ------------------------------------------------------------------------------


def _event(revision: int) -> pb.WatchResponse:
    return pb.WatchResponse(event=pb.Event(revision=revision, kind=pb.EVENT_KIND_NOTE_PUT))


def _progress(revision: int) -> pb.WatchResponse:
    return pb.WatchResponse(progress=pb.WatchProgress(revision=revision))


def test_resume_rule() -> None:
    r = WatchResume(5)
    assert r.next_start == 5
    assert r.accept(_event(5)).revision == 5
    assert r.accept(_event(6)).revision == 6
    assert r.next_start == 7
    # A reopened stream replays 6 (sent but not read before the drop): dropped, not delivered twice.
    assert r.accept(_event(6)) is None
    assert r.accept(_event(4)) is None
    assert r.next_start == 7
    # Progress moves the start past what filters dropped, never backwards.
    assert r.accept(_progress(20)) is None
    assert r.next_start == 21
    assert r.accept(_progress(3)) is None
    assert r.next_start == 21
    assert r.accept(_event(20)) is None
    assert r.accept(_event(21)).revision == 21
    assert r.accept(pb.WatchResponse()) is None
    # "From now" (0) learns its position from the first message.
    now = WatchResume(0)
    assert now.accept(_progress(41)) is None and now.next_start == 42
    assert WatchResume(0).accept(_event(9)).revision == 9


# -- against the server ---------------------------------------------------------------------------


def test_watch_delivers_history_then_live_events(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    with client.watch(workflow_id=workflow, start_revision=1) as watch:
        timer = watchdog(watch)
        got = []
        for event in watch:
            got.append((event.revision, event.kind))
            if event.revision == 2:
                client.put_note(workflow_id=workflow, key="k", value=b"v")  # live, after the replay
            if event.revision == 3:
                break
        timer.cancel()
    assert got == [(1, pb.EVENT_KIND_WORKFLOW_CREATED), (2, pb.EVENT_KIND_TASK_POSTED), (3, pb.EVENT_KIND_NOTE_PUT)]
    assert watch.next_start == 4 and watch.reconnects == 0


def test_watch_resumes_after_connections_are_cut(target: str, client: BoardClient, workflow: str,
                                                 proxy: TcpProxy) -> None:
    put_notes(client, workflow, 20, "before")  # revisions 2..21
    with BoardClient(proxy.target, options=FAST_RECONNECT) as through_proxy:
        watch = through_proxy.watch(workflow_id=workflow, start_revision=1)
        timer = watchdog(watch)
        revisions: List[int] = []
        cuts = 0
        for event in watch:
            revisions.append(event.revision)
            if event.revision in (10, 25):
                # Cut the connection mid-stream, then commit changes while the watcher is disconnected.
                cuts += proxy.sever()
                put_notes(client, workflow, 10, f"cut{event.revision}")
            if event.revision == 41:
                break
        timer.cancel()
        watch.close()
    assert cuts == 2
    assert revisions == list(range(1, 42)), "no duplicates, no gaps"
    assert watch.reconnects >= 2
    assert proxy.connections >= 3


def test_watch_resumes_after_stream_deadlines(client: BoardClient, workflow: str) -> None:
    total = 150

    def writer() -> None:
        for i in range(total):
            client.put_note(workflow_id=workflow, key=f"k{i}", value=b"x")
            time.sleep(0.01)  # pacing: spread the writes over several stream deadlines

    thread, errors = run_in_thread(writer, "writer")
    watch = client.watch(workflow_id=workflow, start_revision=1, stream_timeout=0.25)
    timer = watchdog(watch)
    revisions = []
    for event in watch:
        revisions.append(event.revision)
        if event.revision == total + 1:
            break
    timer.cancel()
    watch.close()
    join(thread)
    assert not errors
    assert revisions == list(range(1, total + 2))
    assert watch.reconnects >= 3


def test_watch_reconnects_when_its_connection_goes_silent(client: BoardClient, workflow: str,
                                                          proxy: TcpProxy) -> None:
    # A half-open connection (the server's side is gone, no FIN or RST reached the client) delivers
    # nothing, ever, and a client that only reads never finds out. The idle timeout (3 x the progress
    # interval by default) notices the silence and reopens the stream; the new request makes the dead
    # connection show itself (reset), and the watch resumes on a new one with nothing lost or repeated.
    put_notes(client, workflow, 5)  # revisions 2..6
    with BoardClient(proxy.target, options=FAST_RECONNECT) as through_proxy:
        watch = through_proxy.watch(workflow_id=workflow, start_revision=1, progress_interval=0.2)
        assert watch.idle_timeout == pytest.approx(0.6)
        timer = watchdog(watch, 20)
        revisions: List[int] = []
        for event in watch:
            revisions.append(event.revision)
            if event.revision == 6:
                # Only a new request (it carries the workflow id) gets the reset; window updates and
                # pings gRPC sends by itself are dropped unanswered.
                assert proxy.half_open(reveal_on=workflow.encode()) == 1
                put_notes(client, workflow, 5, "unheard")  # 7..11, committed while the watcher hears nothing
            if event.revision == 11:
                break
        timer.cancel()
        closed_by_watchdog = watch.closed
        watch.close()
    assert not closed_by_watchdog, f"the watch hung on the silent connection; got {revisions}"
    assert revisions == list(range(1, 12)), "no duplicates, no gaps"
    assert watch.reconnects >= 1
    assert proxy.connections >= 2, "resumed on a new connection"


def test_watch_idle_timeout_defaults_to_three_progress_intervals(client: BoardClient, workflow: str) -> None:
    assert client.watch(workflow_id=workflow).idle_timeout == pytest.approx(15.0)  # server default: 5 s
    assert client.watch(workflow_id=workflow, progress_interval=2).idle_timeout == pytest.approx(6.0)
    assert client.watch(workflow_id=workflow, idle_timeout=1.5).idle_timeout == 1.5
    assert client.watch(workflow_id=workflow, idle_timeout=None).idle_timeout is None
    assert client.watch(workflow_id=workflow, idle_timeout=0).idle_timeout is None


def test_a_slow_consumer_is_not_mistaken_for_a_silent_stream(client: BoardClient, workflow: str) -> None:
    # The idle timeout counts only while the iterator waits for the server, not while the caller is
    # busy with an event: a handler slower than the timeout causes no reconnection.
    put_notes(client, workflow, 2)  # 2..3
    watch = client.watch(workflow_id=workflow, start_revision=1, progress_interval=0.1)  # idle timeout 0.3 s
    timer = watchdog(watch)
    busy = threading.Event()
    revisions = []
    for event in watch:
        revisions.append(event.revision)
        busy.wait(0.5)  # the consumer's own slow work (never set): longer than the idle timeout
        if event.revision == 3:
            break
    timer.cancel()
    watch.close()
    assert revisions == [1, 2, 3]
    assert watch.reconnects == 0


def test_watch_reconnect_drops_the_stream_without_loss(client: BoardClient, workflow: str) -> None:
    put_notes(client, workflow, 9)  # revisions 2..10
    watch = client.watch(workflow_id=workflow, start_revision=1)
    timer = watchdog(watch)
    revisions = []
    for event in watch:
        revisions.append(event.revision)
        if event.revision == 5:
            watch.reconnect()
        if event.revision == 10:
            break
    timer.cancel()
    watch.close()
    assert revisions == list(range(1, 11))
    assert watch.reconnects == 1


def test_watch_filters(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a"), pb.TaskSpec(id="b")])  # 2, 3
    client.put_note(workflow_id=workflow, key="plan/x", value=b"1")  # 4
    client.put_note(workflow_id=workflow, key="other", value=b"1")  # 5
    claim = client.claim_task(workflow_id=workflow, worker_id="w", task_id="b")  # 6
    client.complete_task(workflow_id=workflow, task_id="b", fencing_token=claim.fencing_token, result=b"")  # 7
    client.put_note(workflow_id=workflow, key="plan/y", value=b"1")  # 8

    def first(n: int, **filters: object) -> List[pb.Event]:
        watch = client.watch(workflow_id=workflow, start_revision=1, progress_interval=0.1, **filters)
        timer = watchdog(watch, 15)
        events = []
        for event in watch:
            events.append(event)
            if len(events) == n:
                break
        timer.cancel()
        watch.close()
        return events

    by_task = first(3, task_ids=["b"])
    assert [(e.revision, e.kind) for e in by_task] == [
        (3, pb.EVENT_KIND_TASK_POSTED), (6, pb.EVENT_KIND_TASK_CLAIMED), (7, pb.EVENT_KIND_TASK_COMPLETED)]
    assert by_task[1].task.fencing_token == claim.fencing_token and by_task[1].actor == "w"
    by_prefix = first(2, note_key_prefix="plan/")
    assert [(e.revision, e.note.key) for e in by_prefix] == [(4, "plan/x"), (8, "plan/y")]
    by_kind = first(2, kinds=[pb.EVENT_KIND_TASK_POSTED])
    assert [e.revision for e in by_kind] == [2, 3]


def test_watch_from_now(client: BoardClient, workflow: str) -> None:
    put_notes(client, workflow, 3)  # 2..4, before the watch
    watch = client.watch(workflow_id=workflow, start_revision=0)
    timer = watchdog(watch)
    started = threading.Event()

    def write_when_watching() -> None:
        # The first put may land before the stream is open; keep writing until one is seen.
        i = 0
        while not started.is_set() and i < 200:
            client.put_note(workflow_id=workflow, key=f"live{i}", value=b"x")
            i += 1
            started.wait(0.05)

    thread, errors = run_in_thread(write_when_watching, "writer")
    event = next(watch)
    started.set()
    timer.cancel()
    watch.close()
    join(thread)
    assert not errors
    assert event.revision > 4 and event.note.key.startswith("live")


def test_watch_ends_when_the_workflow_is_deleted(client: BoardClient, workflow: str) -> None:
    watch = client.watch(workflow_id=workflow, start_revision=1)
    timer = watchdog(watch)
    kinds = []
    for event in watch:
        kinds.append(event.kind)
        if event.kind == pb.EVENT_KIND_WORKFLOW_CREATED:
            client.delete_workflow(workflow_id=workflow)
    timer.cancel()
    assert not watch.closed, "the server ended the stream, not the watchdog"
    assert kinds == [pb.EVENT_KIND_WORKFLOW_CREATED, pb.EVENT_KIND_WORKFLOW_DELETED]


def test_watch_close_from_another_thread(client: BoardClient, workflow: str) -> None:
    watch = client.watch(workflow_id=workflow, start_revision=2)  # nothing to deliver
    timer = threading.Timer(0.3, watch.close)
    timer.start()
    start = time.monotonic()
    assert list(watch) == []
    assert time.monotonic() - start < 5
    assert watch.closed


def test_watch_unknown_workflow_fails_at_once(client: BoardClient) -> None:
    watch = client.watch(workflow_id=new_id("missing"), start_revision=1)
    timer = watchdog(watch, 10)
    with pytest.raises(BoardError) as info:
        next(watch)
    timer.cancel()
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND")
    assert watch.reconnects == 0


# -- history compaction (a server of its own with --history 16) -----------------------------------


@pytest.fixture
def small_history_target() -> Iterator[str]:
    if os.environ.get("GRPCBOARD_TARGET"):
        pytest.skip("needs a server started with --history 16 (GRPCBOARD_TARGET is set)")
    with start_server("--history", "16") as srv:
        yield srv.target


def test_watch_from_compacted_history_raises_out_of_range(small_history_target: str) -> None:
    with BoardClient(small_history_target) as c:
        wf = new_id()
        c.create_workflow(workflow_id=wf, goal="g")
        head = put_notes(c, wf, 45)  # 46 changes, 16 retained
        assert head == 46

        watch = c.watch(workflow_id=wf, start_revision=1)
        timer = watchdog(watch, 10)
        with pytest.raises(HistoryCompactedError) as info:
            next(watch)
        timer.cancel()
        e = info.value
        assert isinstance(e, BoardError)
        assert (e.code, e.reason) == (grpc.StatusCode.OUT_OF_RANGE, "HISTORY_COMPACTED")
        assert e.oldest_revision is not None and 1 < e.oldest_revision <= head
        assert e.head_revision == head
        assert e.metadata["oldest_revision"] == str(e.oldest_revision)
        assert watch.reconnects == 0, "never retried: resuming would leave a gap"

        # From the oldest retained revision on, the history is complete.
        watch = c.watch(workflow_id=wf, start_revision=e.oldest_revision)
        timer = watchdog(watch, 10)
        revisions = []
        for event in watch:
            revisions.append(event.revision)
            if event.revision == head:
                break
        timer.cancel()
        watch.close()
        assert revisions == list(range(e.oldest_revision, head + 1))
        assert len(revisions) >= 16


def test_resume_into_compacted_history_raises(small_history_target: str) -> None:
    with BoardClient(small_history_target) as c:
        wf = new_id()
        c.create_workflow(workflow_id=wf, goal="g")
        proxy = TcpProxy(host_port(small_history_target))
        try:
            with BoardClient(proxy.target, options=FAST_RECONNECT) as through_proxy:
                watch = through_proxy.watch(workflow_id=wf, start_revision=1)
                timer = watchdog(watch, 20)
                revisions = []
                with pytest.raises(HistoryCompactedError) as info:
                    for event in watch:
                        revisions.append(event.revision)
                        if event.revision == 1:
                            proxy.sever()
                            put_notes(c, wf, 40)  # while disconnected, the history moves past revision 2
                timer.cancel()
                watch.close()
        finally:
            proxy.close()
        assert revisions == [1]
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.OUT_OF_RANGE, "HISTORY_COMPACTED")
        assert info.value.oldest_revision is not None and info.value.oldest_revision > 2
        assert watch.next_start == 2
