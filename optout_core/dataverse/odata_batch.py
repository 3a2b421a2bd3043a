"""The Web API's ``$batch`` format (OData multipart/mixed): building a request, reading a response.

Pure functions over bytes. Dataverse insists on CRLF line endings (LF-only bodies are refused with
``0x80048d19``), allows at most 1,000 operations per batch, and answers with a boundary of its own
(``batchresponse_<guid>``) that must be read from the response's Content-Type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MAX_OPERATIONS = 1000
CRLF = b"\r\n"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


@dataclass(frozen=True, slots=True)
class Request:
    """One Web API request, sent alone or as a part of a ``$batch``."""

    method: str
    path: str  # from the environment root, e.g. /api/data/v9.2/contacts(<guid>)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """One answer: to a request sent alone, or to a part of a ``$batch``."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class BatchFormatError(ValueError):
    """The response is not the multipart document a $batch answer must be."""


def build(operations: Sequence[Request], *, boundary: str | None = None) -> tuple[str, bytes]:
    """The Content-Type and body of a ``$batch`` request: one part per operation, no changeset, so that
    with ``Prefer: odata.continue-on-error`` one failed part does not roll back the others."""
    if not operations or len(operations) > MAX_OPERATIONS:
        raise ValueError(f"a batch holds 1 to {MAX_OPERATIONS} operations, not {len(operations)}")
    if boundary is None:
        import uuid  # only where a $batch is built: a lone operation goes as itself

        boundary = f"batch_{uuid.uuid4()}"
    out = bytearray()
    for op in operations:
        out += b"--" + boundary.encode() + CRLF
        out += b"Content-Type: application/http" + CRLF + b"Content-Transfer-Encoding: binary" + CRLF + CRLF
        out += f"{op.method} {op.path} HTTP/1.1".encode() + CRLF
        for name, value in op.headers.items():
            out += f"{name}: {value}".encode() + CRLF
        out += CRLF
        if op.body:
            out += op.body
        out += CRLF
    out += b"--" + boundary.encode() + b"--" + CRLF
    return f"multipart/mixed; boundary={boundary}", bytes(out)


def parse(content_type: str, body: bytes) -> list[Response]:
    """The embedded responses of a ``$batch`` answer, in order (changeset responses flattened)."""
    match = _BOUNDARY.search(content_type or "")
    if match is None:
        raise BatchFormatError(f"no multipart boundary in Content-Type {content_type!r}")
    parts: list[Response] = []
    for part in _split(body, match.group(1).encode()):
        headers, content = _head(part)
        inner_type = headers.get("content-type", "")
        if inner_type.lower().startswith("multipart/mixed"):  # a changeset's responses
            parts.extend(parse(inner_type, content))
            continue
        status = _STATUS_LINE.match(content)
        if status is None:
            raise BatchFormatError("a part holds no HTTP status line")
        inner_headers, inner_body = _head(content.split(b"\n", 1)[1] if b"\n" in content else b"")
        parts.append(Response(int(status.group(1)), inner_headers, inner_body.rstrip(b"\r\n")))
    return parts


def _split(body: bytes, boundary: bytes) -> list[bytes]:
    delimiter = b"--" + boundary
    chunks = body.split(delimiter)
    if len(chunks) < 2:
        raise BatchFormatError("the body does not contain its boundary")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # the closing delimiter
            break
        parts.append(chunk.removeprefix(CRLF).removeprefix(b"\n"))
    return parts


def _head(block: bytes) -> tuple[dict[str, str], bytes]:
    """Headers (lower-case names) up to the first blank line, and what follows."""
    for separator in (CRLF + CRLF, b"\n\n"):
        head, found, rest = block.partition(separator)
        if found:
            break
    else:
        head, rest = block, b""
    headers = {}
    for line in head.splitlines():
        name, colon, value = line.decode("latin-1").partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, rest
