"""A thin Dataverse Web API client for the one write this app makes: update a row, never create one.

Follows the Azure SDK shape: it takes the environment URL and a ``TokenCredential``. It uses the Web API
as it really behaves: ``If-Match: *`` turns PATCH into update-only (404 instead of a silent upsert-create),
429 carries ``Retry-After`` in seconds, 5xx/408/timeouts are transient, 401 means "get a new token once".
Retries follow :class:`~optout_core.retry.RetryPolicy`; what remains raises a
:class:`~optout_core.errors.DataverseRejected` (permanent) or
:class:`~optout_core.errors.DataverseUnavailable` (transient).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from .errors import DataverseRejected, DataverseUnavailable
from .model import ENTITY_SETS
from .retry import RetryPolicy

API = "/api/data/v9.2"
log = logging.getLogger("optout.dataverse")

# Refresh a cached token this long before it expires, so a request never leaves with a dying token.
_TOKEN_MARGIN_SECONDS = 300


class TokenCredential(Protocol):
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        """An object with ``token`` and ``expires_on`` (azure.core.credentials.AccessToken)."""


@dataclass(frozen=True)
class WriteResult:
    found: bool     # False: the row does not exist (404); nothing was written or created
    requests: int   # HTTP requests it took, retries included


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class DataverseClient:
    """Updates contact, lead and account rows through the Dataverse Web API (v9.2)."""

    def __init__(self, url: str, credential: TokenCredential, *, retry: RetryPolicy = RetryPolicy(),
                 timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        self._credential = credential
        self._scope = f"{self.url}/.default"
        self._retry = retry
        self._timeout = timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: Any = None
        self._session: Any = None

    def update(self, table: str, row_id: str, changes: Mapping[str, Any], *,
               verify_first: bool = False) -> WriteResult:
        """PATCH ``changes`` onto an existing row; a missing row is reported, never created.

        After an answer that was lost in flight (a read timeout, a dropped connection, a 502/504) the
        write may have committed, so before writing again the row is read back and, when it already
        holds ``changes``, not written twice. ``verify_first`` does the same before the first write
        (for a message Service Bus is delivering again).
        """
        entity_set = ENTITY_SETS[table]
        path = f"{API}/{entity_set}({row_id})"
        body = json.dumps(dict(changes), separators=(",", ":")).encode("utf-8")
        response, requests = self._send("PATCH", path, body, {"If-Match": "*", "Content-Type": "application/json"},
                                        missing_ok=True, verify=lambda: self._holds(path, changes),
                                        verify_first=verify_first)
        return WriteResult(found=response.status != 404, requests=requests)

    def read_row(self, entity_set: str, row_id: str, select: Sequence[str] = ()) -> dict[str, Any] | None:
        """GET one row with its annotations (formatted values, lookup tables); None when it does not exist."""
        query = f"?$select={','.join(select)}" if select else ""
        response, _ = self._send("GET", f"{API}/{entity_set}({row_id}){query}", None,
                                 {"Prefer": 'odata.include-annotations="*"'}, missing_ok=True)
        return None if response.status == 404 else json.loads(response.body)

    def whoami(self) -> dict[str, Any]:
        """The ``WhoAmI`` function: proves the URL, the token and the application user in one call."""
        response, _ = self._send("GET", f"{API}/WhoAmI", None, {}, missing_ok=False)
        return json.loads(response.body)

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    # -- transport -------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], *,
              missing_ok: bool, verify: Callable[[], _Response | bool | None] | None = None,
              verify_first: bool = False) -> tuple[_Response, int]:
        """Send with retries. Returns a 2xx (or, when ``missing_ok``, 404) response and the requests made.

        ``verify`` reads back whether an earlier, unanswered try already took effect.
        """
        import requests  # lazy: the router never pays for it

        attempt = sent = 0
        refresh_token = token_refreshed = False
        uncertain = verify_first
        while True:
            if uncertain and verify is not None:
                sent += 1
                settled = verify()
                if isinstance(settled, _Response):
                    return settled, sent
                if settled is None:  # the read-back failed too: never write blind, read again later
                    attempt += 1
                    self._wait_or_raise(attempt, None, DataverseUnavailable(
                        "Dataverse did not answer whether an earlier write took effect"), sent)
                    continue
                uncertain = False
            attempt += 1
            sent += 1
            try:
                response = self._request(method, path, body, headers, fresh_token=refresh_token)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # Only a failed connect proves the request never left; anything later may have committed.
                uncertain = not isinstance(exc, requests.ConnectTimeout)
                failure = DataverseUnavailable(f"Dataverse unreachable: {type(exc).__name__}")
                self._wait_or_raise(attempt, None, failure, sent)
                continue
            finally:
                refresh_token = False
            status = response.status
            uncertain = status in (502, 504)  # a gateway lost the answer; the write may have committed
            if 200 <= status < 300 or (status == 404 and missing_ok):
                return response, sent
            if status == 401 and not token_refreshed:
                # A token can expire between issue and use: fetch a new one, once, without using up a try.
                refresh_token = token_refreshed = True
                attempt -= 1
                continue
            error = _error(response)
            if status == 429 or RetryPolicy.is_transient_status(status):
                retry_after = _retry_after(response.headers) if status == 429 else None
                failure = DataverseUnavailable(
                    f"Dataverse answered {status}{_describe(error)}", status=status, retry_after=retry_after,
                    **error)
                self._wait_or_raise(attempt, retry_after, failure, sent)
                continue
            raise DataverseRejected(f"Dataverse answered {status}{_describe(error)}{_advice(status, error)}",
                                    status=status, requests=sent, **error)

    def _holds(self, path: str, changes: Mapping[str, Any]) -> _Response | bool | None:
        """One read-back: a 204 when the row already holds ``changes``, the 404 when it is gone, False when
        it does not hold them yet (write), None when the read itself failed (cannot tell)."""
        columns = [column for column in changes if "@" not in column]
        if len(columns) != len(changes):
            return False  # lookups (x@odata.bind) cannot be compared by reading the column back
        try:
            response = self._request("GET", f"{path}?$select={','.join(columns)}", None, {}, fresh_token=False)
        except Exception:  # noqa: BLE001 — a failed read-back only means "cannot tell yet"
            return None
        if response.status == 404:
            return response
        if response.status != 200:
            return None
        try:
            row = json.loads(response.body)
        except ValueError:
            return None
        if all(row.get(column) == value for column, value in changes.items()):
            log.info("dataverse read-back: row already holds the update; not written again")
            return _Response(204, {}, b"")
        return False

    def _wait_or_raise(self, attempt: int, retry_after: float | None, failure: DataverseUnavailable,
                       sent: int) -> None:
        delay = self._retry.delay(attempt, retry_after=retry_after)
        if delay is None:
            failure.requests = sent
            raise failure
        log.info("dataverse retry: attempt=%d delay=%.2fs cause=%s", attempt, delay, failure)
        self._sleep(delay)

    def _request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], *,
                 fresh_token: bool) -> _Response:
        session = self._get_session()
        all_headers = {
            "Authorization": f"Bearer {self._access_token(fresh=fresh_token)}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            **headers,
        }
        r = session.request(method, self.url + path, data=body, headers=all_headers, timeout=self._timeout)
        return _Response(r.status_code, r.headers, r.content)

    def _get_session(self) -> Any:
        with self._lock:
            if self._session is None:
                import requests

                session = requests.Session()
                # Enough pooled connections for the worker's thread pool; retries are ours, not urllib3's.
                adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                self._session = session
            return self._session

    def _access_token(self, *, fresh: bool) -> str:
        with self._lock:
            token = self._token
            if fresh or token is None or token.expires_on - _TOKEN_MARGIN_SECONDS <= time.time():
                token = self._token = self._credential.get_token(self._scope)
            return token.token


def _error(response: _Response) -> dict[str, str | None]:
    """The Web API's ``error.code`` / ``error.message`` and the request id, when present."""
    code = message = None
    try:
        error = json.loads(response.body or b"{}").get("error") or {}
        code, message = error.get("code"), error.get("message")
    except (ValueError, AttributeError):
        pass
    return {"code": code if isinstance(code, str) else None,
            "message": message[:500] if isinstance(message, str) else None,
            "request_id": response.headers.get("x-ms-service-request-id")}


def _describe(error: Mapping[str, str | None]) -> str:
    parts = [p for p in (error.get("code"), error.get("message")) if p]
    return f" ({': '.join(parts)})" if parts else ""


def _advice(status: int, error: Mapping[str, str | None]) -> str:
    if error.get("code") == "0x80072560":
        return " - the identity has no application user in this environment: add one in the Power Platform admin center"
    if status == 403:
        return " - the application user's security role lacks a privilege (Write on contact, lead and account)"
    if status == 401:
        return " - a fresh token was refused too: check DATAVERSE_URL and the identity"
    if status == 404:
        return " - check DATAVERSE_URL: it must be the environment root, e.g. https://contoso.crm.dynamics.com"
    return ""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds: Dataverse sends delta-seconds; an HTTP date is tolerated."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
