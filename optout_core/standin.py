"""A loopback stand-in for the Dataverse Web API: a faithful test double of documented behaviour,
for tests and the local demo; never a production default.

It serves ``http://127.0.0.1:<port>/api/data/v9.2/`` over real HTTP/1.1 so that a client is exercised
end to end (``requests``, keep-alive, timeouts, retries). What it answers, and why
(see shared/domain/dataverse-webapi.md §1-§4 and the §12 checklist):

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
* Faults (429 with ``Retry-After``, 5xx, dropped connections, slow answers, expired tokens) are injected
  on demand or at a seeded random rate, ahead of authentication and routing, as a throttling or
  failing front end would answer.

Deliberate deviations, each one loud rather than silently different:

* The real service upserts on a PATCH without ``If-Match`` (creating a missing row) and creates on
  ``If-None-Match: *``. The stand-in never creates rows: it answers 400 ``STANDIN_UPSERT`` (resp.
  412) and appends a description to :attr:`DataverseStandIn.client_bugs`.
* Features the real service has but the stand-in does not model (``$batch``, ``UpdateMultiple``,
  collection queries, POST/DELETE/PUT, ``$expand``, alternate keys, other API versions) answer
  501 ``STANDIN_UNSUPPORTED`` (or 404 outside ``/api/data/v9.2/``) instead of guessing.
* 204 and 304 answers carry no ``Content-Length`` (RFC 9110 forbids it on 204); every other answer
  has one, so keep-alive framing is always explicit.
* Exact 401 bodies and the code for a wrong ``Content-Type`` are unconfirmed upstream; clients must
  branch on the HTTP status, not on these codes.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import socket
import socketserver
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    "DataverseStandIn",
    "Fault",
    "RecordedRequest",
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
_UNSUPPORTED_SEGMENTS = frozenset({"$batch", "$metadata", "EntityDefinitions", "RetrieveTotalRecordCount"})
_MAX_BODY = 16 * 1024 * 1024
_THROTTLE_MESSAGE = "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
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
    """One injected failure. A fault applies before authentication and routing."""

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
    path: str                # as sent, including the query string
    headers: dict[str, str]
    body: bytes
    status: int              # status answered; 0 for a dropped connection


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    close: bool = False      # answer, then close (the request body could not be consumed)


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = False   # a second server must not share the port and steal requests
    standin: DataverseStandIn

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

    def shutdown_request(self, request: socket.socket) -> None:
        self.standin._untrack(request)
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
    """The stand-in server plus the state it serves (rows, faults, recorded traffic)."""

    def __init__(self, *, token: str = "local-token", tables: Mapping[str, Iterable[str]] | None = None,
                 app_user: bool = True, not_found_code: str = "0x80040217",
                 entity_sets: Mapping[str, str] | None = None, port: int = 0) -> None:
        if not token:
            raise ValueError("token must not be empty")
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
        self._writes: list[tuple[str, str, dict[str, Any]]] = []
        self._client_bugs: list[str] = []
        self._connections: dict[socket.socket, threading.Thread] = {}

        self._lifecycle = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # wakes handlers sleeping on a Fault.delay
        self._url: str | None = None

    # ----- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (kept after stop(), so tests can check the port is free)."""
        if self._url is None:
            raise RuntimeError("the stand-in has not been started")
        return self._url

    def start(self) -> DataverseStandIn:
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the stand-in is already running")
            server = _Server((HOST, self._port), _Handler)
            server.standin = self
            self._stopping.clear()
            self._url = f"http://{HOST}:{server.server_address[1]}"
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

    def __enter__(self) -> DataverseStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _track(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections[sock] = thread

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.pop(sock, None)

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
        """Queue faults; each request consumes the first queued fault it matches (FIFO)."""
        if times < 1:
            raise ValueError("times must be >= 1")
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._lock:
            self._faults.extend(fault for fault in faults for _ in range(times))

    def set_fault_rate(self, rate: float, faults: Sequence[Fault], seed: int = 0) -> None:
        """Answer a fraction of requests with a fault drawn from ``faults``; reproducible for a seed."""
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
        with self._lock:
            return list(self._requests)

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
        if response is None:
            fault = self._pick_fault(method, path)
            if fault is None or fault.after:
                try:
                    response = self._route(method, path, handler.headers, body)
                except Exception as exc:  # a stand-in bug must surface as a loud 500, not a hang
                    response = _error(500, "STANDIN_INTERNAL", f"stand-in failure: {exc!r}")
            if fault is not None:
                response = self._fault_response(fault)
        # Record before answering: a test may inspect requests the moment its client returns.
        with self._lock:
            self._requests.append(RecordedRequest(method, path, headers, body,
                                                  0 if response.drop else response.status))
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

    def _pick_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, path):
                    return self._faults.pop(index)
            if self._rate > 0:
                # Exactly one draw per request (plus one choice on a hit): same traffic, same faults.
                if self._rng.random() < self._rate:
                    candidates = [fault for fault in self._rate_faults if fault.matches(method, path)]
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

        resource = path[len(API_PREFIX):]
        query = parse_qs(split.query, keep_blank_values=True)
        first, _, rest = resource.partition("/")
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
        if name in _UNSUPPORTED_SEGMENTS:
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
            return self._patch(table, name, row_id, query, headers, body)
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
                        version: int, columns: list[str], annotations: bool = False) -> dict[str, Any]:
        pk = f"{table}id"
        payload: dict[str, Any] = {
            "@odata.context": f"{self._url}{API_PREFIX}$metadata#{entity_set}({','.join(columns)})/$entity",
            "@odata.etag": _etag(version),
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
            payload = self._representation(table, entity_set, row_id, row, version, columns, annotations)
        if_none_match = headers.get("If-None-Match")
        if if_none_match and _etag(version) in [tag.strip() for tag in if_none_match.split(",")]:
            return _Response(304, headers=(("ETag", _etag(version)),))
        return _json(200, payload)

    def _patch(self, table: str, entity_set: str, row_id: str, query: Mapping[str, list[str]],
               headers: Message, body: bytes) -> _Response:
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
        with self._lock:
            row = self._rows[table].get(row_id)
            if row is None:
                return self._not_found(table, row_id)
            current = _etag(self._versions[(table, row_id)])
            if "*" not in wanted and current not in wanted:
                return _error(412, "0x80060882", "The version of the existing record doesn't match the "
                                                 "RowVersion property provided.")
            row.update(copy.deepcopy(applied))
            self._bump(table, row_id)
            self._writes.append((table, row_id, copy.deepcopy(applied)))
            version = self._versions[(table, row_id)]
            if "return=representation" in (headers.get("Prefer") or "").replace(" ", ""):
                return _json(200, self._representation(table, entity_set, row_id, row, version, columns),
                             (("OData-EntityId", entity_id), ("ETag", _etag(version))))
        return _Response(204, headers=(("OData-EntityId", entity_id),))
