"""The stand-in as tests use it: :class:`DataverseStandIn` starts and stops the loopback server, holds the state
it serves (rows, faults, recorded traffic, service-protection accounting), and puts each request through the
front end (injected faults, authentication, service protection, latency) before the Web API answers it."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from email.message import Message
from typing import Any
from urllib.parse import unquote, urlsplit

from optout_dev.standin.batch import OperationHooks
from optout_dev.standin.faults import Fault, FaultInjector, fault_response
from optout_dev.standin.presets import build_tables, seeds
from optout_dev.standin.privileges import UserPrivileges
from optout_dev.standin.protection import ServiceProtection, UserLoads, WindowStats
from optout_dev.standin.recording import RecordedRequest, Traffic, kept_headers
from optout_dev.standin.responses import Response, error
from optout_dev.standin.schema import Table
from optout_dev.standin.store import RowStore
from optout_dev.standin.tables import API_PREFIX, BUSINESS_UNIT_ID, HOST, ORGANIZATION_ID, USER_ID
from optout_dev.standin.tls import ServerTls, server_tls
from optout_dev.standin.transport import Connections, Handler, LoopbackServer, read_body, send
from optout_dev.standin.users import APPLICATION_ID
from optout_dev.standin.webapi import WebApi, not_served


class DataverseStandIn:
    """The stand-in server plus the state it serves (rows, faults, recorded traffic).

    ``protection``: service-protection limits to enforce (None: none). ``latency``: service time in
    seconds per operation (a ``$batch`` takes it once per inner operation). ``tls``: serve ``https://``
    with a certificate from a throwaway CA made at each start (see :attr:`ca_file`).

    ``tables``: table -> a :class:`~optout_dev.standin.schema.Table`, or a plain column set (typed by name: the
    consent Booleans, statecode, statuscode, ``_x_value`` lookups, else String; contact, lead and account keep
    their known types); default contact, lead and account. ``entity_sets``: entity set names of plain tables.
    ``presets``: names from :data:`~optout_dev.standin.presets.PRESETS` whose tables (and seeded rows) are added:
    ``"samples"`` (the samples' campaign log), ``"other"`` (a second campaign-log schema), ``"journeys"``
    (contact point consent, purposes, a topic), ``"registration"`` (service endpoints, SDK messages and filters,
    steps, workflows). ``privileges``: the privilege names the user holds (None: every privilege of every table).
    """

    def __init__(
        self,
        *,
        token: str = "local-token",
        tables: Mapping[str, Iterable[str] | Table] | None = None,
        app_user: bool = True,
        not_found_code: str = "0x80040217",
        entity_sets: Mapping[str, str] | None = None,
        port: int = 0,
        protection: ServiceProtection | None = None,
        latency: float = 0.0,
        tls: bool = False,
        presets: Iterable[str] = (),
        privileges: Collection[str] | None = None,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        if protection is not None and not isinstance(protection, ServiceProtection):
            raise TypeError(f"protection must be a ServiceProtection, got {type(protection).__name__}")
        if not latency >= 0:
            raise ValueError("latency must be >= 0 seconds")
        typed = build_tables(tables, entity_sets, presets)
        self._store = RowStore(typed, not_found_code)
        for table, row_id, values in seeds(typed):
            self._store.add_row(table, row_id, values)
        self._privileges = UserPrivileges(typed, privileges)
        self._app_user = app_user
        self._port = port
        self._latency = float(latency)
        self._use_tls = tls
        self._tls: ServerTls | None = None  # while running with tls=True
        self.user_id = USER_ID
        self.business_unit_id = BUSINESS_UNIT_ID
        self.organization_id = ORGANIZATION_ID
        # The caller is the application user of this client id (None: a person; optout_dev/standin/users.py).
        self.application_id: str | None = APPLICATION_ID
        self.base_language = 1033  # the organisation's base language (e.g. 1031 German): the language of its labels

        self._lock = threading.Lock()  # guards the token
        self._token = token
        self._previous: dict[str, float] = {}  # tokens replaced by a rotation -> until when each is still good
        self._faults = FaultInjector()
        self._traffic = Traffic()
        self._loads = UserLoads(protection)
        self._connections = Connections()
        hooks = OperationHooks(
            service_time=lambda: self._pause(self._latency),
            pick_fault=lambda method, path: self._faults.pick(method, path, inner=True),
            fault_response=self._fault_response,
        )
        self._api = WebApi(self._store, self._traffic, self, hooks, self._privileges)

        self._lifecycle = threading.Lock()
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # wakes handlers sleeping on a Fault.delay or a latency
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
        """With ``tls=True``, while running: the PEM file of the CA that issued the stand-in's certificate, for
        a client to trust (``requests``: ``verify=ca_file`` or ``REQUESTS_CA_BUNDLE=ca_file``, which is how
        the official Python SDK, which refuses ``http://`` URLs, can be pointed at the stand-in). Removed by
        stop()."""
        if self._tls is None:
            raise RuntimeError("no certificate: the stand-in runs without tls=True or is not running")
        return self._tls.ca_file

    def start(self) -> DataverseStandIn:
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the stand-in is already running")
            server = LoopbackServer((HOST, self._port), self._serve, self._connections)
            if self._use_tls:
                try:
                    self._tls = server_tls(HOST)
                except BaseException:
                    server.server_close()
                    raise
                server.tls = self._tls.context
            self._stopping.clear()
            self._url = f"{'https' if self._use_tls else 'http'}://{HOST}:{server.server_port}"
            self._api.base_url = self._url
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="dataverse-standin", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()  # stop accepting
        server.server_close()  # free the port
        thread.join()
        self._connections.close_all(timeout=5)
        if self._tls is not None:
            self._tls.remove()
            self._tls = None

    def __enter__(self) -> DataverseStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----- state for tests ---------------------------------------------------------------------------

    def add_row(self, table: str, row_id: str, **values: Any) -> None:
        """Seed (or replace) a row; values are stored as given, column names are validated."""
        self._store.add_row(table, row_id, values)

    def delete_row(self, table: str, row_id: str) -> None:
        """Remove a row (as a merge or delete would); KeyError if it does not exist."""
        self._store.delete_row(table, row_id)

    def row(self, table: str, row_id: str) -> dict[str, Any] | None:
        return self._store.row(table, row_id)

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        """Every row of a table by id, as stored: lookups under ``_x_value`` (with their lookuplogicalname
        annotation), columns the Web API never returns (``saskey``) included."""
        return self._store.rows(table)

    @property
    def tables(self) -> dict[str, Table]:
        """The typed tables served, by logical name."""
        return dict(self._store.tables)

    @property
    def privileges(self) -> frozenset[str]:
        """The privilege names the user holds now."""
        return self._privileges.held

    def set_privileges(self, names: Collection[str] | None) -> None:
        """Replace the privileges the user holds (None: every privilege of every table), e.g. to take one away."""
        self._privileges.grant(names)

    def set_privilege_depths(self, own: Mapping[str, str], team: Mapping[str, str] | None = None) -> None:
        """Hold ``own`` (name -> Basic/Local/Deep/Global) through the user's role and ``team`` through a team's."""
        self._privileges.set_depths(own, team or {})

    def inject(self, *faults: Fault, times: int = 1) -> None:
        """Queue faults; each request consumes the first queued fault it matches (FIFO). Inner faults
        (``Fault(inner=True)``) are consumed by operations inside a ``$batch`` only, the others by HTTP
        requests only."""
        self._faults.inject(faults, times)

    def set_fault_rate(self, rate: float, faults: Sequence[Fault], seed: int = 0) -> None:
        """Answer a fraction of requests with a fault drawn from ``faults``; reproducible for a seed. Inner
        faults in the list apply, at the same rate, to operations inside a ``$batch``."""
        self._faults.set_rate(rate, faults, seed)

    @property
    def pending_faults(self) -> int:
        """Queued faults not consumed yet."""
        return self._faults.pending

    def rotate_token(self, new_token: str, *, grace: float = 0.0) -> None:
        """Accept ``new_token`` from now on; the old one gets 401, as an expired token would, once ``grace``
        seconds are over (a token just issued is never expired the moment it is used, as with Entra)."""
        if not new_token:
            raise ValueError("token must not be empty")
        with self._lock:
            now = time.monotonic()
            # Every replaced token stays good until its own grace is over, however often tokens rotate meanwhile.
            self._previous = {old: until for old, until in self._previous.items() if until > now}
            if grace > 0:
                self._previous[self._token] = now + grace
            self._token = new_token

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received, in the order answered (a ``$batch`` is one)."""
        return self._traffic.requests

    @property
    def operations(self) -> list[RecordedRequest]:
        """Every operation run inside a ``$batch``, in order (``batch`` names its ``$batch``); requests
        sent on their own are in :attr:`requests` only. Operations of a changeset that was rolled back
        keep the status they answered before the rollback; :attr:`writes` holds only committed writes."""
        return self._traffic.operations

    @property
    def throttled(self) -> int:
        """How many 429s the service protection answered (injected faults not counted)."""
        return self._loads.throttled

    def window_stats(self) -> WindowStats:
        """The user's service-protection accounting now, e.g. for a benchmark to compare the achieved
        rate with the allowed one (``stats.achieved_rate`` vs ``stats.allowed_rate``). Works without
        protection too (limits None, nothing in the window)."""
        return self._loads.stats(self.user_id, time.monotonic())

    @property
    def writes(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(table, id, values) for every successful PATCH (the columns changed) and POST (the values created,
        defaults and lookups included), in order of commit. Deletes are not listed."""
        return self._store.writes

    @property
    def client_bugs(self) -> list[str]:
        """Protocol misuse the real service would not report (e.g. a PATCH that would upsert)."""
        return self._traffic.client_bugs

    # ----- the front end ----------------------------------------------------------------------------------

    def _serve(self, handler: Handler) -> None:
        method, path = handler.command, handler.path
        body, unread = read_body(handler)
        batch = None
        if unread is not None:
            response = unread
        else:
            response, batch = self._answer(method, path, handler.headers, body)
        # Record before answering: a test may inspect requests the moment its client returns.
        status = 0 if response.drop else response.status
        self._traffic.record_request(
            RecordedRequest(method, path, kept_headers(handler.headers.items()), body, status, batch, response.cut)
        )
        send(handler, response)

    def _answer(self, method: str, path: str, headers: Message, body: bytes) -> tuple[Response, int | None]:
        """The answer to a request whose body was read, and the serial number of the $batch it ran, if any.
        Faults apply ahead of authentication and routing, as a throttling or failing front end would answer."""
        fault = self._faults.pick(method, path)
        if fault is not None and not (fault.after or fault.cut):
            return self._fault_response(fault), None
        try:
            response = self._route(method, path, headers, body)
        except Exception as exc:  # noqa: BLE001 - a stand-in bug must surface as a loud 500, not a hang
            response = error(500, "STANDIN_INTERNAL", f"stand-in failure: {exc!r}")
        if fault is not None:  # Fault(after=True) or Fault(cut=True): served, its answer lost or cut off
            return self._fault_response(fault, response), response.batch
        return response, response.batch

    def _fault_response(self, fault: Fault, served: Response | None = None) -> Response:
        return fault_response(fault, stopping=self._stopping, challenge=self._challenge(), served=served)

    def _challenge(self) -> str:
        return (
            "Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize, "
            f"resource_id={self._url}"
        )

    def _route(self, method: str, raw_path: str, headers: Message, body: bytes) -> Response:
        path = unquote(urlsplit(raw_path).path)
        if not path.startswith(API_PREFIX):
            return not_served(path)

        scheme, _, presented = (headers.get("Authorization") or "").strip().partition(" ")
        with self._lock:
            token, previous_until = self._token, self._previous.get(presented.strip(), 0.0)
        valid = presented.strip() == token or time.monotonic() < previous_until
        if scheme.lower() != "bearer" or not valid:
            message = (
                "The request is not authenticated: no bearer token."
                if not scheme
                else "The access token is invalid or has expired."
            )
            return error(401, "", message, (("WWW-Authenticate", self._challenge()),))
        if not self._app_user:
            return error(403, "0x80072560", "The user is not a member of the organization.")

        # Service protection applies to authenticated users' requests, a $batch counting once.
        started = time.monotonic()
        refused, load, limits = self._loads.admit(self.user_id, started)
        if refused is not None:
            return refused
        try:
            is_batch = path[len(API_PREFIX) :].partition("/")[0] == "$batch"
            if not is_batch and not self._pause(self._latency):  # a $batch pauses per operation
                return Response(0, drop=True)
            response = self._api.dispatch(method, raw_path, headers, body)
        finally:
            self._loads.release(load, started)
        if limits:
            response = dataclasses.replace(response, headers=(*response.headers, *limits))
        return response

    def _pause(self, seconds: float) -> bool:
        """Sleep for a service time; False when the stand-in is stopping meanwhile."""
        return seconds <= 0 or not self._stopping.wait(seconds)
