"""The rich-status decoder and BoardError, checked against protoc-compiled google.rpc messages."""

from __future__ import annotations

import pickle
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from grpcboard import BoardError, HistoryCompactedError, pb
from grpcboard._status import DecodeError, decode_status, try_decode_status

REPO = Path(__file__).resolve().parents[3]
RPC_PROTOS = REPO / "src" / "GrpcBoard.Api" / "Protos"


def _message_class(pool: descriptor_pool.DescriptorPool, name: str) -> Any:
    from google.protobuf import message_factory

    descriptor = pool.FindMessageTypeByName(name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


@pytest.fixture(scope="module")
def rpc_messages(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Any, Any, Any]:
    """google.rpc.Status, ErrorInfo and google.protobuf.Any compiled by protoc into a PRIVATE pool."""
    protoc = shutil.which("protoc") or "/usr/bin/protoc"
    out = tmp_path_factory.mktemp("rpc") / "rpc.pb"
    subprocess.run([protoc, f"-I{RPC_PROTOS}", "-I/usr/include", "--include_imports", f"--descriptor_set_out={out}",
                    "google/rpc/status.proto", "google/rpc/error_details.proto"], check=True, timeout=60)
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return (_message_class(pool, "google.rpc.Status"), _message_class(pool, "google.rpc.ErrorInfo"),
            _message_class(pool, "google.protobuf.Any"))


def _status_bytes(rpc_messages: Tuple[Any, Any, Any], code: int, message: str, reason: str,
                  metadata: Dict[str, str], extra_details: List[Tuple[str, bytes]] = ()) -> bytes:
    Status, ErrorInfo, Any_ = rpc_messages
    status = Status(code=code, message=message)
    for type_url, value in extra_details:
        status.details.append(Any_(type_url=type_url, value=value))
    info = ErrorInfo(reason=reason, domain="grpcboard.dev", metadata=metadata)
    status.details.append(Any_(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=info.SerializeToString()))
    return status.SerializeToString()


def test_decoder_matches_protoc_messages(rpc_messages: Tuple[Any, Any, Any]) -> None:
    blob = _status_bytes(rpc_messages, 9, "Task 'a' is claimed by w1. ✓", "TASK_ALREADY_CLAIMED",
                         {"owner": "w1", "lease_expire_time": "2026-01-01T00:00:00Z", "ünï": "cødé"},
                         extra_details=[("type.googleapis.com/google.rpc.RetryInfo", b"\x0a\x02\x08\x01")])
    status = decode_status(blob)
    assert status.code == 9
    assert status.message == "Task 'a' is claimed by w1. ✓"
    assert [d.type_name for d in status.details] == ["google.rpc.RetryInfo", "google.rpc.ErrorInfo"]
    info = status.error_info()
    assert info is not None
    assert info.reason == "TASK_ALREADY_CLAIMED"
    assert info.domain == "grpcboard.dev"
    assert info.metadata == {"owner": "w1", "lease_expire_time": "2026-01-01T00:00:00Z", "ünï": "cødé"}


def test_decoder_negative_code_and_unknown_fields(rpc_messages: Tuple[Any, Any, Any]) -> None:
    Status = rpc_messages[0]
    blob = Status(code=-5, message="m").SerializeToString()
    # Unknown fields of every wire type are skipped: varint 9, fixed64 10, fixed32 11, bytes 12.
    blob += b"\x48\x01" + b"\x51" + b"\x00" * 8 + b"\x5d" + b"\x00" * 4 + b"\x62\x03abc"
    status = decode_status(blob)
    assert (status.code, status.message, status.details) == (-5, "m", ())
    assert status.error_info() is None


@pytest.mark.parametrize("blob", [b"\x0a", b"\x12\x05ab", b"\x08", b"\x0b\x00", b"\x00\x01", b"\x08" + b"\xff" * 11])
def test_decoder_rejects_malformed_input(blob: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_status(blob)
    assert try_decode_status(blob) is None


def test_google_rpc_is_not_registered_in_the_default_pool() -> None:
    import grpcboard  # noqa: F401 - importing the whole package must not register google/rpc protos

    with pytest.raises(KeyError):
        descriptor_pool.Default().FindFileByName("google/rpc/status.proto")


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: Optional[List[Tuple[str, Any]]] = None) -> None:
        self._code, self._details, self._trailers = code, details, trailers or []

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> List[Tuple[str, Any]]:
        return self._trailers


def test_board_error_from_rpc_error(rpc_messages: Tuple[Any, Any, Any]) -> None:
    blob = _status_bytes(rpc_messages, 9, "stale", "FENCING_TOKEN_STALE", {"fencing_token": "12"})
    e = BoardError.from_rpc_error(FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "stale",
                                               [("date", "x"), ("grpc-status-details-bin", blob)]))
    assert type(e) is BoardError
    assert (e.code, e.reason, e.metadata, e.details, e.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION, "FENCING_TOKEN_STALE", {"fencing_token": "12"}, "stale", "grpcboard.dev")
    assert e.reason_value == pb.ERROR_REASON_FENCING_TOKEN_STALE
    assert e.is_claim_lost and not e.is_transient
    assert "FENCING_TOKEN_STALE" in str(e)
    clone = pickle.loads(pickle.dumps(e))
    assert (clone.code, clone.reason, clone.metadata) == (e.code, e.reason, e.metadata)


def test_history_compacted_gets_its_own_type(rpc_messages: Tuple[Any, Any, Any]) -> None:
    blob = _status_bytes(rpc_messages, 11, "old", "HISTORY_COMPACTED", {"oldest_revision": "30", "revision": "45"})
    e = BoardError.from_rpc_error(FakeRpcError(grpc.StatusCode.OUT_OF_RANGE, "old", [("grpc-status-details-bin", blob)]))
    assert isinstance(e, HistoryCompactedError)
    assert (e.oldest_revision, e.head_revision) == (30, 45)


def test_board_error_without_details() -> None:
    e = BoardError.from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert (e.reason, e.metadata, e.status) == ("", {}, None)
    assert e.is_transient and not e.is_claim_lost
    garbage = BoardError.from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "x", [("grpc-status-details-bin", b"\x0a")]))
    assert garbage.reason == "" and garbage.is_transient
    assert BoardError(grpc.StatusCode.UNKNOWN, "x", reason="FUTURE_REASON").reason_value == pb.ERROR_REASON_UNSPECIFIED


@pytest.mark.parametrize(
    "code,reason,claim_lost,transient",
    [
        (grpc.StatusCode.FAILED_PRECONDITION, "FENCING_TOKEN_STALE", True, False),
        (grpc.StatusCode.FAILED_PRECONDITION, "FENCING_TOKEN_INVALID", True, False),
        (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_EXPIRED", True, False),
        (grpc.StatusCode.FAILED_PRECONDITION, "CLAIM_NOT_HELD", True, False),
        (grpc.StatusCode.FAILED_PRECONDITION, "TASK_FINISHED", True, False),
        (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", True, False),
        (grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND", True, False),
        (grpc.StatusCode.FAILED_PRECONDITION, "TASK_ALREADY_CLAIMED", False, False),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", False, False),
        (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", False, True),
        (grpc.StatusCode.ABORTED, "CONFLICT", False, True),
        (grpc.StatusCode.UNAVAILABLE, "", False, True),
        (grpc.StatusCode.INTERNAL, "", False, True),
        (grpc.StatusCode.UNKNOWN, "", False, True),
        (grpc.StatusCode.CANCELLED, "", False, True),
        (grpc.StatusCode.INTERNAL, "STORE_DATA_LOSS", False, False),
        (grpc.StatusCode.DATA_LOSS, "STORE_DATA_LOSS", False, False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", False, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED", False, False),
    ],
)
def test_classification_matches_the_csharp_client(code: grpc.StatusCode, reason: str, claim_lost: bool,
                                                  transient: bool) -> None:
    e = BoardError(code, "x", reason=reason)
    assert e.is_claim_lost is claim_lost
    assert e.is_transient is transient
