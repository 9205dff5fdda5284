"""A small decoder for the ``grpc-status-details-bin`` trailer.

The trailer holds a serialized ``google.rpc.Status`` whose details hold one
``google.rpc.ErrorInfo``. Decoding it by hand keeps ``google/rpc/*.proto`` out of
protobuf's default descriptor pool, where it would clash with the copies that
googleapis-common-protos registers when a program also uses that package.

Wire format (see src/GrpcBoard.Api/Protos/google/rpc/)::

    message Status    { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
    message Any       { string type_url = 1; bytes value = 2; }
    message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple, Union

ERROR_INFO_TYPE = "google.rpc.ErrorInfo"

_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5


class DecodeError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class AnyMessage:
    """A ``google.protobuf.Any``: a type URL and the serialized message."""

    type_url: str
    value: bytes

    @property
    def type_name(self) -> str:
        """The full message name: the part of the type URL after the last '/'."""
        return self.type_url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ErrorInfo:
    """A ``google.rpc.ErrorInfo``."""

    reason: str = ""
    domain: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RpcStatus:
    """A ``google.rpc.Status``."""

    code: int = 0
    message: str = ""
    details: Tuple[AnyMessage, ...] = ()

    def error_info(self) -> Optional[ErrorInfo]:
        """The first ErrorInfo among the details, or None."""
        for detail in self.details:
            if detail.type_name == ERROR_INFO_TYPE:
                return decode_error_info(detail.value)
        return None


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint too long")


def _fields(buf: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """Yields (field number, wire type, value) for every field; unknown ones are for the caller to skip."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: Union[int, bytes]
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire_type == _I64:
            if pos + 8 > end:
                raise DecodeError("truncated fixed64")
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise DecodeError("truncated length-delimited field")
            value = bytes(buf[pos:pos + length])
            pos += length
        elif wire_type == _I32:
            if pos + 4 > end:
                raise DecodeError("truncated fixed32")
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            # Groups (3, 4) are proto2-only and never appear in these messages.
            raise DecodeError(f"unsupported wire type {wire_type}")
        yield number, wire_type, value


def _text(value: Union[int, bytes]) -> str:
    if not isinstance(value, bytes):
        raise DecodeError("expected a length-delimited field")
    return value.decode("utf-8", errors="replace")


def _int32(value: Union[int, bytes]) -> int:
    if not isinstance(value, int):
        raise DecodeError("expected a varint")
    value &= 0xFFFFFFFF  # int32 is sign-extended to 64 bits on the wire
    return value - (1 << 32) if value & 0x80000000 else value


def decode_any(buf: bytes) -> AnyMessage:
    type_url, value = "", b""
    for number, _, v in _fields(buf):
        if number == 1:
            type_url = _text(v)
        elif number == 2:
            if not isinstance(v, bytes):
                raise DecodeError("expected bytes")
            value = v
    return AnyMessage(type_url, value)


def decode_error_info(buf: bytes) -> ErrorInfo:
    reason, domain = "", ""
    metadata: Dict[str, str] = {}
    for number, _, v in _fields(buf):
        if number == 1:
            reason = _text(v)
        elif number == 2:
            domain = _text(v)
        elif number == 3:
            if not isinstance(v, bytes):
                raise DecodeError("expected a map entry")
            key, val = "", ""
            for n, _, ev in _fields(v):
                if n == 1:
                    key = _text(ev)
                elif n == 2:
                    val = _text(ev)
            metadata[key] = val  # map semantics: the last entry for a key wins
    return ErrorInfo(reason, domain, metadata)


def decode_status(buf: bytes) -> RpcStatus:
    """Parses a serialized google.rpc.Status; raises DecodeError on malformed input."""
    code, message = 0, ""
    details: List[AnyMessage] = []
    for number, _, v in _fields(buf):
        if number == 1:
            code = _int32(v)
        elif number == 2:
            message = _text(v)
        elif number == 3:
            if not isinstance(v, bytes):
                raise DecodeError("expected an Any")
            details.append(decode_any(v))
    return RpcStatus(code, message, tuple(details))


def try_decode_status(buf: Optional[bytes]) -> Optional[RpcStatus]:
    """Like decode_status, but None for empty or malformed input (no rich details to offer)."""
    if not buf:
        return None
    try:
        return decode_status(buf)
    except DecodeError:
        return None
