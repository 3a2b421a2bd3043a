"""A loopback stand-in for the Dataverse Web API: a faithful test double of documented behaviour,
for tests, the local demo and benchmarks; never a production default.

It serves ``http://127.0.0.1:<port>/api/data/v9.2/`` (``https://`` with ``tls=True``) over real HTTP/1.1
so that a client is exercised end to end (``requests``, keep-alive, timeouts, retries). What it answers,
and why (see shared/domain/dataverse-webapi.md §1-§6, §10 and the §12 checklist):

* ``Authorization: Bearer <token>`` is required; a missing, wrong or rotated-out token gets 401 with a
  ``WWW-Authenticate: Bearer authorization_uri=...`` challenge. ``app_user=False`` models an app
  registration without an application user: the token is accepted but every call gets
  403 ``0x80072560``.
* ``PATCH <entityset>(<guid>)`` with ``If-Match: *`` updates an existing row (204, ``OData-EntityId``)
  and answers 404 for a missing one (``error.code`` configurable: ``0x80040217`` or ``""`` as in
  Microsoft's example, so clients cannot come to depend on it).
* Unknown entity set -> 404 ``0x8006088a``; unknown column (body or ``$select``) -> 400 ``0x0``;
  malformed payload -> 400 ``0x80048d19``; stale ``If-Match`` etag -> 412.
* ``GET <entityset>(<guid>)`` (with ``$select``) and ``GET WhoAmI``.
* ``GET EntityDefinitions`` (``$select``; ``$filter`` of ``Property eq 'value'`` clauses joined by
  ``and``), ``GET EntityDefinitions(LogicalName='x')`` / ``(<MetadataId>)`` and
  ``.../Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata`` (empty: the stand-in's columns are
  Boolean and text, and Dataverse types statecode/statuscode as State/Status, not Picklist). These are
  the metadata reads the official Python SDK (PowerPlatform-Dataverse-Client 1.1.0) makes before
  ``records.update``/``records.get``: it resolves the entity set with
  ``EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&$filter=LogicalName eq 'contact'``
  and, when a value is a string, fetches the table's picklists to turn labels into option values.
* ``POST $batch`` (domain notes §5): ``multipart/mixed`` with CRLF line endings only; parts are
  ``application/http`` operations or ``changeset_`` multiparts; inner request lines may hold an absolute
  URL, an absolute path or a path relative to the service root (``$n`` Content-ID references inside a
  changeset). Every inner request goes through the same routing as a direct one (authorised by the
  outer request), sequentially and in order:

  - LF-only line endings, or no CRLF after the closing delimiter -> 400 whose multipart body holds one
    400 ``0x80048d19`` part "... Stream was not readable." (as Microsoft's troubleshooting article
    shows); nothing runs.
  - more than 1,000 operations (changeset contents counted), a GET inside a changeset, a nested
    changeset or a malformed part -> 400 JSON (not multipart), nothing runs. The OData library's own
    messages are used; their ``error.code`` (``0x80048d19``) is unconfirmed.
  - without ``Prefer: odata.continue-on-error`` the first failing part stops the batch: the answer
    carries that part's status (e.g. 400 or 404; a 429 part's ``Retry-After`` is copied onto it) and
    a multipart body with the parts run so far, the failing one last. Writes of earlier parts outside
    a changeset stay committed, as in Dataverse (only a changeset is a transaction).
  - with it the answer is 200 and every part carries its own status.
  - a changeset is atomic: its writes are applied to copies of the rows and committed together once
    every operation succeeded; a failing operation (or a conflicting concurrent change at commit)
    rolls the whole changeset back and the changeset answers with one ``application/http`` error part
    (OData 4.0's rule), not a ``changesetresponse_`` multipart. Operations after the failing one in
    that changeset do not run.
  - the answer's boundary is a fresh ``batchresponse_<guid>`` (``changesetresponse_<guid>`` nested).
* Service protection (``protection=ServiceProtection(...)``, §4), per user (every token the stand-in
  accepts authenticates its one user, so a refreshed token shares the budget, as in Dataverse): a
  sliding window of N requests (429 ``0x80072322``), C requests in flight (429 ``0x80072326``,
  ``Retry-After: 1``, immediately) and, optionally, combined execution time (429 ``0x80072321``). A
  ``$batch`` is one request however many operations it holds, but its whole execution time counts.
  ``latency`` adds a service time per operation (a ``$batch`` takes it once per inner operation, run
  in sequence as Dataverse does), so that concurrency limits and execution time can actually bite.
* Faults (429 with ``Retry-After``, 5xx, dropped connections, slow answers, expired tokens) are injected
  on demand or at a seeded random rate, ahead of authentication and routing, as a throttling or
  failing front end would answer. ``Fault(inner=True)`` applies to one operation inside a ``$batch``
  instead (so part 3 can answer 429 while the others succeed); an inner ``drop`` loses the whole
  batch answer after the operations before it ran, an inner ``after`` runs the operation, then reports
  the fault in its part.

Deliberate deviations, each one loud rather than silently different:

* The real service upserts on a PATCH without ``If-Match`` (creating a missing row) and creates on
  ``If-None-Match: *``. The stand-in never creates rows: it answers 400 ``STANDIN_UPSERT`` (resp.
  412) and appends a description to :attr:`DataverseStandIn.client_bugs`.
* Features the real service has but the stand-in does not model (``UpdateMultiple``, collection
  queries, POST/DELETE/PUT, ``$expand``, alternate keys, other metadata, other API versions) answer
  501 ``STANDIN_UNSUPPORTED`` (or 404 outside ``/api/data/v9.2/``) instead of guessing.
* Service protection is exact where Dataverse is loose: a windowed limit bites at once (Dataverse may
  let a burst run over for a while), ``Retry-After`` is the time until enough of the window has slid
  by (Dataverse lengthens it for clients that keep sending while throttled: not modelled), and a 429
  does not itself count toward any limit. One web server is modelled.
* An absolute URL inside a ``$batch`` is accepted whatever its host (Dataverse wants its own).
* 204 and 304 answers carry no ``Content-Length`` (RFC 9110 forbids it on 204); every other answer
  has one, so keep-alive framing is always explicit.
* Exact 401 bodies, the code for a wrong ``Content-Type`` and the metadata 404 are unconfirmed
  upstream; clients must branch on the HTTP status, not on these codes.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "API_PREFIX",
    "BOOLEAN_COLUMNS",
    "DEFAULT_TABLES",
    "ENTITY_SETS",
    "MAX_BATCH_OPERATIONS",
    "DataverseStandIn",
    "Fault",
    "RecordedRequest",
    "ServiceProtection",
    "WindowStats",
]

API_PREFIX = "/api/data/v9.2/"
HOST = "127.0.0.1"  # loopback only: the stand-in accepts any test token and must never be reachable

# Logical name -> entity set name (the URL segment, case-sensitive). Extra tables: pass entity_sets=.
ENTITY_SETS: dict[str, str] = {"contact": "contacts", "lead": "leads", "account": "accounts"}

# Two-option (Edm.Boolean) columns: the real service rejects "true"/1 for them, so the stand-in does too.
_CONSENT_COLUMNS = ("donotbulkemail", "donotemail", "donotbulkpostalmail", "donotpostalmail",
                    "donotphone", "donotfax", "donotsendmm", "followemail")
BOOLEAN_COLUMNS: frozenset[str] = frozenset(_CONSENT_COLUMNS)
_COMMON_COLUMNS = (*_CONSENT_COLUMNS, "emailaddress1", "emailaddress2", "emailaddress3",
                   "description", "statecode", "statuscode")  # description: somewhere a demo can note bounces
DEFAULT_TABLES: dict[str, frozenset[str]] = {
    "contact": frozenset({"contactid", *_COMMON_COLUMNS, "firstname", "lastname", "fullname"}),
    "lead": frozenset({"leadid", *_COMMON_COLUMNS, "firstname", "lastname", "fullname",
                       "companyname", "subject"}),
    "account": frozenset({"accountid", *_COMMON_COLUMNS, "name"}),
}

# Fixed identities so tests can assert on WhoAmI without reading them back first.
USER_ID = "5d3f2c1e-7a4b-4c2d-9e8f-0a1b2c3d4e5f"
BUSINESS_UNIT_ID = "b0e1d2c3-a4b5-4c6d-8e7f-901a2b3c4d5e"
ORGANIZATION_ID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SEGMENT = re.compile(r"(?P<name>[^()/]+)(?:\((?P<key>[^()]*)\))?")
# Real resources the stand-in does not model: answer 501 rather than a misleading 404.
_UNSUPPORTED_SEGMENTS = frozenset({"$metadata", "RetrieveTotalRecordCount"})
_MAX_BODY = 16 * 1024 * 1024
_THROTTLE_MESSAGE = "Number of requests exceeded the limit of 6000 over time window of 300 seconds."

# Service protection (domain notes §4; api-limits): Web API hex codes and messages.
_REQUESTS_CODE, _EXECUTION_CODE, _CONCURRENCY_CODE = "0x80072322", "0x80072321", "0x80072326"

# $batch (domain notes §5). Messages are the OData library's (Microsoft.OData.Core TextRes) or
# Microsoft's troubleshooting article's; 0x80048d19 is ODataClientPayloadError.
MAX_BATCH_OPERATIONS = 1000
_PAYLOAD_CODE = "0x80048d19"
_CRLF = b"\r\n"
_BOUNDARY_PARAMETER = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;,\s]+))', re.IGNORECASE)
_UNREADABLE_MESSAGE = ("Error identified in Payload provided by the user for Entity :'{entity}', For more "
                       "information on this error please follow this help link "
                       "https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : "
                       "System.ArgumentException: Stream was not readable.")
_TOO_MANY_PARTS = ("The current batch message contains too many parts. A maximum number of '{limit}' query "
                   "operations and change sets are allowed in a batch message.")
_TOO_MANY_IN_CHANGESET = ("The current change set contains too many operations. A maximum number of "
                          "'{limit}' operations are allowed in a change set.")
_CHANGESET_METHODS = ("POST", "PUT", "DELETE", "PATCH")

# EntityDefinitions: what the stand-in knows of its tables. Object type codes of the default tables are
# Dataverse's; MetadataIds are stable per logical name but not Dataverse's own (they differ per table).
_KNOWN_ENTITIES: dict[str, dict[str, Any]] = {
    "contact": {"SchemaName": "Contact", "PrimaryNameAttribute": "fullname", "ObjectTypeCode": 2,
                "IsCustomEntity": False},
    "account": {"SchemaName": "Account", "PrimaryNameAttribute": "name", "ObjectTypeCode": 1,
                "IsCustomEntity": False},
    "lead": {"SchemaName": "Lead", "PrimaryNameAttribute": "fullname", "ObjectTypeCode": 4,
             "IsCustomEntity": False},
}
_ENTITY_PROPERTIES = ("MetadataId", "LogicalName", "SchemaName", "EntitySetName", "LogicalCollectionName",
                      "PrimaryIdAttribute", "PrimaryNameAttribute", "ObjectTypeCode", "IsCustomEntity",
                      "IsActivity", "IsPrivate", "OwnershipType")
_FILTER_CLAUSE = re.compile(r"\s*(\w+)\s+eq\s+('(?:[^']|'')*'|true|false|null|-?\d+)\s*", re.IGNORECASE)
_DEFAULT_RETRY_AFTER_429 = 1.0  # Dataverse always sends Retry-After on 429; keep tests fast

# Default error.code / message per status for injected faults (§2, §4 of the domain notes).
_FAULT_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("0x80040265", "The operation was canceled by a plug-in."),  # a plug-in rejecting a valid update
    401: ("", "The access token is invalid or has expired."),
    403: ("0x80040220", "Principal user is missing a privilege required for this operation."),
    404: ("0x80040217", "The requested record was not found or you do not have sufficient permissions to view it."),
    408: ("", "The request timed out."),
    412: ("0x80060882", "The version of the existing record doesn't match the RowVersion property provided."),
    413: ("", "The request payload is too large."),
    429: ("0x80072322", _THROTTLE_MESSAGE),
    500: ("0x80040216", "An unexpected error occurred."),
    502: ("", "Bad Gateway"),
    503: ("", "Service Unavailable"),
    504: ("", "Gateway Timeout"),
}


@dataclass(frozen=True)
class Fault:
    """One injected failure. A fault applies before authentication and routing; with ``inner=True`` it
    applies to one operation inside a ``$batch`` instead (matched on the operation's method and path,
    consumed by the first operation that matches), the batch itself being served as usual."""

    status: int = 503
    retry_after: float | None = None  # seconds; sent as whole seconds, rounded up, like Dataverse
    code: str | None = None           # None -> the usual code for the status ("" allowed)
    message: str | None = None
    drop: bool = False                # close the connection without writing a byte
    delay: float = 0.0                # sleep first (provokes client read timeouts)
    method: str | None = None         # only requests with this method match (None = any)
    path_contains: str | None = None  # only requests whose path (with query) contains this match
    after: bool = False               # serve the request first (a write commits), then fail the answer:
                                      # the client cannot tell whether its write happened
    inner: bool = False               # match one operation inside a $batch (method/path are the inner
                                      # request's, path resolved to /api/data/v9.2/...), not an HTTP request

    def __post_init__(self) -> None:
        if not self.drop and not 400 <= self.status <= 599:
            raise ValueError(f"Fault.status must be an HTTP error status (400-599), got {self.status}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("Fault.retry_after must be >= 0")
        if self.delay < 0:
            raise ValueError("Fault.delay must be >= 0")

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method.upper() == method.upper())
                and (self.path_contains is None or self.path_contains in path))


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the stand-in received it; the Authorization header is never kept."""

    method: str
    path: str                # as sent, including the query string (inside a $batch: resolved to /api/data/...)
    headers: dict[str, str]
    body: bytes
    status: int              # status answered; 0 for a dropped connection
    batch: int | None = None  # the $batch's serial number (1, 2, ...): on the $batch request itself (in
                              # .requests) and on each operation it held (in .operations); else None


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    close: bool = False      # answer, then close (the request body could not be consumed)
    batch: int | None = None  # the serial number of the $batch this answers


@dataclass(frozen=True)
class ServiceProtection:
    """Dataverse's service protection limits, per user, scaled down for tests (domain notes §4).

    ``requests`` within a sliding ``window`` (seconds), ``concurrent`` requests in flight, and, when
    ``execution_ms`` is set, the combined execution time (milliseconds) of the requests that finished
    within the window. Dataverse's defaults are 6,000 / 300 s / 52 / 1,200,000 ms.
    """

    requests: int = 6000
    window: float = 300.0
    concurrent: int = 52
    execution_ms: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int) or self.requests < 1:
            raise ValueError("ServiceProtection.requests must be a positive whole number")
        if not self.window > 0:
            raise ValueError("ServiceProtection.window must be > 0 seconds")
        if isinstance(self.concurrent, bool) or not isinstance(self.concurrent, int) or self.concurrent < 1:
            raise ValueError("ServiceProtection.concurrent must be a positive whole number")
        if self.execution_ms is not None and not self.execution_ms > 0:
            raise ValueError("ServiceProtection.execution_ms must be > 0 (or None: not modelled)")

    @property
    def allowed_rate(self) -> float:
        """Requests per second the number-of-requests limit allows in the long run (N / window)."""
        return self.requests / self.window


@dataclass(frozen=True)
class WindowStats:
    """A snapshot of one user's service-protection accounting (see :meth:`DataverseStandIn.window_stats`).

    Counted are requests that reached the Web API authenticated (a ``$batch`` once); injected faults,
    401/403 answers and 429s are not. Times are ``time.monotonic()`` values.
    """

    protection: ServiceProtection | None
    admitted: int                 # requests served (each counted once toward the window)
    throttled: int                # 429s the protection answered, all codes
    throttled_by_code: dict[str, int]
    in_window: int                # admitted requests still inside the sliding window (0 without protection)
    execution_ms_in_window: float  # their combined execution time (finished requests only)
    in_flight: int
    peak_in_flight: int
    first_admitted: float | None
    last_admitted: float | None

    @property
    def allowed_rate(self) -> float | None:
        """N / window in requests per second; None without protection."""
        return None if self.protection is None else self.protection.allowed_rate

    @property
    def achieved_rate(self) -> float:
        """Admitted requests per second between the first and the last admission: (admitted - 1) / span;
        0.0 with fewer than two admissions."""
        if self.admitted < 2 or self.first_admitted is None or self.last_admitted is None:
            return 0.0
        span = self.last_admitted - self.first_admitted
        return (self.admitted - 1) / span if span > 0 else float("inf")


def _json(status: int, payload: Mapping[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Response(status, body, (("Content-Type", "application/json; odata.metadata=minimal"), *headers))


def _error(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = (),
           close: bool = False) -> _Response:
    response = _json(status, {"error": {"code": code, "message": message}}, headers)
    return _Response(response.status, response.body, response.headers, close=close)


def _unsupported(what: str) -> _Response:
    return _error(501, "STANDIN_UNSUPPORTED",
                  f"{what} exists in the real Web API but is not modelled by the stand-in.")


def _method_not_allowed(method: str, allow: str) -> _Response:
    return _error(405, "", f"The requested resource does not support http method '{method}'.",
                  (("Allow", allow),))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _normalise_id(row_id: str) -> str:
    if not isinstance(row_id, str) or not _GUID.fullmatch(row_id):
        raise ValueError(f"row id must be a hyphenated GUID, got {row_id!r}")
    return row_id.lower()


# ----- $batch: parsing -----------------------------------------------------------------------------------


class _Unreadable(Exception):
    """The body's line endings are not CRLF (or the final CRLF is missing): Dataverse cannot read it."""


class _Malformed(Exception):
    """The batch is readable but not a valid batch; answered 400 before anything runs."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Operation:
    method: str
    target: str              # the request line's URL as written
    headers: Message
    body: bytes
    content_id: str | None


@dataclass
class _ChangesetPart:
    operations: list[_Operation]


def _boundary(content_type: str) -> str | None:
    match = _BOUNDARY_PARAMETER.search(content_type or "")
    return (match.group(1) or match.group(2)) if match else None


def _has_bare_lf(data: bytes) -> bool:
    return b"\n" in data.replace(_CRLF, b"")


def _lf_framed(body: bytes, boundary: str) -> bool:
    """Whether a delimiter line is opened or closed by a bare LF (a body written with LF line endings)."""
    delimiter = re.escape(b"--" + boundary.encode("latin-1"))
    return re.search(rb"(?<!\r)\n" + delimiter, body) is not None or \
        re.search(delimiter + rb"(?:--)?[ \t]*\n", body) is not None


def _find_delimiter(body: bytes, delimiter: bytes, start: int) -> int:
    """Index of the next CRLF that opens a delimiter line (CRLF--boundary then --, CRLF or padding)."""
    needle = _CRLF + delimiter
    while True:
        index = body.find(needle, start)
        if index < 0:
            return -1
        follow = body[index + len(needle):index + len(needle) + 2]
        if follow[:2] in (b"--", _CRLF) or follow[:1] in (b" ", b"\t"):
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
            raise _Malformed("Encountered an unexpected end of input while reading the batch payload.")
        position += 2
    parts: list[bytes] = []
    while True:
        after = position + len(delimiter)
        if body.startswith(b"--", after):  # the close delimiter
            if final_crlf and not body.startswith(_CRLF, after + 2):
                raise _Unreadable
            return parts
        line_end = body.find(_CRLF, after)
        if line_end < 0 or body[after:line_end].strip(b" \t"):
            raise _Malformed("Encountered an unexpected end of input while reading the batch payload.")
        start = line_end + 2
        following = _find_delimiter(body, delimiter, start - 2)
        if following < 0:
            raise _Malformed("Encountered an unexpected end of input while reading the batch payload.")
        parts.append(body[start:following])
        position = following + 2


def _head_and_body(block: bytes) -> tuple[list[str], bytes]:
    head, separator, rest = block.partition(_CRLF + _CRLF)
    if not separator:
        head, rest = block.removesuffix(_CRLF), b""
    if _has_bare_lf(head):
        raise _Unreadable
    return (head.decode("latin-1").split("\r\n") if head else []), rest


def _headers(lines: Iterable[str]) -> Message:
    headers = Message()
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise _Malformed(f"The message header '{line}' is invalid. The header value must be of the format "
                             "'<header name>: <header value>'.")
        headers[name.strip()] = value.strip()
    return headers


def _parse_operation(mime: Message, content: bytes) -> _Operation:
    transfer_encoding = (mime.get("Content-Transfer-Encoding") or "").strip().lower()
    if transfer_encoding != "binary":
        raise _Malformed("A missing or invalid 'Content-Transfer-Encoding' header was found. The "
                         "'Content-Transfer-Encoding' header must be specified for each batch operation, and "
                         "its value must be 'binary'.")
    lines, body = _head_and_body(content)
    if not lines:
        raise _Malformed("Encountered an unexpected end of input while reading the batch payload.")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[0] or not request_line[1]:
        raise _Malformed(f"The request line '{lines[0]}' is invalid. The request line at the start of each "
                         "operation must be of the format 'HttpMethod RequestUrl HttpVersion'.")
    method, target, version = request_line
    if version != "HTTP/1.1":
        raise _Malformed(f"The HTTP version '{version}' used in a batch operation request or response is not "
                         "valid. The value must be 'HTTP/1.1'.")
    headers = _headers(lines[1:])
    content_id = mime.get("Content-ID") or headers.get("Content-ID")
    return _Operation(method.upper(), target, headers, body, content_id.strip() if content_id else None)


def _parse_batch(body: bytes, boundary: str) -> list[_Operation | _ChangesetPart]:
    """The batch's operations and changesets, or _Unreadable/_Malformed (nothing has run yet)."""
    items: list[_Operation | _ChangesetPart] = []
    for part in _multipart(body, boundary, final_crlf=True):
        lines, content = _head_and_body(part)
        mime = _headers(lines)
        media_type = (mime.get("Content-Type") or "").split(";")[0].strip().lower()
        if not media_type:
            raise _Malformed("The 'Content-Type' header is missing. The 'Content-Type' header must be specified "
                             "for each MIME part of a batch message.")
        if media_type == "application/http":
            items.append(_parse_operation(mime, content))
            continue
        if media_type != "multipart/mixed" or not _boundary(mime.get("Content-Type", "")):
            raise _Malformed(f"The 'Content-Type' header value '{mime.get('Content-Type')}' is invalid. When "
                             "this is the start of the change set, the value must be 'multipart/mixed'; "
                             "otherwise it must be 'application/http'.")
        operations = []
        for inner in _multipart(content, _boundary(mime.get("Content-Type", "")) or "", final_crlf=False):
            inner_lines, inner_content = _head_and_body(inner)
            inner_mime = _headers(inner_lines)
            inner_type = (inner_mime.get("Content-Type") or "").split(";")[0].strip().lower()
            if inner_type == "multipart/mixed":
                raise _Malformed("Nested change sets in a batch payload are not supported.")
            if inner_type != "application/http":
                raise _Malformed("The 'Content-Type' header is missing or invalid. Each operation of a change "
                                 "set must be 'application/http'.")
            operation = _parse_operation(inner_mime, inner_content)
            if operation.method not in _CHANGESET_METHODS:
                raise _Malformed(f"An invalid HTTP method '{operation.method}' was detected for a request in a "
                                 "change set. Requests in change sets only support the HTTP methods 'POST', "
                                 "'PUT', 'DELETE', and 'PATCH'.")
            operations.append(operation)
        ids = [operation.content_id for operation in operations if operation.content_id]
        duplicates = sorted({cid for cid in ids if ids.count(cid) > 1})
        if duplicates:
            raise _Malformed(f"The content ID '{duplicates[0]}' was found more than once in the same change set "
                             "or same batch request.")
        items.append(_ChangesetPart(operations))
    return items


def _entity_of(body: bytes) -> str:
    """The entity set the first operation of a (possibly unreadable) batch names, for the error message."""
    match = re.search(rb"(?:GET|PATCH|POST|PUT|DELETE) (\S+) HTTP/1\.1", body)
    if match is None:
        return ""
    path = urlsplit(match.group(1).decode("latin-1")).path
    resource = path.split(API_PREFIX, 1)[-1].lstrip("/")
    return _SEGMENT_NAME.match(resource).group(0) if _SEGMENT_NAME.match(resource) else ""


_SEGMENT_NAME = re.compile(r"[^()/?$]+")


def _prefers_continue_on_error(prefer: str | None) -> bool:
    for preference in (prefer or "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() in ("odata.continue-on-error", "continue-on-error"):
            return value.strip().strip('"').lower() in ("", "true")
    return False


def _embedded(response: _Response, content_id: str | None = None) -> bytes:
    """One batch-response part: MIME headers, then the embedded HTTP response."""
    out = bytearray(b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n")
    if content_id is not None:
        out += f"Content-ID: {content_id}\r\n".encode("latin-1")
    out += _CRLF
    out += f"HTTP/1.1 {response.status} {_phrase(response.status)}\r\n".encode("latin-1")
    if response.status >= 400:
        out += f"REQ_ID: {uuid.uuid4()}\r\n".encode("latin-1")
    for name, value in response.headers:
        out += f"{name}: {value}\r\n".encode("latin-1")
    out += b"OData-Version: 4.0\r\n\r\n"
    if response.status not in (204, 304):
        out += response.body
    return bytes(out)


def _multipart_body(boundary: str, parts: Sequence[bytes]) -> bytes:
    delimiter = b"--" + boundary.encode("latin-1")
    out = bytearray()
    for part in parts:
        out += delimiter + _CRLF + part + _CRLF
    out += delimiter + b"--" + _CRLF
    return bytes(out)


# ----- $batch: changesets ----------------------------------------------------------------------------------


class _Changeset:
    """The writes of one changeset, applied to copies of the rows until the changeset commits."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}   # working copies
        self.base: dict[tuple[str, str], int] = {}              # committed version when first touched
        self.etags: dict[tuple[str, str], str] = {}             # etag as this changeset sees the row
        self.conditional: set[tuple[str, str]] = set()          # rows written under a specific etag
        self.writes: list[tuple[str, str, dict[str, Any]]] = []


# ----- service protection -----------------------------------------------------------------------------------


@dataclass
class _UserLoad:
    """One user's service-protection accounting (guarded by the stand-in's lock)."""

    admitted_at: deque[float] = field(default_factory=deque)              # admissions inside the window
    executions: deque[tuple[float, float]] = field(default_factory=deque)  # (finished at, milliseconds)
    in_flight: int = 0
    peak_in_flight: int = 0
    admitted: int = 0
    first_admitted: float | None = None
    last_admitted: float | None = None
    throttled: dict[str, int] = field(default_factory=dict)


# ----- TLS: a self-signed certificate made with the standard library only ------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def _der_oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % d for d in range(3, int(p ** 0.5) + 1, 2))]


def _probable_prime(bits: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if any(candidate % p == 0 for p in _SMALL_PRIMES):
            continue
        d, r = candidate - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        for _ in range(40):  # Miller-Rabin
            x = pow(secrets.randbelow(candidate - 3) + 2, d, candidate)
            if x in (1, candidate - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, candidate)
                if x == candidate - 1:
                    break
            else:
                break
        else:
            return candidate


def _self_signed(host: str) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#1 private key PEM): RSA-2048, SHA-256, valid 30 days, SAN = host (an IP
    address) and localhost, CA:TRUE so that the certificate is its own trust anchor. Loopback tests only."""
    e = 65537
    while True:
        p_, q_ = _probable_prime(1024), _probable_prime(1024)
        phi = (p_ - 1) * (q_ - 1)
        if p_ != q_ and math.gcd(e, phi) == 1:
            break
    n, d = p_ * q_, pow(e, -1, phi)
    key = _seq(_der_int(0), _der_int(n), _der_int(e), _der_int(d), _der_int(p_), _der_int(q_),
               _der_int(d % (p_ - 1)), _der_int(d % (q_ - 1)), _der_int(pow(q_, -1, p_)))
    public_key = _seq(_der_int(n), _der_int(e))
    key_id = hashlib.sha1(public_key).digest()
    sha256_rsa = _seq(_der_oid("1.2.840.113549.1.1.11"), b"\x05\x00")
    name = _seq(_der(0x31, _seq(_der_oid("2.5.4.3"), _der(0x0C, b"dataverse-standin"))))
    now = datetime.datetime.now(datetime.timezone.utc)
    validity = _seq(*(_der(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
                      for moment in (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))))
    spki = _seq(_seq(_der_oid("1.2.840.113549.1.1.1"), b"\x05\x00"), _der(0x03, b"\x00" + public_key))
    critical = _der(0x01, b"\xff")
    san = _der(0x87, socket.inet_aton(host)) + _der(0x82, b"localhost")
    extensions = [
        _seq(_der_oid("2.5.29.19"), critical, _der(0x04, _seq(critical))),               # CA:TRUE
        _seq(_der_oid("2.5.29.15"), critical, _der(0x04, _der(0x03, b"\x02\xa4"))),      # digitalSignature,
                                                                                        # keyEncipherment, keyCertSign
        _seq(_der_oid("2.5.29.37"), _der(0x04, _seq(_der_oid("1.3.6.1.5.5.7.3.1")))),     # serverAuth
        _seq(_der_oid("2.5.29.14"), _der(0x04, _der(0x04, key_id))),                      # subjectKeyIdentifier
        _seq(_der_oid("2.5.29.35"), _der(0x04, _seq(_der(0x80, key_id)))),                # authorityKeyIdentifier
        _seq(_der_oid("2.5.29.17"), _der(0x04, _seq(san))),                               # subjectAltName
    ]
    tbs = _seq(_der(0xA0, _der_int(2)), _der_int(secrets.randbits(63) | 1), sha256_rsa, name, validity, name,
               spki, _der(0xA3, _seq(*extensions)))
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(tbs).digest()
    size = (n.bit_length() + 7) // 8
    padded = b"\x00\x01" + b"\xff" * (size - 3 - len(digest_info)) + b"\x00" + digest_info
    signature = pow(int.from_bytes(padded, "big"), d, n).to_bytes(size, "big")
    certificate = _seq(tbs, sha256_rsa, _der(0x03, b"\x00" + signature))

    def pem(label: str, der: bytes) -> bytes:
        text = base64.b64encode(der).decode("ascii")
        lines = [text[i:i + 64] for i in range(0, len(text), 64)]
        return f"-----BEGIN {label}-----\n{chr(10).join(lines)}\n-----END {label}-----\n".encode("ascii")

    return pem("CERTIFICATE", certificate), pem("RSA PRIVATE KEY", key)


_CERTIFICATE_LOCK = threading.Lock()
_CERTIFICATE: tuple[bytes, bytes] | None = None


def _certificate() -> tuple[bytes, bytes]:
    """One key pair per process: generating RSA keys in pure Python takes a moment."""
    global _CERTIFICATE
    with _CERTIFICATE_LOCK:
        if _CERTIFICATE is None:
            _CERTIFICATE = _self_signed(HOST)
        return _CERTIFICATE


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = False   # a second server must not share the port and steal requests
    standin: DataverseStandIn
    tls: ssl.SSLContext | None = None

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's getfqdn(): a reverse DNS lookup can stall start-up.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        # Track every connection before its thread starts, so stop() can close idle keep-alive
        # connections and join their threads (no handler thread outlives stop()).
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name="dataverse-standin-conn", daemon=True)
        self.standin._track(request, thread)
        thread.start()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            # Handshake here, in the connection's thread, so a slow client cannot stall accept().
            # Wrapping detaches the plain socket: track the TLS one so stop() can still close it.
            try:
                secure = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ValueError):
                return
            self.standin._retrack(request, secure)
            request = secure
        super().finish_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        request = self.standin._untrack(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # quiet: clients hanging up mid-answer are expected in fault tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't stall on delayed ACKs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def _dispatch(self) -> None:
        self.server.standin._serve(self)

    do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class DataverseStandIn:
    """The stand-in server plus the state it serves (rows, faults, recorded traffic).

    ``protection``: service-protection limits to enforce (None: none). ``latency``: service time in
    seconds per operation (a ``$batch`` takes it once per inner operation). ``tls``: serve ``https://``
    with a self-signed certificate (see :attr:`ca_file`); generating its key takes a second or two, once
    per process.
    """

    def __init__(self, *, token: str = "local-token", tables: Mapping[str, Iterable[str]] | None = None,
                 app_user: bool = True, not_found_code: str = "0x80040217",
                 entity_sets: Mapping[str, str] | None = None, port: int = 0,
                 protection: ServiceProtection | None = None, latency: float = 0.0,
                 tls: bool = False) -> None:
        if not token:
            raise ValueError("token must not be empty")
        if protection is not None and not isinstance(protection, ServiceProtection):
            raise TypeError(f"protection must be a ServiceProtection, got {type(protection).__name__}")
        if not latency >= 0:
            raise ValueError("latency must be >= 0 seconds")
        sets = {**ENTITY_SETS, **(entity_sets or {})}
        source = DEFAULT_TABLES if tables is None else tables
        self._columns: dict[str, frozenset[str]] = {}
        self._set_to_table: dict[str, str] = {}
        for table, columns in source.items():
            if table not in sets:
                raise ValueError(f"no entity set known for table {table!r}; pass entity_sets={{{table!r}: ...}}")
            self._columns[table] = frozenset(columns) | {f"{table}id"}
            self._set_to_table[sets[table]] = table
        self._entity_sets = {table: sets[table] for table in self._columns}
        self._token = token
        self._app_user = app_user
        self._not_found_code = not_found_code
        self._port = port
        self._protection = protection
        self._latency = float(latency)
        self._tls = tls
        self._tls_dir: str | None = None
        self._ca_file: str | None = None
        self.user_id = USER_ID
        self.business_unit_id = BUSINESS_UNIT_ID
        self.organization_id = ORGANIZATION_ID

        self._lock = threading.Lock()  # guards every piece of state below
        self._rows: dict[str, dict[str, dict[str, Any]]] = {table: {} for table in self._columns}
        self._versions: dict[tuple[str, str], int] = {}
        self._rowversion = 1000  # one counter for all rows, like Dataverse's versionnumber
        self._faults: list[Fault] = []
        self._rate = 0.0
        self._rate_faults: tuple[Fault, ...] = ()
        self._rng = random.Random(0)
        self._requests: list[RecordedRequest] = []
        self._operations: list[RecordedRequest] = []
        self._batches = 0
        self._writes: list[tuple[str, str, dict[str, Any]]] = []
        self._client_bugs: list[str] = []
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._secure: dict[socket.socket, socket.socket] = {}  # plain socket -> its TLS wrapper
        self._loads: dict[str, _UserLoad] = {}

        self._lifecycle = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # wakes handlers sleeping on a Fault.delay
        self._url: str | None = None

    # ----- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with ``tls=True``; kept after stop(), so tests can
        check the port is free)."""
        if self._url is None:
            raise RuntimeError("the stand-in has not been started")
        return self._url

    @property
    def ca_file(self) -> str:
        """With ``tls=True``, while running: the PEM file of the stand-in's self-signed certificate, for a
        client to trust (``requests``: ``verify=ca_file`` or ``REQUESTS_CA_BUNDLE=ca_file``, which is how
        the official Python SDK, which refuses ``http://`` URLs, can be pointed at the stand-in)."""
        if self._ca_file is None:
            raise RuntimeError("no certificate: the stand-in runs without tls=True or is not running")
        return self._ca_file

    def start(self) -> DataverseStandIn:
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the stand-in is already running")
            server = _Server((HOST, self._port), _Handler)
            server.standin = self
            if self._tls:
                try:
                    server.tls = self._tls_context()
                except BaseException:
                    server.server_close()
                    raise
            self._stopping.clear()
            self._url = f"{'https' if self._tls else 'http'}://{HOST}:{server.server_address[1]}"
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="dataverse-standin", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()      # stop accepting
        server.server_close()  # free the port
        thread.join()
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:  # wake handlers blocked reading an idle keep-alive connection
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, handler_thread in connections:
            handler_thread.join(timeout=5)
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = self._ca_file = None

    def _tls_context(self) -> ssl.SSLContext:
        certificate, key = _certificate()
        directory = tempfile.mkdtemp(prefix="dataverse-standin-")
        cert_file, key_file = os.path.join(directory, "standin-cert.pem"), os.path.join(directory, "key.pem")
        with open(cert_file, "wb") as out:
            out.write(certificate)
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(key)
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            if os.path.exists(key_file):
                os.remove(key_file)  # loaded: no need to leave the key on disk
        self._tls_dir, self._ca_file = directory, cert_file
        return context

    def __enter__(self) -> DataverseStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _track(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections[sock] = thread

    def _retrack(self, plain: socket.socket, secure: socket.socket) -> None:
        with self._lock:
            thread = self._connections.pop(plain, None)
            if thread is not None:
                self._connections[secure] = thread
            self._secure[plain] = secure

    def _untrack(self, sock: socket.socket) -> socket.socket:
        """Forget a connection; returns the socket to close (the TLS one, when it was wrapped)."""
        with self._lock:
            sock = self._secure.pop(sock, sock)
            self._connections.pop(sock, None)
            return sock

    # ----- state for tests ---------------------------------------------------------------------------

    def _table(self, table: str) -> str:
        if table not in self._columns:
            raise ValueError(f"unknown table {table!r}; known: {sorted(self._columns)}")
        return table

    def add_row(self, table: str, row_id: str, **values: Any) -> None:
        """Seed (or replace) a row; values are stored as given, column names are validated."""
        table = self._table(table)
        row_id = _normalise_id(row_id)
        pk = f"{table}id"
        # "column@annotation" keys (FormattedValue, lookuplogicalname) seed the annotations a GET returns.
        unknown = {key.split("@", 1)[0] for key in values} - self._columns[table]
        if unknown:
            raise ValueError(f"unknown column(s) for {table}: {sorted(unknown)}")
        if pk in values and str(values[pk]).lower() != row_id:
            raise ValueError(f"{pk}={values[pk]!r} differs from row_id {row_id!r}")
        with self._lock:
            self._rows[table][row_id] = {**copy.deepcopy(values), pk: row_id}
            self._bump(table, row_id)

    def delete_row(self, table: str, row_id: str) -> None:
        """Remove a row (as a merge or delete would); KeyError if it does not exist."""
        table = self._table(table)
        row_id = _normalise_id(row_id)
        with self._lock:
            del self._rows[table][row_id]
            self._versions.pop((table, row_id), None)

    def row(self, table: str, row_id: str) -> dict[str, Any] | None:
        table = self._table(table)
        row_id = _normalise_id(row_id)
        with self._lock:
            found = self._rows[table].get(row_id)
            return copy.deepcopy(found) if found is not None else None

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        table = self._table(table)
        with self._lock:
            return copy.deepcopy(self._rows[table])

    def inject(self, *faults: Fault, times: int = 1) -> None:
        """Queue faults; each request consumes the first queued fault it matches (FIFO). Inner faults
        (``Fault(inner=True)``) are consumed by operations inside a ``$batch`` only, the others by HTTP
        requests only."""
        if times < 1:
            raise ValueError("times must be >= 1")
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._lock:
            self._faults.extend(fault for fault in faults for _ in range(times))

    def set_fault_rate(self, rate: float, faults: Sequence[Fault], seed: int = 0) -> None:
        """Answer a fraction of requests with a fault drawn from ``faults``; reproducible for a seed. Inner
        faults in the list apply, at the same rate, to operations inside a ``$batch``."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        faults = tuple(faults)
        if rate > 0 and not faults:
            raise ValueError("a positive rate needs at least one fault")
        with self._lock:
            self._rate = rate
            self._rate_faults = faults
            self._rng = random.Random(seed)

    @property
    def pending_faults(self) -> int:
        """Queued faults not consumed yet."""
        with self._lock:
            return len(self._faults)

    def rotate_token(self, new_token: str) -> None:
        """Accept only ``new_token`` from now on: the old one gets 401, as an expired token would."""
        if not new_token:
            raise ValueError("token must not be empty")
        with self._lock:
            self._token = new_token

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received, in the order answered (a ``$batch`` is one)."""
        with self._lock:
            return list(self._requests)

    @property
    def operations(self) -> list[RecordedRequest]:
        """Every operation run inside a ``$batch``, in order (``batch`` names its ``$batch``); requests
        sent on their own are in :attr:`requests` only. Operations of a changeset that was rolled back
        keep the status they answered before the rollback; :attr:`writes` holds only committed writes."""
        with self._lock:
            return list(self._operations)

    @property
    def throttled(self) -> int:
        """How many 429s the service protection answered (injected faults not counted)."""
        with self._lock:
            return sum(sum(load.throttled.values()) for load in self._loads.values())

    def window_stats(self) -> WindowStats:
        """The user's service-protection accounting now, e.g. for a benchmark to compare the achieved
        rate with the allowed one (``stats.achieved_rate`` vs ``stats.allowed_rate``). Works without
        protection too (limits None, nothing in the window)."""
        now = time.monotonic()
        with self._lock:
            load = self._loads.get(self.user_id) or _UserLoad()
            self._slide(load, now)
            return WindowStats(
                protection=self._protection, admitted=load.admitted, throttled=sum(load.throttled.values()),
                throttled_by_code=dict(load.throttled), in_window=len(load.admitted_at),
                execution_ms_in_window=sum(ms for _, ms in load.executions), in_flight=load.in_flight,
                peak_in_flight=load.peak_in_flight, first_admitted=load.first_admitted,
                last_admitted=load.last_admitted)

    @property
    def writes(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(table, id, applied changes) for every successful PATCH, in order."""
        with self._lock:
            return copy.deepcopy(self._writes)

    @property
    def client_bugs(self) -> list[str]:
        """Protocol misuse the real service would not report (e.g. a PATCH that would upsert)."""
        with self._lock:
            return list(self._client_bugs)

    # ----- serving --------------------------------------------------------------------------------------

    def _bump(self, table: str, row_id: str) -> str:
        # caller holds the lock
        self._rowversion += 1
        self._versions[(table, row_id)] = self._rowversion
        return _etag(self._rowversion)

    def _bug(self, description: str) -> None:
        with self._lock:
            self._client_bugs.append(description)

    def _serve(self, handler: _Handler) -> None:
        method, path = handler.command, handler.path
        headers: dict[str, str] = {}
        for name, value in handler.headers.items():
            if name.lower() != "authorization":  # never keep tokens
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body, response = self._read_body(handler)
        batch = None
        if response is None:
            fault = self._pick_fault(method, path)
            if fault is None or fault.after:
                try:
                    response = self._route(method, path, handler.headers, body)
                except Exception as exc:  # a stand-in bug must surface as a loud 500, not a hang
                    response = _error(500, "STANDIN_INTERNAL", f"stand-in failure: {exc!r}")
                batch = response.batch
            if fault is not None:
                response = self._fault_response(fault)
        # Record before answering: a test may inspect requests the moment its client returns.
        with self._lock:
            self._requests.append(RecordedRequest(method, path, headers, body,
                                                  0 if response.drop else response.status, batch))
        self._send(handler, response)

    def _read_body(self, handler: _Handler) -> tuple[bytes, _Response | None]:
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            return b"", _error(400, "STANDIN_UNSUPPORTED", "Chunked request bodies are not supported; "
                               "send Content-Length.", close=True)
        raw = handler.headers.get("Content-Length")
        if raw is None:
            return b"", None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            return b"", _error(400, "", f"Invalid Content-Length {raw!r}.", close=True)
        if length > _MAX_BODY:
            return b"", _error(413, "", "The request payload is too large.", close=True)
        try:
            body = handler.rfile.read(length)
        except OSError:
            body = b""
        if len(body) < length:
            return body, _Response(0, drop=True)  # client went away mid-body
        return body, None

    def _pick_fault(self, method: str, path: str, inner: bool = False) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.inner == inner and fault.matches(method, path):
                    return self._faults.pop(index)
            # Exactly one draw per request (plus one choice on a hit): same traffic, same faults. An
            # operation inside a $batch draws only when some rate fault is an inner one, so adding
            # batches to a test never shifts the faults its plain requests get.
            if self._rate > 0 and (not inner or any(fault.inner for fault in self._rate_faults)):
                if self._rng.random() < self._rate:
                    candidates = [fault for fault in self._rate_faults
                                  if fault.inner == inner and fault.matches(method, path)]
                    if candidates:
                        return self._rng.choice(candidates)
        return None

    def _fault_response(self, fault: Fault) -> _Response:
        if fault.delay and self._stopping.wait(fault.delay):
            return _Response(0, drop=True)  # stopping: don't keep the client (or stop()) waiting
        if fault.drop:
            return _Response(0, drop=True)
        default_code, default_message = _FAULT_DEFAULTS.get(fault.status, ("", _phrase(fault.status)))
        headers: list[tuple[str, str]] = []
        retry_after = fault.retry_after
        if retry_after is None and fault.status == 429:
            retry_after = _DEFAULT_RETRY_AFTER_429
        if retry_after is not None:
            headers.append(("Retry-After", str(math.ceil(retry_after))))
        if fault.status == 401:
            headers.append(("WWW-Authenticate", self._challenge()))
        return _error(fault.status, default_code if fault.code is None else fault.code,
                      default_message if fault.message is None else fault.message, tuple(headers))

    def _challenge(self) -> str:
        return ("Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize, "
                f"resource_id={self._url}")

    def _send(self, handler: _Handler, response: _Response) -> None:
        if response.drop:
            # No bytes at all: the client must see a connection error, not an empty answer.
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            handler.send_response(response.status)
            for name, value in response.headers:
                handler.send_header(name, value)
            handler.send_header("OData-Version", "4.0")
            handler.send_header("x-ms-service-request-id", str(uuid.uuid4()))
            if response.status not in (204, 304):
                handler.send_header("Content-Length", str(len(response.body)))
            if response.close:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()
            if response.body and handler.command != "HEAD" and response.status not in (204, 304):
                handler.wfile.write(response.body)
        except OSError:
            handler.close_connection = True  # the client hung up (e.g. its read timeout fired)

    # ----- the Web API ------------------------------------------------------------------------------

    def _route(self, method: str, raw_path: str, headers: Message, body: bytes) -> _Response:
        split = urlsplit(raw_path)
        path = unquote(split.path)
        if not path.startswith(API_PREFIX):
            return _error(404, "", f"The resource '{path}' was not found (the stand-in serves {API_PREFIX} only).")

        scheme, _, presented = (headers.get("Authorization") or "").strip().partition(" ")
        with self._lock:
            token = self._token
        if scheme.lower() != "bearer" or presented.strip() != token:
            message = ("The request is not authenticated: no bearer token." if not scheme
                       else "The access token is invalid or has expired.")
            return _error(401, "", message, (("WWW-Authenticate", self._challenge()),))
        if not self._app_user:
            return _error(403, "0x80072560", "The user is not a member of the organization.")

        # Service protection applies to authenticated users' requests, a $batch counting once.
        started = time.monotonic()
        refused, load, limits = self._admit(started)
        if refused is not None:
            return refused
        try:
            is_batch = path[len(API_PREFIX):].partition("/")[0] == "$batch"
            if not is_batch and not self._pause(self._latency):  # a $batch pauses per operation
                return _Response(0, drop=True)
            response = self._dispatch(method, raw_path, headers, body)
        finally:
            self._release(load, started)
        if limits:
            response = _Response(response.status, response.body, (*response.headers, *limits), response.drop,
                                 response.close, response.batch)
        return response

    def _pause(self, seconds: float) -> bool:
        """Sleep for a service time; False when the stand-in is stopping meanwhile."""
        return seconds <= 0 or not self._stopping.wait(seconds)

    # ----- service protection ------------------------------------------------------------------------------

    def _slide(self, load: _UserLoad, now: float) -> None:
        # caller holds the lock
        if self._protection is None:
            return
        horizon = now - self._protection.window
        while load.admitted_at and load.admitted_at[0] <= horizon:
            load.admitted_at.popleft()
        while load.executions and load.executions[0][0] <= horizon:
            load.executions.popleft()

    def _admit(self, now: float) -> tuple[_Response | None, _UserLoad, tuple[tuple[str, str], ...]]:
        """Admit one request of the user, or the 429 the service protection answers instead.

        A refused request does not count toward any limit: only requests Dataverse processes are
        counted in its windows (the api-limits article counts "requests sent by a user" that it serves;
        its growing Retry-After for clients that keep sending while throttled is not modelled).
        """
        with self._lock:
            load = self._loads.setdefault(self.user_id, _UserLoad())
            limits: tuple[tuple[str, str], ...] = ()
            protection = self._protection
            if protection is not None:
                self._slide(load, now)
                refusal: tuple[str, str, float] | None = None
                spent = sum(ms for _, ms in load.executions)
                if load.in_flight >= protection.concurrent:
                    # Checked first: Dataverse answers these at once, whatever the windows hold.
                    refusal = (_CONCURRENCY_CODE, "Number of concurrent requests exceeded the limit of "
                                                  f"{protection.concurrent}.", 1.0)
                elif len(load.admitted_at) >= protection.requests:
                    # One more fits once the oldest admissions that make the window full have slid out.
                    oldest = load.admitted_at[len(load.admitted_at) - protection.requests]
                    refusal = (_REQUESTS_CODE, f"Number of requests exceeded the limit of {protection.requests} "
                                               f"over time window of {protection.window:g} seconds.",
                               oldest + protection.window - now)
                elif protection.execution_ms is not None and spent > protection.execution_ms:
                    wait, left = protection.window, spent
                    for finished, ms in load.executions:
                        left -= ms
                        if left <= protection.execution_ms:
                            wait = finished + protection.window - now
                            break
                    limit = protection.execution_ms
                    shown = f"{int(limit):,}" if float(limit).is_integer() else f"{limit:,}"
                    refusal = (_EXECUTION_CODE, "Combined execution time of incoming requests exceeded limit of "
                                                f"{shown} milliseconds over time window of {protection.window:g} "
                                                "seconds. Decrease number of concurrent requests or reduce the "
                                                "duration of requests and try again later.", wait)
                if refusal is not None:
                    code, message, wait = refusal
                    load.throttled[code] = load.throttled.get(code, 0) + 1
                    retry_after = str(max(1, math.ceil(wait)))
                    return _error(429, code, message, (("Retry-After", retry_after),)), load, ()
                load.admitted_at.append(now)
                # Debugging aids Dataverse sends too (never drive throttling from them, §4).
                limits = (("x-ms-ratelimit-burst-remaining-xrm-requests",
                           str(protection.requests - len(load.admitted_at))),)
                if protection.execution_ms is not None:
                    limits += (("x-ms-ratelimit-time-remaining-xrm-requests",
                                f"{max(0.0, protection.execution_ms - spent):.0f}"),)
            load.admitted += 1
            load.first_admitted = now if load.first_admitted is None else load.first_admitted
            load.last_admitted = now
            load.in_flight += 1
            load.peak_in_flight = max(load.peak_in_flight, load.in_flight)
            return None, load, limits

    def _release(self, load: _UserLoad, started: float) -> None:
        now = time.monotonic()
        with self._lock:
            load.in_flight -= 1
            if self._protection is not None:
                load.executions.append((now, (now - started) * 1000.0))

    # ----- routing -----------------------------------------------------------------------------------------

    def _dispatch(self, method: str, raw_path: str, headers: Message, body: bytes,
                  changeset: _Changeset | None = None, inner: bool = False) -> _Response:
        """An authenticated, admitted request (or an operation inside a $batch) to its resource."""
        split = urlsplit(raw_path)
        path = unquote(split.path)
        if not path.startswith(API_PREFIX):
            return _error(404, "", f"The resource '{path}' was not found (the stand-in serves {API_PREFIX} only).")
        resource = path[len(API_PREFIX):]
        query = parse_qs(split.query, keep_blank_values=True)
        first, _, rest = resource.partition("/")
        if first == "$batch" and not rest:
            if inner:
                return _error(400, _PAYLOAD_CODE, "Batch requests can't contain other batch requests.")
            return self._batch(method, headers, body)
        if first in ("WhoAmI", "WhoAmI()") and not rest:
            if method != "GET":
                return _method_not_allowed(method, "GET")
            return _json(200, {
                "@odata.context": f"{self._url}{API_PREFIX}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self.business_unit_id,
                "UserId": self.user_id,
                "OrganizationId": self.organization_id,
            })
        match = _SEGMENT.fullmatch(first)
        if match is None:
            return _error(400, "0x80060888", "Bad Request - Error in query syntax.")
        name, key = match.group("name"), match.group("key")
        if name == "EntityDefinitions":
            return self._metadata(method, key, rest, query)
        if name in _UNSUPPORTED_SEGMENTS or name == "$batch":
            return _unsupported(f"'{name}'")
        table = self._set_to_table.get(name)
        if table is None:
            return _error(404, "0x8006088a", f"Resource not found for the segment '{name}'.")
        if rest:
            return _unsupported(f"The path segment '{rest}' after '{first}'")
        if key is None:  # the collection: query (GET) or create (POST)
            if method in ("GET", "POST"):
                return _unsupported(f"{method} on the '{name}' collection")
            return _method_not_allowed(method, "GET, POST")
        if not _GUID.fullmatch(key):
            if "=" in key:
                return _unsupported(f"The alternate key '{key}'")
            return _error(400, "0x80060888", f"Bad Request - Error in query syntax: '{key}' is not a GUID.")
        row_id = key.lower()
        if method in ("GET", "HEAD"):
            return self._get(table, name, row_id, query, headers)
        if method == "PATCH":
            return self._patch(table, name, row_id, query, headers, body, changeset)
        if method in ("DELETE", "PUT"):
            return _unsupported(f"{method} on a row")
        return _method_not_allowed(method, "GET, PATCH, DELETE")

    def _selection(self, table: str, query: Mapping[str, list[str]]) -> list[str] | _Response:
        for option in query:
            if option.startswith("$") and option != "$select":
                return _unsupported(f"The query option '{option}'")
        if "$select" not in query:
            return sorted(self._columns[table])
        selected = [column.strip() for column in ",".join(query["$select"]).split(",")]
        for column in selected:
            if column not in self._columns[table]:
                return _error(400, "0x0", f"Could not find a property named '{column}' on type "
                                          f"'Microsoft.Dynamics.CRM.{table}'.")
        return selected

    def _representation(self, table: str, entity_set: str, row_id: str, row: Mapping[str, Any],
                        etag: str, columns: list[str], annotations: bool = False) -> dict[str, Any]:
        pk = f"{table}id"
        payload: dict[str, Any] = {
            "@odata.context": f"{self._url}{API_PREFIX}$metadata#{entity_set}({','.join(columns)})/$entity",
            "@odata.etag": etag,
        }
        payload.update({column: copy.deepcopy(row.get(column)) for column in columns})
        if annotations:  # only with Prefer: odata.include-annotations, as Dataverse does
            payload.update({key: value for key, value in row.items()
                            if "@" in key and key.split("@", 1)[0] in columns})
        payload[pk] = row_id  # Dataverse always returns the primary key
        return payload

    def _not_found(self, table: str, row_id: str) -> _Response:
        return _error(404, self._not_found_code, f"{table} With Id = {row_id} Does Not Exist")

    def _get(self, table: str, entity_set: str, row_id: str, query: Mapping[str, list[str]],
             headers: Message) -> _Response:
        columns = self._selection(table, query)
        if isinstance(columns, _Response):
            return columns
        with self._lock:
            row = self._rows[table].get(row_id)
            if row is None:
                return self._not_found(table, row_id)
            version = self._versions[(table, row_id)]
            annotations = "odata.include-annotations" in (headers.get("Prefer") or "")
            payload = self._representation(table, entity_set, row_id, row, _etag(version), columns, annotations)
        if_none_match = headers.get("If-None-Match")
        if if_none_match and _etag(version) in [tag.strip() for tag in if_none_match.split(",")]:
            return _Response(304, headers=(("ETag", _etag(version)),))
        return _json(200, payload)

    def _patch(self, table: str, entity_set: str, row_id: str, query: Mapping[str, list[str]],
               headers: Message, body: bytes, changeset: _Changeset | None = None) -> _Response:
        target = f"PATCH {API_PREFIX}{entity_set}({row_id})"
        if_match = headers.get("If-Match")
        if_none_match = (headers.get("If-None-Match") or "").strip()
        # Flag misuse up front, whatever else is wrong with the request.
        if if_none_match == "*":
            self._bug(f"{target} sent If-None-Match: * (create-only): the real service answers 412 for an "
                      "existing row and creates a missing one; send If-Match: * instead")
        if if_match is None:
            self._bug(f"{target} without If-Match: the real service would upsert (create the row if it "
                      "is missing); send If-Match: *")

        media_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return _error(400, "0x80048d19", f"Content-Type '{headers.get('Content-Type')}' is not supported "
                                             "for a JSON body; send Content-Type: application/json.")
        try:
            changes = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            changes = None
        if not isinstance(changes, dict):
            return _error(400, "0x80048d19", "Error identified in Payload provided by the user for Entity :"
                                             f"'{entity_set}': the body must be a JSON object.")
        pk = f"{table}id"
        applied: dict[str, Any] = {}
        for column, value in changes.items():
            if column.startswith("@odata."):
                continue  # instance annotations such as @odata.type are legal and carry no data
            if column not in self._columns[table]:
                return _error(400, "0x0", f"Invalid property '{column}' was found in entity "
                                          f"'Microsoft.Dynamics.CRM.{table}'.")
            if column in BOOLEAN_COLUMNS and value is not None and not isinstance(value, bool):
                return _error(400, "0x80048d19", f"Cannot convert the literal '{json.dumps(value)}' to the "
                                                 "expected type 'Edm.Boolean'.")
            if column == pk:
                if not isinstance(value, str) or value.lower() != row_id:
                    return _error(400, "0x80048d19", f"The value of '{pk}' in the body differs from the key "
                                                     "in the URL.")
                continue
            applied[column] = value
        columns = self._selection(table, query)
        if isinstance(columns, _Response):
            return columns

        if if_none_match == "*":
            return _error(412, "0x80040237", "A record with matching key values already exists.")
        if if_match is None:
            return _error(400, "STANDIN_UPSERT", "PATCH without If-Match would upsert (create a missing row) "
                                                 "on the real service; the stand-in refuses. Send If-Match: *.")
        wanted = [tag.strip() for tag in if_match.split(",")]
        entity_id = f"{self._url}{API_PREFIX}{entity_set}({row_id})"
        key = (table, row_id)
        with self._lock:
            if changeset is not None and key in changeset.rows:  # written earlier in this changeset
                row, current = changeset.rows[key], changeset.etags[key]
            else:
                row = self._rows[table].get(row_id)
                current = _etag(self._versions[key]) if row is not None else ""
            if row is None:
                return self._not_found(table, row_id)
            if "*" not in wanted and current not in wanted:
                return _error(412, "0x80060882", "The version of the existing record doesn't match the "
                                                 "RowVersion property provided.")
            if changeset is None:
                row.update(copy.deepcopy(applied))
                etag = self._bump(table, row_id)
                self._writes.append((table, row_id, copy.deepcopy(applied)))
            else:
                # Apply to a copy; _commit() writes it through once the whole changeset succeeded.
                if key not in changeset.rows:
                    changeset.base[key] = self._versions[key]
                    changeset.rows[key] = row = copy.deepcopy(row)
                row.update(copy.deepcopy(applied))
                if "*" not in wanted:
                    changeset.conditional.add(key)
                changeset.writes.append((table, row_id, copy.deepcopy(applied)))
                etag = changeset.etags[key] = f'W/"{changeset.base[key]}.{len(changeset.writes)}"'  # provisional
            if "return=representation" in (headers.get("Prefer") or "").replace(" ", ""):
                return _json(200, self._representation(table, entity_set, row_id, row, etag, columns),
                             (("OData-EntityId", entity_id), ("ETag", etag)))
        return _Response(204, headers=(("OData-EntityId", entity_id),))

    def _commit(self, changeset: _Changeset) -> _Response | None:
        """Write a changeset's rows through, all or nothing; the error that prevents it otherwise (a row
        deleted meanwhile, or changed meanwhile under a write that named its etag)."""
        with self._lock:
            for (table, row_id), base in changeset.base.items():
                if row_id not in self._rows[table]:
                    return self._not_found(table, row_id)
                if (table, row_id) in changeset.conditional and self._versions[(table, row_id)] != base:
                    return _error(412, "0x80060882", "The version of the existing record doesn't match the "
                                                     "RowVersion property provided.")
            for table, row_id, applied in changeset.writes:
                # Merge the columns written (as a direct PATCH does), not the whole copied row: a concurrent
                # write to other columns of the same row is kept.
                self._rows[table][row_id].update(copy.deepcopy(applied))
                self._bump(table, row_id)
                self._writes.append((table, row_id, copy.deepcopy(applied)))
        return None

    # ----- EntityDefinitions (table metadata) ----------------------------------------------------------------

    def _entity_metadata(self, table: str) -> dict[str, Any]:
        known = _KNOWN_ENTITIES.get(table, {})
        custom_codes = {name: 10000 + index for index, name in enumerate(sorted(set(self._columns) - set(_KNOWN_ENTITIES)))}
        columns = self._columns[table]
        return {
            "MetadataId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:dataverse-standin:entity:{table}")),
            "LogicalName": table,
            "SchemaName": known.get("SchemaName", table),
            "EntitySetName": self._entity_sets[table],
            "LogicalCollectionName": self._entity_sets[table],
            "PrimaryIdAttribute": f"{table}id",
            "PrimaryNameAttribute": known.get("PrimaryNameAttribute", "name" if "name" in columns else None),
            "ObjectTypeCode": known.get("ObjectTypeCode", custom_codes.get(table)),
            "IsCustomEntity": known.get("IsCustomEntity", True),
            "IsActivity": False,
            "IsPrivate": False,
            "OwnershipType": "UserOwned",
        }

    def _metadata(self, method: str, key: str | None, rest: str, query: Mapping[str, list[str]]) -> _Response:
        """``EntityDefinitions``: the collection (``$select``, simple ``$filter``), one table by
        ``LogicalName='x'`` or MetadataId, and its picklist attributes (none)."""
        if method != "GET":
            return _unsupported(f"{method} on EntityDefinitions")
        context = f"{self._url}{API_PREFIX}$metadata#EntityDefinitions"
        tables = sorted(self._columns)
        if key is not None:
            found = self._metadata_key(key)
            if isinstance(found, _Response):
                return found
            tables = [found]
        if rest:
            if key is None or rest not in ("Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
                                           "Attributes/Microsoft.Dynamics.CRM.MultiSelectPicklistAttributeMetadata"):
                return _unsupported(f"The path segment '{rest}' after 'EntityDefinitions'")
            for option in query:
                if option.startswith("$") and option not in ("$select", "$expand"):
                    return _unsupported(f"The query option '{option}' on {rest}")
            # The stand-in's columns are Boolean and text: no (multi-select) picklists to list.
            cast = rest.rsplit("/", 1)[-1]
            return _json(200, {"@odata.context": f"{context}('{tables[0]}')/Attributes/{cast}", "value": []})
        for option in query:
            if option.startswith("$") and option not in ("$select", "$filter"):
                return _unsupported(f"The query option '{option}' on EntityDefinitions")
        selected: list[str] = []
        if "$select" in query:
            selected = [name.strip() for name in ",".join(query["$select"]).split(",") if name.strip()]
            for name in selected:
                if name not in _ENTITY_PROPERTIES:
                    return _error(400, "0x0", f"Could not find a property named '{name}' on type "
                                              "'Microsoft.Dynamics.CRM.EntityMetadata'.")
        items = [self._entity_metadata(table) for table in tables]
        if "$filter" in query:
            if key is not None:
                return _unsupported("$filter on a single EntityDefinitions entry")
            conditions = self._metadata_filter(" and ".join(query["$filter"]))
            if isinstance(conditions, _Response):
                return conditions
            items = [item for item in items if all(item.get(name) == value for name, value in conditions)]
        if selected:
            # Dataverse returns the selected properties and always the key, MetadataId.
            items = [{**{name: item[name] for name in selected}, "MetadataId": item["MetadataId"]} for item in items]
            context += f"({','.join(selected)})"
        if key is not None:
            return _json(200, {"@odata.context": f"{context}/$entity", **items[0]})
        return _json(200, {"@odata.context": context, "value": items})

    def _metadata_key(self, key: str) -> str | _Response:
        match = re.fullmatch(r"\s*LogicalName\s*=\s*'((?:[^']|'')*)'\s*", key)
        if match is not None:
            logical_name = match.group(1).replace("''", "'")
            if logical_name in self._columns:
                return logical_name
            return _error(404, "0x80040217", f"Could not find entity with logical name '{logical_name}'.")
        if _GUID.fullmatch(key.strip()):
            for table in self._columns:
                if self._entity_metadata(table)["MetadataId"] == key.strip().lower():
                    return table
            return _error(404, "0x80040217", f"Could not find entity with MetadataId '{key.strip()}'.")
        return _unsupported(f"The EntityDefinitions key '{key}'")

    def _metadata_filter(self, text: str) -> list[tuple[str, Any]] | _Response:
        """``Property eq value`` clauses joined by ``and``; anything richer is not modelled (501)."""
        conditions: list[tuple[str, Any]] = []
        for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
            match = _FILTER_CLAUSE.fullmatch(clause)
            if match is None:
                return _unsupported(f"The $filter '{text}' on EntityDefinitions (only 'Property eq value' "
                                    "clauses joined by 'and' are modelled)")
            name, literal = match.groups()
            if name not in _ENTITY_PROPERTIES:
                return _error(400, "0x0", f"Could not find a property named '{name}' on type "
                                          "'Microsoft.Dynamics.CRM.EntityMetadata'.")
            value: Any
            if literal.startswith("'"):
                value = literal[1:-1].replace("''", "'")
            elif literal.lower() in ("true", "false"):
                value = literal.lower() == "true"
            elif literal.lower() == "null":
                value = None
            else:
                value = int(literal)
            conditions.append((name, value))
        return conditions

    # ----- $batch -------------------------------------------------------------------------------------------

    def _batch(self, method: str, headers: Message, body: bytes) -> _Response:
        if method != "POST":
            return _method_not_allowed(method, "POST")
        content_type = headers.get("Content-Type") or ""
        boundary = _boundary(content_type)
        if content_type.split(";")[0].strip().lower() != "multipart/mixed" or not boundary:
            return _error(400, _PAYLOAD_CODE, f"The content type '{content_type}' is not valid for a batch request: "
                                              "send multipart/mixed with a boundary parameter.")
        try:
            items = _parse_batch(body, boundary)
        except _Unreadable:
            return self._unreadable(body)
        except _Malformed as exc:
            if _lf_framed(body, boundary):  # LF line endings broke the framing: unreadable too
                return self._unreadable(body)
            return _error(400, _PAYLOAD_CODE, exc.message)
        total = sum(len(item.operations) if isinstance(item, _ChangesetPart) else 1 for item in items)
        if total > MAX_BATCH_OPERATIONS:
            oversized = any(isinstance(item, _ChangesetPart) and len(item.operations) > MAX_BATCH_OPERATIONS
                            for item in items)
            template = _TOO_MANY_IN_CHANGESET if oversized else _TOO_MANY_PARTS
            return _error(400, _PAYLOAD_CODE, template.format(limit=MAX_BATCH_OPERATIONS))

        continue_on_error = _prefers_continue_on_error(headers.get("Prefer"))
        with self._lock:
            self._batches += 1
            number = self._batches
        parts: list[bytes] = []
        for item in items:  # sequentially, in order
            if isinstance(item, _ChangesetPart):
                failure, part = self._run_changeset(item, number)
            else:
                response = self._run_operation(item, number, None, {})
                failure = response if response.drop or response.status >= 400 else None
                part = _embedded(response)
            if failure is not None and failure.drop:
                return _Response(0, drop=True, batch=number)  # the answer is lost; what ran, ran
            parts.append(part)
            if failure is not None and not continue_on_error:
                # The batch answers with the first failure's status, its parts so far ending with it.
                retry_after = tuple((name, value) for name, value in failure.headers if name == "Retry-After")
                return self._batch_answer(failure.status, parts, retry_after, number)
        return self._batch_answer(200, parts, (), number)

    def _unreadable(self, body: bytes) -> _Response:
        # As Microsoft's troubleshooting article shows: a 400 batch answer holding one 400 part.
        part = _error(400, _PAYLOAD_CODE, _UNREADABLE_MESSAGE.format(entity=_entity_of(body)))
        return self._batch_answer(400, [_embedded(part)], ())

    def _batch_answer(self, status: int, parts: Sequence[bytes], headers: tuple[tuple[str, str], ...],
                      number: int | None = None) -> _Response:
        boundary = f"batchresponse_{uuid.uuid4()}"  # never the request's boundary
        return _Response(status, _multipart_body(boundary, parts),
                         (("Content-Type", f"multipart/mixed; boundary={boundary}"), *headers), batch=number)

    def _run_changeset(self, changeset: _ChangesetPart, number: int) -> tuple[_Response | None, bytes]:
        """Run a changeset's operations against copies of the rows; commit them all, or none. Returns
        the failure (None on success) and the batch-response part."""
        working = _Changeset()
        references: dict[str, str] = {}
        answered: list[tuple[str | None, _Response]] = []
        for operation in changeset.operations:
            response = self._run_operation(operation, number, working, references)
            if response.drop:
                return response, b""
            if response.status >= 400:
                # Rolled back: nothing of the changeset is committed, and one error part answers for it.
                return response, _embedded(response)
            answered.append((operation.content_id, response))
            entity_id = dict(response.headers).get("OData-EntityId")
            if operation.content_id and entity_id:
                references[operation.content_id] = urlsplit(entity_id).path
        error = self._commit(working)
        if error is not None:
            return error, _embedded(error)
        boundary = f"changesetresponse_{uuid.uuid4()}"
        inner = _multipart_body(boundary, [_embedded(response, content_id) for content_id, response in answered])
        part = (f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode("latin-1")
                + inner.removesuffix(_CRLF))
        return None, part

    def _run_operation(self, operation: _Operation, number: int, changeset: _Changeset | None,
                       references: Mapping[str, str]) -> _Response:
        """One operation of a batch: routed as a direct request would be, under the outer request's
        authorisation; an inner fault may answer instead."""
        target = operation.target
        reference = re.fullmatch(r"\$([^/?]+)(.*)", target)
        if reference is not None:  # $n: the entity an earlier operation of this changeset wrote
            if reference.group(1) not in references:
                response = _error(400, _PAYLOAD_CODE, f"Content-ID Reference: '${reference.group(1)}' does not "
                                                      "exist in the batch context.")
                return self._record_operation(operation, target, number, response)
            path = references[reference.group(1)] + reference.group(2)
        elif "://" in target:
            split = urlsplit(target)  # any host: see the deviations in the module docstring
            path = split.path + (f"?{split.query}" if split.query else "")
        elif target.startswith("/"):
            path = target
        else:
            path = API_PREFIX + target  # relative to the service root
        fault = self._pick_fault(operation.method, path, inner=True)
        response = _Response(0, drop=True)
        if fault is None or fault.after:
            if self._pause(self._latency):
                try:
                    response = self._dispatch(operation.method, path, operation.headers, operation.body,
                                              changeset, inner=True)
                except Exception as exc:  # a stand-in bug must surface as a loud 500, not a hang
                    response = _error(500, "STANDIN_INTERNAL", f"stand-in failure: {exc!r}")
        if fault is not None:
            response = self._fault_response(fault)
        return self._record_operation(operation, path, number, response)

    def _record_operation(self, operation: _Operation, path: str, number: int, response: _Response) -> _Response:
        headers: dict[str, str] = {}
        for name, value in operation.headers.items():
            if name.lower() != "authorization":
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        with self._lock:
            self._operations.append(RecordedRequest(operation.method, path, headers, operation.body,
                                                    0 if response.drop else response.status, number))
        return response
