"""Every RPC against a real server, with assertions on its effects and on code AND reason of errors."""

from __future__ import annotations

import json
from typing import Callable

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from conftest import new_id
from grpcboard import BoardClient, BoardError, pb
from grpcboard.v1 import board_service_pb2_grpc
from helpers import wait_for_event

FP = grpc.StatusCode.FAILED_PRECONDITION


def expect_error(code: grpc.StatusCode, reason: str, call: Callable[[], object]) -> BoardError:
    with pytest.raises(BoardError) as info:
        call()
    e = info.value
    assert (e.code, e.reason) == (code, reason), str(e)
    assert e.domain == "grpcboard.dev"
    assert e.status is not None and e.status.code == code.value[0], "google.rpc.Status.code must equal the gRPC status"
    return e


def test_client_has_a_method_per_rpc(client: BoardClient) -> None:
    import re

    from grpcboard.v1 import board_service_pb2

    service = board_service_pb2.DESCRIPTOR.services_by_name["BoardService"]
    for method in service.methods:
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", method.name).lower()
        assert callable(getattr(client, snake, None)), f"BoardClient lacks {snake} for {method.name}"
    assert hasattr(board_service_pb2_grpc, "BoardServiceStub")


# -- workflows ------------------------------------------------------------------------------------


def test_create_workflow_is_idempotent(client: BoardClient) -> None:
    wf = new_id()
    first = client.create_workflow(workflow_id=wf, goal="ship it", labels={"team": "a"})
    assert first.created
    assert (first.workflow.id, first.workflow.goal, dict(first.workflow.labels)) == (wf, "ship it", {"team": "a"})
    assert first.workflow.status == pb.WORKFLOW_STATUS_ACTIVE
    assert first.header.revision == first.workflow.revision == 1
    again = client.create_workflow(pb.CreateWorkflowRequest(workflow_id=wf, goal="ship it"))
    assert not again.created
    assert again.workflow.create_time == first.workflow.create_time
    e = expect_error(grpc.StatusCode.ALREADY_EXISTS, "WORKFLOW_ALREADY_EXISTS",
                     lambda: client.create_workflow(workflow_id=wf, goal="another goal"))
    assert e.is_claim_lost is False
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                 lambda: client.create_workflow(workflow_id="bad id!", goal="x"))


def test_get_workflow_counts_tasks(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a"), pb.TaskSpec(id="b", depends_on=["a"])])
    got = client.get_workflow(workflow_id=workflow)
    assert got.workflow.id == workflow
    assert (got.workflow.task_counts.ready, got.workflow.task_counts.pending) == (1, 1)
    assert got.header.revision == got.workflow.revision == 3
    e = expect_error(grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND",
                     lambda: client.get_workflow(workflow_id=new_id("missing")))
    assert e.metadata["workflow_id"].startswith("missing-")


def test_list_workflows_pages(client: BoardClient) -> None:
    prefix = new_id("list")
    ids = [f"{prefix}-{i}" for i in range(5)]
    for wf in reversed(ids):
        client.create_workflow(workflow_id=wf, goal="g")
    first = client.list_workflows(page_size=2)
    assert len(first.workflows) <= 2 and first.next_page_token
    listed = [w.id for w in client.iter_workflows(page_size=2) if w.id.startswith(prefix)]
    assert listed == ids  # ordered by id, across pages
    client.update_workflow(workflow_id=ids[1], status=pb.WORKFLOW_STATUS_PAUSED)
    paused = [w.id for w in client.iter_workflows(status=pb.WORKFLOW_STATUS_PAUSED) if w.id.startswith(prefix)]
    assert paused == [ids[1]]
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN",
                 lambda: client.list_workflows(page_token="not-a-token"))


def test_update_workflow(client: BoardClient, workflow: str) -> None:
    current = client.get_workflow(workflow_id=workflow).workflow
    updated = client.update_workflow(workflow_id=workflow, goal="new goal", set_labels={"k": "v", "x": "y"},
                                     expected_mod_revision=current.mod_revision)
    assert updated.workflow.goal == "new goal"
    assert dict(updated.workflow.labels) == {"k": "v", "x": "y"}
    assert updated.workflow.mod_revision > current.mod_revision
    removed = client.update_workflow(workflow_id=workflow, remove_labels=["x"])
    assert dict(removed.workflow.labels) == {"k": "v"}
    e = expect_error(FP, "WORKFLOW_REVISION_MISMATCH",
                     lambda: client.update_workflow(workflow_id=workflow, goal="late",
                                                    expected_mod_revision=current.mod_revision))
    assert e.metadata["mod_revision"] == str(removed.workflow.mod_revision)
    assert client.get_workflow(workflow_id=workflow).workflow.goal == "new goal"

    # PAUSED: tasks can be posted but not claimed by id.
    client.update_workflow(workflow_id=workflow, status=pb.WORKFLOW_STATUS_PAUSED)
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="t")])
    expect_error(FP, "WORKFLOW_NOT_ACTIVE", lambda: client.claim_task(workflow_id=workflow, worker_id="w", task_id="t"))
    assert not client.claim_task(workflow_id=workflow, worker_id="w").HasField("task")
    client.update_workflow(workflow_id=workflow, status=pb.WORKFLOW_STATUS_ACTIVE)
    assert client.claim_task(workflow_id=workflow, worker_id="w").task.id == "t"

    # CANCELLED is terminal and cancels unfinished tasks.
    done = client.update_workflow(workflow_id=workflow, status=pb.WORKFLOW_STATUS_CANCELLED)
    assert done.workflow.status == pb.WORKFLOW_STATUS_CANCELLED
    assert client.get_task(workflow_id=workflow, task_id="t").task.state == pb.TASK_STATE_CANCELLED
    expect_error(FP, "WORKFLOW_NOT_ACTIVE", lambda: client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="u")]))


def test_delete_workflow(client: BoardClient, workflow: str) -> None:
    client.put_note(workflow_id=workflow, key="k", value=b"v")
    deleted = client.delete_workflow(workflow_id=workflow)
    assert deleted.header.revision == 3
    expect_error(grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND", lambda: client.get_workflow(workflow_id=workflow))
    expect_error(grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND", lambda: client.delete_workflow(workflow_id=workflow))
    # Revisions never go backwards for a workflow id, not even across delete and re-create.
    again = client.create_workflow(workflow_id=workflow, goal="again")
    assert again.created and again.workflow.revision > deleted.header.revision


# -- tasks ----------------------------------------------------------------------------------------


def test_post_tasks(client: BoardClient, workflow: str) -> None:
    specs = [
        pb.TaskSpec(id="research", payload=b'{"q": 1}', content_type="application/json", priority=5,
                    labels={"kind": "r"}, required_skills=["web", "search"], max_attempts=4),
        pb.TaskSpec(id="review", depends_on=["draft"]),  # depends on a task later in the batch
        pb.TaskSpec(id="draft", depends_on=["research"]),
    ]
    posted = client.post_tasks(workflow_id=workflow, tasks=specs)
    assert [t.id for t in posted.tasks] == ["research", "review", "draft"]
    assert [t.state for t in posted.tasks] == [pb.TASK_STATE_READY, pb.TASK_STATE_PENDING, pb.TASK_STATE_PENDING]
    research = posted.tasks[0]
    assert (research.payload, research.priority, research.max_attempts) == (b'{"q": 1}', 5, 4)
    assert list(research.required_skills) == ["search", "web"]  # sorted
    assert list(posted.existing_task_ids) == []
    assert posted.header.revision == 4

    again = client.post_tasks(workflow_id=workflow, tasks=specs)
    assert sorted(again.existing_task_ids) == ["draft", "research", "review"]
    assert again.header.revision == 4  # nothing changed

    expect_error(grpc.StatusCode.ALREADY_EXISTS, "TASK_ALREADY_EXISTS",
                 lambda: client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="research", priority=1)]))
    e = expect_error(FP, "INVALID_DEPENDENCY",
                     lambda: client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="x", depends_on=["nope"])]))
    assert e.metadata.get("dependency") == "nope"
    expect_error(FP, "INVALID_DEPENDENCY", lambda: client.post_tasks(
        workflow_id=workflow, tasks=[pb.TaskSpec(id="c1", depends_on=["c2"]), pb.TaskSpec(id="c2", depends_on=["c1"])]))
    # All or nothing: the failed batches added nothing.
    assert client.get_workflow(workflow_id=workflow).workflow.revision == 4
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                 lambda: client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="-bad")]))


def test_get_task(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a", payload=b"\x00\x01", content_type="x/y")])
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert (task.id, task.workflow_id, task.payload, task.content_type) == ("a", workflow, b"\x00\x01", "x/y")
    assert (task.state, task.attempt, task.fencing_token) == (pb.TASK_STATE_READY, 0, 0)
    e = expect_error(grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", lambda: client.get_task(workflow_id=workflow, task_id="zz"))
    assert e.metadata["task_id"] == "zz"


def test_list_tasks(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id=f"t{i}", payload=b"p") for i in range(5)]
                      + [pb.TaskSpec(id="z", depends_on=["t0"])])
    page = client.list_tasks(workflow_id=workflow, page_size=2)
    assert [t.id for t in page.tasks] == ["t0", "t1"] and page.next_page_token
    all_ids = [t.id for t in client.iter_tasks(workflow, page_size=2)]
    assert all_ids == ["t0", "t1", "t2", "t3", "t4", "z"]
    pending = client.list_tasks(workflow_id=workflow, state=pb.TASK_STATE_PENDING)
    assert [t.id for t in pending.tasks] == ["z"]
    bodies = client.list_tasks(workflow_id=workflow, omit_bodies=True).tasks
    assert all(t.payload == b"" for t in bodies)
    assert client.list_tasks(workflow_id=workflow).tasks[0].payload == b"p"


def test_cancel_task_cascades_and_ends_the_claim(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a"), pb.TaskSpec(id="b", depends_on=["a"]),
                                                   pb.TaskSpec(id="c", depends_on=["b"])])
    claim = client.claim_task(workflow_id=workflow, worker_id="w", task_id="a")
    cancelled = client.cancel_task(workflow_id=workflow, task_id="a", reason="not needed")
    assert cancelled.task.state == pb.TASK_STATE_CANCELLED
    assert "not needed" in cancelled.task.end_reason
    assert sorted(cancelled.cancelled_dependents) == ["b", "c"]
    assert client.get_task(workflow_id=workflow, task_id="c").task.state == pb.TASK_STATE_CANCELLED
    e = expect_error(FP, "CLAIM_NOT_HELD", lambda: client.renew_lease(workflow_id=workflow, task_id="a",
                                                                       fencing_token=claim.fencing_token))
    assert e.is_claim_lost and e.metadata["state"] == "CANCELLED"
    expect_error(FP, "TASK_FINISHED", lambda: client.cancel_task(workflow_id=workflow, task_id="a"))


# -- claims ---------------------------------------------------------------------------------------


def test_claim_task(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[
        pb.TaskSpec(id="low", priority=1), pb.TaskSpec(id="high", priority=9),
        pb.TaskSpec(id="skilled", priority=100, required_skills=["gpu"]),
    ])
    claim = client.claim_task(workflow_id=workflow, worker_id="w1", lease_duration=10)
    assert claim.task.id == "high"  # highest priority among those the worker has the skills for
    assert claim.task.state == pb.TASK_STATE_CLAIMED and claim.task.owner == "w1" and claim.task.attempt == 1
    assert claim.fencing_token > 0 and claim.task.fencing_token == claim.fencing_token
    assert claim.task.lease_duration == Duration(seconds=10)
    assert claim.lease_expire_time.ToNanoseconds() > 0
    skilled = client.claim_task(workflow_id=workflow, worker_id="w2", skills=["gpu"])
    assert skilled.task.id == "skilled"

    e = expect_error(FP, "TASK_ALREADY_CLAIMED", lambda: client.claim_task(workflow_id=workflow, worker_id="w3", task_id="high"))
    assert e.metadata["owner"] == "w1" and "lease_expire_time" in e.metadata
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="gpu-only", required_skills=["gpu"])])
    e = expect_error(FP, "SKILLS_MISMATCH", lambda: client.claim_task(workflow_id=workflow, worker_id="w3", task_id="gpu-only"))
    assert e.metadata["missing_skill"] == "gpu"
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", lambda: client.claim_task(workflow_id=workflow, worker_id=""))
    expect_error(grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND",
                 lambda: client.claim_task(workflow_id=workflow, worker_id="w3", task_id="nope"))

    low = client.claim_task(workflow_id=workflow, worker_id="w3")
    assert low.task.id == "low"
    nothing = client.claim_task(workflow_id=workflow, worker_id="w3")  # no wait: answers at once
    assert not nothing.HasField("task") and nothing.fencing_token == 0


def test_renew_lease_extends_the_lease(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    claim = client.claim_task(workflow_id=workflow, worker_id="w", lease_duration=5)
    renewed = client.renew_lease(workflow_id=workflow, task_id="a", fencing_token=claim.fencing_token, lease_duration=600)
    assert renewed.lease_expire_time.ToNanoseconds() - claim.lease_expire_time.ToNanoseconds() > 500 * 10**9
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert task.lease_expire_time == renewed.lease_expire_time
    assert task.lease_duration == Duration(seconds=600)
    e = expect_error(FP, "FENCING_TOKEN_INVALID", lambda: client.renew_lease(workflow_id=workflow, task_id="a",
                                                                              fencing_token=claim.fencing_token + 1000))
    assert e.is_claim_lost


def test_release_task(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    claim = client.claim_task(workflow_id=workflow, worker_id="w")
    released = client.release_task(workflow_id=workflow, task_id="a", fencing_token=claim.fencing_token)
    assert released.task.state == pb.TASK_STATE_READY
    assert released.task.attempt == 0  # a released claim is not counted
    e = expect_error(FP, "CLAIM_NOT_HELD", lambda: client.release_task(workflow_id=workflow, task_id="a",
                                                                        fencing_token=claim.fencing_token))
    assert e.metadata["state"] == "READY"
    again = client.claim_task(workflow_id=workflow, worker_id="w2")
    assert again.task.attempt == 1 and again.fencing_token > claim.fencing_token


def test_stale_fencing_token_is_refused(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    old = client.claim_task(workflow_id=workflow, worker_id="w1")
    client.release_task(workflow_id=workflow, task_id="a", fencing_token=old.fencing_token)
    new = client.claim_task(workflow_id=workflow, worker_id="w2")
    for write in (
        lambda: client.checkpoint(workflow_id=workflow, task_id="a", fencing_token=old.fencing_token, checkpoint=b"x"),
        lambda: client.complete_task(workflow_id=workflow, task_id="a", fencing_token=old.fencing_token, result=b"x"),
        lambda: client.fail_task(workflow_id=workflow, task_id="a", fencing_token=old.fencing_token, error_message="x"),
        lambda: client.renew_lease(workflow_id=workflow, task_id="a", fencing_token=old.fencing_token),
    ):
        e = expect_error(FP, "FENCING_TOKEN_STALE", write)
        assert e.metadata["fencing_token"] == str(new.fencing_token)
        assert e.is_claim_lost and not e.is_transient
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert (task.state, task.owner, task.checkpoint) == (pb.TASK_STATE_CLAIMED, "w2", b"")


def test_expired_lease_is_refused(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    claim = client.claim_task(workflow_id=workflow, worker_id="w", lease_duration=1)
    expired = wait_for_event(client, workflow, pb.EVENT_KIND_TASK_LEASE_EXPIRED, task_id="a",
                             start_revision=claim.header.revision + 1)
    assert expired.task.last_error.lease_expired and expired.actor == ""
    e = expect_error(FP, "LEASE_EXPIRED", lambda: client.complete_task(workflow_id=workflow, task_id="a",
                                                                        fencing_token=claim.fencing_token, result=b"r"))
    assert e.is_claim_lost


def test_checkpoint_is_kept_for_the_next_owner(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    claim = client.claim_task(workflow_id=workflow, worker_id="w1")
    saved = client.checkpoint(workflow_id=workflow, task_id="a", fencing_token=claim.fencing_token, checkpoint=b"step 3")
    assert saved.checkpoint_time.ToNanoseconds() > 0
    client.release_task(workflow_id=workflow, task_id="a", fencing_token=claim.fencing_token)
    next_claim = client.claim_task(workflow_id=workflow, worker_id="w2")
    assert next_claim.task.checkpoint == b"step 3"
    assert next_claim.task.checkpoint_time == saved.checkpoint_time


def test_complete_task(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a"), pb.TaskSpec(id="b", depends_on=["a"])])
    claim = client.claim_task(workflow_id=workflow, worker_id="w", task_id="a")
    done = client.complete_task(workflow_id=workflow, task_id="a", fencing_token=claim.fencing_token,
                                result=b"42", result_content_type="text/plain")
    assert not done.already_completed
    assert list(done.ready_dependents) == ["b"]
    assert (done.task.state, done.task.result, done.task.result_content_type) == (pb.TASK_STATE_COMPLETED, b"42", "text/plain")
    assert client.get_task(workflow_id=workflow, task_id="b").task.state == pb.TASK_STATE_READY
    repeat = client.complete_task(workflow_id=workflow, task_id="a", fencing_token=claim.fencing_token,
                                  result=b"42", result_content_type="text/plain")
    assert repeat.already_completed
    expect_error(FP, "RESULT_CONFLICT", lambda: client.complete_task(workflow_id=workflow, task_id="a",
                                                                      fencing_token=claim.fencing_token, result=b"43"))
    expect_error(FP, "TASK_FINISHED", lambda: client.claim_task(workflow_id=workflow, worker_id="w", task_id="a"))


def test_fail_task_retries_then_dead_letters(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[
        pb.TaskSpec(id="a", max_attempts=2, retry_policy=pb.RetryPolicy(initial_backoff=Duration(seconds=60))),
        pb.TaskSpec(id="b", depends_on=["a"]),
    ])
    first = client.claim_task(workflow_id=workflow, worker_id="w")
    failed = client.fail_task(workflow_id=workflow, task_id="a", fencing_token=first.fencing_token,
                              error_message="boom", error_details=b"\x01")
    assert failed.will_retry and failed.task.state == pb.TASK_STATE_BACKOFF
    assert failed.task.ready_time.ToNanoseconds() > 0
    err = failed.task.last_error
    assert (err.message, err.details, err.attempt, err.worker_id, err.non_retryable) == ("boom", b"\x01", 1, "w", False)
    expect_error(FP, "TASK_NOT_READY", lambda: client.claim_task(workflow_id=workflow, worker_id="w", task_id="a"))

    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="c"), pb.TaskSpec(id="d", depends_on=["c"])])
    c = client.claim_task(workflow_id=workflow, worker_id="w", task_id="c")
    dead = client.fail_task(workflow_id=workflow, task_id="c", fencing_token=c.fencing_token, error_message="bad input",
                            non_retryable=True)
    assert not dead.will_retry
    assert dead.task.state == pb.TASK_STATE_DEAD_LETTERED and dead.task.last_error.non_retryable
    assert list(dead.cancelled_dependents) == ["d"]


# -- notes ----------------------------------------------------------------------------------------


def test_notes(client: BoardClient, workflow: str) -> None:
    put = client.put_note(workflow_id=workflow, key="plan/a", value=b"1", content_type="text/plain", writer="planner",
                          expected_version=0)
    assert (put.note.version, put.note.writer, put.note.mod_revision) == (1, "planner", put.header.revision)
    second = client.put_note(workflow_id=workflow, key="plan/a", value=b"2", content_type="text/plain",
                             expected_version=1)
    assert second.note.version == 2
    e = expect_error(FP, "NOTE_VERSION_MISMATCH", lambda: client.put_note(workflow_id=workflow, key="plan/a", value=b"3",
                                                                           expected_version=1))
    assert e.metadata["version"] == "2"
    expect_error(FP, "NOTE_VERSION_MISMATCH",
                 lambda: client.put_note(workflow_id=workflow, key="plan/a", value=b"3", expected_version=0))
    client.put_note(workflow_id=workflow, key="plan/b", value=b"b", ttl=3600)
    client.put_note(workflow_id=workflow, key="other", value=b"o")

    got = client.get_note(workflow_id=workflow, key="plan/a").note
    assert (got.value, got.version, got.content_type) == (b"2", 2, "text/plain")
    assert not got.HasField("expire_time")
    assert client.get_note(workflow_id=workflow, key="plan/b").note.HasField("expire_time")
    e = expect_error(grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND", lambda: client.get_note(workflow_id=workflow, key="nope"))
    assert e.metadata["key"] == "nope"

    listed = client.list_notes(workflow_id=workflow, key_prefix="plan/")
    assert [n.key for n in listed.notes] == ["plan/a", "plan/b"]
    keys_only = client.list_notes(workflow_id=workflow, keys_only=True).notes
    assert [n.key for n in keys_only] == ["other", "plan/a", "plan/b"] and all(n.value == b"" for n in keys_only)
    assert [n.key for n in client.iter_notes(workflow, page_size=1)] == ["other", "plan/a", "plan/b"]

    expect_error(FP, "NOTE_VERSION_MISMATCH", lambda: client.delete_note(workflow_id=workflow, key="plan/a", expected_version=1))
    deleted = client.delete_note(workflow_id=workflow, key="plan/a", expected_version=2, writer="planner")
    assert deleted.header.revision > second.header.revision
    expect_error(grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND", lambda: client.get_note(workflow_id=workflow, key="plan/a"))
    expect_error(grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND", lambda: client.delete_note(workflow_id=workflow, key="plan/a"))
    assert client.put_note(workflow_id=workflow, key="plan/a", value=b"x").note.version == 1  # restarts after delete


# -- export ---------------------------------------------------------------------------------------


def test_export_workflow(client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a"), pb.TaskSpec(id="b")])
    claim = client.claim_task(workflow_id=workflow, worker_id="w", task_id="a")
    client.complete_task(workflow_id=workflow, task_id="a", fencing_token=claim.fencing_token, result=b"ok")
    client.put_note(workflow_id=workflow, key="n", value=b"v")

    exported = client.export_workflow(workflow_id=workflow, format=pb.EXPORT_FORMAT_JSON)
    assert exported.content_type == "application/json"
    doc = json_format.Parse(exported.content, pb.ExportedWorkflow())
    assert doc.workflow.id == workflow and doc.workflow.goal == "pytest"
    assert [t.id for t in doc.tasks] == ["a", "b"] and doc.tasks[0].result == b"ok"
    assert [n.key for n in doc.notes] == ["n"]
    assert [e.revision for e in doc.events] == list(range(1, exported.header.revision + 1))
    assert doc.oldest_revision == 1
    assert json.loads(exported.content)["workflow"]["id"] == workflow

    limited = json_format.Parse(client.export_workflow(workflow_id=workflow, format=pb.EXPORT_FORMAT_JSON,
                                                       history_limit=2).content, pb.ExportedWorkflow())
    assert [e.revision for e in limited.events] == [exported.header.revision - 1, exported.header.revision]

    markdown = client.export_workflow(workflow_id=workflow)
    assert markdown.content_type == "text/markdown"
    assert "pytest" in markdown.content and "a" in markdown.content
    expect_error(grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND", lambda: client.export_workflow(workflow_id=new_id("x")))


# -- request building -----------------------------------------------------------------------------


def test_request_building(client: BoardClient) -> None:
    with pytest.raises(TypeError):
        client.get_workflow(pb.GetWorkflowRequest(workflow_id="a"), workflow_id="b")
    with pytest.raises(TypeError):
        client.get_workflow(no_such_field=1)
    with pytest.raises(TypeError):
        client.get_workflow(pb.GetTaskRequest())
