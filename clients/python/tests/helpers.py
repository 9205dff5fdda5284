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
import struct
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

    def stop(self, timeout: float = 30.0) -> None:
        """Kills the server at once (SIGKILL, like a crash) and waits until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout)


def _die_with_parent() -> None:
    """In the child: get SIGKILL if pytest dies, so no server outlives a crashed test run (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@contextlib.contextmanager
def start_server(*extra_args: str, startup_timeout: float = 60.0, port: int = 0,
                 store: str = "memory") -> Iterator[ServerProcess]:
    """Runs ``dotnet $GRPCBOARD_SERVER_DLL --port PORT --store STORE ...`` and kills it afterwards
    (``stop()`` stops it earlier: SIGKILL, like a crash)."""
    dll = os.environ.get("GRPCBOARD_SERVER_DLL", DEFAULT_DLL)
    dotnet = os.environ.get("GRPCBOARD_DOTNET") or shutil.which("dotnet")
    if not dotnet:
        raise RuntimeError("dotnet is not on PATH (or set GRPCBOARD_DOTNET); or set GRPCBOARD_TARGET")
    if not os.path.isfile(dll):
        raise RuntimeError(f"server not found at {dll}: set GRPCBOARD_SERVER_DLL or GRPCBOARD_TARGET")
    cmd = [dotnet, dll, "--port", str(port), "--store", store, *extra_args]
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
    """A loopback TCP proxy in front of the server that can cut every connection (``sever``), stall
    all traffic (``pause``/``resume``) or leave the open connections half-open (``half_open``), to
    simulate network failures under a real gRPC client. ``expect_upstream`` tells when given bytes
    (e.g. an id inside a request) have been passed on to the server."""

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
        self._half_open: Dict[Tuple[socket.socket, socket.socket], bytes] = {}
        self._markers: List[Tuple[bytes, threading.Event]] = []
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
        to_server = src is pair[0]
        tail = b""  # the end of the previous chunk, so that a marker split between two chunks is found
        unheard = b""  # what the client sent on a half-open connection (its end), for its reveal marker
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                with self._lock:
                    reveal = self._half_open.get(pair)
                    if reveal is None and pair not in self._pairs:
                        break
                if reveal is not None:
                    if not to_server:
                        return
                    unheard += data
                    if not reveal or reveal in unheard:  # the peer that lost the connection answers: reset
                        self._reset(pair[0])
                        return
                    unheard = unheard[-(len(reveal) - 1):] if len(reveal) > 1 else b""
                    continue  # dropped unanswered
                dst.sendall(data)
                if to_server:
                    tail = self._match(tail + data)
        except OSError:
            pass
        finally:
            with self._lock:
                half_open = pair in self._half_open
            if not half_open:  # a half-open connection stays open and silent on the client's side
                self._drop(pair)

    def _match(self, window: bytes) -> bytes:
        with self._lock:
            markers = list(self._markers)
        for marker, event in markers:
            if marker in window:
                event.set()
        keep = max((len(m) for m, _ in markers), default=1) - 1
        return window[-keep:] if keep else b""

    def _reset(self, sock: socket.socket) -> None:
        """Closes ``sock`` with a TCP RST (SO_LINGER 0), as a host that lost the connection answers."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()

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

    def half_open(self, reveal_on: bytes = b"") -> int:
        """Leaves every open connection half-open, as when the server's host lost it (crash, reboot,
        a NAT or firewall forgetting it): the server's side is closed, the client's side stays open
        and hears nothing more, not even a FIN. New connections work. Returns how many connections
        were affected.

        The client learns of it only when it sends something, which is answered with a reset. With
        ``reveal_on``, only bytes containing it (e.g. an id that only a new request carries) get the
        reset, and anything else is dropped unanswered, so that a test does not depend on when gRPC
        happens to send window updates or pings by itself."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.difference_update(pairs)
            for pair in pairs:
                self._half_open[pair] = reveal_on
        for _, upstream in pairs:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                upstream.close()
        return len(pairs)

    def expect_upstream(self, marker: bytes) -> threading.Event:
        """An event set once bytes containing ``marker`` have been passed on to the server (by any
        connection opened afterwards or already open)."""
        event = threading.Event()
        with self._lock:
            self._markers.append((marker, event))
        return event

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.sever()
        with self._lock:
            half_open = list(self._half_open)
            self._half_open.clear()
        for downstream, _ in half_open:
            with contextlib.suppress(OSError):
                downstream.shutdown(socket.SHUT_RDWR)  # wakes its pump
            with contextlib.suppress(OSError):
                downstream.close()
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
