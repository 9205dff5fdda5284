"""Fixtures: a real GrpcBoard server (started here, or GRPCBOARD_TARGET), clients, fresh workflows."""

from __future__ import annotations

import faulthandler
import os
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, without installing it
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpcboard import BoardClient  # noqa: E402
from helpers import ServerProcess, start_server  # noqa: E402

# A hard limit per test on top of every wait's own timeout: dump the stacks and exit rather than hang CI.
TEST_TIMEOUT_S = float(os.environ.get("GRPCBOARD_TEST_TIMEOUT_S", "120"))


@pytest.fixture(autouse=True)
def _hang_guard() -> Iterator[None]:
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """The board all tests share: GRPCBOARD_TARGET if set, else a fresh in-memory server."""
    external = os.environ.get("GRPCBOARD_TARGET")
    if external:
        yield ServerProcess(target=external, process=None)
        return
    with start_server() as srv:
        yield srv


@pytest.fixture
def target(server: ServerProcess) -> str:
    return server.target


@pytest.fixture
def client(target: str) -> Iterator[BoardClient]:
    with BoardClient(target) as c:
        yield c


def new_id(prefix: str = "wf") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def workflow(client: BoardClient) -> str:
    """A fresh workflow (revision 1 is its WORKFLOW_CREATED event)."""
    wf = new_id()
    response = client.create_workflow(workflow_id=wf, goal="pytest")
    assert response.created
    return wf
