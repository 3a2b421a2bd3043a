"""The ``$batch`` wire format (docs/dataverse-webapi.md §5): reading a ``multipart/mixed`` request into its
operations and changesets, strictly CRLF as Dataverse reads it, and writing the multipart answer.

Messages are the OData library's (Microsoft.OData.Core TextRes) or Microsoft's troubleshooting article's."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

from optout_dev.standin.responses import Response, phrase
from optout_dev.standin.tables import API_PREFIX

CRLF = b"\r\n"
_BOUNDARY_PARAMETER = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;,\s]+))', re.IGNORECASE)
_SEGMENT_NAME = re.compile(r"[^()/?$]+")
_CHANGESET_METHODS = ("POST", "PUT", "DELETE", "PATCH")
_UNEXPECTED_END = "Encountered an unexpected end of input while reading the batch payload."


class Unreadable(Exception):
    """The body's line endings are not CRLF (or the final CRLF is missing): Dataverse cannot read it."""


class Malformed(Exception):
    """The batch is readable but not a valid batch; answered 400 before anything runs."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Operation:
    method: str
    target: str  # the request line's URL as written
    headers: Message
    body: bytes
    content_id: str | None


@dataclass
class ChangesetPart:
    operations: list[Operation]


# ----- reading -------------------------------------------------------------------------------------------


def boundary(content_type: str) -> str | None:
    """The ``boundary`` parameter of a Content-Type, if any."""
    match = _BOUNDARY_PARAMETER.search(content_type or "")
    return (match.group(1) or match.group(2)) if match else None


def _has_bare_lf(data: bytes) -> bool:
    return b"\n" in data.replace(CRLF, b"")


def lf_framed(body: bytes, boundary: str) -> bool:
    """Whether a delimiter line is opened or closed by a bare LF (a body written with LF line endings)."""
    delimiter = re.escape(b"--" + boundary.encode("latin-1"))
    return (
        re.search(rb"(?<!\r)\n" + delimiter, body) is not None
        or re.search(delimiter + rb"(?:--)?[ \t]*\n", body) is not None
    )


def _find_delimiter(body: bytes, delimiter: bytes, start: int) -> int:
    """Index of the next CRLF that opens a delimiter line (CRLF--boundary then --, CRLF or padding)."""
    needle = CRLF + delimiter
    while True:
        index = body.find(needle, start)
        if index < 0:
            return -1
        follow = body[index + len(needle) : index + len(needle) + 2]
        if follow[:2] in (b"--", CRLF) or follow[:1] in (b" ", b"\t"):
            return index
        start = index + 1


def _multipart(body: bytes, boundary: str, *, final_crlf: bool) -> list[bytes]:
    """The parts of a CRLF multipart body (RFC 2046: the CRLF before a delimiter belongs to it)."""
    delimiter = b"--" + boundary.encode("latin-1")
    if body.startswith(delimiter):
        position = 0
    else:  # a preamble
        position = _find_delimiter(body, delimiter, 0)
        if position < 0:
            raise Malformed(_UNEXPECTED_END)
        position += 2
    parts: list[bytes] = []
    while True:
        after = position + len(delimiter)
        if body.startswith(b"--", after):  # the close delimiter
            if final_crlf and not body.startswith(CRLF, after + 2):
                raise Unreadable
            return parts
        line_end = body.find(CRLF, after)
        if line_end < 0 or body[after:line_end].strip(b" \t"):
            raise Malformed(_UNEXPECTED_END)
        start = line_end + 2
        following = _find_delimiter(body, delimiter, start - 2)
        if following < 0:
            raise Malformed(_UNEXPECTED_END)
        parts.append(body[start:following])
        position = following + 2


def _head_and_body(block: bytes) -> tuple[list[str], bytes]:
    head, separator, rest = block.partition(CRLF + CRLF)
    if not separator:
        head, rest = block.removesuffix(CRLF), b""
    if _has_bare_lf(head):
        raise Unreadable
    return (head.decode("latin-1").split("\r\n") if head else []), rest


def _headers(lines: Iterable[str]) -> Message:
    headers = Message()
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise Malformed(
                f"The message header '{line}' is invalid. The header value must be of the format "
                "'<header name>: <header value>'."
            )
        headers[name.strip()] = value.strip()
    return headers


def _media_type(mime: Message) -> str:
    return (mime.get("Content-Type") or "").split(";")[0].strip().lower()


def _parse_operation(mime: Message, content: bytes) -> Operation:
    transfer_encoding = (mime.get("Content-Transfer-Encoding") or "").strip().lower()
    if transfer_encoding != "binary":
        raise Malformed(
            "A missing or invalid 'Content-Transfer-Encoding' header was found. The 'Content-Transfer-Encoding' "
            "header must be specified for each batch operation, and its value must be 'binary'."
        )
    lines, body = _head_and_body(content)
    if not lines:
        raise Malformed(_UNEXPECTED_END)
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[0] or not request_line[1]:
        raise Malformed(
            f"The request line '{lines[0]}' is invalid. The request line at the start of each operation must be "
            "of the format 'HttpMethod RequestUrl HttpVersion'."
        )
    method, target, version = request_line
    if version != "HTTP/1.1":
        raise Malformed(
            f"The HTTP version '{version}' used in a batch operation request or response is not valid. The value "
            "must be 'HTTP/1.1'."
        )
    headers = _headers(lines[1:])
    content_id = mime.get("Content-ID") or headers.get("Content-ID")
    return Operation(method.upper(), target, headers, body, content_id.strip() if content_id else None)


def _parse_changeset(content: bytes, changeset_boundary: str) -> ChangesetPart:
    operations = []
    for inner in _multipart(content, changeset_boundary, final_crlf=False):
        inner_lines, inner_content = _head_and_body(inner)
        inner_mime = _headers(inner_lines)
        inner_type = _media_type(inner_mime)
        if inner_type == "multipart/mixed":
            raise Malformed("Nested change sets in a batch payload are not supported.")
        if inner_type != "application/http":
            raise Malformed(
                "The 'Content-Type' header is missing or invalid. Each operation of a change set must be "
                "'application/http'."
            )
        operation = _parse_operation(inner_mime, inner_content)
        if operation.method not in _CHANGESET_METHODS:
            raise Malformed(
                f"An invalid HTTP method '{operation.method}' was detected for a request in a change set. "
                "Requests in change sets only support the HTTP methods 'POST', 'PUT', 'DELETE', and 'PATCH'."
            )
        operations.append(operation)
    ids = [operation.content_id for operation in operations if operation.content_id]
    duplicates = sorted({cid for cid in ids if ids.count(cid) > 1})
    if duplicates:
        raise Malformed(
            f"The content ID '{duplicates[0]}' was found more than once in the same change set or same batch request."
        )
    return ChangesetPart(operations)


def parse_batch(body: bytes, batch_boundary: str) -> list[Operation | ChangesetPart]:
    """The batch's operations and changesets, or Unreadable/Malformed (nothing has run yet)."""
    items: list[Operation | ChangesetPart] = []
    for part in _multipart(body, batch_boundary, final_crlf=True):
        lines, content = _head_and_body(part)
        mime = _headers(lines)
        media_type = _media_type(mime)
        if not media_type:
            raise Malformed(
                "The 'Content-Type' header is missing. The 'Content-Type' header must be specified for each MIME "
                "part of a batch message."
            )
        if media_type == "application/http":
            items.append(_parse_operation(mime, content))
            continue
        changeset_boundary = boundary(mime.get("Content-Type", ""))
        if media_type != "multipart/mixed" or not changeset_boundary:
            raise Malformed(
                f"The 'Content-Type' header value '{mime.get('Content-Type')}' is invalid. When this is the start "
                "of the change set, the value must be 'multipart/mixed'; otherwise it must be 'application/http'."
            )
        items.append(_parse_changeset(content, changeset_boundary))
    return items


def entity_of(body: bytes) -> str:
    """The entity set the first operation of a (possibly unreadable) batch names, for the error message."""
    match = re.search(rb"(?:GET|PATCH|POST|PUT|DELETE) (\S+) HTTP/1\.1", body)
    if match is None:
        return ""
    path = urlsplit(match.group(1).decode("latin-1")).path
    resource = path.split(API_PREFIX, 1)[-1].lstrip("/")
    name = _SEGMENT_NAME.match(resource)
    return name.group(0) if name else ""


def prefers_continue_on_error(prefer: str | None) -> bool:
    for preference in (prefer or "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() in ("odata.continue-on-error", "continue-on-error"):
            return value.strip().strip('"').lower() in ("", "true")
    return False


# ----- writing -------------------------------------------------------------------------------------------


def embedded(response: Response, content_id: str | None = None) -> bytes:
    """One batch-response part: MIME headers, then the embedded HTTP response."""
    out = bytearray(b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n")
    if content_id is not None:
        out += f"Content-ID: {content_id}\r\n".encode("latin-1")
    out += CRLF
    out += f"HTTP/1.1 {response.status} {phrase(response.status)}\r\n".encode("latin-1")
    if response.status >= 400:
        out += f"REQ_ID: {uuid.uuid4()}\r\n".encode("latin-1")
    for name, value in response.headers:
        out += f"{name}: {value}\r\n".encode("latin-1")
    out += b"OData-Version: 4.0\r\n\r\n"
    if response.status not in (204, 304):
        out += response.body
    return bytes(out)


def multipart_body(boundary: str, parts: Sequence[bytes]) -> bytes:
    delimiter = b"--" + boundary.encode("latin-1")
    out = bytearray()
    for part in parts:
        out += delimiter + CRLF + part + CRLF
    out += delimiter + b"--" + CRLF
    return bytes(out)
