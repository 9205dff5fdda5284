"""CancelEvent: a threading.Event that also runs callbacks when it is set."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Dict, Optional

__all__ = ["CancelEvent"]

_log = logging.getLogger("grpcboard")


class CancelEvent(threading.Event):
    """A one-way ``threading.Event`` used for cancellation.

    ``set()`` (alias ``cancel()``) wakes everyone waiting on it, as for any Event, and also runs
    the registered callbacks once; the client uses them to cancel in-flight gRPC calls. Once set it
    stays set (``clear()`` is refused), so "cancelled" never flips back.
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: Dict[int, Callable[[], None]] = {}
        self._next_id = 0
        self._cb_lock = threading.Lock()

    def set(self) -> None:
        with self._cb_lock:
            if self.is_set():
                return
            super().set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a failing callback must not stop the others
                _log.exception("cancellation callback failed")

    cancel = set

    @property
    def cancelled(self) -> bool:
        """Same as ``is_set()``."""
        return self.is_set()

    def clear(self) -> None:
        raise RuntimeError("a CancelEvent cannot be un-cancelled")

    def add_callback(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Runs ``callback`` when the event is set (at once if it already is).

        Returns a function that unregisters the callback.
        """
        with self._cb_lock:
            if not self.is_set():
                key = self._next_id
                self._next_id += 1
                self._callbacks[key] = callback

                def remove() -> None:
                    with self._cb_lock:
                        self._callbacks.pop(key, None)

                return remove
        callback()
        return lambda: None

    def link(self, parent: Optional["CancelEvent"]) -> Callable[[], None]:
        """Sets this event when ``parent`` is set; returns a function that undoes the link."""
        if parent is None:
            return lambda: None
        return parent.add_callback(self.set)
