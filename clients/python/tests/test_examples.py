"""The examples run as documented against the test server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import new_id
from grpcboard import BoardClient, pb
from helpers import Running

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, target: str, *args: str) -> str:
    env = dict(os.environ, GRPCBOARD_TARGET=target)
    env.pop("PYTHONPATH", None)  # the examples find the package by themselves
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd="/")
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def test_planner_then_workers(target: str, client: BoardClient) -> None:
    wf = new_id("demo")
    out = run("planner.py", target, "--workflow", wf)
    assert f"workflow {wf}: created" in out
    tasks = {t.id: t for t in client.iter_tasks(wf)}
    assert sorted(tasks) == ["draft-body", "draft-intro", "research", "review"]
    assert list(tasks["review"].depends_on) == ["draft-intro", "draft-body"]
    assert tasks["research"].state == pb.TASK_STATE_READY and tasks["review"].state == pb.TASK_STATE_PENDING

    out = run("worker.py", target, "--workflow", wf, "--worker", "ex", "--work-seconds", "0")
    assert "[ex] claimed research" in out and "[ex] completing review" in out
    assert "no tasks remain: completed 4" in out
    review = client.get_task(workflow_id=wf, task_id="review").task
    assert review.state == pb.TASK_STATE_COMPLETED
    assert review.result.decode().startswith("review by ex using [draft-intro: draft-intro by ex")


def test_interrupted_worker_releases_its_task(target: str, client: BoardClient) -> None:
    import signal

    wf = new_id("demo")
    run("planner.py", target, "--workflow", wf)
    env = dict(os.environ, GRPCBOARD_TARGET=target)
    # A child inherits SIGINT only when it is ignored, as it is for anything a non-interactive shell started
    # with "&" (a CI job may be that); a handler here makes the worker start with Ctrl-C working, as in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        worker = Running([sys.executable, str(EXAMPLES / "worker.py"), "--workflow", wf, "--worker", "ctrl-c",
                          "--work-seconds", "30"], env=env)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        # Printed once the task is claimed and the handler runs.
        assert worker.next_line().startswith("[ctrl-c] claimed research")
        worker.proc.send_signal(signal.SIGINT)
        code, out = worker.finish()
    finally:
        worker.kill()
    assert code == 0
    assert "interrupted (released 1)" in out
    task = client.get_task(workflow_id=wf, task_id="research").task
    assert (task.state, task.attempt) == (pb.TASK_STATE_READY, 0)
