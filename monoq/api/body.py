"""Reading request bodies: content type, size and strict JSON, all checked before use.

The size limit (``api.max_body_bytes``) is litestar's ``request_max_body_size``: a
``Content-Length`` over it is refused before anything is read, and a chunked body is counted
as it streams and refused as soon as it passes the limit (413 either way).
"""

from typing import Any, Final

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection

from monoq.api.problems import Problem

_decoder: Final = msgspec.json.Decoder()


def header(connection: ASGIConnection[Any, Any, Any, Any], name: bytes) -> str | None:
    """The first value of the header ``name`` (given in lower case), or None: what
    ``connection.headers.get`` answers, read from the raw scope without building the
    case-insensitive multidict (a cost on every request)."""
    for key, value in connection.scope["headers"]:
        if key == name or key.lower() == name:
            return value.decode("latin-1")
    return None


def media_type(request: Request[Any, Any, Any]) -> str:
    """The request's media type without parameters, lower case ("" when absent)."""
    return (header(request, b"content-type") or "").split(";", 1)[0].strip().lower()


def is_json_type(kind: str) -> bool:
    """True for ``application/json`` and ``application/*+json``."""
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def require_json_type(request: Request[Any, Any, Any]) -> None:
    """415 unless the request says its body is JSON."""
    kind = media_type(request)
    if not is_json_type(kind):
        raise Problem(
            415,
            f"Content-Type must be application/json, got {kind or 'none'!r}",
            headers={"Accept-Post": "application/json"},
        )


def decode_json(raw: bytes) -> Any:
    """Strict JSON (UTF-8, one value, no NaN); 400 otherwise."""
    if not raw.strip():
        raise Problem(400, "the request body is empty; expected JSON")
    try:
        return _decoder.decode(raw)
    except UnicodeDecodeError:
        raise Problem(400, "the request body is not valid UTF-8") from None
    except RecursionError:
        raise Problem(400, "the JSON body is nested too deeply") from None
    except msgspec.ValidationError as exc:  # e.g. a number out of range (1e999)
        raise Problem(400, f"malformed JSON: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Problem(400, f"malformed JSON: {exc}") from None


async def read_json(request: Request[Any, Any, Any]) -> Any:
    """The body as JSON: 415 for another content type, 413 if too large, 400 if malformed."""
    require_json_type(request)
    return decode_json(await request.body())


async def read_json_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Like ``read_json`` but the body must be an object (422 otherwise)."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise Problem(422, "the request body must be a JSON object", field="body")
    return data
