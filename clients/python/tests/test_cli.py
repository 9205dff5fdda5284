"""The JSON-lines CLI used by cross-language tests: python3 -m grpcboard.cli claim|watch|work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from grpcboard import BoardClient, pb
from helpers import Running

PACKAGE_DIR = Path(__file__).resolve().parents[1]
TIMEOUT = 30


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def cli_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "grpcboard.cli", *args]


def cli(*args: str) -> List[Dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "grpcboard.cli", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=_env())
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def running() -> Iterator[List[Running]]:
    procs: List[Running] = []
    yield procs
    for p in procs:
        p.kill()


def test_claim(target: str, client: BoardClient, workflow: str) -> None:
    assert cli("claim", "--target", target, "--workflow", workflow, "--worker", "py") == [{"claimed": False}]
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    [claimed] = cli("claim", "--target", target, "--workflow", workflow, "--worker", "py", "--task", "a",
                    "--lease-ms", "5000")
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert claimed == {"claimed": True, "task_id": "a", "fencing_token": task.fencing_token}
    assert task.owner == "py" and task.lease_duration.seconds == 5
    [refused] = cli("claim", "--target", target, "--workflow", workflow, "--worker", "other", "--task", "a")
    assert refused["error"]["code"] == "FAILED_PRECONDITION"
    assert refused["error"]["reason"] == "TASK_ALREADY_CLAIMED"
    assert "already claimed" in refused["error"]["message"]
    assert refused["error"]["metadata"]["owner"] == "py"
    [missing] = cli("claim", "--target", target, "--workflow", "no-such-wf-x", "--worker", "py")
    assert missing["error"]["code"] == "NOT_FOUND" and missing["error"]["reason"] == "WORKFLOW_NOT_FOUND"


def test_claim_waits(target: str, client: BoardClient, workflow: str, running: List[Running]) -> None:
    claimer = Running(cli_argv("claim", "--target", target, "--workflow", workflow, "--worker", "py",
                               "--wait-ms", "20000"), env=_env())
    running.append(claimer)
    with pytest.raises(AssertionError, match="no output line"):
        claimer.next_line(timeout=1.5)  # still waiting on the server (without --wait-ms it answers at once)
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="late")])
    assert claimer.next_json()["task_id"] == "late"
    assert claimer.finish()[0] == 0


def test_claim_announces_before_claiming(target: str, client: BoardClient, workflow: str, running: List[Running]) -> None:
    claimer = Running(cli_argv("claim", "--target", target, "--workflow", workflow, "--worker", "py",
                               "--wait-ms", "20000", "--announce"), env=_env())
    running.append(claimer)
    assert claimer.next_json() == {"waiting": True}
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="prize")])
    assert claimer.next_json()["task_id"] == "prize"
    assert claimer.finish()[0] == 0
    # A claim that answers at once: the announcement still comes first.
    assert cli("claim", "--target", target, "--workflow", workflow, "--worker", "py", "--announce") == [
        {"waiting": True}, {"claimed": False}]


def test_watch(target: str, client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    client.put_note(workflow_id=workflow, key="plan", value=b"x")
    claim = client.claim_task(workflow_id=workflow, worker_id="w")
    lines = cli("watch", "--target", target, "--workflow", workflow, "--from", "2", "--count", "3")
    assert lines == [
        {"revision": 2, "kind": "TASK_POSTED", "task_id": "a", "note_key": None},
        {"revision": 3, "kind": "NOTE_PUT", "task_id": None, "note_key": "plan"},
        {"revision": claim.header.revision, "kind": "TASK_CLAIMED", "task_id": "a", "note_key": None},
    ]


def test_watch_reports_errors(target: str) -> None:
    done = subprocess.run([sys.executable, "-m", "grpcboard.cli", "watch", "--target", target, "--workflow",
                           "no-such-wf-y", "--from", "1", "--count", "1"], capture_output=True, text=True,
                          timeout=TIMEOUT, env=_env())
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["reason"] == "WORKFLOW_NOT_FOUND"


def test_work(target: str, client: BoardClient, workflow: str) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a"), pb.TaskSpec(id="b", depends_on=["a"]),
                                                   pb.TaskSpec(id="c")])
    lines = cli("work", "--target", target, "--workflow", workflow, "--worker", "py-w", "--max-tasks", "3",
                "--lease-ms", "5000")
    assert sorted(line["completed"] for line in lines) == ["a", "b", "c"]
    for line in lines:
        task = client.get_task(workflow_id=workflow, task_id=line["completed"]).task
        assert line["fencing_token"] == task.fencing_token
        assert (task.state, task.owner) == (pb.TASK_STATE_COMPLETED, "py-w")
        assert (task.result, task.result_content_type) == (b"done by py-w", "text/plain")
        assert task.checkpoint == b"checkpoint by py-w"


def test_hang_after_claim_is_taken_over(target: str, client: BoardClient, workflow: str,
                                        running: List[Running]) -> None:
    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a", retry_policy=pb.RetryPolicy(
        initial_backoff={}))])
    crashed = Running(cli_argv("work", "--target", target, "--workflow", workflow, "--worker", "crashy",
                               "--lease-ms", "1000", "--hang-after-claim"), env=_env())
    running.append(crashed)
    first = crashed.next_json()
    assert first["claimed"] is True and first["task_id"] == "a"
    lines = cli("work", "--target", target, "--workflow", workflow, "--worker", "rescuer", "--max-tasks", "1")
    assert lines[0]["completed"] == "a"
    assert lines[0]["fencing_token"] > first["fencing_token"]
    assert crashed.proc.poll() is None, "the crashed worker is still hanging"
    task = client.get_task(workflow_id=workflow, task_id="a").task
    assert (task.owner, task.result, task.attempt) == ("rescuer", b"done by rescuer", 2)
    assert task.last_error.lease_expired and task.last_error.worker_id == "crashy"


def test_work_stops_cleanly_on_sigterm(target: str, client: BoardClient, workflow: str,
                                       running: List[Running]) -> None:
    import signal
    import time

    client.post_tasks(workflow_id=workflow, tasks=[pb.TaskSpec(id="a")])
    worker = Running(cli_argv("work", "--target", target, "--workflow", workflow, "--worker", "py-t",
                              "--claim-wait-ms", "60000"), env=_env())
    running.append(worker)
    assert worker.next_json() == {"completed": "a", "fencing_token": client.get_task(
        workflow_id=workflow, task_id="a").task.fencing_token}
    # Now it waits in a 60 s claim; SIGTERM cancels it and the process exits cleanly at once.
    start = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish()[0] == 0
    assert time.monotonic() - start < 10
