"""JSON encoding for payloads and results (msgspec: fast, strict, never pickle)."""

from __future__ import annotations

from typing import Any

import msgspec

from monoq.errors import SerializationError

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def json_encode(value: Any) -> bytes:
    """Encode a JSON value; anything else (sets, objects, NaN keys) is a SerializationError."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"not JSON-serialisable: {exc}") from exc


def json_decode(data: bytes | str) -> Any:
    """Decode JSON text; malformed input is a SerializationError."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise SerializationError(f"malformed JSON: {exc}") from exc
