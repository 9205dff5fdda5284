"""BoardError: a call the board refused or could not complete."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import grpc

from grpcboard._status import DecodeError, ErrorInfo, RpcStatus, try_decode_status
from grpcboard.v1 import error_pb2

__all__ = ["BoardError", "HistoryCompactedError", "DOMAIN", "STATUS_DETAILS_KEY"]

#: The ErrorInfo domain of every error the server sends.
DOMAIN = "grpcboard.dev"
#: The trailer that carries the serialized google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

_REASON_PREFIX = "ERROR_REASON_"

# Reasons after which the claim a call was made under is gone for good: stop working on the task.
_CLAIM_LOST_REASONS = frozenset(
    {
        "FENCING_TOKEN_STALE",
        "FENCING_TOKEN_INVALID",
        "LEASE_EXPIRED",
        "CLAIM_NOT_HELD",
        "TASK_FINISHED",
        "TASK_NOT_FOUND",
        "WORKFLOW_NOT_FOUND",
    }
)


class BoardError(Exception):
    """A call the board refused or could not complete.

    Attributes:
        code: The gRPC status code, e.g. ``grpc.StatusCode.FAILED_PRECONDITION``.
        reason: The ErrorInfo reason, an ``ErrorReason`` name without its ``ERROR_REASON_``
            prefix (e.g. ``"FENCING_TOKEN_STALE"``); ``""`` when the server sent none
            (transport failures, deadlines, cancellations). error.proto documents what to do
            for each reason.
        metadata: Facts that come with the reason, e.g. ``{"fencing_token": "7"}``.
        details: The status message.
        domain: The ErrorInfo domain (``"grpcboard.dev"``), ``""`` without ErrorInfo.
        status: The decoded google.rpc.Status, if the server sent one.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str = "",
        *,
        reason: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        domain: str = "",
        status: Optional[RpcStatus] = None,
    ) -> None:
        self.code: grpc.StatusCode = code
        self.details: str = details
        self.reason: str = reason
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.domain: str = domain
        self.status: Optional[RpcStatus] = status
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = self.code.name
        if self.reason:
            text += f" {self.reason}"
        if self.details:
            text += f": {self.details}"
        if self.metadata:
            text += " " + ", ".join(f"{k}={v}" for k, v in sorted(self.metadata.items()))
        return text

    @property
    def message(self) -> str:
        """Same as ``details``."""
        return self.details

    @property
    def reason_value(self) -> int:
        """The reason as an ``error_pb2.ErrorReason`` value (UNSPECIFIED if unknown to this client)."""
        try:
            return error_pb2.ErrorReason.Value(_REASON_PREFIX + self.reason)
        except ValueError:
            return error_pb2.ERROR_REASON_UNSPECIFIED

    @property
    def is_claim_lost(self) -> bool:
        """True when the claim this call was made under is gone for good (stale token, expired
        lease, ended claim, finished or deleted task): the worker must stop working on the task."""
        return self.reason in _CLAIM_LOST_REASONS

    @property
    def is_transient(self) -> bool:
        """True when retrying the same call later may succeed (server or store unavailable, a lost
        race, or a transport-level failure without a reason)."""
        if self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
            return True
        return self.code in (
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.CANCELLED,
        ) and self.reason == ""

    def __reduce__(self) -> Any:  # keep the keyword-only attributes when pickled
        return (_rebuild, (self.code, self.details, self.reason, self.metadata, self.domain))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "BoardError":
        """Wraps a grpc.RpcError (which is also a grpc.Call), decoding the rich status details."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
        if code is None:
            code = grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else "") or ""  # type: ignore[attr-defined]
        trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None  # type: ignore[attr-defined]
        blob: Optional[bytes] = None
        for key, value in trailers or ():
            if key == STATUS_DETAILS_KEY:
                blob = value if isinstance(value, bytes) else None
                break
        status = try_decode_status(blob)
        info: Optional[ErrorInfo] = None
        if status is not None:
            try:
                info = status.error_info()
            except DecodeError:
                info = None
        if not details and status is not None:
            details = status.message
        return _make(code, details, info, status)


def _make(code: grpc.StatusCode, details: str, info: Optional[ErrorInfo], status: Optional[RpcStatus]) -> BoardError:
    reason = info.reason if info else ""
    kind = HistoryCompactedError if reason == "HISTORY_COMPACTED" else BoardError
    return kind(
        code,
        details,
        reason=reason,
        metadata=info.metadata if info else None,
        domain=info.domain if info else "",
        status=status,
    )


def _rebuild(code: grpc.StatusCode, details: str, reason: str, metadata: Dict[str, str], domain: str) -> BoardError:
    return _make(code, details, ErrorInfo(reason, domain, metadata) if reason else None, None)


class HistoryCompactedError(BoardError):
    """OUT_OF_RANGE / HISTORY_COMPACTED: a watch asked for a revision older than the retained history.

    There is no way to resume without a gap: re-read the state you need (GetTask, ListTasks,
    ExportWorkflow), then watch again from ``oldest_revision`` or from the head.
    """

    @property
    def oldest_revision(self) -> Optional[int]:
        """The oldest revision that can still be watched from (metadata ``oldest_revision``)."""
        return _int_or_none(self.metadata.get("oldest_revision"))

    @property
    def head_revision(self) -> Optional[int]:
        """The workflow's head revision when the error was sent (metadata ``revision``)."""
        return _int_or_none(self.metadata.get("revision"))


def _int_or_none(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
