"""Test helpers: starting a server, a TCP proxy that can cut or stall connections, waiting on events."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Set, Tuple

from grpcboard import BoardClient, pb
from grpcboard.v1 import event_pb2

DEFAULT_DLL = "/tmp/grpcboard-server/GrpcBoard.Server.dll"
_LISTENING = re.compile(r"GrpcBoard listening on (https?://\S+?)/? \(store: ")


@dataclass
class ServerProcess:
    target: str
    process: Optional[subprocess.Popen] = None
    output: Deque[str] = field(default_factory=lambda: deque(maxlen=200))


def _die_with_parent() -> None:
    """In the child: get SIGKILL if pytest dies, so no server outlives a crashed test run (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@contextlib.contextmanager
def start_server(*extra_args: str, startup_timeout: float = 60.0) -> Iterator[ServerProcess]:
    """Runs ``dotnet $GRPCBOARD_SERVER_DLL --port 0 --store memory ...`` and kills it afterwards."""
    dll = os.environ.get("GRPCBOARD_SERVER_DLL", DEFAULT_DLL)
    dotnet = os.environ.get("GRPCBOARD_DOTNET") or shutil.which("dotnet")
    if not dotnet:
        raise RuntimeError("dotnet is not on PATH (or set GRPCBOARD_DOTNET); or set GRPCBOARD_TARGET")
    if not os.path.isfile(dll):
        raise RuntimeError(f"server not found at {dll}: set GRPCBOARD_SERVER_DLL or GRPCBOARD_TARGET")
    cmd = [dotnet, dll, "--port", "0", "--store", "memory", *extra_args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, preexec_fn=_die_with_parent)
    srv = ServerProcess(target="", process=proc)
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def drain() -> None:  # keep reading so the server never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            srv.output.append(line.rstrip("\n"))
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=drain, name="grpcboard-server-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not srv.target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"server did not report its address within {startup_timeout}s: {list(srv.output)}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"server exited with {proc.wait(5)} before listening: {list(srv.output)}")
            m = _LISTENING.search(line)
            if m:
                srv.target = m.group(1)
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        reader.join(10)


class TcpProxy:
    """A loopback TCP proxy in front of the server that can cut every connection (``sever``) or stall
    all traffic (``pause``/``resume``), to simulate network failures under a real gRPC client."""

    def __init__(self, upstream: Tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: Set[Tuple[socket.socket, socket.socket]] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self.connections = 0
        self._thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                downstream.close()
                continue
            pair = (downstream, upstream)
            with self._lock:
                if self._closed:
                    downstream.close()
                    upstream.close()
                    return
                self._pairs.add(pair)
                self.connections += 1
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: Tuple[socket.socket, socket.socket]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                with self._lock:
                    if pair not in self._pairs:
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(pair)

    def _drop(self, pair: Tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for s in pair:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def sever(self) -> int:
        """Cuts every open connection (both directions, at once). Returns how many were cut."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair)
        return len(pairs)

    def pause(self) -> None:
        """Stalls all traffic (a silent network partition): bytes are held, nothing is forwarded."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.sever()
        self._flowing.set()
        self._thread.join(5)


def host_port(target: str) -> Tuple[str, int]:
    from grpcboard import parse_target

    address, _ = parse_target(target)
    host, port = address.rsplit(":", 1)
    return host, int(port)


def collect_events(client: BoardClient, workflow_id: str, *, start_revision: int, until: Callable[[event_pb2.Event], bool],
                   timeout: float = 15.0, **filters: object) -> List[event_pb2.Event]:
    """Watches from ``start_revision`` until an event satisfies ``until`` (inclusive), or fails after ``timeout``."""
    events: List[event_pb2.Event] = []
    watch = client.watch(workflow_id=workflow_id, start_revision=start_revision, **filters)
    timer = threading.Timer(timeout, watch.close)
    timer.daemon = True
    timer.start()
    try:
        for event in watch:
            events.append(event)
            if until(event):
                return events
    finally:
        timer.cancel()
        watch.close()
    raise AssertionError(f"no matching event within {timeout}s; got {[pb.EventKind.Name(e.kind) for e in events]}")


def wait_for_event(client: BoardClient, workflow_id: str, kind: int, *, task_id: str = "", start_revision: int = 1,
                   timeout: float = 15.0) -> event_pb2.Event:
    """The first event of ``kind`` (for ``task_id``, if given) at or after ``start_revision``."""
    events = collect_events(client, workflow_id, start_revision=start_revision, timeout=timeout,
                            until=lambda e: e.kind == kind and (not task_id or e.task.id == task_id))
    return events[-1]


def run_in_thread(fn: Callable[[], object], name: str = "test-thread") -> Tuple[threading.Thread, List[BaseException]]:
    """Starts ``fn`` in a daemon thread; exceptions are collected in the returned list."""
    errors: List[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: B902
            errors.append(e)

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    return t, errors


def join(thread: threading.Thread, timeout: float = 15.0) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), f"{thread.name} still running after {timeout}s"


class Running:
    """A child process whose stdout lines can be awaited with a timeout."""

    def __init__(self, argv: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self._eof = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self._eof.set()

    def next_line(self, timeout: float = 30.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout}s") from None

    def next_json(self, timeout: float = 30.0) -> Any:
        return json.loads(self.next_line(timeout))

    def finish(self, timeout: float = 30.0) -> Tuple[int, str]:
        """Waits for the process to exit; returns its exit code and the stdout not yet read."""
        code = self.proc.wait(timeout)
        assert self._eof.wait(timeout), "stdout not closed"
        out = []
        while not self.lines.empty():
            out.append(self.lines.get_nowait())
        return code, "".join(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
