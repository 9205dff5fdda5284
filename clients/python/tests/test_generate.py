"""generate.sh: the checked-in generated code is current, and --check notices when it is not."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROTOS = PACKAGE_DIR.parents[1] / "protos"


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GRPCBOARD_PROTOS=str(PROTOS))
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=120, env=env)


def test_checked_in_code_is_current() -> None:
    done = _run(PACKAGE_DIR / "generate.sh", "--check")
    assert done.returncode == 0, done.stderr


def test_check_fails_on_drift_and_generate_repairs_it(tmp_path: Path) -> None:
    copy = tmp_path / "python"
    (copy / "grpcboard").mkdir(parents=True)
    shutil.copy(PACKAGE_DIR / "generate.sh", copy / "generate.sh")
    shutil.copytree(PACKAGE_DIR / "grpcboard" / "v1", copy / "grpcboard" / "v1",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert _run(copy / "generate.sh", "--check").returncode == 0

    edited = copy / "grpcboard" / "v1" / "task_pb2.pyi"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    (copy / "grpcboard" / "v1" / "stale_pb2.py").write_text("# from a deleted proto\n")
    drift = _run(copy / "generate.sh", "--check")
    assert drift.returncode == 1
    assert "out of date" in drift.stderr

    assert _run(copy / "generate.sh").returncode == 0
    assert not (copy / "grpcboard" / "v1" / "stale_pb2.py").exists()
    assert _run(copy / "generate.sh", "--check").returncode == 0
    # Idempotent: a second run changes nothing.
    before = {p.name: p.read_bytes() for p in (copy / "grpcboard" / "v1").iterdir() if p.is_file()}
    assert _run(copy / "generate.sh").returncode == 0
    after = {p.name: p.read_bytes() for p in (copy / "grpcboard" / "v1").iterdir() if p.is_file()}
    assert before == after
